/* Private to savevm/: the machine and its migration state. */
#ifndef KMIG_SAVEVM_MACHINE_INT_H
#define KMIG_SAVEVM_MACHINE_INT_H

#include <pthread.h>
#include <stdio.h>

#include "bpf/telemetry.h"
#include "common/util.h"
#include "kvm/kvm.h"
#include "ring/ring.h"
#include "savevm/blob.h"
#include "savevm/multifd.h"
#include "savevm/machine.h"
#include "savevm/ram.h"
#include "savevm/savevm.h"

/* calc-dirty-rate's measurement (dirtyrate.c) */
struct dirtyrate_state {
	pthread_t thread;
	bool thread_running;		/* joined before the next one starts */
	atomic_bool stop;
	struct dirtyrate_info info;	/* under machine.lock */
};

/* set-vcpu-dirty-limit's token buckets and the controller (dirtylimit.c) */
struct dirtylimit_vcpu_state {
	uint64_t limit;			/* MiB/s, 0 = none */
	bool by_migration;		/* set by the dirty-limit capability */
	double allowance;		/* pages the vCPU may still dirty */
	uint64_t last_pages;		/* its dirty count at the last tick */
	uint64_t period_pages;		/* dirtied in the current period */
	uint64_t period_throttle0;	/* its throttled time at the period start */
	uint64_t current_rate;		/* MiB/s over the last whole period */
	uint64_t throttle_per_round_us;	/* slept per ring of dirty pages */
};
struct dirtylimit_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* wakes the controller to stop */
	pthread_t thread;
	bool thread_running, stop;
	bool tracking;			/* holds dirty tracking on */
	uint64_t period_start_ns;
	struct dirtylimit_vcpu_state v[KMIG_MAX_VCPUS];
};

struct migration {
	enum migration_status status;
	bool incoming;
	bool thread_running;
	pthread_t thread;
	atomic_bool cancel;
	struct ring_channel *ch;	/* for abort from cancel/quit */
	struct multifd_send *mf_send;	/* RAM channels, same purpose */
	struct multifd_recv *mf_recv;
	/* what the RAM path used (x-kmig): channels, copy or zero-copy, and
	 * zero-copy notifications of which the kernel copied anyway */
	unsigned int channels;
	enum savevm_send_mode send_mode;
	uint64_t zc_sends, zc_copied;
	uint64_t multifd_bytes;		/* final, once the channels closed */
	/* expected-downtime when the switchover was decided */
	bool switchover_decided;
	uint64_t switchover_expected_ms;
	/* passes run because the rest still shrank fast (switchover_decide) */
	uint64_t shrink_passes;
	/* the destination's listener, open from --incoming until its
	 * incoming migration ends (a later source is then refused), and the
	 * address it listens on */
	struct ring_listener *listener;
	struct ring_uri listen_addr;
	char uri[256];

	uint64_t start_ns, setup_ns, end_ns;
	uint64_t downtime_start_ns;
	uint64_t downtime_ms, expected_downtime_ms;
	uint64_t precopy_bytes, downtime_bytes;
	_Atomic uint64_t sent;		/* bytes of the stream so far (live) */
	uint64_t dirty_sync_count, passes;
	uint64_t bandwidth;		/* bytes/s measured over the last pass */
	uint64_t pages_per_second, dirty_pages_rate;
	double mbps;
	char error[512];
	bool resume_on_fail;		/* the guest ran before switchover */
	struct migration_phases phases;
	struct migration_stall stall;
	uint64_t stall_since_ns;	/* when remaining last fell */
	bool stall_valid;		/* at least one pass measured */
	/* dirty-limit capability: passes in a row whose dirtying outran
	 * half of what they sent; the limit engaged */
	unsigned int dirty_high_passes;
	bool dirty_limit_engaged;
};

struct machine {
	struct machine_config cfg;
	char *cmdline;
	FILE *serial;
	bool serial_failed;	/* a write failed and was reported; quiet until one works */
	bool serial_owned;

	struct kvm_vm *vm;
	struct savevm_registry *reg;
	struct ram_handler *ram;
	struct blob *blobs[MACHINE_MAX_DEVICES];
	unsigned int nr_blobs;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum machine_runstate runstate;
	bool quit;
	int exit_code;
	pthread_mutex_t ev_lock;	/* held while a handler runs */
	machine_event_fn ev;
	void *ev_opaque;

	struct migration_params params;
	struct migration mig;
	bool incoming_defer;

	/* per-vCPU dirty counts: eBPF when attached (telemetry.c) */
	struct kmig_bpf *bpf;
	const char *telemetry;		/* "bpf", "ring" or "none" */
	char telemetry_why[160];
	struct dirtyrate_state dr;
	struct dirtylimit_state dl;
};

/* telemetry.c */
void telemetry_open(struct machine *m);
void telemetry_close(struct machine *m);
/* Dirty pages vCPU idx has pushed to its ring so far (monotonic). */
uint64_t telemetry_vcpu_pages(struct machine *m, unsigned int idx);
/* dirtyrate.c, dirtylimit.c */
void dirtyrate_fini(struct machine *m);
void dirtylimit_init(struct machine *m);
void dirtylimit_fini(struct machine *m);
/* The dirty-limit capability: limit every vCPU (engage) or lift the
 * limits the migration set (release, at its end). */
void dirtylimit_migration_engage(struct machine *m, uint64_t mib_per_s);
void dirtylimit_migration_release(struct machine *m);
/* query-migrate's figures while limits are on; false if none */
bool dirtylimit_migration_stats(struct machine *m, uint64_t *per_round_us, uint64_t *dirty_ring_full_us);

void machine_emit(struct machine *m, enum machine_event ev, int64_t arg);
/* Called with m->lock held. */
void machine_set_runstate_locked(struct machine *m, enum machine_runstate s);
void migration_set_status(struct machine *m, enum migration_status s);

/* Abort every connection of the migration (cancel, quit); m->lock held. */
void migration_abort_channels_locked(struct machine *m);
int migration_source_start(struct machine *m, const char *uri, char *err, size_t errlen);
int migration_incoming_listen(struct machine *m, const char *uri, char *err, size_t errlen);
void migration_join(struct machine *m);

#endif
