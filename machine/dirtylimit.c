/* Per-vCPU dirty limits (QEMU's set-vcpu-dirty-limit and the dirty-limit
 * capability).
 *
 * Each limited vCPU has a token bucket of pages, refilled at its limit.
 * A controller thread reads every vCPU's dirty count (eBPF or harvester)
 * each TICK_MS; a vCPU that spent more than its bucket held is kept out of
 * KVM_RUN until the refill covers the debt (kvm_vcpu_throttle kicks it
 * out and its run loop sleeps).  So the long-run rate is the limit, the
 * error is at most a tick of unthrottled dirtying, and a vCPU that does
 * not dirty memory never sleeps: the throttle is per vCPU, where QEMU's
 * older auto-converge slows every vCPU alike.
 *
 * Limits need dirty tracking on (rings count only then): the controller
 * holds it while any limit is set. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "machine/machine-int.h"

#define TICK_MS 5
/* the bucket holds at most this much of the limit: a vCPU that was quiet
 * may then dirty in a burst for that long, no longer */
#define BURST_MS 20
#define MIB (1024.0 * 1024.0)

static double pages_per_s(uint64_t mib_per_s)
{
	return (double)mib_per_s * MIB / KVM_PAGE_SIZE;
}

/* One tick for vCPU i; dl->lock held. */
static void tick_vcpu(struct machine *m, unsigned int i, uint64_t now, double dt)
{
	struct dirtylimit_vcpu_state *v = &m->dl.v[i];
	uint64_t pages = telemetry_vcpu_pages(m, i);
	uint64_t d = pages - v->last_pages;

	v->last_pages = pages;
	v->period_pages += d;
	if (!v->limit)
		return;
	double rate = pages_per_s(v->limit), cap = rate * BURST_MS / 1000;

	v->allowance += rate * dt - (double)d;
	if (v->allowance > cap)
		v->allowance = cap;
	if (v->allowance < 0)
		kvm_vcpu_throttle(m->vm, i, now + (uint64_t)(-v->allowance / rate * 1e9));
}

/* End of a measuring period (x-vcpu-dirty-limit-period): rates and the
 * sleep per ring of pages, for the query commands. */
static void end_period(struct machine *m, uint64_t now)
{
	struct dirtylimit_state *dl = &m->dl;
	double secs = (double)(now - dl->period_start_ns) / 1e9;
	uint32_t ring = kvm_dirty_ring_entries(m->vm);

	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++) {
		struct dirtylimit_vcpu_state *v = &dl->v[i];
		uint64_t slept = kvm_vcpu_throttled_ns(m->vm, i);
		double rounds = ring ? (double)v->period_pages / ring : 0;

		v->current_rate = (uint64_t)((double)v->period_pages * KVM_PAGE_SIZE / MIB / secs + 0.5);
		v->throttle_per_round_us = rounds >= 1 ? (uint64_t)((double)(slept - v->period_throttle0) / 1000 / rounds)
					 : (slept - v->period_throttle0) / 1000;
		v->period_throttle0 = slept;
		v->period_pages = 0;
	}
	dl->period_start_ns = now;
}

static bool any_limit(const struct machine *m)
{
	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++)
		if (m->dl.v[i].limit)
			return true;
	return false;
}

static void *controller(void *arg)
{
	struct machine *m = arg;
	struct dirtylimit_state *dl = &m->dl;
	uint64_t last = kmig_now_ns();

	pthread_mutex_lock(&dl->lock);
	while (!dl->stop) {
		struct timespec ts;

		savevm_deadline_ms(&ts, TICK_MS);
		pthread_cond_timedwait(&dl->cond, &dl->lock, &ts);
		if (dl->stop)
			break;
		uint64_t now = kmig_now_ns();
		double dt = (double)(now - last) / 1e9;

		last = now;
		for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++)
			tick_vcpu(m, i, now, dt);
		struct migration_params p;

		migration_get_params(m->mig, &p);
		uint64_t period = p.vcpu_dirty_limit_period_ms;
		if (now - dl->period_start_ns >= period * 1000000)
			end_period(m, now);
	}
	pthread_mutex_unlock(&dl->lock);
	return NULL;
}

/* Start or stop the controller and the dirty tracking it needs to match
 * whether any limit is set.  dl->lock held; drops it to join. */
static int reconcile(struct machine *m, char *err, size_t errlen)
{
	struct dirtylimit_state *dl = &m->dl;

	if (any_limit(m) && !dl->thread_running) {
		int r = kvm_dirty_start(m->vm, err, errlen);

		if (r)
			return r;
		dl->tracking = true;
		uint64_t now = kmig_now_ns();

		for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++) {
			dl->v[i].last_pages = telemetry_vcpu_pages(m, i);
			dl->v[i].period_pages = 0;
			dl->v[i].period_throttle0 = kvm_vcpu_throttled_ns(m->vm, i);
		}
		dl->period_start_ns = now;
		dl->stop = false;
		r = -pthread_create(&dl->thread, NULL, controller, m);
		if (r) {
			kvm_dirty_stop(m->vm);
			dl->tracking = false;
			snprintf(err, errlen, "cannot start the dirty limit thread: %s", strerror(-r));
			return r;
		}
		dl->thread_running = true;
	} else if (!any_limit(m) && dl->thread_running) {
		dl->stop = true;
		pthread_cond_broadcast(&dl->cond);
		pthread_mutex_unlock(&dl->lock);
		pthread_join(dl->thread, NULL);
		pthread_mutex_lock(&dl->lock);
		dl->thread_running = false;
		for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++)
			kvm_vcpu_throttle(m->vm, i, 0);
		if (dl->tracking)
			kvm_dirty_stop(m->vm);
		dl->tracking = false;
	}
	return 0;
}

static int check_vcpu(struct machine *m, int cpu_index, char *err, size_t errlen)
{
	if (kvm_dirty_backend(m->vm) != KMIG_DIRTY_RING) {
		snprintf(err, errlen, "dirty page limit feature requires KVM with accelerator property "
			 "'dirty-ring-size' set (kmig run --dirty-tracking ring)");
		return -ENOTSUP;
	}
	if (cpu_index < -1 || cpu_index >= (int)kvm_vm_nr_vcpus(m->vm)) {
		snprintf(err, errlen, "incorrect cpu index specified");
		return -EINVAL;
	}
	return 0;
}

static void set_limit(struct machine *m, unsigned int i, uint64_t mib_per_s, bool by_migration)
{
	struct dirtylimit_vcpu_state *v = &m->dl.v[i];

	if (!v->limit)
		v->allowance = 0;
	v->limit = mib_per_s;
	v->by_migration = mib_per_s && by_migration;
	if (!mib_per_s) {
		v->current_rate = 0;
		v->throttle_per_round_us = 0;
		kvm_vcpu_throttle(m->vm, i, 0);
	}
}

static int apply(struct machine *m, int cpu_index, uint64_t mib_per_s, bool by_migration, char *err,
		 size_t errlen)
{
	struct dirtylimit_state *dl = &m->dl;

	pthread_mutex_lock(&dl->lock);
	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++)
		if (cpu_index < 0 || (unsigned int)cpu_index == i)
			set_limit(m, i, mib_per_s, by_migration);
	int r = reconcile(m, err, errlen);

	pthread_mutex_unlock(&dl->lock);
	return r;
}

int machine_set_vcpu_dirty_limit(struct machine *m, int cpu_index, uint64_t mb_per_s, char *err,
				 size_t errlen)
{
	int r = check_vcpu(m, cpu_index, err, errlen);

	return r ? r : apply(m, cpu_index, mb_per_s, false, err, errlen);
}

int machine_cancel_vcpu_dirty_limit(struct machine *m, int cpu_index, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->dl.lock);
	bool in_service = any_limit(m);

	pthread_mutex_unlock(&m->dl.lock);
	/* as QEMU: nothing to cancel is not an error, whatever the VM */
	if (!in_service)
		return 0;
	int r = check_vcpu(m, cpu_index, err, errlen);

	if (r)
		return r;
	pthread_mutex_lock(&m->dl.lock);
	bool held = m->dl.migration_engaged;
	pthread_mutex_unlock(&m->dl.lock);
	if (held) {
		/* as QEMU: the migration owns the limits it set */
		snprintf(err, errlen, "dirty-limit live migration is running, do not allow dirty page limit "
			 "to be canceled manually");
		return -EBUSY;
	}
	return apply(m, cpu_index, 0, false, err, errlen);
}

unsigned int machine_query_vcpu_dirty_limit(struct machine *m, struct dirtylimit_vcpu *out, unsigned int max)
{
	unsigned int n = 0;

	pthread_mutex_lock(&m->dl.lock);
	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm) && n < max; i++) {
		const struct dirtylimit_vcpu_state *v = &m->dl.v[i];

		if (v->limit)
			out[n++] = (struct dirtylimit_vcpu){ (int)i, v->limit, v->current_rate };
	}
	pthread_mutex_unlock(&m->dl.lock);
	return n;
}

void dirtylimit_migration_engage(struct machine *m, uint64_t mib_per_s)
{
	char err[160];

	pthread_mutex_lock(&m->dl.lock);
	m->dl.migration_engaged = true;
	pthread_mutex_unlock(&m->dl.lock);
	if (apply(m, -1, mib_per_s, true, err, sizeof(err)))
		fprintf(stderr, "kmig: dirty-limit: %s\n", err);
}

void dirtylimit_migration_release(struct machine *m)
{
	char err[160];
	struct dirtylimit_state *dl = &m->dl;

	pthread_mutex_lock(&dl->lock);
	dl->migration_engaged = false;
	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++)
		if (dl->v[i].by_migration)
			set_limit(m, i, 0, false);
	reconcile(m, err, sizeof(err));
	pthread_mutex_unlock(&dl->lock);
}

bool dirtylimit_migration_stats(struct machine *m, uint64_t *per_round_us, uint64_t *dirty_ring_full_us)
{
	struct dirtylimit_state *dl = &m->dl;
	uint64_t worst = 0, sum = 0, n = 0;
	bool on = false;

	pthread_mutex_lock(&dl->lock);
	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm); i++) {
		const struct dirtylimit_vcpu_state *v = &dl->v[i];

		if (!v->limit)
			continue;
		on = true;
		if (v->throttle_per_round_us > worst)
			worst = v->throttle_per_round_us;
		sum += v->current_rate;
		n++;
	}
	pthread_mutex_unlock(&dl->lock);
	/* QEMU's: a ring's worth of pages at the vCPUs' average rate */
	double dirty_ring_mib = (double)kvm_dirty_ring_entries(m->vm) * KVM_PAGE_SIZE / MIB;

	*per_round_us = worst;
	*dirty_ring_full_us = n && sum ? (uint64_t)(dirty_ring_mib / ((double)sum / (double)n) * 1e6) : 0;
	return on;
}

void dirtylimit_init(struct machine *m)
{
	pthread_mutex_init(&m->dl.lock, NULL);
	savevm_cond_init_monotonic(&m->dl.cond);
}

void dirtylimit_fini(struct machine *m)
{
	char err[160];

	pthread_mutex_lock(&m->dl.lock);
	for (unsigned int i = 0; m->vm && i < kvm_vm_nr_vcpus(m->vm); i++)
		m->dl.v[i].limit = 0;
	if (m->vm)
		reconcile(m, err, sizeof(err));
	pthread_mutex_unlock(&m->dl.lock);
}
