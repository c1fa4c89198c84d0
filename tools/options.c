/* The command line's value parsers, apart from the commands, so that the
 * option fuzzer (tests/fuzz/fuzz_options.c) reaches them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "tools/options.h"

int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;

	/* strtoull alone would take a sign and leading blanks */
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);

	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* "512", "512M", "2G" -> MiB */
int parse_mem_mib(const char *s, uint64_t *mib)
{
	char buf[32];
	size_t n = strlen(s);
	uint64_t mult = 1, v;

	if (!n || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n + 1);
	char last = buf[n - 1];

	if (last == 'M' || last == 'm') {
		buf[n - 1] = 0;
	} else if (last == 'G' || last == 'g') {
		buf[n - 1] = 0;
		mult = 1024;
	}
	if (parse_u64(buf, (1ull << 22) / mult, &v) || !v)
		return -EINVAL;
	*mib = v * mult;
	return 0;
}

/* "verify,ws=64,rate=0" -> name "verify", cmdline "ws=64 rate=0" */
int parse_guest(const char *spec, char **name, char **cmdline)
{
	char **parts = g_strsplit(spec, ",", -1);
	GString *cl = g_string_new(NULL);
	int r = 0;

	if (!parts[0] || !*parts[0])
		r = -EINVAL;
	for (int i = 1; !r && parts[i]; i++) {
		const char *eq = strchr(parts[i], '=');

		if (!eq || eq == parts[i] || !eq[1] || strchr(parts[i], ' ')) {
			r = -EINVAL;
			break;
		}
		if (cl->len)
			g_string_append_c(cl, ' ');
		g_string_append(cl, parts[i]);
	}
	if (!r) {
		*name = g_strdup(parts[0]);
		*cmdline = g_string_free(cl, FALSE);
	} else {
		g_string_free(cl, TRUE);
	}
	g_strfreev(parts);
	return r;
}
