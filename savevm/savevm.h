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

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "savevm/stream.h"

struct ring_channel;
struct savevm_registry;

/* The source's stream: counts bytes and enforces max-bandwidth. */
struct savevm_out {
	struct ring_channel *ch;
	uint64_t bytes;			/* everything sent */
	uint64_t max_bandwidth;		/* bytes/s, 0 = unlimited */
	uint64_t rl_start_ns;		/* rate-limit window */
	uint64_t rl_bytes;
	volatile bool *cancel;		/* set by migrate_cancel */
	_Atomic uint64_t *progress;	/* bytes sent, for query-migrate mid-call */
};

int savevm_out_sendv(struct savevm_out *out, const struct iovec *iov, int iovcnt);
int savevm_out_send(struct savevm_out *out, const void *buf, size_t len);

/* The destination's stream. */
struct savevm_in {
	struct ring_channel *ch;
	uint64_t bytes;
	struct stream_source src;	/* reads through ch, counting */
};
void savevm_in_init(struct savevm_in *in, struct ring_channel *ch);
int savevm_in_readv(struct savevm_in *in, const struct iovec *iov, int iovcnt);

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

	/* non-iterable: whole state as a blob */
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
	/* per-migration, destination: received blob awaiting load */
	uint8_t *pending_blob;
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

#endif
