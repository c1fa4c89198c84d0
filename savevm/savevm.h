/* savevm/savevm.h — the registry of migratable state and the I/O the
 * handlers use.  Two kinds of entry:
 *  - iterable: state too large to send while stopped (RAM; large devices
 *    later).  Sent in passes while the guest runs, then a remainder after it
 *    stops.  Asked for pending bytes: a cheap estimate, or exact after a sync.
 *  - non-iterable (devices): saved whole, once, in stop-and-copy, each save
 *    timed; loaded on the destination only after the whole stream checked.
 */
#ifndef KMIG_SAVEVM_SAVEVM_H
#define KMIG_SAVEVM_SAVEVM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "savevm/stream.h"

struct ring_channel;
struct savevm_registry;

/* How page payloads leave: copied by the kernel at send time, or sent
 * zero-copy from guest memory (io_uring SENDMSG_ZC).  AUTO measures both
 * on the first bytes and keeps the faster (see io.c). */
enum savevm_send_mode { SAVEVM_SEND_AUTO, SAVEVM_SEND_COPY, SAVEVM_SEND_ZC };
static inline const char *savevm_send_mode_name(enum savevm_send_mode m)
{
	return m == SAVEVM_SEND_COPY ? "copy" : m == SAVEVM_SEND_ZC ? "zero-copy" : "auto";
}

/* max-bandwidth, shared by every channel of a migration: a virtual clock
 * that each send advances by len / bandwidth, so the sum of all channels
 * never runs more than a slack ahead of real time. */
struct savevm_rate {
	pthread_mutex_t lock;
	_Atomic uint64_t bandwidth;	/* bytes/s, 0 = unlimited */
	uint64_t vt_ns;
};
void savevm_rate_init(struct savevm_rate *r);
void savevm_rate_destroy(struct savevm_rate *r);
/* Block until len more bytes fit under the limit (or cancel is set). */
void savevm_rate_pay(struct savevm_rate *r, size_t len, atomic_bool *cancel);
/* Largest send that keeps bursts short under the current limit. */
size_t savevm_rate_chunk(struct savevm_rate *r);

/* One sending channel's choice of copy or zero-copy. */
struct savevm_sendpath {
	struct ring_channel *ch;
	enum savevm_send_mode asked;
	enum savevm_send_mode chosen;	/* AUTO while still measuring */
	uint64_t probe_bytes[3], probe_ns[3];	/* by mode */
};
void savevm_sendpath_init(struct savevm_sendpath *p, struct ring_channel *ch, enum savevm_send_mode asked);
/* Send page records: iov[] whose first prefix bytes are headers (the rest
 * guest memory, which may change while in flight: the dirty log makes that
 * safe, see ram.c). */
int savevm_sendpath_send(struct savevm_sendpath *p, const struct iovec *iov, int iovcnt, size_t prefix);
/* Zero-copy only: wait until the kernel holds no guest page. */
int savevm_sendpath_flush(struct savevm_sendpath *p);

struct multifd_send;

/* The source's stream: counts bytes and enforces max-bandwidth. */
struct savevm_out {
	struct ring_channel *ch;
	_Atomic uint64_t bytes;		/* everything sent, all channels */
	struct savevm_rate *rate;
	atomic_bool *cancel;		/* set by migrate_cancel */
	_Atomic uint64_t *progress;	/* bytes sent, for query-migrate mid-call */
	struct savevm_sendpath path;	/* the main channel's */
	struct multifd_send *mf;	/* RAM channels, or NULL: RAM goes on ch */
};

int savevm_out_sendv(struct savevm_out *out, const struct iovec *iov, int iovcnt);
int savevm_out_send(struct savevm_out *out, const void *buf, size_t len);
/* A RAM record, on the main channel (path = &out->path) or a RAM
 * channel's path; paced and counted like every send. */
int savevm_out_send_pages(struct savevm_out *out, struct savevm_sendpath *path, const struct iovec *iov,
			  int iovcnt, size_t prefix);
/* Count bytes a RAM channel sent. */
void savevm_out_account(struct savevm_out *out, size_t len);

/* The destination's stream: a connection, or bytes in memory (ch NULL). */
struct savevm_in {
	struct ring_channel *ch;
	const uint8_t *mem;		/* without ch: the bytes, read from mem_pos */
	size_t mem_len, mem_pos;
	uint64_t bytes;
	struct stream_source src;	/* reads through ch, counting */
	uint8_t *scratch;		/* this reader's own buffer (savevm_in_scratch) */
	size_t scratch_len;
};
void savevm_in_init(struct savevm_in *in, struct ring_channel *ch);
/* A stream of len bytes at buf that then ends, as if its peer closed (the
 * fuzzers' way in: savevm_in_splice writes to the file with pwrite). */
void savevm_in_init_mem(struct savevm_in *in, const uint8_t *buf, size_t len);
/* A buffer of at least len bytes owned by this reader (a receiving thread
 * each): allocated at first use, kept until savevm_in_fini.  NULL when
 * out of memory. */
uint8_t *savevm_in_scratch(struct savevm_in *in, size_t len);
void savevm_in_fini(struct savevm_in *in);
int savevm_in_readv(struct savevm_in *in, const struct iovec *iov, int iovcnt);
/* Payload straight into a file (guest RAM's memfd) at off: see ring.h. */
int savevm_in_splice(struct savevm_in *in, int fd, uint64_t off, size_t len);

struct savevm_ops {
	/* iterable, source side */
	int (*save_setup)(void *opaque, struct savevm_out *out, char *err, size_t errlen);
	/* Send a bounded amount; 1 = this pass is done, 0 = call again. */
	int (*save_iterate)(void *opaque, struct savevm_out *out);
	/* Guest stopped: send everything left. */
	int (*save_complete)(void *opaque, struct savevm_out *out);
	void (*save_cleanup)(void *opaque);
	/* Bytes still to send, in two flavours.  The estimate is cheap and
	 * callable from any thread (query-migrate), but may miss state not
	 * collected yet (dirty pages KVM still holds).  The exact figure first
	 * collects that state (a dirty sync), from the migration thread. */
	uint64_t (*pending)(void *opaque, bool exact);
	int (*sync)(void *opaque, bool final);
	/* iterable, destination side, before the stream's first record:
	 * forget anything an earlier load left (may be NULL) */
	void (*load_setup)(void *opaque);
	/* iterable, destination side: a PART record's payload (len bytes,
	 * bounded by the codec) is read by the handler from in */
	int (*load_part)(void *opaque, struct savevm_in *in, uint32_t len, char *err, size_t errlen);
	/* iterable, destination side, at end of stream: is the state complete
	 * and consistent? */
	int (*load_complete)(void *opaque, char *err, size_t errlen);
	/* iterable, destination side: a RAM record whose headers are
	 * validated by the codec; payloads still to be read from in. */
	int (*load_ram)(void *opaque, struct savevm_in *in, const uint64_t *hdrs, uint32_t count,
			char *err, size_t errlen);

	/* non-iterable: the whole state in one buffer */
	int (*save_state)(void *opaque, uint8_t *buf, size_t len);	/* size or -errno */
	int (*check_state)(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen);
	int (*load_state)(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen);
};

struct savevm_entry {
	char name[STREAM_MAX_NAME + 1];
	uint32_t instance_id;
	uint32_t version;
	bool iterable;
	const struct savevm_ops *ops;
	void *opaque;
	/* per-migration, destination: received state awaiting load */
	uint8_t *pending_state;
	size_t pending_len;
	bool declared;
	uint64_t load_time_us;
	uint64_t save_time_us;
};

struct savevm_registry *savevm_registry_new(void);
void savevm_registry_free(struct savevm_registry *r);
int savevm_register(struct savevm_registry *r, const char *name, uint32_t instance_id, uint32_t version,
		    bool iterable, const struct savevm_ops *ops, void *opaque);
size_t savevm_registry_count(const struct savevm_registry *r);
struct savevm_entry *savevm_registry_at(struct savevm_registry *r, size_t i);
struct savevm_entry *savevm_registry_find(struct savevm_registry *r, const char *name, uint32_t instance_id);

/* Condition variables whose timed waits run on CLOCK_MONOTONIC (a wall
 * clock step must not stretch a poll), and the deadline ms from now. */
void savevm_cond_init_monotonic(pthread_cond_t *c);
void savevm_deadline_ms(struct timespec *ts, long ms);

#endif
