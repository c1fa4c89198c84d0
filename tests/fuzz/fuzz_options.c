/* Fuzzer: the parsers of command-line and QMP values — migration URIs
 * (ring/), --device (savevm/blob.c), numbers, sizes and --guest (tools/).
 * The first byte picks the parser, the rest is the text.  What a parser
 * accepts must also make sense: a URI formats back to text that parses to
 * the same URI, a number is digits only and within its bound, a device's
 * sizes obey their rules. */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring/ring.h"
#include "savevm/blob.h"
#include "tests/fuzz/fuzz_dest.h"
#include "tools/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void uri(const char *text)
{
	struct ring_uri u, again;
	char err[256], buf[512], err2[256];

	if (ring_uri_parse(text, &u, err, sizeof(err))) {
		FUZZ_CHECK(err[0], "URI '%s' refused without a reason", text);
		return;
	}
	ring_uri_format(&u, buf, sizeof(buf));
	FUZZ_CHECK(!ring_uri_parse(buf, &again, err2, sizeof(err2)), "'%s' -> '%s' does not parse: %s", text, buf,
		   err2);
	FUZZ_CHECK(again.kind == u.kind && !strcmp(again.host, u.host) && !strcmp(again.port, u.port) &&
			   !strcmp(again.path, u.path),
		   "'%s' -> '%s' parses to another URI", text, buf);
}

static void device(const char *text)
{
	struct blob_config c;
	char err[512];

	if (blob_parse(text, &c, err, sizeof(err))) {
		FUZZ_CHECK(err[0], "device '%s' refused without a reason", text);
		return;
	}
	FUZZ_CHECK(c.id[0] && strlen(c.id) <= 32 && c.size >= (64u << 10) && c.size % (64u << 10) == 0 &&
			   c.stop_copy % (64u << 10) == 0,
		   "device '%s' accepted with id '%s' size %llu stop-copy %llu", text, c.id,
		   (unsigned long long)c.size, (unsigned long long)c.stop_copy);
}

static void number(const char *text, uint64_t max)
{
	uint64_t v;

	if (parse_u64(text, max, &v))
		return;
	FUZZ_CHECK(v <= max && strspn(text, "0123456789") == strlen(text), "'%s' accepted as %llu (max %llu)", text,
		   (unsigned long long)v, (unsigned long long)max);
}

static void mem(const char *text)
{
	uint64_t mib;

	if (!parse_mem_mib(text, &mib))
		FUZZ_CHECK(mib >= 1 && mib <= (1ull << 22), "'%s' accepted as %llu MiB", text, (unsigned long long)mib);
}

static void guest(const char *text)
{
	char *name = NULL, *cmdline = NULL;

	if (parse_guest(text, &name, &cmdline))
		return;
	FUZZ_CHECK(name && *name && cmdline && !strchr(name, ','), "'%s' accepted as '%s'", text, name);
	g_free(name);
	g_free(cmdline);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	char *text = malloc(size);

	FUZZ_CHECK(text, "out of memory");
	memcpy(text, data + 1, size - 1);
	text[size - 1] = 0;	/* a NUL inside ends the text early, as in argv */
	switch (data[0] % 6) {
	case 0: uri(text); break;
	case 1: device(text); break;
	case 2: number(text, UINT64_MAX); break;
	case 3: number(text, 2000000); break;
	case 4: mem(text); break;
	case 5: guest(text); break;
	}
	free(text);
	return 0;
}
