/* savevm/stream.h — kmig's migration stream format, version 1.
 *
 * Everything is little-endian.  A stream is:
 *
 *   header   magic "KMIGSTRM" (8 bytes), u32 version, u32 page_size,
 *            u64 ram_size, u32 nr_vcpus, u32 flags (must be 0)      = 32 bytes
 *   records  each starts with a u32 type:
 *     SECTION  u32 section_id, u32 instance_id, u32 version, u32 kind,
 *              u32 name_len (1..STREAM_MAX_NAME), name bytes [a-z0-9_-.]
 *              Declares an entry before any of its data.
 *     RAM      u32 section_id, u32 count (1..STREAM_MAX_PAGES_PER_REC),
 *              count × u64 page header (guest physical address | flags),
 *              then page_size payload bytes for every header without
 *              STREAM_PAGE_ZERO, in header order.
 *     PART     u32 section_id, u32 len (0..STREAM_MAX_PART), payload
 *              (a chunk of an iterable entry's state).
 *     DEVICE   u32 section_id, u32 len (0..STREAM_MAX_DEVICE), payload
 *              (the complete state of a non-iterable entry).
 *     PASS_END u32 pass (end of one precopy pass; passes count up from 1)
 *     CHANNELS u32 nr (1..STREAM_MAX_CHANNELS), u32 reserved (0),
 *              u64 cookie.  Only right after the header: RAM goes on nr
 *              further connections (multifd), none on this main one.
 *     EOF      u32 nr_sections, u32 reserved (0), u64 nr_pages
 *              (cross-check: sections declared, page headers sent).
 *
 * A RAM channel (multifd) opens with a hello:
 *   magic "KMIGCHAN" (8 bytes), u32 index (0..nr-1), u32 nr, u64 cookie
 *   (the main stream's: binds the connection to it)               = 24 bytes
 * then carries only RAM, PASS_END (an epoch: every page sent before it on
 * any channel is applied before any page sent after it on any channel) and
 * EOF (nr_sections 0, nr_pages sent on this channel) records.
 *
 * After EOF the destination answers on the same connection with an ACK:
 *   magic "KMIGACK1" (8 bytes), i32 status (0 = loaded, else -errno),
 *   u32 msg_len (0..STREAM_MAX_ACK_MSG), msg bytes.
 * After an ACK with status 0 the source answers with its decision, the
 * COMMIT: magic "KMIGCMT1", u32 decision (1 = go: the destination runs the
 * guest; 0 = abort: the source runs it again), u32 reserved (0).  The
 * destination starts its guest only on go (docs/stream-format.md, "The
 * end of a migration: the point of no return").
 *
 * The codec checks syntax and bounds only: magic, version, sizes, lengths,
 * name characters, page alignment and flag bits.  What depends on the
 * machine (section names known, no duplicates, page addresses inside guest
 * RAM) is checked by the loader in savevm/ before it acts on a record.
 */
#ifndef KMIG_SAVEVM_STREAM_H
#define KMIG_SAVEVM_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define STREAM_MAGIC "KMIGSTRM"
#define STREAM_ACK_MAGIC "KMIGACK1"
#define STREAM_COMMIT_MAGIC "KMIGCMT1"
#define STREAM_VERSION 2u	/* 2: the COMMIT after the ACK */
#define STREAM_HEADER_SIZE 32u
#define STREAM_MAX_NAME 64u
#define STREAM_MAX_PAGES_PER_REC 256u
#define STREAM_MAX_PART (4u << 20)
#define STREAM_MAX_DEVICE (1u << 20)
#define STREAM_MAX_ACK_MSG 256u
#define STREAM_MAX_SECTIONS 4096u
#define STREAM_CHAN_MAGIC "KMIGCHAN"
#define STREAM_CHAN_HELLO_SIZE 24u
#define STREAM_MAX_CHANNELS 255u

/* low bits of a page header; the address itself is page aligned */
#define STREAM_PAGE_ZERO 0x1ull
#define STREAM_PAGE_FLAGS_MASK 0xfffull

enum stream_rec_type {
	STREAM_REC_SECTION = 1,
	STREAM_REC_RAM = 2,
	STREAM_REC_PART = 3,
	STREAM_REC_DEVICE = 4,
	STREAM_REC_PASS_END = 5,
	STREAM_REC_CHANNELS = 6,
	STREAM_REC_EOF = 0x7f,
};

enum stream_section_kind {
	STREAM_SECTION_ITERABLE = 1,
	STREAM_SECTION_DEVICE = 2,
};

struct stream_header {
	uint32_t version;
	uint32_t page_size;
	uint64_t ram_size;
	uint32_t nr_vcpus;
	uint32_t flags;
};

struct stream_section {
	uint32_t section_id;
	uint32_t instance_id;
	uint32_t version;
	uint32_t kind;
	char name[STREAM_MAX_NAME + 1];	/* NUL-terminated */
};

struct stream_channels {
	uint32_t nr;
	uint64_t cookie;
};

struct stream_chan_hello {
	uint32_t index;
	uint32_t nr;
	uint64_t cookie;
};

struct stream_eof {
	uint32_t nr_sections;
	uint64_t nr_pages;
};

/* ---- encoding: fills buf, returns bytes written (buffers sized by the
 * *_SIZE macros; names are validated, -EINVAL if bad) ---- */
#define STREAM_SECTION_MAX_SIZE (6 * 4 + STREAM_MAX_NAME)
#define STREAM_RAM_HDR_SIZE 12u		/* type, section_id, count */
#define STREAM_PAYLOAD_HDR_SIZE 12u	/* type, section_id, len (PART/DEVICE) */
#define STREAM_PASS_END_SIZE 8u
#define STREAM_EOF_SIZE 20u
#define STREAM_CHANNELS_SIZE 20u
#define STREAM_ACK_MAX_SIZE (16 + STREAM_MAX_ACK_MSG)
#define STREAM_COMMIT_SIZE 16u
enum stream_commit { STREAM_COMMIT_ABORT = 0, STREAM_COMMIT_GO = 1 };

size_t stream_encode_header(uint8_t buf[STREAM_HEADER_SIZE], const struct stream_header *h);
int stream_encode_section(uint8_t *buf, size_t len, const struct stream_section *s);
size_t stream_encode_ram_hdr(uint8_t buf[STREAM_RAM_HDR_SIZE], uint32_t section_id, uint32_t count);
size_t stream_encode_payload_hdr(uint8_t buf[STREAM_PAYLOAD_HDR_SIZE], enum stream_rec_type type,
				 uint32_t section_id, uint32_t len);
size_t stream_encode_pass_end(uint8_t buf[STREAM_PASS_END_SIZE], uint32_t pass);
size_t stream_encode_channels(uint8_t buf[STREAM_CHANNELS_SIZE], const struct stream_channels *c);
size_t stream_encode_chan_hello(uint8_t buf[STREAM_CHAN_HELLO_SIZE], const struct stream_chan_hello *h);
size_t stream_encode_eof(uint8_t buf[STREAM_EOF_SIZE], const struct stream_eof *e);
size_t stream_encode_ack(uint8_t *buf, size_t len, int32_t status, const char *msg);
void stream_encode_commit(uint8_t buf[STREAM_COMMIT_SIZE], enum stream_commit decision);
/* page headers are stored as u64 LE; on x86 that is the host order */
static inline uint64_t stream_page_hdr(uint64_t gpa, int zero)
{
	return gpa | (zero ? STREAM_PAGE_ZERO : 0);
}

/* ---- decoding: reads from a source, validates, and on failure returns
 * -EPROTO (malformed), -EPIPE (truncated) or the source's -errno, with a
 * human-readable reason in err ---- */
struct stream_source {
	/* read exactly len bytes; 0 or -errno (-EPIPE at end of data) */
	int (*read)(void *opaque, void *buf, size_t len);
	void *opaque;
};

int stream_read_header(const struct stream_source *src, struct stream_header *h,
		       char *err, size_t errlen);
/* Reads the record type word; rejects unknown types. */
int stream_read_type(const struct stream_source *src, enum stream_rec_type *type,
		     char *err, size_t errlen);
/* Each reads the rest of a record whose type was just read. */
int stream_read_section(const struct stream_source *src, struct stream_section *s,
			char *err, size_t errlen);
/* RAM: reads section_id and count, then the count page headers into hdrs
 * (capacity STREAM_MAX_PAGES_PER_REC), checking alignment to page_size and
 * flag bits.  Payloads are left for the caller to read in place. */
int stream_read_ram(const struct stream_source *src, uint32_t page_size, uint32_t *section_id,
		    uint64_t *hdrs, uint32_t *count, char *err, size_t errlen);
/* PART/DEVICE: reads section_id and len (bounded by max); payload left. */
int stream_read_payload_hdr(const struct stream_source *src, uint32_t max, uint32_t *section_id,
			    uint32_t *len, char *err, size_t errlen);
int stream_read_pass_end(const struct stream_source *src, uint32_t *pass, char *err, size_t errlen);
int stream_read_channels(const struct stream_source *src, struct stream_channels *c,
			 char *err, size_t errlen);
/* The whole hello, magic included; checks index < nr <= STREAM_MAX_CHANNELS. */
int stream_read_chan_hello(const struct stream_source *src, struct stream_chan_hello *h,
			   char *err, size_t errlen);
int stream_read_eof(const struct stream_source *src, struct stream_eof *e, char *err, size_t errlen);
/* COMMIT: the source's decision after a positive ACK. */
int stream_read_commit(const struct stream_source *src, enum stream_commit *decision, char *err, size_t errlen);
/* ACK: msg (capacity STREAM_MAX_ACK_MSG + 1) gets the NUL-terminated text. */
int stream_read_ack(const struct stream_source *src, int32_t *status, char *msg,
		    char *err, size_t errlen);

const char *stream_rec_type_name(uint32_t type);

#endif
