/* tests/unit/stream/test_stream.c — unit tests for the migration stream codec
 * (savevm/stream.c): exact byte layouts, round trips, every rejection,
 * truncation at every byte and a mutation fuzz loop. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "savevm/stream.h"

#define PAGE 4096u

/* ------------------------------------------------------------ utilities */

/* an in-memory stream_source: exact reads, -EPIPE at the end of data */
struct memsrc {
	const uint8_t *p;
	size_t len;
	size_t pos;
};

static int mem_read(void *opaque, void *buf, size_t len)
{
	struct memsrc *m = opaque;

	if (len > m->len - m->pos) {
		m->pos = m->len;
		return -EPIPE;
	}
	memcpy(buf, m->p + m->pos, len);
	m->pos += len;
	return 0;
}

static struct stream_source mem_source(struct memsrc *m, const void *p, size_t len)
{
	struct stream_source src = { .read = mem_read, .opaque = m };

	m->p = p;
	m->len = len;
	m->pos = 0;
	return src;
}

/* a byte builder for hand-made (often malformed) streams */
struct bb {
	uint8_t b[1 << 17];
	size_t n;
};

static void bb_bytes(struct bb *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->b));
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void bb_u32(struct bb *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	bb_bytes(b, x, 4);
}

static void bb_u64(struct bb *b, uint64_t v)
{
	bb_u32(b, (uint32_t)v);
	bb_u32(b, (uint32_t)(v >> 32));
}

static void bb_fill(struct bb *b, uint8_t byte, size_t n)
{
	assert_true(b->n + n <= sizeof(b->b));
	memset(b->b + b->n, byte, n);
	b->n += n;
}

static void bb_header(struct bb *b, const char *magic, uint32_t version, uint32_t page_size,
		      uint64_t ram_size, uint32_t nr_vcpus, uint32_t flags)
{
	bb_bytes(b, magic, 8);
	bb_u32(b, version);
	bb_u32(b, page_size);
	bb_u64(b, ram_size);
	bb_u32(b, nr_vcpus);
	bb_u32(b, flags);
}

static void bb_section(struct bb *b, uint32_t id, uint32_t inst, uint32_t version, uint32_t kind,
		       uint32_t name_len, const void *name, size_t name_bytes)
{
	bb_u32(b, STREAM_REC_SECTION);
	bb_u32(b, id);
	bb_u32(b, inst);
	bb_u32(b, version);
	bb_u32(b, kind);
	bb_u32(b, name_len);
	bb_bytes(b, name, name_bytes);
}

static void bb_ack(struct bb *b, const char *magic, int32_t status, uint32_t msg_len,
		   const void *msg, size_t msg_bytes)
{
	bb_bytes(b, magic, 8);
	bb_u32(b, (uint32_t)status);
	bb_u32(b, msg_len);
	bb_bytes(b, msg, msg_bytes);
}

#define assert_err_contains(err, sub)                                                    \
	do {                                                                             \
		if (!strstr((err), (sub)))                                               \
			fail_msg("error message \"%s\" does not mention \"%s\"", (err), (sub)); \
	} while (0)

static int name_ok(const char *name)
{
	size_t n = strnlen(name, STREAM_MAX_NAME + 1), i;

	if (n < 1 || n > STREAM_MAX_NAME)
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

/* ---- decoding a record the way the loader does: type, body, payload ---- */

struct decoded {
	enum stream_rec_type type;
	struct stream_section sec;
	uint32_t section_id;
	uint32_t count;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	uint32_t len;
	uint32_t pass;
	struct stream_eof eof;
	struct stream_channels channels;
	uint8_t first_payload[16];	/* first bytes of the payload / first data page */
};

static int skip_payload(const struct stream_source *src, size_t n, uint8_t *first, size_t first_len)
{
	static uint8_t chunk[PAGE];
	int done_first = 0;

	while (n) {
		size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
		int r = src->read(src->opaque, chunk, k);

		if (r)
			return r;
		if (!done_first && first) {
			memcpy(first, chunk, k < first_len ? k : first_len);
			done_first = 1;
		}
		n -= k;
	}
	return 0;
}

/* Decode one record (type word included) and read its payload like the
 * loader does.  Returns the codec's (or payload read's) result. */
static int decode_record_src(const struct stream_source *src, struct decoded *d, char *err,
			     size_t errlen)
{
	uint32_t max, i, data_pages = 0;
	int r;

	memset(d, 0, sizeof(*d));
	r = stream_read_type(src, &d->type, err, errlen);
	if (r)
		return r;
	switch (d->type) {
	case STREAM_REC_SECTION:
		return stream_read_section(src, &d->sec, err, errlen);
	case STREAM_REC_RAM:
		r = stream_read_ram(src, PAGE, &d->section_id, d->hdrs, &d->count, err, errlen);
		if (r)
			return r;
		for (i = 0; i < d->count; i++)
			if (!(d->hdrs[i] & STREAM_PAGE_ZERO)) {
				r = skip_payload(src, PAGE, data_pages ? NULL : d->first_payload,
						 sizeof(d->first_payload));
				if (r == -EPIPE)
					snprintf(err, errlen, "stream truncated while reading a page");
				if (r)
					return r;
				data_pages++;
			}
		return 0;
	case STREAM_REC_PART:
	case STREAM_REC_DEVICE:
		max = d->type == STREAM_REC_PART ? STREAM_MAX_PART : STREAM_MAX_DEVICE;
		r = stream_read_payload_hdr(src, max, &d->section_id, &d->len, err, errlen);
		if (r)
			return r;
		r = skip_payload(src, d->len, d->first_payload, sizeof(d->first_payload));
		if (r == -EPIPE)
			snprintf(err, errlen, "stream truncated while reading a payload");
		return r;
	case STREAM_REC_PASS_END:
		return stream_read_pass_end(src, &d->pass, err, errlen);
	case STREAM_REC_EOF:
		return stream_read_eof(src, &d->eof, err, errlen);
	case STREAM_REC_CHANNELS:
		return stream_read_channels(src, &d->channels, err, errlen);
	}
	fail_msg("stream_read_type returned unknown type %u", (unsigned)d->type);
	return -1;
}

static int decode_record(const void *p, size_t n, struct decoded *d, char *err, size_t errlen)
{
	struct memsrc m;
	struct stream_source src = mem_source(&m, p, n);

	return decode_record_src(&src, d, err, errlen);
}

static int decode_header(const void *p, size_t n, struct stream_header *h, char *err, size_t errlen)
{
	struct memsrc m;
	struct stream_source src = mem_source(&m, p, n);

	return stream_read_header(&src, h, err, errlen);
}

static int decode_ack(const void *p, size_t n, int32_t *status, char *msg, char *err, size_t errlen)
{
	struct memsrc m;
	struct stream_source src = mem_source(&m, p, n);

	return stream_read_ack(&src, status, msg, err, errlen);
}

/* A successful decode must never produce values outside the format. */
static void check_decoded_in_bounds(const struct decoded *d)
{
	uint32_t i;

	switch (d->type) {
	case STREAM_REC_SECTION:
		assert_true(name_ok(d->sec.name));
		assert_true(d->sec.kind == STREAM_SECTION_ITERABLE ||
			    d->sec.kind == STREAM_SECTION_DEVICE);
		assert_true(d->sec.section_id < STREAM_MAX_SECTIONS);
		break;
	case STREAM_REC_RAM:
		assert_true(d->count >= 1 && d->count <= STREAM_MAX_PAGES_PER_REC);
		assert_true(d->section_id < STREAM_MAX_SECTIONS);
		for (i = 0; i < d->count; i++) {
			assert_int_equal(d->hdrs[i] & (PAGE - 1) & ~STREAM_PAGE_ZERO, 0);
			assert_true((d->hdrs[i] & ~(uint64_t)(PAGE - 1)) <= UINT64_MAX - PAGE);
		}
		break;
	case STREAM_REC_PART:
		assert_true(d->len <= STREAM_MAX_PART);
		assert_true(d->section_id < STREAM_MAX_SECTIONS);
		break;
	case STREAM_REC_DEVICE:
		assert_true(d->len <= STREAM_MAX_DEVICE);
		assert_true(d->section_id < STREAM_MAX_SECTIONS);
		break;
	case STREAM_REC_PASS_END:
		assert_true(d->pass >= 1);
		break;
	case STREAM_REC_EOF:
		assert_true(d->eof.nr_sections <= STREAM_MAX_SECTIONS);
		break;
	default:
		fail_msg("decoded unknown record type %u", (unsigned)d->type);
	}
}

static void check_header_in_bounds(const struct stream_header *h)
{
	assert_int_equal(h->version, STREAM_VERSION);
	assert_int_equal(h->page_size, PAGE);
	assert_int_equal(h->flags, 0);
	assert_true(h->ram_size != 0);
	assert_int_equal(h->ram_size % PAGE, 0);
	assert_true(h->nr_vcpus >= 1 && h->nr_vcpus <= 1024);
}

static void check_ack_in_bounds(int32_t status, const char *msg)
{
	size_t n = strnlen(msg, STREAM_MAX_ACK_MSG + 1), i;

	assert_true(status <= 0 && status >= -4095);
	assert_true(n <= STREAM_MAX_ACK_MSG);
	for (i = 0; i < n; i++)
		assert_true(msg[i] >= 0x20 && msg[i] < 0x7f);
}

/* ----------------------------------------------------------- encoding */

static void test_type_names(void **state)
{
	(void)state;
	assert_string_equal(stream_rec_type_name(STREAM_REC_SECTION), "section");
	assert_string_equal(stream_rec_type_name(STREAM_REC_RAM), "ram");
	assert_string_equal(stream_rec_type_name(STREAM_REC_PART), "part");
	assert_string_equal(stream_rec_type_name(STREAM_REC_DEVICE), "device");
	assert_string_equal(stream_rec_type_name(STREAM_REC_PASS_END), "pass-end");
	assert_string_equal(stream_rec_type_name(STREAM_REC_EOF), "eof");
	assert_string_equal(stream_rec_type_name(STREAM_REC_CHANNELS), "channels");
	assert_string_equal(stream_rec_type_name(0), "unknown");
	assert_string_equal(stream_rec_type_name(7), "unknown");
	assert_string_equal(stream_rec_type_name(0x7e), "unknown");
	assert_string_equal(stream_rec_type_name(0xffffffffu), "unknown");
}

static void test_header_layout_and_round_trip(void **state)
{
	static const uint8_t golden[32] = {
		'K', 'M', 'I', 'G', 'S', 'T', 'R', 'M',
		0x02, 0x00, 0x00, 0x00,			/* version */
		0x00, 0x10, 0x00, 0x00,			/* page_size 4096 */
		0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x00,	/* ram 5 GiB */
		0x04, 0x00, 0x00, 0x00,			/* nr_vcpus */
		0x00, 0x00, 0x00, 0x00,			/* flags */
	};
	struct stream_header h = { .version = STREAM_VERSION, .page_size = PAGE,
				   .ram_size = 5ull << 30, .nr_vcpus = 4, .flags = 0 };
	struct stream_header out;
	uint8_t buf[STREAM_HEADER_SIZE + 8];
	char err[256];
	struct memsrc m;
	struct stream_source src;

	(void)state;
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(stream_encode_header(buf, &h), STREAM_HEADER_SIZE);
	assert_memory_equal(buf, golden, sizeof(golden));
	assert_int_equal(buf[STREAM_HEADER_SIZE], 0xee);	/* nothing past the end */

	src = mem_source(&m, buf, STREAM_HEADER_SIZE);
	memset(&out, 0, sizeof(out));
	assert_int_equal(stream_read_header(&src, &out, err, sizeof(err)), 0);
	assert_int_equal(m.pos, STREAM_HEADER_SIZE);
	assert_string_equal(err, "");
	assert_int_equal(out.version, h.version);
	assert_int_equal(out.page_size, h.page_size);
	assert_int_equal(out.ram_size, h.ram_size);
	assert_int_equal(out.nr_vcpus, h.nr_vcpus);
	assert_int_equal(out.flags, 0);

	/* the edges of the accepted ranges */
	h.ram_size = PAGE;
	h.nr_vcpus = 1;
	stream_encode_header(buf, &h);
	assert_int_equal(decode_header(buf, STREAM_HEADER_SIZE, &out, err, sizeof(err)), 0);
	assert_int_equal(out.ram_size, PAGE);
	assert_int_equal(out.nr_vcpus, 1);
	h.ram_size = UINT64_MAX - (PAGE - 1);
	h.nr_vcpus = 1024;
	stream_encode_header(buf, &h);
	assert_int_equal(decode_header(buf, STREAM_HEADER_SIZE, &out, err, sizeof(err)), 0);
	assert_int_equal(out.ram_size, UINT64_MAX - (PAGE - 1));
	assert_int_equal(out.nr_vcpus, 1024);
}

static void test_section_layout_and_round_trip(void **state)
{
	static const uint8_t golden[] = {
		0x01, 0x00, 0x00, 0x00,		/* type SECTION */
		0x07, 0x00, 0x00, 0x00,		/* section_id */
		0x02, 0x00, 0x00, 0x00,		/* instance_id */
		0x03, 0x01, 0x00, 0x00,		/* version 0x103 */
		0x02, 0x00, 0x00, 0x00,		/* kind DEVICE */
		0x05, 0x00, 0x00, 0x00,		/* name_len */
		'a', 'p', 'i', 'c', '0',
	};
	struct stream_section s = { .section_id = 7, .instance_id = 2, .version = 0x103,
				    .kind = STREAM_SECTION_DEVICE, .name = "apic0" };
	static const struct stream_section cases[] = {
		{ 1, 0, 1, STREAM_SECTION_ITERABLE, "ram" },
		{ 2, 0, 4, STREAM_SECTION_DEVICE, "cpu" },
		{ 4095, 0xffffffffu, 0xffffffffu, STREAM_SECTION_DEVICE, "x" },
		{ 12, 3, 2, STREAM_SECTION_ITERABLE, "abcdefghijklmnopqrstuvwxyz0123456789_.-" },
		{ 13, 1, 1, STREAM_SECTION_DEVICE,
		  "0123456789012345678901234567890123456789012345678901234567890123" },
	};
	uint8_t buf[STREAM_SECTION_MAX_SIZE + 8];
	struct decoded d;
	char err[256];
	size_t i;
	int n;

	(void)state;
	memset(buf, 0xee, sizeof(buf));
	n = stream_encode_section(buf, sizeof(buf), &s);
	assert_int_equal(n, sizeof(golden));
	assert_memory_equal(buf, golden, sizeof(golden));
	assert_int_equal(buf[sizeof(golden)], 0xee);

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct stream_section *c = &cases[i];

		n = stream_encode_section(buf, sizeof(buf), c);
		assert_int_equal(n, 24 + strlen(c->name));
		assert_true((size_t)n <= STREAM_SECTION_MAX_SIZE);
		assert_int_equal(decode_record(buf, (size_t)n, &d, err, sizeof(err)), 0);
		assert_int_equal(d.type, STREAM_REC_SECTION);
		assert_int_equal(d.sec.section_id, c->section_id);
		assert_int_equal(d.sec.instance_id, c->instance_id);
		assert_int_equal(d.sec.version, c->version);
		assert_int_equal(d.sec.kind, c->kind);
		assert_string_equal(d.sec.name, c->name);
	}
}

static void test_section_encode_rejects(void **state)
{
	struct stream_section s = { .section_id = 1, .kind = STREAM_SECTION_DEVICE, .name = "cpu" };
	uint8_t buf[STREAM_SECTION_MAX_SIZE];

	(void)state;
	/* exact fit works, one byte less does not */
	assert_int_equal(stream_encode_section(buf, 27, &s), 27);
	assert_int_equal(stream_encode_section(buf, 26, &s), -ENOSPC);
	assert_int_equal(stream_encode_section(buf, 0, &s), -ENOSPC);
	assert_int_equal(stream_encode_section(NULL, sizeof(buf), &s), -EINVAL);
	assert_int_equal(stream_encode_section(buf, sizeof(buf), NULL), -EINVAL);

	strcpy(s.name, "");
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	strcpy(s.name, "Cpu");
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	strcpy(s.name, "cpu/0");
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	strcpy(s.name, "cpu 0");
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	memset(s.name, 'a', sizeof(s.name));	/* 65 chars, no NUL */
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);

	strcpy(s.name, "cpu");
	s.kind = 0;
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	s.kind = 3;
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
	s.kind = STREAM_SECTION_ITERABLE;
	s.section_id = STREAM_MAX_SECTIONS;
	assert_int_equal(stream_encode_section(buf, sizeof(buf), &s), -EINVAL);
}

static void test_ram_layout_and_round_trip(void **state)
{
	static const uint8_t golden_hdr[] = {
		0x02, 0x00, 0x00, 0x00,		/* type RAM */
		0x00, 0x00, 0x00, 0x00,		/* section_id */
		0x02, 0x00, 0x00, 0x00,		/* count */
	};
	static struct bb b;
	uint8_t hdr[STREAM_RAM_HDR_SIZE];
	uint64_t gpas[STREAM_MAX_PAGES_PER_REC];
	struct memsrc m;
	struct stream_source src;
	uint8_t page[PAGE];
	struct decoded d;
	char err[256];
	uint32_t i, count, id;

	(void)state;
	assert_int_equal(stream_encode_ram_hdr(hdr, 0, 2), STREAM_RAM_HDR_SIZE);
	assert_memory_equal(hdr, golden_hdr, sizeof(golden_hdr));

	/* a one-page record with data */
	b.n = 0;
	stream_encode_ram_hdr(hdr, 3, 1);
	bb_bytes(&b, hdr, sizeof(hdr));
	bb_u64(&b, stream_page_hdr(0x7000, 0));
	bb_fill(&b, 0xa5, PAGE);
	assert_int_equal(b.b[12], 0x00);
	assert_int_equal(b.b[13], 0x70);	/* little-endian page header */
	assert_int_equal(decode_record(b.b, b.n, &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_RAM);
	assert_int_equal(d.section_id, 3);
	assert_int_equal(d.count, 1);
	assert_int_equal(d.hdrs[0], 0x7000);
	assert_int_equal(d.first_payload[0], 0xa5);

	/* a full record: 256 pages, every 16th carries data, the rest zero;
	 * includes the highest page whose end does not wrap past 2^64 */
	b.n = 0;
	stream_encode_ram_hdr(hdr, 0, STREAM_MAX_PAGES_PER_REC);
	bb_bytes(&b, hdr, sizeof(hdr));
	for (i = 0; i < STREAM_MAX_PAGES_PER_REC; i++) {
		gpas[i] = i == 255 ? 0xffffffffffffe000ull : ((uint64_t)i * 3 + 1) << 12;
		bb_u64(&b, stream_page_hdr(gpas[i], i % 16 != 0));
	}
	for (i = 0; i < STREAM_MAX_PAGES_PER_REC; i += 16)
		bb_fill(&b, (uint8_t)i, PAGE);

	/* the codec reads exactly the header and the page headers */
	src = mem_source(&m, b.b, b.n);
	{
		enum stream_rec_type t;

		assert_int_equal(stream_read_type(&src, &t, err, sizeof(err)), 0);
		assert_int_equal(t, STREAM_REC_RAM);
	}
	assert_int_equal(stream_read_ram(&src, PAGE, &id, d.hdrs, &count, err, sizeof(err)), 0);
	assert_int_equal(m.pos, STREAM_RAM_HDR_SIZE + 8 * STREAM_MAX_PAGES_PER_REC);
	assert_int_equal(id, 0);
	assert_int_equal(count, STREAM_MAX_PAGES_PER_REC);
	for (i = 0; i < count; i++) {
		assert_int_equal(d.hdrs[i] & ~(uint64_t)(PAGE - 1), gpas[i]);
		assert_int_equal(!!(d.hdrs[i] & STREAM_PAGE_ZERO), i % 16 != 0);
		if (!(d.hdrs[i] & STREAM_PAGE_ZERO)) {
			assert_int_equal(src.read(src.opaque, page, PAGE), 0);
			assert_int_equal(page[0], (uint8_t)i);
			assert_int_equal(page[PAGE - 1], (uint8_t)i);
		}
	}
	assert_int_equal(m.pos, b.n);
}

static void test_blob_layout_and_round_trip(void **state)
{
	static const uint8_t golden[] = {
		0x04, 0x00, 0x00, 0x00,		/* type DEVICE */
		0x09, 0x00, 0x00, 0x00,		/* section_id */
		0x00, 0x02, 0x01, 0x00,		/* len 0x10200 */
	};
	static struct bb b;
	uint8_t hdr[STREAM_PAYLOAD_HDR_SIZE];
	struct memsrc m;
	struct stream_source src;
	struct decoded d;
	char err[256];
	uint32_t id, len;

	(void)state;
	assert_int_equal(stream_encode_payload_hdr(hdr, STREAM_REC_DEVICE, 9, 0x10200),
			 STREAM_PAYLOAD_HDR_SIZE);
	assert_memory_equal(hdr, golden, sizeof(golden));

	/* PART with a payload */
	b.n = 0;
	stream_encode_payload_hdr(hdr, STREAM_REC_PART, 0, 100);
	bb_bytes(&b, hdr, sizeof(hdr));
	bb_fill(&b, 0x5a, 100);
	assert_int_equal(decode_record(b.b, b.n, &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_PART);
	assert_int_equal(d.section_id, 0);
	assert_int_equal(d.len, 100);
	assert_int_equal(d.first_payload[0], 0x5a);

	/* DEVICE with an empty payload */
	b.n = 0;
	stream_encode_payload_hdr(hdr, STREAM_REC_DEVICE, 4095, 0);
	bb_bytes(&b, hdr, sizeof(hdr));
	assert_int_equal(decode_record(b.b, b.n, &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_DEVICE);
	assert_int_equal(d.section_id, 4095);
	assert_int_equal(d.len, 0);

	/* lengths exactly at the limits are accepted; the payload is not read */
	stream_encode_payload_hdr(hdr, STREAM_REC_DEVICE, 1, STREAM_MAX_DEVICE);
	src = mem_source(&m, hdr + 4, 8);
	assert_int_equal(stream_read_payload_hdr(&src, STREAM_MAX_DEVICE, &id, &len, err, sizeof(err)), 0);
	assert_int_equal(len, STREAM_MAX_DEVICE);
	assert_int_equal(m.pos, 8);
	stream_encode_payload_hdr(hdr, STREAM_REC_PART, 1, STREAM_MAX_PART);
	src = mem_source(&m, hdr + 4, 8);
	assert_int_equal(stream_read_payload_hdr(&src, STREAM_MAX_PART, &id, &len, err, sizeof(err)), 0);
	assert_int_equal(len, STREAM_MAX_PART);
	/* a caller's own smaller bound is honoured */
	stream_encode_payload_hdr(hdr, STREAM_REC_DEVICE, 1, 64);
	src = mem_source(&m, hdr + 4, 8);
	assert_int_equal(stream_read_payload_hdr(&src, 64, &id, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 64);
}

static void test_pass_end_layout_and_round_trip(void **state)
{
	static const uint8_t golden[] = { 0x05, 0, 0, 0, 0x2a, 0x01, 0, 0 };
	uint8_t buf[STREAM_PASS_END_SIZE];
	struct decoded d;
	char err[256];

	(void)state;
	assert_int_equal(stream_encode_pass_end(buf, 0x12a), STREAM_PASS_END_SIZE);
	assert_memory_equal(buf, golden, sizeof(golden));
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_PASS_END);
	assert_int_equal(d.pass, 0x12a);
	stream_encode_pass_end(buf, 1);
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.pass, 1);
	stream_encode_pass_end(buf, UINT32_MAX);
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.pass, UINT32_MAX);
}

static void test_eof_layout_and_round_trip(void **state)
{
	static const uint8_t golden[] = {
		0x7f, 0, 0, 0,			/* type EOF */
		0x0b, 0, 0, 0,			/* nr_sections */
		0, 0, 0, 0,			/* reserved */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,	/* nr_pages */
	};
	struct stream_eof e = { .nr_sections = 11, .nr_pages = 0x0102030405060708ull };
	uint8_t buf[STREAM_EOF_SIZE];
	struct decoded d;
	char err[256];

	(void)state;
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(stream_encode_eof(buf, &e), STREAM_EOF_SIZE);
	assert_memory_equal(buf, golden, sizeof(golden));
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_EOF);
	assert_int_equal(d.eof.nr_sections, 11);
	assert_int_equal(d.eof.nr_pages, 0x0102030405060708ull);

	e.nr_sections = STREAM_MAX_SECTIONS;
	e.nr_pages = 0;
	stream_encode_eof(buf, &e);
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.eof.nr_sections, STREAM_MAX_SECTIONS);
	assert_int_equal(d.eof.nr_pages, 0);
}

static void test_ack_layout_and_round_trip(void **state)
{
	static const uint8_t golden[] = {
		'K', 'M', 'I', 'G', 'A', 'C', 'K', '1',
		0xfb, 0xff, 0xff, 0xff,		/* status -5 */
		0x02, 0x00, 0x00, 0x00,		/* msg_len */
		'n', 'o',
	};
	uint8_t buf[STREAM_ACK_MAX_SIZE + 64];
	char msg[STREAM_MAX_ACK_MSG + 1], longmsg[400], err[256];
	int32_t status;
	size_t n;
	struct bb *b = malloc(sizeof(*b));

	(void)state;
	assert_non_null(b);
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(stream_encode_ack(buf, sizeof(buf), -EIO, "no"), sizeof(golden));
	assert_memory_equal(buf, golden, sizeof(golden));
	assert_int_equal(buf[sizeof(golden)], 0xee);

	n = stream_encode_ack(buf, sizeof(buf), 0, "loaded 3 sections");
	assert_int_equal(n, 16 + 17);
	memset(msg, 'x', sizeof(msg));
	assert_int_equal(decode_ack(buf, n, &status, msg, err, sizeof(err)), 0);
	assert_int_equal(status, 0);
	assert_string_equal(msg, "loaded 3 sections");

	/* empty message: both NULL and "" encode msg_len 0 */
	n = stream_encode_ack(buf, sizeof(buf), -EPROTO, NULL);
	assert_int_equal(n, 16);
	memset(msg, 'x', sizeof(msg));
	assert_int_equal(decode_ack(buf, n, &status, msg, err, sizeof(err)), 0);
	assert_int_equal(status, -EPROTO);
	assert_string_equal(msg, "");
	assert_int_equal(stream_encode_ack(buf, sizeof(buf), 0, ""), 16);

	/* msg may be NULL on decode: the text is consumed and dropped */
	n = stream_encode_ack(buf, sizeof(buf), -EINVAL, "bad");
	{
		struct memsrc m;
		struct stream_source src = mem_source(&m, buf, n);

		assert_int_equal(stream_read_ack(&src, &status, NULL, err, sizeof(err)), 0);
		assert_int_equal(status, -EINVAL);
		assert_int_equal(m.pos, n);
	}

	/* an over-long message is cut to the limit; a small buffer cuts more */
	memset(longmsg, 'm', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	n = stream_encode_ack(buf, sizeof(buf), -EIO, longmsg);
	assert_int_equal(n, 16 + STREAM_MAX_ACK_MSG);
	assert_int_equal(decode_ack(buf, n, &status, msg, err, sizeof(err)), 0);
	assert_int_equal(strlen(msg), STREAM_MAX_ACK_MSG);
	assert_int_equal(stream_encode_ack(buf, 20, -EIO, longmsg), 20);
	assert_int_equal(buf[12], 4);
	assert_int_equal(stream_encode_ack(buf, 16, -EIO, longmsg), 16);
	assert_int_equal(buf[12], 0);
	assert_int_equal(stream_encode_ack(buf, 15, -EIO, "x"), 0);
	assert_int_equal(stream_encode_ack(NULL, 100, -EIO, "x"), 0);

	/* only printable ASCII is kept */
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -EIO, 8, "a\nb\x01\x7f\xc3\xa9z", 8);
	assert_int_equal(decode_ack(b->b, b->n, &status, msg, err, sizeof(err)), 0);
	assert_string_equal(msg, "a?b????z");
	assert_int_equal(status, -EIO);
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -EIO, 3, "a\0b", 3);
	assert_int_equal(decode_ack(b->b, b->n, &status, msg, err, sizeof(err)), 0);
	assert_string_equal(msg, "a?b");

	/* the status range edge */
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -4095, 0, "", 0);
	assert_int_equal(decode_ack(b->b, b->n, &status, msg, err, sizeof(err)), 0);
	assert_int_equal(status, -4095);
	free(b);
}

/* a whole migration stream in the documented order */
static void test_full_stream(void **state)
{
	static const char *const devices[] = { "cpu", "apic", "ioapic", "pit", "kvmclock", "serial" };
	struct stream_header h = { STREAM_VERSION, PAGE, 64ull << 20, 2, 0 };
	struct stream_header hout;
	struct stream_section s;
	struct stream_eof e;
	struct memsrc m;
	struct stream_source src;
	struct decoded d;
	struct bb *b = malloc(sizeof(*b));
	uint8_t tmp[STREAM_SECTION_MAX_SIZE];
	char err[256], msg[STREAM_MAX_ACK_MSG + 1];
	uint32_t nsec = 0, npages = 0, i, pass;
	uint32_t seen[8] = { 0 };
	int32_t status;
	int n;

	(void)state;
	assert_non_null(b);
	b->n = 0;
	bb_bytes(b, tmp, stream_encode_header(tmp, &h));
	memset(&s, 0, sizeof(s));
	s.section_id = 7;
	s.version = 1;
	s.kind = STREAM_SECTION_ITERABLE;
	strcpy(s.name, "ram");
	n = stream_encode_section(tmp, sizeof(tmp), &s);
	assert_true(n > 0);
	bb_bytes(b, tmp, (size_t)n);
	nsec++;
	for (i = 0; i < 6; i++) {
		s.section_id = i + 1;
		s.kind = STREAM_SECTION_DEVICE;
		strcpy(s.name, devices[i]);
		n = stream_encode_section(tmp, sizeof(tmp), &s);
		assert_true(n > 0);
		bb_bytes(b, tmp, (size_t)n);
		nsec++;
	}
	for (pass = 1; pass <= 2; pass++) {
		bb_bytes(b, tmp, stream_encode_ram_hdr(tmp, 7, 2));
		bb_u64(b, stream_page_hdr(pass << 12, 0));
		bb_u64(b, stream_page_hdr(0x10000, 1));
		bb_fill(b, (uint8_t)pass, PAGE);
		npages += 2;
		bb_bytes(b, tmp, stream_encode_pass_end(tmp, pass));
	}
	bb_bytes(b, tmp, stream_encode_ram_hdr(tmp, 7, 1));	/* final RAM */
	bb_u64(b, stream_page_hdr(0x3000, 1));
	npages++;
	for (i = 0; i < 6; i++) {
		bb_bytes(b, tmp, stream_encode_payload_hdr(tmp, STREAM_REC_DEVICE, i + 1, 10 + i));
		bb_fill(b, (uint8_t)i, 10 + i);
	}
	e.nr_sections = nsec;
	e.nr_pages = npages;
	bb_bytes(b, tmp, stream_encode_eof(tmp, &e));

	/* decode it back like the loader */
	src = mem_source(&m, b->b, b->n);
	assert_int_equal(stream_read_header(&src, &hout, err, sizeof(err)), 0);
	assert_int_equal(hout.ram_size, 64ull << 20);
	nsec = npages = 0;
	for (;;) {
		assert_int_equal(decode_record_src(&src, &d, err, sizeof(err)), 0);
		check_decoded_in_bounds(&d);
		seen[d.type == STREAM_REC_EOF ? 7 : d.type]++;
		if (d.type == STREAM_REC_SECTION)
			nsec++;
		if (d.type == STREAM_REC_RAM)
			npages += d.count;
		if (d.type == STREAM_REC_DEVICE) {
			assert_int_equal(d.len, 10 + d.section_id - 1);
			assert_int_equal(d.first_payload[0], d.section_id - 1);
		}
		if (d.type == STREAM_REC_EOF)
			break;
	}
	assert_int_equal(m.pos, b->n);
	assert_int_equal(d.eof.nr_sections, nsec);
	assert_int_equal(d.eof.nr_pages, npages);
	assert_int_equal(seen[STREAM_REC_SECTION], 7);
	assert_int_equal(seen[STREAM_REC_RAM], 3);
	assert_int_equal(seen[STREAM_REC_PASS_END], 2);
	assert_int_equal(seen[STREAM_REC_DEVICE], 6);
	assert_int_equal(seen[7], 1);

	/* and the destination's answer */
	b->n = stream_encode_ack(b->b, sizeof(b->b), 0, "");
	assert_int_equal(decode_ack(b->b, b->n, &status, msg, err, sizeof(err)), 0);
	assert_int_equal(status, 0);
	free(b);
}

/* ---------------------------------------------------------- rejections */

static void expect_header_reject(const struct bb *b, const char *sub)
{
	struct stream_header h = { 0xdead, 0xdead, 0xdead, 0xdead, 0xdead };
	char err[256];

	assert_int_equal(decode_header(b->b, b->n, &h, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, sub);
	assert_int_equal(h.version, 0xdead);	/* output untouched on failure */
	assert_int_equal(h.ram_size, 0xdead);
}

static void test_header_bad_magic(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_header(&b, "KMIGSTRX", 1, PAGE, 1 << 20, 1, 0);
	expect_header_reject(&b, "bad stream magic 'KMIGSTRX' (expected KMIGSTRM)");
	b.n = 0;
	bb_header(&b, "KMIGACK1", 1, PAGE, 1 << 20, 1, 0);
	expect_header_reject(&b, "bad stream magic 'KMIGACK1'");
	b.n = 0;
	bb_header(&b, "\x00\x01KMIG\xffS", 1, PAGE, 1 << 20, 1, 0);
	expect_header_reject(&b, "bad stream magic '\\x00\\x01KMIG\\xffS' (expected KMIGSTRM)");
	b.n = 0;
	bb_header(&b, "kmigstrm", 1, PAGE, 1 << 20, 1, 0);
	expect_header_reject(&b, "bad stream magic");
}

static void test_header_bad_version(void **state)
{
	static const uint32_t bad[] = { 0, 1, 3, 7, 0x01000000, UINT32_MAX };
	static struct bb b;
	char want[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_header(&b, STREAM_MAGIC, bad[i], PAGE, 1 << 20, 1, 0);
		snprintf(want, sizeof(want),
			 "unsupported stream version %u (this kmig reads version 2)", bad[i]);
		expect_header_reject(&b, want);
	}
}

static void test_header_bad_page_size(void **state)
{
	static const uint32_t bad[] = { 0, 1, 512, 4095, 4097, 8192, 2u << 20 };
	static struct bb b;
	char want[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_header(&b, STREAM_MAGIC, STREAM_VERSION, bad[i], 1 << 22, 1, 0);
		snprintf(want, sizeof(want), "page size %u", bad[i]);
		expect_header_reject(&b, want);
	}
}

static void test_header_bad_flags(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, 1, 1);
	expect_header_reject(&b, "flags 0x1");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, 1, 0x80000000u);
	expect_header_reject(&b, "flags 0x80000000");
}

static void test_header_bad_ram_size(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 0, 1, 0);
	expect_header_reject(&b, "RAM size is 0");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, PAGE + 1, 1, 0);
	expect_header_reject(&b, "RAM size 4097 is not a multiple of the page size 4096");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 100, 1, 0);
	expect_header_reject(&b, "not a multiple of the page size");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, UINT64_MAX, 1, 0);
	expect_header_reject(&b, "not a multiple of the page size");
}

static void test_header_bad_vcpus(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, 0, 0);
	expect_header_reject(&b, "vCPU count 0 is outside 1..1024");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, 1025, 0);
	expect_header_reject(&b, "vCPU count 1025 is outside 1..1024");
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, UINT32_MAX, 0);
	expect_header_reject(&b, "vCPU count 4294967295");
}

static void test_type_unknown(void **state)
{
	static const uint32_t bad[] = { 0, 7, 8, 0x7e, 0x80, 0x100, 0x7f000000, UINT32_MAX };
	static struct bb b;
	enum stream_rec_type t = STREAM_REC_RAM;
	struct memsrc m;
	struct stream_source src;
	char err[256], want[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_u32(&b, bad[i]);
		bb_fill(&b, 0, 32);
		src = mem_source(&m, b.b, b.n);
		assert_int_equal(stream_read_type(&src, &t, err, sizeof(err)), -EPROTO);
		snprintf(want, sizeof(want), "unknown record type %u", bad[i]);
		assert_err_contains(err, want);
		assert_int_equal(t, STREAM_REC_RAM);
		assert_int_equal(m.pos, 4);
	}
}

static void expect_record_reject(const struct bb *b, const char *sub)
{
	struct decoded d;
	char err[256];

	assert_int_equal(decode_record(b->b, b->n, &d, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, sub);
}

static void test_section_bad_name_len(void **state)
{
	static const uint32_t bad[] = { 0, STREAM_MAX_NAME + 1, 1000, UINT32_MAX };
	static struct bb b;
	struct stream_section s;
	struct memsrc m;
	struct stream_source src;
	enum stream_rec_type t;
	char err[256], want[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_section(&b, 1, 0, 1, STREAM_SECTION_DEVICE, bad[i], "", 0);
		bb_fill(&b, 'a', 2000);	/* plenty of plausible name bytes */
		snprintf(want, sizeof(want), "name length %u is outside 1..64", bad[i]);
		expect_record_reject(&b, want);
		/* rejected before the name bytes are read */
		src = mem_source(&m, b.b, b.n);
		assert_int_equal(stream_read_type(&src, &t, err, sizeof(err)), 0);
		assert_int_equal(stream_read_section(&src, &s, err, sizeof(err)), -EPROTO);
		assert_int_equal(m.pos, 24);
	}
}

static void test_section_bad_name_chars(void **state)
{
	static const struct {
		const char *name;
		size_t len;
		const char *want;
	} bad[] = {
		{ "Cpu", 3, "invalid character 0x43 at offset 0" },
		{ "cpuA", 4, "invalid character 0x41 at offset 3" },
		{ "cpu/0", 5, "invalid character 0x2f at offset 3" },
		{ "cpu 0", 5, "invalid character 0x20 at offset 3" },
		{ "cpu\0", 4, "invalid character 0x00 at offset 3" },
		{ "a\nb", 3, "invalid character 0x0a at offset 1" },
		{ "caf\xc3\xa9", 5, "invalid character 0xc3 at offset 3" },
		{ "x'y", 3, "invalid character 0x27 at offset 1" },
		{ "ram+", 4, "invalid character 0x2b at offset 3" },
		{ "a:b", 3, "invalid character 0x3a at offset 1" },
	};
	static struct bb b;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_section(&b, 1, 0, 1, STREAM_SECTION_DEVICE, (uint32_t)bad[i].len, bad[i].name,
			   bad[i].len);
		expect_record_reject(&b, bad[i].want);
		expect_record_reject(&b, "SECTION record name");
	}
	/* non-printable bytes are escaped in the message */
	b.n = 0;
	bb_section(&b, 1, 0, 1, STREAM_SECTION_DEVICE, 3, "a\nb", 3);
	expect_record_reject(&b, "'a\\x0ab'");
}

static void test_section_bad_kind(void **state)
{
	static const uint32_t bad[] = { 0, 3, 0x100, UINT32_MAX };
	static struct bb b;
	char want[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.n = 0;
		bb_section(&b, 1, 0, 1, bad[i], 3, "pit", 3);
		snprintf(want, sizeof(want), "'pit' has unknown kind %u", bad[i]);
		expect_record_reject(&b, want);
	}
}

static void test_section_bad_id(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_section(&b, STREAM_MAX_SECTIONS, 0, 1, STREAM_SECTION_DEVICE, 3, "pit", 3);
	expect_record_reject(&b, "SECTION record section id 4096 is out of range");
	b.n = 0;
	bb_section(&b, UINT32_MAX, 0, 1, STREAM_SECTION_DEVICE, 3, "pit", 3);
	expect_record_reject(&b, "section id 4294967295");
	/* 0 is no id: it used to be reported as a duplicate section */
	b.n = 0;
	bb_section(&b, 0, 0, 1, STREAM_SECTION_DEVICE, 3, "pit", 3);
	expect_record_reject(&b, "SECTION record 'pit' has section id 0 (ids run from 1 to 4095)");
}

static void test_ram_bad_count(void **state)
{
	static struct bb b;
	uint32_t i;

	(void)state;
	b.n = 0;
	bb_u32(&b, STREAM_REC_RAM);
	bb_u32(&b, 0);
	bb_u32(&b, 0);
	bb_fill(&b, 0, 64);
	expect_record_reject(&b, "RAM record with 0 pages");

	b.n = 0;
	bb_u32(&b, STREAM_REC_RAM);
	bb_u32(&b, 0);
	bb_u32(&b, STREAM_MAX_PAGES_PER_REC + 1);
	for (i = 0; i < STREAM_MAX_PAGES_PER_REC + 1; i++)
		bb_u64(&b, stream_page_hdr((uint64_t)i << 12, 1));
	expect_record_reject(&b, "RAM record with 257 pages exceeds the limit of 256");

	b.n = 0;
	bb_u32(&b, STREAM_REC_RAM);
	bb_u32(&b, 0);
	bb_u32(&b, UINT32_MAX);
	bb_fill(&b, 0, 64);
	expect_record_reject(&b, "RAM record with 4294967295 pages exceeds the limit");
}

static void ram_one(struct bb *b, uint32_t id, uint32_t count, const uint64_t *hdrs)
{
	uint32_t i;

	b->n = 0;
	bb_u32(b, STREAM_REC_RAM);
	bb_u32(b, id);
	bb_u32(b, count);
	for (i = 0; i < count; i++)
		bb_u64(b, hdrs[i]);
}

static void test_ram_bad_page_header(void **state)
{
	static struct bb b;
	uint64_t hdrs[6] = { 0x1000, 0x2001, 0x3000, 0x4001, 0x5000, 0x6000 };
	uint64_t ok;
	uint32_t bit;
	char want[80];

	(void)state;
	ram_one(&b, 0, 1, (const uint64_t[]){ 0x1003 });
	expect_record_reject(&b, "page header 0x1003 has unknown flags 0x2");
	ram_one(&b, 0, 1, (const uint64_t[]){ 0x1800 });
	expect_record_reject(&b, "page header 0x1800 has unknown flags 0x800");
	ram_one(&b, 0, 1, (const uint64_t[]){ 0xfff });
	expect_record_reject(&b, "page header 0xfff has unknown flags 0xffe");
	/* a bad header after good ones */
	hdrs[4] = 0x5004;
	ram_one(&b, 0, 6, hdrs);
	expect_record_reject(&b, "page header 0x5004 has unknown flags 0x4");
	/* every low bit but ZERO is rejected */
	for (bit = 1; bit < 12; bit++) {
		ok = 0x40000000ull | (1ull << bit);
		ram_one(&b, 0, 1, &ok);
		snprintf(want, sizeof(want), "unknown flags 0x%llx", 1ull << bit);
		expect_record_reject(&b, want);
	}
	/* the last page of the 64-bit space: gpa + page_size wraps to 0 */
	ram_one(&b, 0, 1, (const uint64_t[]){ 0xfffffffffffff001ull });
	expect_record_reject(&b, "page header 0xfffffffffffff001 addresses a page that runs past"
			     " the end of the 64-bit address space");
	ram_one(&b, 0, 1, (const uint64_t[]){ 0xfffffffffffff000ull });
	expect_record_reject(&b, "64-bit address space");
	ram_one(&b, 0, 1, (const uint64_t[]){ 0xffffffffffffffffull });
	expect_record_reject(&b, "unknown flags 0xffe");
	/* and the section id */
	ram_one(&b, STREAM_MAX_SECTIONS, 1, (const uint64_t[]){ 0x1000 });
	expect_record_reject(&b, "RAM record section id 4096 is out of range");
}

static void test_ram_bad_args(void **state)
{
	static struct bb b;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	uint32_t id, count;
	struct memsrc m;
	struct stream_source src;
	char err[256];

	(void)state;
	ram_one(&b, 0, 1, (const uint64_t[]){ 0x1000 });
	src = mem_source(&m, b.b + 4, b.n - 4);
	assert_int_equal(stream_read_ram(&src, 8192, &id, hdrs, &count, err, sizeof(err)), -EINVAL);
	assert_err_contains(err, "page size 8192");
	assert_int_equal(stream_read_ram(&src, PAGE, &id, NULL, &count, err, sizeof(err)), -EINVAL);
	assert_int_equal(m.pos, 0);
	assert_int_equal(stream_read_ram(&src, PAGE, &id, hdrs, &count, err, sizeof(err)), 0);
	assert_int_equal(hdrs[0], 0x1000);
}

static void test_blob_too_long(void **state)
{
	static struct bb b;
	uint32_t id = 0xdead, len = 0xdead;
	struct memsrc m;
	struct stream_source src;
	char err[256];

	(void)state;
	b.n = 0;
	bb_u32(&b, STREAM_REC_DEVICE);
	bb_u32(&b, 3);
	bb_u32(&b, 2000000);
	expect_record_reject(&b, "DEVICE record length 2000000 exceeds the limit of 1048576 bytes");
	b.n = 0;
	bb_u32(&b, STREAM_REC_DEVICE);
	bb_u32(&b, 3);
	bb_u32(&b, STREAM_MAX_DEVICE + 1);
	expect_record_reject(&b, "DEVICE record length 1048577 exceeds the limit of 1048576 bytes");
	b.n = 0;
	bb_u32(&b, STREAM_REC_PART);
	bb_u32(&b, 0);
	bb_u32(&b, STREAM_MAX_PART + 1);
	expect_record_reject(&b, "PART record length 4194305 exceeds the limit of 4194304 bytes");
	b.n = 0;
	bb_u32(&b, STREAM_REC_PART);
	bb_u32(&b, 0);
	bb_u32(&b, UINT32_MAX);
	expect_record_reject(&b, "PART record length 4294967295 exceeds the limit");

	/* the caller's own bound */
	b.n = 0;
	bb_u32(&b, 3);
	bb_u32(&b, 101);
	src = mem_source(&m, b.b, b.n);
	assert_int_equal(stream_read_payload_hdr(&src, 100, &id, &len, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, "record length 101 exceeds the limit of 100 bytes");
	assert_int_equal(id, 0xdead);
	assert_int_equal(len, 0xdead);
	/* max 0 allows only empty blobs */
	b.n = 0;
	bb_u32(&b, 3);
	bb_u32(&b, 1);
	src = mem_source(&m, b.b, b.n);
	assert_int_equal(stream_read_payload_hdr(&src, 0, &id, &len, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, "record length 1 exceeds the limit of 0 bytes");
	/* a bound above the format's largest limit is clamped to it */
	b.n = 0;
	bb_u32(&b, 3);
	bb_u32(&b, STREAM_MAX_PART + 1);
	src = mem_source(&m, b.b, b.n);
	assert_int_equal(stream_read_payload_hdr(&src, UINT32_MAX, &id, &len, err, sizeof(err)),
			 -EPROTO);
	assert_err_contains(err, "exceeds the limit of 4194304 bytes");
}

static void test_blob_bad_id(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_u32(&b, STREAM_REC_DEVICE);
	bb_u32(&b, STREAM_MAX_SECTIONS);
	bb_u32(&b, 0);
	expect_record_reject(&b, "DEVICE record section id 4096 is out of range");
	b.n = 0;
	bb_u32(&b, STREAM_REC_PART);
	bb_u32(&b, UINT32_MAX);
	bb_u32(&b, 0);
	expect_record_reject(&b, "PART record section id 4294967295 is out of range");
}

static void test_pass_end_zero(void **state)
{
	static struct bb b;

	(void)state;
	b.n = 0;
	bb_u32(&b, STREAM_REC_PASS_END);
	bb_u32(&b, 0);
	expect_record_reject(&b, "PASS_END record with pass number 0");
}

/* multifd: the CHANNELS record and a RAM channel's hello */
static void test_channels_round_trip(void **state)
{
	uint8_t buf[STREAM_CHANNELS_SIZE], hb[STREAM_CHAN_HELLO_SIZE];
	struct stream_channels c = { .nr = 4, .cookie = 0x0123456789abcdefull };
	struct stream_chan_hello h = { .index = 3, .nr = 4, .cookie = c.cookie }, g;
	struct decoded d;
	struct memsrc m;
	struct stream_source src;
	char err[256];

	(void)state;
	assert_int_equal(stream_encode_channels(buf, &c), STREAM_CHANNELS_SIZE);
	assert_int_equal(decode_record(buf, sizeof(buf), &d, err, sizeof(err)), 0);
	assert_int_equal(d.type, STREAM_REC_CHANNELS);
	assert_int_equal(d.channels.nr, 4);
	assert_true(d.channels.cookie == c.cookie);
	assert_int_equal(stream_encode_chan_hello(hb, &h), STREAM_CHAN_HELLO_SIZE);
	assert_memory_equal(hb, STREAM_CHAN_MAGIC, 8);
	src = mem_source(&m, hb, sizeof(hb));
	assert_int_equal(stream_read_chan_hello(&src, &g, err, sizeof(err)), 0);
	assert_int_equal(g.index, 3);
	assert_int_equal(g.nr, 4);
	assert_true(g.cookie == c.cookie);
}

static void test_channels_bad(void **state)
{
	static const uint32_t bad_nr[] = { 0, STREAM_MAX_CHANNELS + 1, UINT32_MAX };
	static struct bb b;
	uint8_t hb[STREAM_CHAN_HELLO_SIZE];
	struct stream_chan_hello g;
	struct memsrc m;
	struct stream_source src;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad_nr) / sizeof(bad_nr[0]); i++) {
		b.n = 0;
		bb_u32(&b, STREAM_REC_CHANNELS);
		bb_u32(&b, bad_nr[i]);
		bb_u32(&b, 0);
		bb_u64(&b, 1);
		expect_record_reject(&b, "channels (1..255 allowed)");
	}
	b.n = 0;
	bb_u32(&b, STREAM_REC_CHANNELS);
	bb_u32(&b, 2);
	bb_u32(&b, 7);
	bb_u64(&b, 1);
	expect_record_reject(&b, "CHANNELS record reserved field is 0x7");
	/* a hello: index must be below nr, nr in range, magic exact */
	stream_encode_chan_hello(hb, &(struct stream_chan_hello){ .index = 4, .nr = 4 });
	src = mem_source(&m, hb, sizeof(hb));
	assert_int_equal(stream_read_chan_hello(&src, &g, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, "channel 4 of 4");
	stream_encode_chan_hello(hb, &(struct stream_chan_hello){ .index = 0, .nr = 0 });
	src = mem_source(&m, hb, sizeof(hb));
	assert_int_equal(stream_read_chan_hello(&src, &g, err, sizeof(err)), -EPROTO);
	stream_encode_chan_hello(hb, &(struct stream_chan_hello){ .index = 0, .nr = 1 });
	memcpy(hb, STREAM_MAGIC, 8);
	src = mem_source(&m, hb, sizeof(hb));
	assert_int_equal(stream_read_chan_hello(&src, &g, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, "bad channel magic");
	src = mem_source(&m, hb, 10);
	assert_int_equal(stream_read_chan_hello(&src, &g, err, sizeof(err)), -EPIPE);
}

static void test_eof_bad(void **state)
{
	static struct bb b;
	struct stream_eof e = { 0xdead, 0xdead };
	struct memsrc m;
	struct stream_source src;
	char err[256];

	(void)state;
	b.n = 0;
	bb_u32(&b, STREAM_REC_EOF);
	bb_u32(&b, 3);
	bb_u32(&b, 1);
	bb_u64(&b, 10);
	expect_record_reject(&b, "EOF record reserved field is 0x1 (must be 0)");
	src = mem_source(&m, b.b + 4, b.n - 4);
	assert_int_equal(stream_read_eof(&src, &e, err, sizeof(err)), -EPROTO);
	assert_int_equal(e.nr_sections, 0xdead);
	assert_int_equal(e.nr_pages, 0xdead);

	b.n = 0;
	bb_u32(&b, STREAM_REC_EOF);
	bb_u32(&b, 3);
	bb_u32(&b, 0xffffffffu);
	bb_u64(&b, 10);
	expect_record_reject(&b, "reserved field is 0xffffffff");

	b.n = 0;
	bb_u32(&b, STREAM_REC_EOF);
	bb_u32(&b, STREAM_MAX_SECTIONS + 1);
	bb_u32(&b, 0);
	bb_u64(&b, 10);
	expect_record_reject(&b, "EOF record section count 4097 exceeds the limit of 4096");
}

static void expect_ack_reject(const struct bb *b, const char *sub)
{
	int32_t status = 12345;
	char msg[STREAM_MAX_ACK_MSG + 1] = "untouched", err[256];

	assert_int_equal(decode_ack(b->b, b->n, &status, msg, err, sizeof(err)), -EPROTO);
	assert_err_contains(err, sub);
	assert_int_equal(status, 12345);
	assert_string_equal(msg, "untouched");
}

/* COMMIT, the source's decision after a positive ACK: its bytes, both
 * decisions back, and every malformed or cut one refused. */
static void test_commit(void **state)
{
	static const uint8_t golden[STREAM_COMMIT_SIZE] = { 'K', 'M', 'I', 'G', 'C', 'M', 'T', '1', 1, 0, 0, 0,
							    0, 0, 0, 0 };
	uint8_t buf[STREAM_COMMIT_SIZE];
	enum stream_commit d = STREAM_COMMIT_ABORT;
	char err[256];
	struct memsrc m;
	struct stream_source src;

	(void)state;
	stream_encode_commit(buf, STREAM_COMMIT_GO);
	assert_memory_equal(buf, golden, sizeof(buf));
	src = mem_source(&m, buf, sizeof(buf));
	assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), 0);
	assert_int_equal(d, STREAM_COMMIT_GO);
	stream_encode_commit(buf, STREAM_COMMIT_ABORT);
	src = mem_source(&m, buf, sizeof(buf));
	assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), 0);
	assert_int_equal(d, STREAM_COMMIT_ABORT);
	/* cut at every byte */
	for (size_t n = 0; n < sizeof(buf); n++) {
		src = mem_source(&m, buf, n);
		assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), -EPIPE);
	}
	memcpy(buf, STREAM_ACK_MAGIC, 8);
	src = mem_source(&m, buf, sizeof(buf));
	assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "bad COMMIT magic 'KMIGACK1'"));
	stream_encode_commit(buf, STREAM_COMMIT_GO);
	buf[8] = 2;
	src = mem_source(&m, buf, sizeof(buf));
	assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "COMMIT decision 2 (reserved 0) is neither go (1) nor abort (0)"));
	buf[8] = 1;
	buf[15] = 1;
	src = mem_source(&m, buf, sizeof(buf));
	assert_int_equal(stream_read_commit(&src, &d, err, sizeof(err)), -EPROTO);
}

static void test_ack_bad(void **state)
{
	struct bb *b = malloc(sizeof(*b));

	(void)state;
	assert_non_null(b);
	b->n = 0;
	bb_ack(b, "KMIGACK2", 0, 0, "", 0);
	expect_ack_reject(b, "bad ACK magic 'KMIGACK2' (expected KMIGACK1)");
	b->n = 0;
	bb_ack(b, STREAM_MAGIC, 0, 0, "", 0);
	expect_ack_reject(b, "bad ACK magic 'KMIGSTRM'");

	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -EIO, STREAM_MAX_ACK_MSG + 1, "", 0);
	bb_fill(b, 'x', 1000);
	expect_ack_reject(b, "ACK message length 257 exceeds the limit of 256 bytes");
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -EIO, UINT32_MAX, "", 0);
	expect_ack_reject(b, "ACK message length 4294967295 exceeds the limit");

	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, 1, 0, "", 0);
	expect_ack_reject(b, "ACK status 1 is neither 0 nor a negative errno");
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, -4096, 0, "", 0);
	expect_ack_reject(b, "ACK status -4096");
	b->n = 0;
	bb_ack(b, STREAM_ACK_MAGIC, INT32_MIN, 0, "", 0);
	expect_ack_reject(b, "ACK status -2147483648");
	free(b);
}

/* ---------------------------------------------- source errors, err buffer */

static int err_read(void *opaque, void *buf, size_t len)
{
	(void)buf;
	(void)len;
	return *(int *)opaque;
}

static void test_source_errors(void **state)
{
	static const int codes[] = { -EIO, -ECONNRESET, -ETIMEDOUT, -EINTR };
	int code;
	struct stream_source src = { .read = err_read, .opaque = &code };
	struct stream_header h;
	struct stream_section s;
	struct stream_eof e;
	enum stream_rec_type t;
	uint64_t hdrs[STREAM_MAX_PAGES_PER_REC];
	uint32_t a, c;
	int32_t st;
	char err[256], msg[STREAM_MAX_ACK_MSG + 1], want[32];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		code = codes[i];
		snprintf(want, sizeof(want), "errno %d", -code);
		assert_int_equal(stream_read_header(&src, &h, err, sizeof(err)), code);
		assert_err_contains(err, "stream header");
		assert_err_contains(err, want);
		assert_err_contains(err, strerror(-code));	/* in words too */
		assert_int_equal(stream_read_type(&src, &t, err, sizeof(err)), code);
		assert_err_contains(err, "record type");
		assert_int_equal(stream_read_section(&src, &s, err, sizeof(err)), code);
		assert_int_equal(stream_read_ram(&src, PAGE, &a, hdrs, &c, err, sizeof(err)), code);
		assert_int_equal(stream_read_payload_hdr(&src, STREAM_MAX_PART, &a, &c, err, sizeof(err)),
				 code);
		assert_int_equal(stream_read_pass_end(&src, &a, err, sizeof(err)), code);
		assert_int_equal(stream_read_eof(&src, &e, err, sizeof(err)), code);
		assert_int_equal(stream_read_ack(&src, &st, msg, err, sizeof(err)), code);
		assert_err_contains(err, want);
	}
	/* a source breaking its contract (positive return) is an I/O error */
	code = 5;
	assert_int_equal(stream_read_header(&src, &h, err, sizeof(err)), -EIO);
	assert_err_contains(err, "returned 5");
	/* no source at all */
	assert_int_equal(stream_read_header(NULL, &h, err, sizeof(err)), -EINVAL);
	src.read = NULL;
	assert_int_equal(stream_read_type(&src, &t, err, sizeof(err)), -EINVAL);
	/* a failure after a successful partial read: header OK, name fails */
	{
		static struct bb b;
		struct memsrc m;
		struct stream_source ms;

		b.n = 0;
		bb_u32(&b, 1);
		bb_u32(&b, 0);
		bb_u32(&b, 1);
		bb_u32(&b, STREAM_SECTION_DEVICE);
		bb_u32(&b, 5);
		ms = mem_source(&m, b.b, b.n);
		assert_int_equal(stream_read_section(&ms, &s, err, sizeof(err)), -EPIPE);
		assert_string_equal(err, "stream truncated while reading a SECTION record name");
	}
}

static void test_err_buffer_optional(void **state)
{
	static struct bb b;
	struct stream_header h;
	char small[8];

	(void)state;
	b.n = 0;
	bb_header(&b, "XXXXXXXX", 1, PAGE, 1 << 20, 1, 0);
	assert_int_equal(decode_header(b.b, b.n, &h, NULL, 0), -EPROTO);
	assert_int_equal(decode_header(b.b, b.n, &h, NULL, 100), -EPROTO);
	memset(small, 'z', sizeof(small));
	assert_int_equal(decode_header(b.b, b.n, &h, small, 0), -EPROTO);
	assert_int_equal(small[0], 'z');
	assert_int_equal(decode_header(b.b, b.n, &h, small, sizeof(small)), -EPROTO);
	assert_string_equal(small, "bad str");
	assert_int_equal(decode_header(b.b, 5, &h, NULL, 0), -EPIPE);
	/* success clears a previous message */
	b.n = 0;
	bb_header(&b, STREAM_MAGIC, STREAM_VERSION, PAGE, 1 << 20, 1, 0);
	strcpy(small, "old");
	assert_int_equal(decode_header(b.b, b.n, &h, small, sizeof(small)), 0);
	assert_string_equal(small, "");
}

/* ---------------------------------------------------------- truncation */

/* Every valid record, encoded in full (payloads included). */
struct sample {
	const char *what;
	int kind;		/* 0 header, 1 record, 2 ack */
	uint8_t buf[2 * PAGE + 512];
	size_t len;
};

#define NR_SAMPLES 11
static struct sample samples[NR_SAMPLES];

static void build_samples(void)
{
	struct stream_header h = { STREAM_VERSION, PAGE, 1ull << 30, 4, 0 };
	struct stream_section s = { 5, 0, 2, STREAM_SECTION_DEVICE, "kvmclock" };
	struct stream_section s2 = { 1, 0, 1, STREAM_SECTION_ITERABLE, "ram" };
	struct stream_eof e = { 12, 123456789 };
	static struct bb b;
	int i = 0, n;
	uint8_t *p;

	memset(samples, 0, sizeof(samples));

	samples[i].what = "header";
	samples[i].kind = 0;
	samples[i].len = stream_encode_header(samples[i].buf, &h);
	i++;

	samples[i].what = "section";
	samples[i].kind = 1;
	n = stream_encode_section(samples[i].buf, sizeof(samples[i].buf), &s);
	assert_true(n > 0);
	samples[i].len = (size_t)n;
	i++;

	samples[i].what = "section-ram";
	samples[i].kind = 1;
	n = stream_encode_section(samples[i].buf, sizeof(samples[i].buf), &s2);
	assert_true(n > 0);
	samples[i].len = (size_t)n;
	i++;

	/* RAM: zero, data, zero, data */
	b.n = 0;
	p = b.b;
	b.n = stream_encode_ram_hdr(p, 0, 4);
	bb_u64(&b, stream_page_hdr(0x1000, 1));
	bb_u64(&b, stream_page_hdr(0x2000, 0));
	bb_u64(&b, stream_page_hdr(0x3000, 1));
	bb_u64(&b, stream_page_hdr(0x4000, 0));
	bb_fill(&b, 0x11, PAGE);
	bb_fill(&b, 0x22, PAGE);
	samples[i].what = "ram";
	samples[i].kind = 1;
	assert_true(b.n <= sizeof(samples[i].buf));
	memcpy(samples[i].buf, b.b, b.n);
	samples[i].len = b.n;
	i++;

	/* RAM: a single zero page (no payload at all) */
	b.n = stream_encode_ram_hdr(b.b, 0, 1);
	bb_u64(&b, stream_page_hdr(0x9000, 1));
	samples[i].what = "ram-zero";
	samples[i].kind = 1;
	memcpy(samples[i].buf, b.b, b.n);
	samples[i].len = b.n;
	i++;

	samples[i].what = "part";
	samples[i].kind = 1;
	samples[i].len = stream_encode_payload_hdr(samples[i].buf, STREAM_REC_PART, 0, 40);
	memset(samples[i].buf + samples[i].len, 0x33, 40);
	samples[i].len += 40;
	i++;

	samples[i].what = "device";
	samples[i].kind = 1;
	samples[i].len = stream_encode_payload_hdr(samples[i].buf, STREAM_REC_DEVICE, 3, 17);
	memset(samples[i].buf + samples[i].len, 0x44, 17);
	samples[i].len += 17;
	i++;

	samples[i].what = "pass-end";
	samples[i].kind = 1;
	samples[i].len = stream_encode_pass_end(samples[i].buf, 3);
	i++;

	samples[i].what = "eof";
	samples[i].kind = 1;
	samples[i].len = stream_encode_eof(samples[i].buf, &e);
	i++;

	samples[i].what = "ack";
	samples[i].kind = 2;
	samples[i].len = stream_encode_ack(samples[i].buf, sizeof(samples[i].buf), -EPROTO,
					   "section 'foo' is not registered");
	i++;

	samples[i].what = "ack-empty";
	samples[i].kind = 2;
	samples[i].len = stream_encode_ack(samples[i].buf, sizeof(samples[i].buf), 0, NULL);
	i++;
	assert_int_equal(i, NR_SAMPLES);
}

static int decode_sample(const struct sample *smp, const uint8_t *p, size_t n, char *err,
			 size_t errlen)
{
	struct stream_header h;
	struct decoded d;
	int32_t status;
	char msg[STREAM_MAX_ACK_MSG + 1];
	int r;

	switch (smp->kind) {
	case 0:
		r = decode_header(p, n, &h, err, errlen);
		if (!r)
			check_header_in_bounds(&h);
		return r;
	case 1:
		r = decode_record(p, n, &d, err, errlen);
		if (!r)
			check_decoded_in_bounds(&d);
		return r;
	default:
		r = decode_ack(p, n, &status, msg, err, errlen);
		if (!r)
			check_ack_in_bounds(status, msg);
		return r;
	}
}

static void test_truncation_everywhere(void **state)
{
	char err[256];
	size_t i, n;
	int r;

	(void)state;
	build_samples();
	for (i = 0; i < NR_SAMPLES; i++) {
		const struct sample *smp = &samples[i];
		uint8_t *copy;

		assert_int_equal(decode_sample(smp, smp->buf, smp->len, err, sizeof(err)), 0);
		for (n = 0; n < smp->len; n++) {
			/* an exactly-sized heap copy, so ASan sees any over-read */
			copy = malloc(n ? n : 1);
			assert_non_null(copy);
			memcpy(copy, smp->buf, n);
			err[0] = '\0';
			r = decode_sample(smp, copy, n, err, sizeof(err));
			if (r != -EPIPE)
				fail_msg("%s truncated to %zu of %zu bytes: got %d (%s), expected -EPIPE",
					 smp->what, n, smp->len, r, err);
			if (strncmp(err, "stream truncated while reading ", 31))
				fail_msg("%s truncated to %zu bytes: message \"%s\"", smp->what, n, err);
			free(copy);
		}
	}
}

/* ---------------------------------------------------------------- fuzz */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void mutate(uint8_t *p, size_t n, size_t limit)
{
	unsigned int k, flips;

	switch (rng() % 4) {
	case 0:	/* a few bit flips */
		flips = 1 + (unsigned int)(rng() % 4);
		for (k = 0; k < flips; k++)
			p[rng() % limit] ^= (uint8_t)(1u << (rng() % 8));
		break;
	case 1:	/* random bytes at random places */
		flips = 1 + (unsigned int)(rng() % 6);
		for (k = 0; k < flips; k++)
			p[rng() % limit] = (uint8_t)rng();
		break;
	case 2:	/* an interesting 32-bit value at a 4-byte aligned offset */
	{
		static const uint32_t vals[] = { 0, 1, 2, 0x7f, 0x80, 0xff, 0xfff, 0x1000, 0x1001,
						 256, 257, 64, 65, 4095, 4096, 1024, 1025,
						 1u << 20, (1u << 20) + 1, 4u << 20, (4u << 20) + 1,
						 0x7fffffff, 0x80000000u, 0xffffffffu };
		size_t off = (rng() % (limit / 4)) * 4;
		uint32_t v = vals[rng() % (sizeof(vals) / sizeof(vals[0]))];

		p[off] = (uint8_t)v;
		p[off + 1] = (uint8_t)(v >> 8);
		p[off + 2] = (uint8_t)(v >> 16);
		p[off + 3] = (uint8_t)(v >> 24);
		break;
	}
	default:	/* everything random */
		for (k = 0; k < n; k++)
			p[k] = (uint8_t)rng();
		break;
	}
}

static void test_fuzz(void **state)
{
	enum { ITERS = 4000 };
	uint8_t *buf;
	char err[256];
	size_t i, n, cut;
	unsigned int it, accepted = 0, rejected = 0, truncated = 0;
	int r;

	(void)state;
	build_samples();
	for (i = 0; i < NR_SAMPLES; i++) {
		const struct sample *smp = &samples[i];
		size_t limit = smp->len < 64 ? smp->len : 64;	/* mutate the headers */

		if (smp->kind == 1 && samples[i].buf[0] == STREAM_REC_RAM)
			limit = smp->len < 12 + 8 * 4 ? smp->len : 12 + 8 * 4;
		for (it = 0; it < ITERS; it++) {
			uint64_t seed = rng_state;

			n = smp->len;
			/* sometimes cut the mutated input short as well */
			cut = rng() % 8 == 0 ? (size_t)(rng() % (n + 1)) : n;
			buf = malloc(n);
			assert_non_null(buf);
			memcpy(buf, smp->buf, n);
			mutate(buf, n, limit);
			err[0] = '\0';
			r = decode_sample(smp, buf, cut, err, sizeof(err));
			if (r == 0)
				accepted++;
			else if (r == -EPROTO)
				rejected++;
			else if (r == -EPIPE)
				truncated++;
			else
				fail_msg("%s (seed 0x%" PRIx64 "): unexpected result %d (%s)",
					 smp->what, seed, r, err);
			if (r && !err[0])
				fail_msg("%s (seed 0x%" PRIx64 "): error %d without a message",
					 smp->what, seed, r);
			free(buf);
		}
	}
	/* the loop must exercise all outcomes */
	assert_true(accepted > 0);
	assert_true(rejected > 0);
	assert_true(truncated > 0);
	print_message("fuzz: %u accepted, %u rejected, %u truncated\n", accepted, rejected,
		      truncated);
}

/* fully random type words followed by random bodies */
static void test_fuzz_random_records(void **state)
{
	static uint8_t buf[12 + 8 * STREAM_MAX_PAGES_PER_REC + PAGE];
	char err[256];
	struct decoded d;
	unsigned int it;
	size_t n, k;
	int r;

	(void)state;
	for (it = 0; it < 4000; it++) {
		n = (size_t)(rng() % sizeof(buf));
		for (k = 0; k < n; k++)
			buf[k] = (uint8_t)rng();
		/* mostly valid type words, so the bodies get exercised */
		if (n >= 4 && rng() % 4) {
			static const uint32_t types[] = { 1, 2, 3, 4, 5, 0x7f };
			uint32_t t = types[rng() % 6];

			buf[0] = (uint8_t)t;
			buf[1] = buf[2] = buf[3] = 0;
			/* and small counts / lengths half of the time */
			if (n >= 12 && rng() % 2) {
				buf[8] = (uint8_t)(rng() % 8);
				buf[9] = buf[10] = buf[11] = 0;
				buf[4] = (uint8_t)(rng() % 16);
				buf[5] = buf[6] = buf[7] = 0;
			}
		}
		r = decode_record(buf, n, &d, err, sizeof(err));
		assert_true(r == 0 || r == -EPROTO || r == -EPIPE);
		if (!r)
			check_decoded_in_bounds(&d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_header_layout_and_round_trip),
		cmocka_unit_test(test_section_layout_and_round_trip),
		cmocka_unit_test(test_section_encode_rejects),
		cmocka_unit_test(test_ram_layout_and_round_trip),
		cmocka_unit_test(test_blob_layout_and_round_trip),
		cmocka_unit_test(test_pass_end_layout_and_round_trip),
		cmocka_unit_test(test_eof_layout_and_round_trip),
		cmocka_unit_test(test_ack_layout_and_round_trip),
		cmocka_unit_test(test_full_stream),
		cmocka_unit_test(test_header_bad_magic),
		cmocka_unit_test(test_header_bad_version),
		cmocka_unit_test(test_commit),
		cmocka_unit_test(test_header_bad_page_size),
		cmocka_unit_test(test_header_bad_flags),
		cmocka_unit_test(test_header_bad_ram_size),
		cmocka_unit_test(test_header_bad_vcpus),
		cmocka_unit_test(test_type_unknown),
		cmocka_unit_test(test_section_bad_name_len),
		cmocka_unit_test(test_section_bad_name_chars),
		cmocka_unit_test(test_section_bad_kind),
		cmocka_unit_test(test_section_bad_id),
		cmocka_unit_test(test_ram_bad_count),
		cmocka_unit_test(test_ram_bad_page_header),
		cmocka_unit_test(test_ram_bad_args),
		cmocka_unit_test(test_blob_too_long),
		cmocka_unit_test(test_blob_bad_id),
		cmocka_unit_test(test_pass_end_zero),
		cmocka_unit_test(test_eof_bad),
		cmocka_unit_test(test_channels_round_trip),
		cmocka_unit_test(test_channels_bad),
		cmocka_unit_test(test_ack_bad),
		cmocka_unit_test(test_source_errors),
		cmocka_unit_test(test_err_buffer_optional),
		cmocka_unit_test(test_truncation_everywhere),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_fuzz_random_records),
	};

	return cmocka_run_group_tests_name("stream-codec", tests, NULL, NULL);
}
