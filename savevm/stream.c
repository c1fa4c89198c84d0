/* savevm/stream.c — encoder and validating decoder for the kmig migration
 * stream, version 2.  The format is specified in stream.h and, for people,
 * in docs/stream-format.md.
 *
 * Every multi-byte field is stored and loaded byte by byte in little-endian
 * order, so nothing here depends on the host's byte order or alignment.
 * Decoders validate a record completely before they return success and
 * write their outputs only on success (except for the caller-provided page
 * header array of stream_read_ram, which is scratch space until then).
 * Nothing allocates, nothing touches errno.
 */
#include "savevm/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "common/vm-types.h"

/* The largest errno value the kernel ever returns (MAX_ERRNO). */
#define STREAM_MAX_ERRNO 4095
/* stream header, version 2: the only page size */
#define STREAM_PAGE_SIZE 4096u
#define STREAM_MAX_VCPUS 1024u
_Static_assert(KMIG_MAX_VCPUS <= STREAM_MAX_VCPUS, "every VM kmig runs fits the stream format");

/* ---------------------------------------------------------------- helpers */

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void clear_err(char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
}

/* Render n untrusted bytes for a message: printable ASCII as is (except the
 * quote and backslash), everything else as \xNN.  out must hold 4 * n + 1. */
static void escape_bytes(char *out, const uint8_t *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\') {
			*out++ = (char)p[i];
		} else {
			*out++ = '\\';
			*out++ = 'x';
			*out++ = hex[p[i] >> 4];
			*out++ = hex[p[i] & 0xf];
		}
	}
	*out = '\0';
}

static int name_char_ok(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* index of the first character outside [a-z0-9_.-], or n if there is none */
static size_t name_bad_char(const uint8_t *name, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!name_char_ok(name[i]))
			break;
	return i;
}

/* Read exactly len bytes of <what>; maps the source's result to ours. */
static int read_exact(const struct stream_source *src, void *buf, size_t len, const char *what,
		      char *err, size_t errlen)
{
	int r;

	if (!src || !src->read) {
		kmig_set_err(err, errlen, "no stream source to read %s from", what);
		return -EINVAL;
	}
	if (!len)
		return 0;
	r = src->read(src->opaque, buf, len);
	if (r == 0)
		return 0;
	if (r == -EPIPE) {
		kmig_set_err(err, errlen, "stream truncated while reading %s", what);
		return -EPIPE;
	}
	if (r < 0) {
		kmig_set_err(err, errlen, "read error while reading %s: %s (errno %d)", what, strerror(-r), -r);
		return r;
	}
	kmig_set_err(err, errlen, "stream source returned %d (not 0 or -errno) while reading %s", r,
		     what);
	return -EIO;
}

static int check_section_id(const char *rec, uint32_t id, char *err, size_t errlen)
{
	if (id < STREAM_MAX_SECTIONS)
		return 0;
	kmig_set_err(err, errlen, "%s record section id %" PRIu32 " is out of range (must be below %u)",
		     rec, id, STREAM_MAX_SECTIONS);
	return -EPROTO;
}

const char *stream_rec_type_name(uint32_t type)
{
	switch (type) {
	case STREAM_REC_SECTION:
		return "section";
	case STREAM_REC_RAM:
		return "ram";
	case STREAM_REC_PART:
		return "part";
	case STREAM_REC_DEVICE:
		return "device";
	case STREAM_REC_PASS_END:
		return "pass-end";
	case STREAM_REC_CHANNELS:
		return "channels";
	case STREAM_REC_EOF:
		return "eof";
	default:
		return "unknown";
	}
}

/* --------------------------------------------------------------- encoders */

size_t stream_encode_header(uint8_t buf[STREAM_HEADER_SIZE], const struct stream_header *h)
{
	memcpy(buf, STREAM_MAGIC, 8);
	put_le32(buf + 8, h->version);
	put_le32(buf + 12, h->page_size);
	put_le64(buf + 16, h->ram_size);
	put_le32(buf + 24, h->nr_vcpus);
	put_le32(buf + 28, h->flags);
	return STREAM_HEADER_SIZE;
}

int stream_encode_section(uint8_t *buf, size_t len, const struct stream_section *s)
{
	size_t name_len, need;

	if (!buf || !s)
		return -EINVAL;
	name_len = strnlen(s->name, sizeof(s->name));
	if (name_len == 0 || name_len > STREAM_MAX_NAME)
		return -EINVAL;
	if (name_bad_char((const uint8_t *)s->name, name_len) != name_len)
		return -EINVAL;
	if (s->kind != STREAM_SECTION_ITERABLE && s->kind != STREAM_SECTION_DEVICE)
		return -EINVAL;
	if (s->section_id >= STREAM_MAX_SECTIONS)
		return -EINVAL;
	need = 6 * 4 + name_len;
	if (len < need)
		return -ENOSPC;
	put_le32(buf, STREAM_REC_SECTION);
	put_le32(buf + 4, s->section_id);
	put_le32(buf + 8, s->instance_id);
	put_le32(buf + 12, s->version);
	put_le32(buf + 16, s->kind);
	put_le32(buf + 20, (uint32_t)name_len);
	memcpy(buf + 24, s->name, name_len);
	return (int)need;
}

size_t stream_encode_ram_hdr(uint8_t buf[STREAM_RAM_HDR_SIZE], uint32_t section_id, uint32_t count)
{
	put_le32(buf, STREAM_REC_RAM);
	put_le32(buf + 4, section_id);
	put_le32(buf + 8, count);
	return STREAM_RAM_HDR_SIZE;
}

size_t stream_encode_payload_hdr(uint8_t buf[STREAM_PAYLOAD_HDR_SIZE], enum stream_rec_type type,
				 uint32_t section_id, uint32_t len)
{
	put_le32(buf, (uint32_t)type);
	put_le32(buf + 4, section_id);
	put_le32(buf + 8, len);
	return STREAM_PAYLOAD_HDR_SIZE;
}

size_t stream_encode_pass_end(uint8_t buf[STREAM_PASS_END_SIZE], uint32_t pass)
{
	put_le32(buf, STREAM_REC_PASS_END);
	put_le32(buf + 4, pass);
	return STREAM_PASS_END_SIZE;
}

size_t stream_encode_eof(uint8_t buf[STREAM_EOF_SIZE], const struct stream_eof *e)
{
	put_le32(buf, STREAM_REC_EOF);
	put_le32(buf + 4, e->nr_sections);
	put_le32(buf + 8, 0);
	put_le64(buf + 12, e->nr_pages);
	return STREAM_EOF_SIZE;
}

size_t stream_encode_channels(uint8_t buf[STREAM_CHANNELS_SIZE], const struct stream_channels *c)
{
	put_le32(buf, STREAM_REC_CHANNELS);
	put_le32(buf + 4, c->nr);
	put_le32(buf + 8, 0);
	put_le64(buf + 12, c->cookie);
	return STREAM_CHANNELS_SIZE;
}

size_t stream_encode_chan_hello(uint8_t buf[STREAM_CHAN_HELLO_SIZE], const struct stream_chan_hello *h)
{
	memcpy(buf, STREAM_CHAN_MAGIC, 8);
	put_le32(buf + 8, h->index);
	put_le32(buf + 12, h->nr);
	put_le64(buf + 16, h->cookie);
	return STREAM_CHAN_HELLO_SIZE;
}

/* The message is cut to STREAM_MAX_ACK_MSG bytes and to what fits in buf;
 * returns 0 (nothing written) if buf cannot hold the fixed 16 bytes. */
size_t stream_encode_ack(uint8_t *buf, size_t len, int32_t status, const char *msg)
{
	size_t msg_len = msg ? strnlen(msg, STREAM_MAX_ACK_MSG) : 0;

	if (!buf || len < 16)
		return 0;
	if (msg_len > len - 16)
		msg_len = len - 16;
	memcpy(buf, STREAM_ACK_MAGIC, 8);
	put_le32(buf + 8, (uint32_t)status);
	put_le32(buf + 12, (uint32_t)msg_len);
	if (msg_len)
		memcpy(buf + 16, msg, msg_len);
	return 16 + msg_len;
}

void stream_encode_commit(uint8_t buf[STREAM_COMMIT_SIZE], enum stream_commit decision)
{
	memcpy(buf, STREAM_COMMIT_MAGIC, 8);
	put_le32(buf + 8, (uint32_t)decision);
	put_le32(buf + 12, 0);
}

/* --------------------------------------------------------------- decoders */

int stream_read_header(const struct stream_source *src, struct stream_header *h,
		       char *err, size_t errlen)
{
	uint8_t b[STREAM_HEADER_SIZE];
	struct stream_header v;
	char shown[4 * 8 + 1];
	int r;

	clear_err(err, errlen);
	if (!h) {
		kmig_set_err(err, errlen, "no stream header to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "the stream header", err, errlen);
	if (r)
		return r;
	if (memcmp(b, STREAM_MAGIC, 8)) {
		escape_bytes(shown, b, 8);
		kmig_set_err(err, errlen, "bad stream magic '%s' (expected %s)", shown, STREAM_MAGIC);
		return -EPROTO;
	}
	v.version = get_le32(b + 8);
	v.page_size = get_le32(b + 12);
	v.ram_size = get_le64(b + 16);
	v.nr_vcpus = get_le32(b + 24);
	v.flags = get_le32(b + 28);
	if (v.version != STREAM_VERSION) {
		kmig_set_err(err, errlen, "unsupported stream version %" PRIu32
			     " (this kmig reads version %u)", v.version, STREAM_VERSION);
		return -EPROTO;
	}
	if (v.page_size != STREAM_PAGE_SIZE) {
		kmig_set_err(err, errlen, "unsupported page size %" PRIu32
			     " in the stream header (version %u requires %u)",
			     v.page_size, STREAM_VERSION, STREAM_PAGE_SIZE);
		return -EPROTO;
	}
	if (v.flags) {
		kmig_set_err(err, errlen, "stream header has unknown flags 0x%" PRIx32 " (must be 0)",
			     v.flags);
		return -EPROTO;
	}
	if (!v.ram_size) {
		kmig_set_err(err, errlen, "stream header RAM size is 0");
		return -EPROTO;
	}
	if (v.ram_size % v.page_size) {
		kmig_set_err(err, errlen, "stream header RAM size %" PRIu64
			     " is not a multiple of the page size %" PRIu32, v.ram_size, v.page_size);
		return -EPROTO;
	}
	if (v.nr_vcpus < 1 || v.nr_vcpus > STREAM_MAX_VCPUS) {
		kmig_set_err(err, errlen, "stream header vCPU count %" PRIu32 " is outside 1..%u",
			     v.nr_vcpus, STREAM_MAX_VCPUS);
		return -EPROTO;
	}
	*h = v;
	return 0;
}

int stream_read_type(const struct stream_source *src, enum stream_rec_type *type,
		     char *err, size_t errlen)
{
	uint8_t b[4];
	uint32_t t;
	int r;

	clear_err(err, errlen);
	if (!type) {
		kmig_set_err(err, errlen, "no record type to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "the record type", err, errlen);
	if (r)
		return r;
	t = get_le32(b);
	switch (t) {
	case STREAM_REC_SECTION:
	case STREAM_REC_RAM:
	case STREAM_REC_PART:
	case STREAM_REC_DEVICE:
	case STREAM_REC_PASS_END:
	case STREAM_REC_CHANNELS:
	case STREAM_REC_EOF:
		*type = (enum stream_rec_type)t;
		return 0;
	default:
		kmig_set_err(err, errlen, "unknown record type %" PRIu32 " (0x%" PRIx32 ")", t, t);
		return -EPROTO;
	}
}

int stream_read_section(const struct stream_source *src, struct stream_section *s,
			char *err, size_t errlen)
{
	uint8_t b[20];
	uint8_t name[STREAM_MAX_NAME];
	char shown[4 * STREAM_MAX_NAME + 1];
	struct stream_section v;
	uint32_t name_len;
	size_t bad;
	int r;

	clear_err(err, errlen);
	if (!s) {
		kmig_set_err(err, errlen, "no section to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "a SECTION record", err, errlen);
	if (r)
		return r;
	memset(&v, 0, sizeof(v));
	v.section_id = get_le32(b);
	v.instance_id = get_le32(b + 4);
	v.version = get_le32(b + 8);
	v.kind = get_le32(b + 12);
	name_len = get_le32(b + 16);
	if (name_len < 1 || name_len > STREAM_MAX_NAME) {
		kmig_set_err(err, errlen, "SECTION record name length %" PRIu32 " is outside 1..%u",
			     name_len, STREAM_MAX_NAME);
		return -EPROTO;
	}
	r = read_exact(src, name, name_len, "a SECTION record name", err, errlen);
	if (r)
		return r;
	bad = name_bad_char(name, name_len);
	if (bad != name_len) {
		escape_bytes(shown, name, name_len);
		kmig_set_err(err, errlen, "SECTION record name '%s' has an invalid character 0x%02x"
			     " at offset %zu (allowed: a-z 0-9 _ . -)", shown, name[bad], bad);
		return -EPROTO;
	}
	memcpy(v.name, name, name_len);
	v.name[name_len] = '\0';
	if (v.kind != STREAM_SECTION_ITERABLE && v.kind != STREAM_SECTION_DEVICE) {
		kmig_set_err(err, errlen, "SECTION record '%s' has unknown kind %" PRIu32
			     " (expected %d = iterable or %d = device)", v.name, v.kind,
			     STREAM_SECTION_ITERABLE, STREAM_SECTION_DEVICE);
		return -EPROTO;
	}
	/* 0 names no section: the records that follow could not refer to it */
	if (v.section_id == 0) {
		kmig_set_err(err, errlen, "SECTION record '%s' has section id 0 (ids run from 1 to %u)", v.name,
			     STREAM_MAX_SECTIONS - 1);
		return -EPROTO;
	}
	r = check_section_id("SECTION", v.section_id, err, errlen);
	if (r)
		return r;
	*s = v;
	return 0;
}

int stream_read_ram(const struct stream_source *src, uint32_t page_size, uint32_t *section_id,
		    uint64_t *hdrs, uint32_t *count, char *err, size_t errlen)
{
	uint8_t b[8];
	uint32_t id, n, i;
	uint64_t mask;
	int r;

	clear_err(err, errlen);
	if (!section_id || !hdrs || !count) {
		kmig_set_err(err, errlen, "no RAM record fields to read into");
		return -EINVAL;
	}
	if (page_size != STREAM_PAGE_SIZE) {
		kmig_set_err(err, errlen, "cannot read RAM records with page size %" PRIu32
			     " (stream version %u uses %u)", page_size, STREAM_VERSION,
			     STREAM_PAGE_SIZE);
		return -EINVAL;
	}
	mask = (uint64_t)page_size - 1;
	r = read_exact(src, b, sizeof(b), "a RAM record", err, errlen);
	if (r)
		return r;
	id = get_le32(b);
	n = get_le32(b + 4);
	if (n == 0) {
		kmig_set_err(err, errlen, "RAM record with 0 pages");
		return -EPROTO;
	}
	if (n > STREAM_MAX_PAGES_PER_REC) {
		kmig_set_err(err, errlen, "RAM record with %" PRIu32
			     " pages exceeds the limit of %u pages per record",
			     n, STREAM_MAX_PAGES_PER_REC);
		return -EPROTO;
	}
	r = check_section_id("RAM", id, err, errlen);
	if (r)
		return r;
	r = read_exact(src, hdrs, (size_t)n * 8, "the page headers of a RAM record", err, errlen);
	if (r)
		return r;
	for (i = 0; i < n; i++) {
		uint64_t h = get_le64((const uint8_t *)&hdrs[i]);
		uint64_t unknown = h & mask & ~STREAM_PAGE_ZERO;

		if (unknown) {
			kmig_set_err(err, errlen, "page header 0x%" PRIx64 " has unknown flags 0x%"
				     PRIx64, h, unknown);
			return -EPROTO;
		}
		/* gpa + page_size must not wrap, so the loader's range
		 * check (gpa + page_size <= ram_size) cannot be fooled */
		if ((h & ~mask) > UINT64_MAX - page_size) {
			kmig_set_err(err, errlen, "page header 0x%" PRIx64
				     " addresses a page that runs past the end of the 64-bit"
				     " address space", h);
			return -EPROTO;
		}
		hdrs[i] = h;
	}
	*section_id = id;
	*count = n;
	return 0;
}

/* The API does not say whether a PART or a DEVICE record is being read;
 * the format limits tell them apart for messages. */
static const char *payload_kind(uint32_t max)
{
	if (max == STREAM_MAX_DEVICE)
		return "DEVICE";
	if (max == STREAM_MAX_PART)
		return "PART";
	return "PART/DEVICE";
}

int stream_read_payload_hdr(const struct stream_source *src, uint32_t max, uint32_t *section_id,
			    uint32_t *len, char *err, size_t errlen)
{
	const char *what = payload_kind(max);
	char hdr_what[32];
	uint8_t b[8];
	uint32_t id, n;
	int r;

	clear_err(err, errlen);
	if (!section_id || !len) {
		kmig_set_err(err, errlen, "no %s record fields to read into", what);
		return -EINVAL;
	}
	/* no payload of either kind may exceed the larger format limit */
	if (max > STREAM_MAX_PART)
		max = STREAM_MAX_PART;
	snprintf(hdr_what, sizeof(hdr_what), "a %s record header", what);
	r = read_exact(src, b, sizeof(b), hdr_what, err, errlen);
	if (r)
		return r;
	id = get_le32(b);
	n = get_le32(b + 4);
	if (n > max) {
		kmig_set_err(err, errlen, "%s record length %" PRIu32
			     " exceeds the limit of %" PRIu32 " bytes", what, n, max);
		return -EPROTO;
	}
	r = check_section_id(what, id, err, errlen);
	if (r)
		return r;
	*section_id = id;
	*len = n;
	return 0;
}

int stream_read_pass_end(const struct stream_source *src, uint32_t *pass, char *err, size_t errlen)
{
	uint8_t b[4];
	uint32_t p;
	int r;

	clear_err(err, errlen);
	if (!pass) {
		kmig_set_err(err, errlen, "no pass number to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "a PASS_END record", err, errlen);
	if (r)
		return r;
	p = get_le32(b);
	if (p == 0) {
		kmig_set_err(err, errlen, "PASS_END record with pass number 0 (passes count from 1)");
		return -EPROTO;
	}
	*pass = p;
	return 0;
}

int stream_read_channels(const struct stream_source *src, struct stream_channels *c,
			 char *err, size_t errlen)
{
	uint8_t b[16];
	uint32_t nr, reserved;
	int r;

	clear_err(err, errlen);
	if (!c) {
		kmig_set_err(err, errlen, "no CHANNELS record to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "a CHANNELS record", err, errlen);
	if (r)
		return r;
	nr = get_le32(b);
	reserved = get_le32(b + 4);
	if (reserved) {
		kmig_set_err(err, errlen, "CHANNELS record reserved field is 0x%" PRIx32 " (must be 0)", reserved);
		return -EPROTO;
	}
	if (nr == 0 || nr > STREAM_MAX_CHANNELS) {
		kmig_set_err(err, errlen, "CHANNELS record announces %" PRIu32 " channels (1..%u allowed)", nr,
			     STREAM_MAX_CHANNELS);
		return -EPROTO;
	}
	c->nr = nr;
	c->cookie = get_le64(b + 8);
	return 0;
}

int stream_read_chan_hello(const struct stream_source *src, struct stream_chan_hello *h,
			   char *err, size_t errlen)
{
	uint8_t b[STREAM_CHAN_HELLO_SIZE];
	char shown[4 * 8 + 1];
	int r;

	clear_err(err, errlen);
	if (!h) {
		kmig_set_err(err, errlen, "no channel hello to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "a channel hello", err, errlen);
	if (r)
		return r;
	if (memcmp(b, STREAM_CHAN_MAGIC, 8)) {
		escape_bytes(shown, b, 8);
		kmig_set_err(err, errlen, "bad channel magic '%s' (expected %s)", shown, STREAM_CHAN_MAGIC);
		return -EPROTO;
	}
	h->index = get_le32(b + 8);
	h->nr = get_le32(b + 12);
	h->cookie = get_le64(b + 16);
	if (h->nr == 0 || h->nr > STREAM_MAX_CHANNELS || h->index >= h->nr) {
		kmig_set_err(err, errlen, "channel hello says channel %" PRIu32 " of %" PRIu32, h->index, h->nr);
		return -EPROTO;
	}
	return 0;
}

int stream_read_eof(const struct stream_source *src, struct stream_eof *e, char *err, size_t errlen)
{
	uint8_t b[16];
	uint32_t nr_sections, reserved;
	int r;

	clear_err(err, errlen);
	if (!e) {
		kmig_set_err(err, errlen, "no EOF record to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "an EOF record", err, errlen);
	if (r)
		return r;
	nr_sections = get_le32(b);
	reserved = get_le32(b + 4);
	if (reserved) {
		kmig_set_err(err, errlen, "EOF record reserved field is 0x%" PRIx32 " (must be 0)",
			     reserved);
		return -EPROTO;
	}
	if (nr_sections > STREAM_MAX_SECTIONS) {
		kmig_set_err(err, errlen, "EOF record section count %" PRIu32
			     " exceeds the limit of %u sections", nr_sections, STREAM_MAX_SECTIONS);
		return -EPROTO;
	}
	e->nr_sections = nr_sections;
	e->nr_pages = get_le64(b + 8);
	return 0;
}

int stream_read_commit(const struct stream_source *src, enum stream_commit *decision, char *err, size_t errlen)
{
	uint8_t b[STREAM_COMMIT_SIZE];
	char shown[4 * 8 + 1];
	int r;

	clear_err(err, errlen);
	r = read_exact(src, b, sizeof(b), "the COMMIT", err, errlen);
	if (r)
		return r;
	if (memcmp(b, STREAM_COMMIT_MAGIC, 8)) {
		escape_bytes(shown, b, 8);
		kmig_set_err(err, errlen, "bad COMMIT magic '%s' (expected %s)", shown, STREAM_COMMIT_MAGIC);
		return -EPROTO;
	}
	uint32_t d = get_le32(b + 8), reserved = get_le32(b + 12);

	if (d > STREAM_COMMIT_GO || reserved) {
		kmig_set_err(err, errlen, "COMMIT decision %" PRIu32 " (reserved %" PRIu32 ") is neither go (1) nor "
			     "abort (0)", d, reserved);
		return -EPROTO;
	}
	*decision = (enum stream_commit)d;
	return 0;
}

int stream_read_ack(const struct stream_source *src, int32_t *status, char *msg,
		    char *err, size_t errlen)
{
	uint8_t b[16];
	uint8_t text[STREAM_MAX_ACK_MSG];
	char shown[4 * 8 + 1];
	uint32_t msg_len, i;
	int32_t st;
	int r;

	clear_err(err, errlen);
	if (!status) {
		kmig_set_err(err, errlen, "no ACK status to read into");
		return -EINVAL;
	}
	r = read_exact(src, b, sizeof(b), "the ACK", err, errlen);
	if (r)
		return r;
	if (memcmp(b, STREAM_ACK_MAGIC, 8)) {
		escape_bytes(shown, b, 8);
		kmig_set_err(err, errlen, "bad ACK magic '%s' (expected %s)", shown, STREAM_ACK_MAGIC);
		return -EPROTO;
	}
	st = (int32_t)get_le32(b + 8);
	msg_len = get_le32(b + 12);
	if (st > 0 || st < -STREAM_MAX_ERRNO) {
		kmig_set_err(err, errlen, "ACK status %" PRId32 " is neither 0 nor a negative errno", st);
		return -EPROTO;
	}
	if (msg_len > STREAM_MAX_ACK_MSG) {
		kmig_set_err(err, errlen, "ACK message length %" PRIu32
			     " exceeds the limit of %u bytes", msg_len, STREAM_MAX_ACK_MSG);
		return -EPROTO;
	}
	r = read_exact(src, text, msg_len, "the ACK message", err, errlen);
	if (r)
		return r;
	if (msg) {
		for (i = 0; i < msg_len; i++)
			msg[i] = text[i] >= 0x20 && text[i] < 0x7f ? (char)text[i] : '?';
		msg[msg_len] = '\0';
	}
	*status = st;
	return 0;
}
