/* Private to machine/: the machine's state. */
#ifndef KMIG_MACHINE_MACHINE_INT_H
#define KMIG_MACHINE_MACHINE_INT_H

#include <pthread.h>
#include <stdio.h>

#include "bpf/telemetry.h"
#include "common/util.h"
#include "kvm/kvm.h"
#include "machine/machine.h"
#include "savevm/blob.h"
#include "savevm/migration.h"
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
	/* the dirty-limit capability of a migration set the limits: they
	 * are the migration's until it ends (from engage to release) */
	bool migration_engaged;
	uint64_t period_start_ns;
	struct dirtylimit_vcpu_state v[KMIG_MAX_VCPUS];
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

	struct migration *mig;		/* the engine; machine.c is its host */
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

#endif
