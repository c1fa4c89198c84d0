/* savevm/migration.h — the migration engine, apart from the machine.
 *
 * One struct migration moves the state of a savevm registry (RAM and
 * devices) to a destination, or loads it from a source, over ring/'s
 * transport.  It holds its own lock, status, parameters and figures, and
 * reaches the VM only through struct migration_host: pause and resume the
 * guest, start it on the destination, report events, throttle the vCPUs.
 * So the engine runs against a fake host in the unit tests
 * (tests/unit/savevm/test_engine.c), as qapi/ runs against a fake machine.
 *
 * Names and units follow QEMU's qapi/migration.json: times in
 * milliseconds, sizes in bytes, bandwidth in bytes per second, mbps in
 * megabits per second.
 */
#ifndef KMIG_SAVEVM_MIGRATION_H
#define KMIG_SAVEVM_MIGRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "savevm/params.h"
#include "savevm/savevm.h"

struct migration;
struct ram_handler;

/* QEMU's MigrationStatus names */
enum migration_status {
	MIGRATION_STATUS_NONE,
	MIGRATION_STATUS_SETUP,
	MIGRATION_STATUS_CANCELLING,
	MIGRATION_STATUS_CANCELLED,
	MIGRATION_STATUS_ACTIVE,
	MIGRATION_STATUS_DEVICE,
	MIGRATION_STATUS_COMPLETED,
	MIGRATION_STATUS_FAILED,
};
const char *migration_status_name(enum migration_status s);

/* MigrationStats (the "ram" member of query-migrate) */
struct migration_ram_stats {
	uint64_t transferred;		/* bytes on the wire so far */
	uint64_t remaining;		/* bytes of dirty RAM still to send */
	uint64_t total;			/* guest RAM size */
	uint64_t duplicate;		/* zero pages sent as headers only */
	uint64_t normal;		/* full pages sent */
	uint64_t normal_bytes;
	uint64_t dirty_sync_count;
	uint64_t page_size;
	uint64_t pages_per_second;
	uint64_t dirty_pages_rate;	/* pages/s dirtied in the last pass */
	uint64_t precopy_bytes;
	uint64_t downtime_bytes;
	uint64_t multifd_bytes;		/* sent on the RAM channels */
	double mbps;
};

/* kmig's own counters, reported under "x-kmig" (an extension) */
struct migration_kmig_stats {
	const char *dirty_mode;		/* "dirty-ring" or "dirty-bitmap" (static) */
	uint64_t dirty_ring_overflows;	/* dirty-ring overflows detected */
	uint64_t dirty_ring_full_exits;
	uint64_t dirty_ring_resyncs;	/* full re-protect + resend recoveries */
	uint64_t pages_harvested;
	uint64_t passes;
	uint64_t shrink_passes;		/* passes run after the rest fit, as it still shrank fast */
	/* the RAM path of the last (or current) migration, source side */
	unsigned int channels;		/* 0 = RAM on the main connection */
	const char *send_mode;		/* "copy", "zero-copy", "auto" (not yet chosen) */
	/* the last (or current) migration's connections: "none" (plaintext)
	 * or "gnutls" (TLS records in user space) */
	const char *tls;
	/* destination: loaded, no decision from the source (see
	 * migration_unresolved) */
	bool unresolved;
	uint64_t zc_notifications, zc_copied;
	/* who counts dirty pages per vCPU: "bpf" (eBPF on the KVM
	 * tracepoints), "ring" (the harvester counts; why_not_bpf says why),
	 * "none" (the bitmap backend has no per-vCPU counts) */
	const char *dirty_telemetry;
	char telemetry_why[160];
	/* pages an overflow left unprotected, resent at every sync instead
	 * of a full resync: those of entries the kernel overwrote (named by
	 * the eBPF guard) and of entries behind a reset walk that stopped
	 * short */
	uint64_t dirty_ring_lost_pages;
	/* expected-downtime (ms) when the switchover was decided, to set
	 * against the downtime it turned into */
	bool has_switchover_expected_downtime;
	uint64_t switchover_expected_downtime;
};

/* One device's time in the stop-and-copy phase (source: save; destination:
 * load), in microseconds. */
struct migration_device_time {
	char name[65];
	uint32_t instance_id;
	uint64_t time_us;
};
#define MIGRATION_MAX_DEVICES 256

/* Where the downtime went, µs from the moment the source decided to stop
 * the guest.  Source: vcpus_stopped, iterable_saved (final harvest and the
 * rest of RAM and of iterable devices), devices_saved (non-iterable), eof
 * (end of stream sent), end (destination acknowledged) = downtime.
 * Destination, µs from the end of stream: loaded (devices loaded), started
 * (vCPUs running). */
struct migration_phases {
	bool valid;
	uint64_t vcpus_stopped_us, iterable_saved_us, devices_saved_us, eof_us, end_us;
	uint64_t loaded_us, started_us;
};

/* The stall signal: system-wide remaining bytes, sampled after each pass,
 * that have not fallen a sixteenth below their lowest value for the whole
 * window (smaller dips are the noise of a migration that is not
 * converging). */
struct migration_stall {
	bool stalled;
	uint64_t iterations;		/* passes since remaining last fell */
	uint64_t since_ms;		/* ms since remaining last fell */
	uint64_t min_remaining;
};

struct migration_info {
	enum migration_status status;
	bool is_incoming;		/* this is the destination side */
	bool has_times;			/* total-time, setup-time */
	uint64_t total_time_ms;
	uint64_t setup_time_ms;
	bool has_expected_downtime;
	uint64_t expected_downtime_ms;
	bool has_downtime;
	uint64_t downtime_ms;
	bool has_ram;
	struct migration_ram_stats ram;
	bool has_error;
	char error_desc[512];
	struct migration_kmig_stats kmig;
	/* the seeds: system-wide remaining (RAM + every device), while active */
	bool has_remaining;
	uint64_t remaining;
	/* the seeds: every non-iterable device saved in stop-and-copy, in save
	 * order; from completion until the next migration starts */
	unsigned int nr_device_times;
	struct migration_device_time device_times[MIGRATION_MAX_DEVICES];
	/* extensions (x-kmig-*): stop-and-copy time of each iterable entry;
	 * destination: load time of each device */
	unsigned int nr_iterable_times;
	struct migration_device_time iterable_times[16];
	unsigned int nr_load_times;
	struct migration_device_time load_times[MIGRATION_MAX_DEVICES];
	struct migration_phases phases;
	bool has_stall;
	struct migration_stall stall;
	/* QEMU's dirty-limit figures, while a migration with the dirty-limit
	 * capability throttles the guest: the longest a vCPU slept per ring
	 * of dirty pages, and the time a ring takes to fill at the vCPUs'
	 * average dirty rate (0: the guest does not dirty memory) */
	bool has_dirty_limit;
	uint64_t dirty_limit_throttle_time_per_round_us;
	uint64_t dirty_limit_ring_full_time_us;
	/* QEMU's socket-address: on the destination, while it listens (from
	 * --incoming until its incoming migration ends), the address it
	 * listens on, with the real port of tcp:HOST:0 */
	bool has_socket_address;
	struct {
		bool is_unix;
		char host[256], port[16];	/* inet */
		char path[108];			/* unix */
	} socket_address;
	/* per-entry pending bytes, the breakdown of remaining (x-kmig-pending) */
	unsigned int nr_pending;
	struct { char name[65]; uint32_t instance_id; uint64_t bytes; } pending[16];
};

enum migration_event {
	MIGRATION_EVENT_STATUS,		/* arg: enum migration_status */
	MIGRATION_EVENT_PASS,		/* arg: pass number */
	MIGRATION_EVENT_STALL,		/* arg: 1 stalled, 0 recovered */
};

/* What the engine asks of the VM it migrates.  Called from the migration
 * thread (cancel aside), never with the engine's lock held: a host may
 * call back into the engine. */
struct migration_host {
	/* Source, at switchover: stop the vCPUs, in one step with a
	 * concurrent 'stop' (which either happened before, or finds the
	 * guest migrating and does nothing).  true: the guest was running,
	 * and runs again if the migration fails. */
	bool (*pause)(void *opaque);
	/* Source, after a failure once paused: the guest runs again
	 * (was_running) or stays paused. */
	void (*resume)(void *opaque, bool was_running);
	/* Source: the destination acknowledged; the guest now lives there. */
	void (*migrated)(void *opaque);
	/* Destination: the whole stream is loaded; run the guest. */
	int (*start)(void *opaque);
	/* Destination: the incoming migration failed; the guest never ran. */
	void (*incoming_failed)(void *opaque);
	void (*event)(void *opaque, enum migration_event ev, int64_t arg);
	/* The dirty-limit capability: limit every vCPU to mib_per_s; 0
	 * lifts the limits the migration set. */
	void (*throttle)(void *opaque, uint64_t mib_per_s);
};

struct migration_env {
	struct savevm_registry *reg;
	struct ram_handler *ram;	/* the RAM entry, for its counters; NULL: none */
	uint64_t ram_size;		/* what the stream header announces */
	uint32_t nr_vcpus;
	const struct migration_host *host;
	void *opaque;			/* the host's */
};

int migration_new(const struct migration_env *env, struct migration **out);
/* Aborts and joins a migration still running. */
void migration_free(struct migration *g);

/* Source: connect to uri and migrate, on a thread of its own. */
int migration_start(struct migration *g, const char *uri, char *err, size_t errlen);
/* Destination: listen on uri; the first real source is loaded. */
int migration_listen(struct migration *g, const char *uri, char *err, size_t errlen);
/* Whether uri is one the engine can connect to (listen: listen on),
 * resolved as it would be; the reason in err if not. */
int migration_uri_check(const char *uri, bool listen, char *err, size_t errlen);
/* migrate_cancel: an outgoing migration still active is cancelled. */
void migration_cancel(struct migration *g);
/* Stop whatever runs (outgoing or incoming, listener too) and wait. */
void migration_abort(struct migration *g);

enum migration_status migration_status(struct migration *g);
bool migration_in_progress(struct migration *g);
/* This side listens for, or loaded, an incoming migration. */
bool migration_is_incoming(struct migration *g);
/* The URI the destination listens on, "" on a source. */
void migration_incoming_uri(struct migration *g, char *buf, size_t len);
/* query-migrate's figures that the engine knows (not the VM's own:
 * dirty tracking, telemetry, dirty-limit throttle). */
void migration_query(struct migration *g, struct migration_info *info);
/* Destination: the stream was loaded but the source's decision never
 * came; the guest waits, stopped (docs/stream-format.md, "The end of a
 * migration").  migration_resolve() is the operator's cont: it starts the
 * guest here (only right when the source says completed). */
bool migration_unresolved(struct migration *g);
int migration_resolve(struct migration *g, char *err, size_t errlen);
/* The dirty-limit capability limits the vCPUs now. */
bool migration_throttling(struct migration *g);

/* User-created objects (QEMU's --object and object-add), in QEMU's type
 * and property names: what tls-creds and tls-authz name. */
enum migration_object_type { MIGRATION_OBJECT_TLS_CREDS_X509, MIGRATION_OBJECT_AUTHZ_SIMPLE };
struct migration_object_spec {
	enum migration_object_type type;
	char id[MIGRATION_OBJECT_ID_MAX + 1];
	bool server;			/* tls-creds-x509: endpoint=server (else client) */
	bool verify_peer;		/* tls-creds-x509: verify-peer (default on) */
	char dir[1024];			/* tls-creds-x509: the PEM files */
	char identity[1024];		/* authz-simple: the allowed client DN */
};
/* A spec of type ("tls-creds-x509", "authz-simple") with its defaults,
 * then its properties one by one (QEMU's names and refusals). */
int migration_object_init(struct migration_object_spec *o, const char *type, char *err, size_t errlen);
int migration_object_set(struct migration_object_spec *o, const char *key, const char *value, char *err,
			 size_t errlen);
/* --object's "TYPE,key=value,..." */
int migration_object_parse(const char *text, struct migration_object_spec *o, char *err, size_t errlen);
/* Create it (credentials are read now: a bad directory fails here). */
int migration_object_add(struct migration *g, const struct migration_object_spec *o, char *err, size_t errlen);
int migration_object_del(struct migration *g, const char *id, char *err, size_t errlen);
/* Would it be created?  Reads the credentials and lets them go: lets a
 * run refuse a bad --object before it starts anything. */
int migration_object_check(const struct migration_object_spec *o, char *err, size_t errlen);

void migration_get_params(struct migration *g, struct migration_params *p);
/* migrate-set-parameters: checked (QEMU's words), then applied at once. */
int migration_set_params(struct migration *g, const struct migration_params *p, unsigned int mask, char *err,
			 size_t errlen);

#endif
