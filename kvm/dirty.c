/* Dirty tracking: the KVM dirty ring (per-vCPU rings, harvested by a
 * background thread and by vCPUs on ring-full exits) and the dirty bitmap
 * (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG with manual protect), behind one
 * interface that fills the VM's dirty bitmap.
 *
 * The invariant both keep: a page's bit is published only after KVM has
 * re-protected the page, so a reader that clears the bit and then copies
 * the page will see the bit set again if the guest writes it afterwards.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "kvm/kvm-int.h"

/* Background harvest period: at this machine's fault rate (~10 µs per
 * first write) a vCPU fills a 4096-entry ring in ~40 ms, so 1 ms keeps the
 * ring far from full. */
#define HARVEST_PERIOD_NS 1000000L

struct dirty_backend {
	const char *name;
	int (*start)(struct kvm_vm *vm);
	int (*sync)(struct kvm_vm *vm, bool final);
	void (*stop)(struct kvm_vm *vm);
};

#define NO_VCPU UINT32_MAX

/* Caller holds dirty_lock.  vcpu: whose ring brought the page, or NO_VCPU. */
static void publish_page(struct kvm_vm *vm, uint64_t pg, uint32_t vcpu)
{
	dirty_bitmap_set(vm->dirty, pg);
	if (vm->observed)
		dirty_observer_note(vm->observed, pg, vcpu);
}

/* The cost of one harvest pass, for kvm_dirty_stats: thread CPU time,
 * because the caller may be preempted by busy vCPU threads while it holds
 * the lock, and wall time for the final sync, which the guest waits for. */
struct pass_clock {
	uint64_t wall0, cpu0, harvested0;
};

static void pass_begin(struct kvm_vm *vm, struct pass_clock *pc, uint64_t wall0)
{
	pc->wall0 = wall0;
	pc->cpu0 = kmig_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	pc->harvested0 = vm->dstats.harvested;
}

/* Caller holds dirty_lock. */
static void pass_end(struct kvm_vm *vm, const struct pass_clock *pc, bool final)
{
	vm->dstats.harvests++;
	vm->dstats.harvest_cpu_ns += kmig_clock_ns(CLOCK_THREAD_CPUTIME_ID) - pc->cpu0;
	if (final) {
		vm->dstats.final_sync_ns = kmig_now_ns() - pc->wall0;
		vm->dstats.final_sync_pages = vm->dstats.harvested - pc->harvested0;
	}
}

/* Every page the guest ever touched (kvm_mem_mark_populated). */
void kvm_dirty_mark_all(struct kvm_vm *vm)
{
	kvm_mem_mark_populated(vm->mem);
}

bool kvm_dirty_test_and_clear(struct kvm_vm *vm, uint64_t pg)
{
	return dirty_bitmap_test_and_clear(vm->dirty, pg);
}

uint64_t kvm_dirty_find_next(struct kvm_vm *vm, uint64_t pg)
{
	return dirty_bitmap_find_next(vm->dirty, pg);
}

uint64_t kvm_dirty_count(struct kvm_vm *vm)
{
	return dirty_bitmap_count(vm->dirty);
}

/* Re-protect all RAM and mark it dirty: the recovery after a ring overflow
 * lost track of pages.  Protect first, so that a write racing with the
 * mark is logged again rather than lost. */
static void sticky_clear(struct kvm_vm *vm);

static int resync_all(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->nr_slots; i++) {
		int r = kvm_set_slot_flags(vm, &vm->slots[i], 0);

		if (!r)
			r = kvm_set_slot_flags(vm, &vm->slots[i], KVM_MEM_LOG_DIRTY_PAGES);
		if (r)
			return r;
	}
	kvm_dirty_mark_all(vm);
	vm->dstats.resyncs++;
	/* every page is protected again: nothing is sticky any more */
	sticky_clear(vm);
	return 0;
}

static int gfn_to_page(struct kvm_vm *vm, const struct dirty_gfn *g, uint64_t *pg);

/* ---- the eBPF overflow guard: exact recovery ----
 * A ring entry the kernel overwrote before its reset names a page that
 * was dirtied and then never re-protected: it stays writable and its
 * writes are never logged again.  Such a page is "sticky": published at
 * every sync (so sent in every pass and, with the vCPUs stopped, in the
 * last) until a resync re-protects all RAM.  Beyond STICKY_MAX pages the
 * whole-RAM resync is cheaper than resending them every pass. */
#define STICKY_MAX 65536

static void sticky_add(void *ctx, uint32_t slot, uint64_t offset)
{
	struct kvm_vm *vm = ctx;
	struct dirty_gfn g = { .slot = slot, .offset = offset };
	uint64_t pg;

	if (gfn_to_page(vm, &g, &pg))
		return;
	/* the set answers "already sticky" in O(1); the list is what every
	 * sync walks */
	if (!vm->sticky_set.words && dirty_bitmap_init(&vm->sticky_set, kvm_vm_nr_pages(vm))) {
		vm->sticky_overflow = true;
		return;
	}
	if (!dirty_bitmap_set(&vm->sticky_set, pg))
		return;
	if (vm->nr_sticky == vm->sticky_cap) {
		size_t cap = vm->sticky_cap ? 2 * vm->sticky_cap : 64;
		uint64_t *n = cap <= STICKY_MAX ? realloc(vm->sticky, cap * sizeof(*n)) : NULL;

		if (!n) {
			dirty_bitmap_test_and_clear(&vm->sticky_set, pg);
			vm->sticky_overflow = true;
			return;
		}
		vm->sticky = n;
		vm->sticky_cap = cap;
	}
	vm->sticky[vm->nr_sticky++] = pg;
	vm->dstats.lost_pages++;
	publish_page(vm, pg, NO_VCPU);
}

/* Collect what the guard recorded.  Returns true when the list is not
 * exact (late attach, dropped records, too many pages): then only a
 * resync is safe.  Caller holds dirty_lock. */
static bool drain_lost(struct kvm_vm *vm)
{
	bool incomplete = false;

	if (!vm->lost_drain)
		return true;
	if (vm->lost_drain(vm->lost_opaque, sticky_add, vm, &incomplete) < 0)
		incomplete = true;
	return incomplete || vm->sticky_overflow;
}

static void sticky_clear(struct kvm_vm *vm)
{
	for (size_t i = 0; i < vm->nr_sticky; i++)
		dirty_bitmap_test_and_clear(&vm->sticky_set, vm->sticky[i]);
	vm->nr_sticky = 0;
	vm->sticky_overflow = false;
}

static void publish_sticky(struct kvm_vm *vm)
{
	for (size_t i = 0; i < vm->nr_sticky; i++)
		publish_page(vm, vm->sticky[i], NO_VCPU);
}

static int set_logging(struct kvm_vm *vm, bool on)
{
	for (unsigned int i = 0; i < vm->nr_slots; i++) {
		int r = kvm_set_slot_flags(vm, &vm->slots[i], on ? KVM_MEM_LOG_DIRTY_PAGES : 0);

		if (r)
			return r;
	}
	return 0;
}

/* ---- ring backend ---- */

static int dirty_ring_reset(void *opaque)
{
	struct kvm_vm *vm = opaque;
	int r = ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0);

	return r < 0 ? -errno : r;
}

static int gfn_to_page(struct kvm_vm *vm, const struct dirty_gfn *g, uint64_t *pg)
{
	for (unsigned int i = 0; i < vm->nr_slots; i++) {
		const struct kvm_slot *s = &vm->slots[i];

		if (s->id == (g->slot & 0xffff) && g->offset < s->size / KVM_PAGE_SIZE) {
			*pg = s->offset / KVM_PAGE_SIZE + g->offset;
			return 0;
		}
	}
	return -ERANGE;
}

/* Caller holds dirty_lock.  Signals are blocked by vCPU callers, because
 * KVM_RESET_DIRTY_RINGS gives up with -EINTR on a pending signal and we
 * would lose count of the kernel's reset index. */
static int harvest_one_dirty_ring(struct kvm_vm *vm, struct kvm_vcpu *v, unsigned int flags)
{
	struct dirty_gfn *buf = (struct dirty_gfn *)vm->harvest_buf;
	struct dirty_ring_report rep;
	int r = dirty_ring_harvest(&v->ring, buf, vm->harvest_cap, flags, dirty_ring_reset, vm, &rep);

	if (r)
		return r;
	/* KVM has re-protected every collected page: now publish them. */
	for (uint32_t i = 0; i < rep.collected; i++) {
		uint64_t pg;

		if (!gfn_to_page(vm, &buf[i], &pg))
			publish_page(vm, pg, v->idx);
	}
	vm->dstats.harvested += rep.collected;
	__atomic_add_fetch(&v->dirty_ring_pages, rep.collected, __ATOMIC_RELAXED);
	if (vm->trace_dirty && rep.collected > 1000) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		fprintf(stderr, "kmig: %ld.%06ld vCPU %u collected %u (flags %x)\n", (long)ts.tv_sec % 1000,
			ts.tv_nsec / 1000, v->idx, rep.collected, flags);
	}
	vm->dstats.holes_fixed += rep.holes_fixed;
	if (rep.overflow) {
		vm->dstats.overflows++;
		if (vm->trace_dirty)
			fprintf(stderr, "kmig: vCPU %u ring overflow (why 0x%x): fetch %u kreset %u "
				"collected %u holes fixed %u\n", v->idx, rep.why, v->ring.fetch,
				v->ring.kreset, rep.collected, rep.holes_fixed);
		/* the guard names the lost pages (more may still be on their
		 * way from the vCPU's tracepoint: every later sync drains
		 * again); the entries the kernel's walk has not passed yet
		 * are not re-protected: sticky too.  Without the guard, or if
		 * it lost count, resync */
		dirty_ring_unreset(&v->ring, sticky_add, vm);
		if (drain_lost(vm))
			r = resync_all(vm);
	}
	return r;
}

/* Every ring, and the guard's queue: overwrites the harvester did not
 * notice are in it too (with the vCPUs stopped, every record is). */
static int harvest_all(struct kvm_vm *vm, unsigned int flags)
{
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		int r = harvest_one_dirty_ring(vm, &vm->vcpus[i], flags);

		if (r)
			return r;
	}
	if (vm->lost_drain && drain_lost(vm))
		return resync_all(vm);
	return 0;
}

/* A sync for a reader of the bitmap: sticky pages are dirty every time. */
static int dirty_ring_sync_locked(struct kvm_vm *vm, bool final)
{
	int r = harvest_all(vm, final ? DIRTY_RING_SCAN : 0);

	if (!r)
		publish_sticky(vm);
	return r;
}

static int dirty_ring_sync(struct kvm_vm *vm, bool final)
{
	uint64_t wall0 = kmig_now_ns();
	struct pass_clock pc;

	pthread_mutex_lock(&vm->dirty_lock);
	pass_begin(vm, &pc, wall0);
	int r = dirty_ring_sync_locked(vm, final);
	pass_end(vm, &pc, final);
	pthread_mutex_unlock(&vm->dirty_lock);
	return r;
}

void kvm_dirty_ring_full(struct kvm_vcpu *v)
{
	struct kvm_vm *vm = v->vm;
	sigset_t block, old;

	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	pthread_mutex_lock(&vm->dirty_lock);
	struct pass_clock pc;

	pass_begin(vm, &pc, 0);
	vm->dstats.dirty_ring_full_exits++;
	/* A ring-full exit with nothing to read is the stall signature of a
	 * hole: scan, and step over a hole nothing reveals. */
	if (harvest_one_dirty_ring(vm, v, DIRTY_RING_FULL_EXIT) < 0)
		vm->dstats.overflows++;
	pass_end(vm, &pc, false);
	pthread_mutex_unlock(&vm->dirty_lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *harvester_main(void *arg)
{
	struct kvm_vm *vm = arg;
	struct timespec ts = { 0, HARVEST_PERIOD_NS };
	/* all of this thread's CPU time is harvesting: its wake-ups are the
	 * ring's fixed cost, paid even when the guest dirties nothing */
	uint64_t cpu = kmig_clock_ns(CLOCK_THREAD_CPUTIME_ID);

	for (;;) {
		pthread_mutex_lock(&vm->dirty_lock);
		bool stop = vm->harvester_stop;

		if (!stop) {
			harvest_all(vm, 0);
			uint64_t now = kmig_clock_ns(CLOCK_THREAD_CPUTIME_ID);

			vm->dstats.harvests++;
			vm->dstats.harvest_cpu_ns += now - cpu;
			cpu = now;
		}
		pthread_mutex_unlock(&vm->dirty_lock);
		if (stop)
			return NULL;
		nanosleep(&ts, NULL);
	}
}

static int dirty_ring_start(struct kvm_vm *vm)
{
	int r = set_logging(vm, true);

	if (r)
		return r;
	vm->harvester_stop = false;
	r = -pthread_create(&vm->harvester, NULL, harvester_main, vm);
	if (r)
		return r;
	vm->harvester_running = true;
	pthread_setname_np(vm->harvester, "kmig-harvest");
	/* The harvester must run when its timer fires, not when busy vCPU
	 * threads let it: on a host that pushes an entry per guest write, a
	 * 4096-entry ring fills in a few milliseconds.  It does little work,
	 * so a real-time priority costs the guest almost nothing.  Without
	 * the privilege it runs as a normal thread (and ring-full exits
	 * still harvest). */
	struct sched_param sp = { .sched_priority = 1 };

	vm->harvester_rt = pthread_setschedparam(vm->harvester, SCHED_FIFO, &sp) == 0;
	return 0;
}

static void dirty_ring_stop(struct kvm_vm *vm)
{
	if (vm->harvester_running) {
		pthread_mutex_lock(&vm->dirty_lock);
		vm->harvester_stop = true;
		pthread_mutex_unlock(&vm->dirty_lock);
		pthread_join(vm->harvester, NULL);
		vm->harvester_running = false;
	}
	/* Drain what is left so the rings are empty for the next start (not
	 * a switchover: kept out of the final-sync statistics). */
	pthread_mutex_lock(&vm->dirty_lock);
	dirty_ring_sync_locked(vm, true);
	pthread_mutex_unlock(&vm->dirty_lock);
	set_logging(vm, false);
}

/* ---- bitmap backend ---- */

static int bitmap_start(struct kvm_vm *vm)
{
	return set_logging(vm, true);
}

/* The slot's whole bitmap must cross the kernel boundary once (GET), but
 * the rest is kept to the dirty words: with few pages dirty, a final sync
 * took 24-35 µs instead of 64-69 at 16 GiB, 0.41-0.51 ms instead of
 * 1.08-1.15 at 256 GiB (bench/harvest_cost.c, 20 switchovers each). */
static int bitmap_sync_slot(struct kvm_vm *vm, const struct kvm_slot *s)
{
	uint64_t npages = s->size / KVM_PAGE_SIZE;
	size_t words = (npages + 63) / 64, first, last;
	struct kvm_dirty_log log = { .slot = s->id, .dirty_bitmap = vm->log_buf };
	const uint64_t *bits = (const uint64_t *)vm->log_buf;

	/* no memset: KVM writes the slot's whole bitmap */
	if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return -errno;
	for (first = 0; first < words && !bits[first]; first++)
		;
	if (first == words)
		return 0;	/* nothing dirty: nothing to re-protect */
	for (last = words - 1; !bits[last]; last--)
		;
	/* Re-protect exactly what we read, before publishing it; only the
	 * words from the first dirty one to the last, so that the kernel
	 * neither copies nor walks the clean rest.  Slots are multiples of 64
	 * pages (see vm.c), so the range is whole words, as
	 * KVM_CLEAR_DIRTY_LOG requires. */
	struct kvm_clear_dirty_log clear = {
		.slot = s->id, .first_page = first * 64, .num_pages = (uint32_t)((last - first + 1) * 64),
		.dirty_bitmap = vm->log_buf + first,
	};
	if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0)
		return -errno;
	uint64_t base = s->offset / KVM_PAGE_SIZE;

	for (size_t w = first; w <= last; w++) {
		uint64_t word = bits[w];

		while (word) {
			unsigned int b = (unsigned int)__builtin_ctzll(word);

			word &= word - 1;
			publish_page(vm, base + w * 64 + b, NO_VCPU);
			vm->dstats.harvested++;
		}
	}
	return 0;
}

static int bitmap_sync(struct kvm_vm *vm, bool final)
{
	uint64_t wall0 = kmig_now_ns();
	struct pass_clock pc;

	pthread_mutex_lock(&vm->dirty_lock);
	pass_begin(vm, &pc, wall0);
	int r = 0;

	for (unsigned int i = 0; i < vm->nr_slots && !r; i++)
		r = bitmap_sync_slot(vm, &vm->slots[i]);
	pass_end(vm, &pc, final);
	pthread_mutex_unlock(&vm->dirty_lock);
	return r;
}

static void bitmap_stop(struct kvm_vm *vm)
{
	set_logging(vm, false);
}

static const struct dirty_backend backends[] = {
	[KMIG_DIRTY_RING] = { "dirty-ring", dirty_ring_start, dirty_ring_sync, dirty_ring_stop },
	[KMIG_DIRTY_BITMAP] = { "dirty-bitmap", bitmap_start, bitmap_sync, bitmap_stop },
};

static const struct dirty_backend *backend(const struct kvm_vm *vm)
{
	return &backends[vm->cfg.dirty_backend];
}

const char *kvm_dirty_backend_name(const struct kvm_vm *vm)
{
	return backend(vm)->name;
}

/* KMIG_DIRTY_AUTO: the bitmap below KMIG_DIRTY_AUTO_RING_MIN_BYTES (256 GiB),
 * rings from there up.  Measured on this host with bench/harvest_cost.c
 * (defaults: 1 vCPU, dirty guest ws=64 MiB, a sync every 50 ms; host CPU
 * of all harvesting, the ring's background thread included):
 *
 *  - While the guest dirties, the bitmap costs less at every rate and
 *    every size up to 64 GiB: 0.04% of a core at 1 MiB/s, 0.38% at the
 *    fault-bound maximum (~940 MiB/s of pages, 0.016 µs CPU per page),
 *    where rings cost 1.5% and 2.2% (0.09 µs per page).  The ring's floor
 *    is its harvester: 1000 wake-ups a second at 14-24 µs each, paid with
 *    nothing to harvest.  And since it re-protects within 1 ms, the
 *    guest's hot pages fault again every millisecond: at 1 MiB/s the ring
 *    harvests 10-12 MiB/s of pages (stack, counters), the bitmap 1.2.
 *  - The bitmap's weakness is size: every sync copies and scans a bit per
 *    page.  Final sync at switchover, few pages dirty (p50): ring 4-7 µs
 *    at any size; bitmap 4 µs at 1 GiB, 7-11 at 4, 27-30 at 16, 100-147
 *    at 64, 450-510 at 256 GiB (~2 µs per GiB).  Each periodic sync pays
 *    the same scan: at 20 syncs a second the bitmap's CPU is 0.3-0.7% at
 *    64 GiB, 1.3-1.5% at 256 GiB, where the ring's floor is 0.8-2.4%.
 *
 * So below 256 GiB the ring's one advantage is under 0.15 ms of downtime
 * (0.05% of the default 300 ms limit) for 2-40 times the harvest CPU and
 * up to 10 times the guest's write faults: the bitmap.  From 256 GiB the
 * bitmap's scan costs as much CPU as the ring's harvester and approaches a
 * millisecond per sync: rings.  The bitmap also cannot overflow, which
 * rings do on this host when the guest runs emulated code (dirty-ring.h).
 * vCPUs are not in the rule: with 2 the ring's floor rose (2.3-3.2%), so
 * more vCPUs only move the crossover up, and the dirty rate, the other
 * axis, is not known when the VM is created. */
enum kmig_dirty_tracking kvm_dirty_backend_auto(uint64_t mem_bytes, unsigned int nr_vcpus)
{
	(void)nr_vcpus;
	return mem_bytes >= KMIG_DIRTY_AUTO_RING_MIN_BYTES ? KMIG_DIRTY_RING : KMIG_DIRTY_BITMAP;
}

int kvm_dirty_init(struct kvm_vm *vm, char *err, size_t errlen)
{
	vm->dirty = kvm_mem_dirty(vm->mem);
	if (vm->cfg.dirty_backend == KMIG_DIRTY_RING) {
		/* room for a full ring, a repaired hole and a second lap */
		vm->harvest_cap = 2 * (size_t)vm->cfg.dirty_ring_entries;
		vm->harvest_buf = calloc(vm->harvest_cap, sizeof(struct dirty_gfn));
		if (!vm->harvest_buf)
			goto nomem;
	} else {
		uint64_t max_pages = 0;

		for (unsigned int i = 0; i < vm->nr_slots; i++)
			if (vm->slots[i].size / KVM_PAGE_SIZE > max_pages)
				max_pages = vm->slots[i].size / KVM_PAGE_SIZE;
		vm->log_buf = calloc((max_pages + 63) / 64, 8);
		if (!vm->log_buf)
			goto nomem;
	}
	return 0;
nomem:
	kmig_set_err(err, errlen, "out of memory for dirty tracking");
	return -ENOMEM;
}

void kvm_dirty_fini(struct kvm_vm *vm)
{
	kvm_dirty_observe_end(vm, NULL, 0);	/* a window left open */
	free(vm->sticky);
	if (vm->sticky_set.words)
		dirty_bitmap_fini(&vm->sticky_set);
	free(vm->harvest_buf);
	free(vm->log_buf);
}

static int dirty_start_first(struct kvm_vm *vm, char *err, size_t errlen)
{
	memset(&vm->dstats, 0, sizeof(vm->dstats));
	sticky_clear(vm);
	int r = backend(vm)->start(vm);

	if (r) {
		kmig_set_err(err, errlen, "cannot start %s dirty tracking: %s", backend(vm)->name,
			     strerror(-r));
		set_logging(vm, false);
		return r;
	}
	vm->dirty_active = true;
	return 0;
}

int kvm_dirty_start(struct kvm_vm *vm, char *err, size_t errlen)
{
	pthread_mutex_lock(&vm->users_lock);
	int r = vm->dirty_users ? 0 : dirty_start_first(vm, err, errlen);

	if (!r)
		vm->dirty_users++;
	pthread_mutex_unlock(&vm->users_lock);
	return r;
}

int kvm_dirty_sync(struct kvm_vm *vm, bool final)
{
	if (!vm->dirty_active)
		return -EINVAL;
	return backend(vm)->sync(vm, final);
}

void kvm_dirty_stop(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->users_lock);
	if (vm->dirty_users && !--vm->dirty_users && vm->dirty_active) {
		backend(vm)->stop(vm);
		vm->dirty_active = false;
		/* Leave the bitmap clean for a later migration. */
		dirty_bitmap_clear_all(vm->dirty);
	}
	pthread_mutex_unlock(&vm->users_lock);
}

bool kvm_dirty_active(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->users_lock);
	bool a = vm->dirty_active;
	pthread_mutex_unlock(&vm->users_lock);
	return a;
}

enum kmig_dirty_tracking kvm_dirty_backend(const struct kvm_vm *vm)
{
	return vm->cfg.dirty_backend;
}

uint32_t kvm_dirty_ring_entries(const struct kvm_vm *vm)
{
	return vm->cfg.dirty_backend == KMIG_DIRTY_RING ? vm->cfg.dirty_ring_entries : 0;
}

uint64_t kvm_vcpu_dirty_ring_pages(struct kvm_vm *vm, unsigned int idx)
{
	return idx < vm->nr_vcpus ? __atomic_load_n(&vm->vcpus[idx].dirty_ring_pages, __ATOMIC_RELAXED) : 0;
}

void kvm_dirty_set_lost_drain(struct kvm_vm *vm, kvm_lost_drain_fn drain, void *opaque)
{
	pthread_mutex_lock(&vm->dirty_lock);
	vm->lost_drain = drain;
	vm->lost_opaque = opaque;
	pthread_mutex_unlock(&vm->dirty_lock);
}

int kvm_dirty_observe_begin(struct kvm_vm *vm)
{
	struct dirty_observer *o = calloc(1, sizeof(*o));

	if (!o || dirty_observer_init(o, kvm_vm_nr_pages(vm), vm->nr_vcpus)) {
		free(o);
		return -ENOMEM;
	}
	pthread_mutex_lock(&vm->dirty_lock);
	int r = vm->observed ? -EBUSY : 0;

	if (!r)
		vm->observed = o;
	pthread_mutex_unlock(&vm->dirty_lock);
	if (r) {
		dirty_observer_fini(o);
		free(o);
	}
	return r;
}

uint64_t kvm_dirty_observe_end(struct kvm_vm *vm, uint64_t *per_vcpu, unsigned int n)
{
	pthread_mutex_lock(&vm->dirty_lock);
	struct dirty_observer *o = vm->observed;

	vm->observed = NULL;
	pthread_mutex_unlock(&vm->dirty_lock);
	if (!o)
		return 0;
	uint64_t total = dirty_observer_total(o);

	for (unsigned int i = 0; per_vcpu && i < n && i < o->nr_vcpus; i++)
		per_vcpu[i] = o->per_vcpu[i];
	dirty_observer_fini(o);
	free(o);
	return total;
}

void kvm_dirty_get_stats(struct kvm_vm *vm, struct kvm_dirty_stats *st)
{
	pthread_mutex_lock(&vm->dirty_lock);
	*st = vm->dstats;
	pthread_mutex_unlock(&vm->dirty_lock);
}
