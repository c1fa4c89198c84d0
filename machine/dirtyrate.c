/* calc-dirty-rate / query-dirty-rate: QEMU's three ways of measuring how
 * fast the guest dirties memory, each over calc-time, in a background
 * thread, with or without a migration running.
 *
 *  - dirty-ring and dirty-bitmap: the distinct pages the dirty ring or
 *    KVM's bitmap reported in the window (kvm_dirty_observe_*): a page
 *    rewritten continuously counts once, not once per millisecond the
 *    harvester re-protected it, so the three modes measure the same
 *    thing.  Per vCPU (dirty-ring), a page counts for the vCPU whose ring
 *    brought it first, so the vCPUs' rates add up to the total.  The ring
 *    pushes themselves (eBPF counters or the harvester's: the write-fault
 *    traffic) are reported beside it (x-kmig-ring-push-rate).
 *  - page-sampling: sample-pages pages per GiB, hashed at both ends. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "machine/machine-int.h"

#define SLICE_MS 20	/* how often a measurement looks for a stop request */

static const char *const mode_names[] = {
	[DIRTYRATE_PAGE_SAMPLING] = "page-sampling",
	[DIRTYRATE_DIRTY_RING] = "dirty-ring",
	[DIRTYRATE_DIRTY_BITMAP] = "dirty-bitmap",
};

struct sample {
	uint64_t page;
	uint64_t hash;
};

struct job {
	struct machine *m;
	int64_t calc_ms;
	enum dirtyrate_mode mode;
	uint64_t sample_pages;
};

/* false if asked to stop early */
static bool sleep_window(struct machine *m, uint64_t until_ns)
{
	for (;;) {
		uint64_t now = kmig_now_ns();

		if (m->dr.stop)
			return false;
		if (now >= until_ns)
			return true;
		uint64_t left = until_ns - now, slice = (uint64_t)SLICE_MS * 1000000;
		struct timespec ts = { 0, (long)(left < slice ? left : slice) };

		nanosleep(&ts, NULL);
	}
}

/* FNV-1a over the page, read with pread so that a hole stays a hole. */
static uint64_t hash_page(int memfd, uint64_t page)
{
	uint64_t buf[KVM_PAGE_SIZE / 8], h = 1469598103934665603ull;

	if (pread(memfd, buf, sizeof(buf), (off_t)(page * KVM_PAGE_SIZE)) != (ssize_t)sizeof(buf))
		memset(buf, 0, sizeof(buf));
	for (size_t i = 0; i < KVM_PAGE_SIZE / 8; i++)
		h = (h ^ buf[i]) * 1099511628211ull;
	return h;
}

static int measure_sampling(struct job *j, uint64_t until, double *mib_s)
{
	struct kvm_vm *vm = j->m->vm;
	uint64_t pages = kvm_vm_nr_pages(vm), gib = (kvm_vm_ram_size(vm) + (1ull << 30) - 1) >> 30;
	uint64_t n = j->sample_pages * (gib ? gib : 1);
	struct sample *s = calloc(n, sizeof(*s));
	int fd = kvm_vm_memfd(vm);

	if (!s)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t r;

		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = kmig_now_ns() * 6364136223846793005ull + i;
		s[i].page = r % pages;
		s[i].hash = hash_page(fd, s[i].page);
	}
	uint64_t t0 = kmig_now_ns();
	bool done = sleep_window(j->m, until);
	uint64_t changed = 0;

	for (uint64_t i = 0; done && i < n; i++)
		changed += hash_page(fd, s[i].page) != s[i].hash;
	free(s);
	if (!done)
		return -ECANCELED;
	/* the share of RAM that changed, over the window */
	double secs = (double)(kmig_now_ns() - t0) / 1e9;
	*mib_s = (double)changed / (double)n * (double)kvm_vm_ram_size(vm) / (1 << 20) / secs;
	return 0;
}

/* The dirty-ring entries the vCPUs' rings took so far (eBPF counters or
 * the harvester's): a page counts each time it was written after being
 * re-protected, so over a window this is the write-fault traffic the
 * dirty-limit controller acts on, not the dirty rate. */
static uint64_t dirty_ring_entries_taken(struct machine *m)
{
	uint64_t sum = 0;

	for (unsigned int i = 0; i < kvm_vm_nr_vcpus(m->vm) && i < KMIG_MAX_VCPUS; i++)
		sum += telemetry_vcpu_pages(m, i);
	return sum;
}

static double pages_mib_s(uint64_t pages, double secs)
{
	return (double)pages * KVM_PAGE_SIZE / (1 << 20) / secs;
}

/* The distinct pages dirtied in the window, per second (MiB/s): a page
 * rewritten a thousand times in it counts once, in both tracking modes,
 * as page-sampling counts it.  Synced at both ends so that what was
 * logged before the window is not counted, and what was logged in it is;
 * syncs of a concurrent migration in between change nothing.  With
 * push_rate (dirty-ring mode), the ring entries of the same window too. */
static int measure_distinct(struct job *j, uint64_t until, double *mib_s, int64_t *vcpu, double *push_rate)
{
	struct machine *m = j->m;
	unsigned int n = kvm_vm_nr_vcpus(m->vm);
	uint64_t pages[KMIG_MAX_VCPUS] = { 0 };
	int r = kvm_dirty_sync(m->vm, false);

	if (!r)
		r = kvm_dirty_observe_begin(m->vm);
	if (r)
		return r;
	uint64_t entries0 = push_rate ? dirty_ring_entries_taken(m) : 0;
	uint64_t t0 = kmig_now_ns();
	bool done = sleep_window(m, until);

	if (done)
		r = kvm_dirty_sync(m->vm, false);
	double secs = (double)(kmig_now_ns() - t0) / 1e9;
	uint64_t total = kvm_dirty_observe_end(m->vm, pages, KMIG_MAX_VCPUS);

	if (!done)
		return -ECANCELED;
	if (r)
		return r;
	for (unsigned int i = 0; i < n && i < KMIG_MAX_VCPUS; i++)
		vcpu[i] = (int64_t)(pages_mib_s(pages[i], secs) + 0.5);
	*mib_s = pages_mib_s(total, secs);
	if (push_rate)
		*push_rate = pages_mib_s(dirty_ring_entries_taken(m) - entries0, secs);
	return 0;
}

static void *measure_thread(void *arg)
{
	struct job *j = arg;
	struct machine *m = j->m;
	char err[160];
	double rate = 0;
	int64_t vcpu[KMIG_MAX_VCPUS] = { 0 };
	uint64_t until = kmig_now_ns() + (uint64_t)j->calc_ms * 1000000;
	bool tracking = j->mode != DIRTYRATE_PAGE_SAMPLING;
	int r = tracking ? kvm_dirty_start(m->vm, err, sizeof(err)) : 0;
	double push_rate = 0;

	if (!r && tracking) {
		r = measure_distinct(j, until, &rate, vcpu, j->mode == DIRTYRATE_DIRTY_RING ? &push_rate : NULL);
		kvm_dirty_stop(m->vm);
	} else if (!r) {
		r = measure_sampling(j, until, &rate);
	}
	pthread_mutex_lock(&m->lock);
	struct dirtyrate_info *d = &m->dr.info;

	d->status = DIRTYRATE_MEASURED;
	/* a failed measurement (it cannot, short of a quit) leaves no rate */
	d->has_dirty_rate = !r;
	d->dirty_rate = (int64_t)(rate + 0.5);
	if (!r && j->mode == DIRTYRATE_DIRTY_RING) {
		d->nr_vcpus = kvm_vm_nr_vcpus(m->vm);
		memcpy(d->vcpu_dirty_rate, vcpu, sizeof(vcpu));
		d->has_dirty_ring_push_rate = true;
		d->dirty_ring_push_rate = (int64_t)(push_rate + 0.5);
	}
	pthread_mutex_unlock(&m->lock);
	free(j);
	return NULL;
}

static int mode_available(struct machine *m, enum dirtyrate_mode mode, char *err, size_t errlen)
{
	enum kmig_dirty_tracking b = kvm_dirty_backend(m->vm);

	if ((mode == DIRTYRATE_DIRTY_RING && b != KMIG_DIRTY_RING) ||
	    (mode == DIRTYRATE_DIRTY_BITMAP && b != KMIG_DIRTY_BITMAP)) {
		snprintf(err, errlen, "mode %s is not enabled, use other method instead.", mode_names[mode]);
		return -ENOTSUP;
	}
	return 0;
}

static const char *counted_by(struct machine *m, enum dirtyrate_mode mode)
{
	if (mode == DIRTYRATE_PAGE_SAMPLING)
		return "sampling";
	if (mode == DIRTYRATE_DIRTY_BITMAP)
		return "bitmap";
	return "ring";
}

int machine_calc_dirty_rate(struct machine *m, int64_t calc_time_ms, enum dirtyrate_mode mode,
			    uint64_t sample_pages, char *err, size_t errlen)
{
	if (calc_time_ms < DIRTYRATE_MIN_CALC_MS || calc_time_ms > DIRTYRATE_MAX_CALC_MS ||
	    mode > DIRTYRATE_DIRTY_BITMAP ||
	    (mode == DIRTYRATE_PAGE_SAMPLING &&
	     (sample_pages < DIRTYRATE_MIN_SAMPLE_PAGES || sample_pages > DIRTYRATE_MAX_SAMPLE_PAGES))) {
		snprintf(err, errlen, "invalid dirty rate measurement");
		return -EINVAL;
	}
	int r = mode_available(m, mode, err, errlen);

	if (r)
		return r;
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	*j = (struct job){ m, calc_time_ms, mode, sample_pages };
	pthread_mutex_lock(&m->lock);
	if (m->dr.info.status == DIRTYRATE_MEASURING) {
		pthread_mutex_unlock(&m->lock);
		free(j);
		snprintf(err, errlen, "the dirty rate is already being measured.");
		return -EBUSY;
	}
	pthread_t old = m->dr.thread;
	bool join = m->dr.thread_running;
	struct dirtyrate_info *d = &m->dr.info;

	memset(d, 0, sizeof(*d));
	d->status = DIRTYRATE_MEASURING;
	d->mode = mode;
	d->start_time_s = (int64_t)time(NULL);
	d->calc_time_ms = calc_time_ms;
	d->sample_pages = mode == DIRTYRATE_PAGE_SAMPLING ? sample_pages : 0;
	d->counted_by = counted_by(m, mode);
	d->telemetry_by = mode == DIRTYRATE_DIRTY_RING ? (m->bpf ? "bpf" : "ring") : NULL;
	m->dr.thread_running = false;
	pthread_mutex_unlock(&m->lock);
	if (join)	/* finished: its status said measured */
		pthread_join(old, NULL);
	m->dr.stop = false;
	r = -pthread_create(&m->dr.thread, NULL, measure_thread, j);
	pthread_mutex_lock(&m->lock);
	if (r) {
		d->status = DIRTYRATE_UNSTARTED;
		free(j);
		snprintf(err, errlen, "cannot start the measurement: %s", strerror(-r));
	} else {
		m->dr.thread_running = true;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

void machine_query_dirty_rate(struct machine *m, struct dirtyrate_info *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->dr.info;
	pthread_mutex_unlock(&m->lock);
}

void dirtyrate_fini(struct machine *m)
{
	m->dr.stop = true;
	if (m->dr.thread_running)
		pthread_join(m->dr.thread, NULL);
	m->dr.thread_running = false;
}
