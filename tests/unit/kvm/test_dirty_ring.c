/* The dirty-ring harvester against a model of this host's kernel ring.
 *
 * The model does what kvm_dirty_ring_push()/kvm_dirty_ring_reset() do,
 * including the bug seen on these machines: a vCPU that is already past
 * the soft-full check keeps pushing, beyond the ring's capacity, over the
 * oldest entries not yet reset.  A migration is simulated on top (protect
 * all, mark all dirty, harvest/send/write interleaved at random, stop,
 * final harvest) and every page's last written version must have been
 * sent.  A by-the-book harvester, run on the same schedules, must lose
 * pages: that shows the model really overflows and the test can fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvm/dirty-ring.h"

#define NPAGES 2048
#define RSVD 64

struct model {
	struct kvm_dirty_gfn *ring;
	uint32_t size, dirty_index, reset_index;
	bool protected_[NPAGES];
	uint32_t mem[NPAGES], sent[NPAGES];
	bool dirty[NPAGES];
	uint64_t rng;
	uint64_t overflows_seen;	/* pushes beyond capacity */
	uint64_t resyncs;
};

static uint32_t rnd(struct model *m, uint32_t n)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return (uint32_t)(m->rng % n);
}

static void push(struct model *m, uint32_t gfn)
{
	struct kvm_dirty_gfn *e = &m->ring[m->dirty_index & (m->size - 1)];

	if (m->dirty_index - m->reset_index >= m->size)
		m->overflows_seen++;	/* the kernel overwrites the oldest entry */
	e->slot = 0;
	e->offset = gfn;
	__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_DIRTY, __ATOMIC_RELEASE);
	m->dirty_index++;
}

static void guest_write(struct model *m, uint32_t gfn)
{
	m->mem[gfn]++;
	if (m->protected_[gfn]) {
		m->protected_[gfn] = false;
		push(m, gfn);
	}
}

/* kvm_dirty_ring_reset(): walk from reset_index over harvested entries,
 * re-protect their pages, mark them invalid.  No check against
 * dirty_index, as in the kernel. */
static int model_reset(void *opaque)
{
	struct model *m = opaque;
	int count = 0;

	for (;;) {
		struct kvm_dirty_gfn *e = &m->ring[m->reset_index & (m->size - 1)];

		if (!(e->flags & KVM_DIRTY_GFN_F_RESET))
			break;
		if (e->offset < NPAGES)
			m->protected_[e->offset] = true;
		e->flags = 0;
		m->reset_index++;
		count++;
	}
	return count;
}

static void resync(struct model *m)
{
	for (uint32_t i = 0; i < NPAGES; i++) {
		m->protected_[i] = true;
		m->dirty[i] = true;
	}
	m->resyncs++;
}

static void harvest(struct model *m, struct dirty_ring *r, unsigned int flags)
{
	struct dirty_gfn buf[2 * 4096];
	struct dirty_ring_report rep;

	uint32_t k0 = r->kreset, f0 = r->fetch, d0 = m->dirty_index, rs0 = m->reset_index;
	assert_int_equal(dirty_ring_harvest(r, buf, 2 * m->size, flags, model_reset, m, &rep), 0);
	if (r->kreset != m->reset_index)
		fail_msg("model diverged: before kreset %u fetch %u kernel reset %u dirty %u; after kreset %u fetch %u kernel reset %u dirty %u collected %u overflow %d holes %u",
			 k0, f0, rs0, d0, r->kreset, r->fetch, m->reset_index, m->dirty_index, rep.collected, rep.overflow, rep.holes_fixed);
	for (uint32_t i = 0; i < rep.collected; i++)
		m->dirty[buf[i].offset] = true;
	if (rep.overflow)
		resync(m);
}

/* The documented protocol and nothing more: stop at the first entry not
 * flagged dirty. */
static void naive_harvest(struct model *m, uint32_t *fetch)
{
	for (;;) {
		struct kvm_dirty_gfn *e = &m->ring[*fetch & (m->size - 1)];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			break;
		m->dirty[e->offset] = true;
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		(*fetch)++;
	}
	model_reset(m);
}

static void send_some(struct model *m, uint32_t budget)
{
	for (uint32_t g = 0; g < NPAGES && budget; g++) {
		if (m->dirty[g]) {
			m->dirty[g] = false;
			m->sent[g] = m->mem[g];
			budget--;
		}
	}
}

/* One guest run: if the ring is at the soft limit at entry the vCPU exits
 * (ring full); otherwise it writes a burst without looking again, which
 * is how pushes go past capacity on this host. */
static bool guest_burst(struct model *m, uint32_t ws)
{
	if (m->dirty_index - m->reset_index >= m->size - RSVD)
		return false;	/* KVM_EXIT_DIRTY_RING_FULL */
	uint32_t n = 1 + rnd(m, 400);

	for (uint32_t i = 0; i < n; i++)
		guest_write(m, rnd(m, ws));
	return true;
}

/* After a migration the ring may still hold a hole that no push has
 * bounded yet (the vCPU stopped right after an overflow).  The guest runs
 * on (as before a next migration): its first pushes land past the hole,
 * the harvester repairs it, and the kernel's reset index catches up. */
static void check_ring_recovers(struct model *m, struct dirty_ring *r, uint32_t ws)
{
	for (uint32_t i = 0; i < NPAGES; i++)
		m->protected_[i] = true;
	for (int step = 0; step < 2000 && m->reset_index != m->dirty_index; step++) {
		uint32_t before = m->dirty_index;

		if (m->dirty_index - m->reset_index >= m->size - RSVD) {
			harvest(m, r, DIRTY_RING_FULL_EXIT);	/* ring-full exit */
			continue;
		}
		for (int i = 0; i < 3; i++)
			guest_write(m, rnd(m, ws));
		if (m->dirty_index != before)
			harvest(m, r, 0);
	}
	harvest(m, r, DIRTY_RING_SCAN);
	assert_int_equal(r->kreset, m->reset_index);
	assert_int_equal(m->reset_index, m->dirty_index);
	assert_int_equal(r->fetch, m->dirty_index);
}

/* Returns the number of pages whose last version never reached the
 * destination. */
static uint32_t migrate(uint64_t seed, uint32_t size, bool naive, uint64_t *overflows, uint64_t *resyncs)
{
	struct model *m = calloc(1, sizeof(*m));
	struct dirty_ring r;
	uint32_t fetch = 0, lost = 0;

	m->size = size;
	m->ring = calloc(size, sizeof(*m->ring));
	m->rng = seed * 2654435761u + 1;
	dirty_ring_init(&r, m->ring, size);
	/* pages written before migration */
	for (uint32_t g = 0; g < NPAGES; g += 3)
		m->mem[g] = 1;
	resync(m);	/* start: protect all, everything dirty */
	m->resyncs = 0;
	uint32_t ws = 256 + rnd(m, NPAGES - 256);

	for (int step = 0; step < 4000; step++) {
		uint32_t what = rnd(m, 10);

		if (what < 6) {
			if (!guest_burst(m, ws)) {	/* ring-full exit: the vCPU harvests */
				if (naive)
					naive_harvest(m, &fetch);
				else
					harvest(m, &r, DIRTY_RING_FULL_EXIT);
			}
		} else if (what < 8) {
			/* background harvest, sometimes late */
			if (naive)
				naive_harvest(m, &fetch);
			else
				harvest(m, &r, 0);
		} else {
			send_some(m, 1 + rnd(m, 300));
		}
	}
	/* stop-and-copy: vCPU stopped, final harvest, send the rest */
	if (naive)
		naive_harvest(m, &fetch);
	else
		harvest(m, &r, DIRTY_RING_SCAN);
	send_some(m, NPAGES);
	for (uint32_t g = 0; g < NPAGES; g++)
		lost += m->sent[g] != m->mem[g];
	if (!naive)
		check_ring_recovers(m, &r, ws);
	*overflows = m->overflows_seen;
	*resyncs = m->resyncs;
	free(m->ring);
	free(m);
	return lost;
}

static void test_lossless_under_overflow(void **state)
{
	(void)state;
	uint64_t total_over = 0, total_resync = 0;

	for (uint64_t seed = 1; seed <= 300; seed++) {
		uint64_t over, rs;
		uint32_t size = seed % 3 == 0 ? 256 : seed % 3 == 1 ? 512 : 1024;
		uint32_t lost = migrate(seed, size, false, &over, &rs);

		if (lost)
			fail_msg("seed %llu ring %u: %u pages lost (%llu overflowing pushes)",
				 (unsigned long long)seed, size, lost, (unsigned long long)over);
		total_over += over;
		total_resync += rs;
	}
	/* the schedules must really have overflowed, and been recovered */
	assert_true(total_over > 100);
	assert_true(total_resync > 0);
	print_message("300 migrations, %llu overflowing pushes, %llu resyncs, 0 pages lost\n",
		      (unsigned long long)total_over, (unsigned long long)total_resync);
}

static void test_naive_harvester_loses_pages(void **state)
{
	(void)state;
	uint32_t runs_with_loss = 0;

	for (uint64_t seed = 1; seed <= 100; seed++) {
		uint64_t over, rs;

		if (migrate(seed, 256, true, &over, &rs))
			runs_with_loss++;
	}
	print_message("naive harvester lost pages in %u of 100 migrations\n", runs_with_loss);
	assert_true(runs_with_loss > 0);
}

static void test_no_overflow_no_resync(void **state)
{
	(void)state;
	struct kvm_dirty_gfn ring[256];
	struct model *m = calloc(1, sizeof(*m));
	struct dirty_ring r;
	struct dirty_gfn buf[512];
	struct dirty_ring_report rep;

	memset(ring, 0, sizeof(ring));
	m->ring = ring;
	m->size = 256;
	dirty_ring_init(&r, ring, 256);
	for (uint32_t round = 0; round < 50; round++) {
		for (uint32_t i = 0; i < 100; i++)
			push(m, (round * 100 + i) % NPAGES);
		assert_int_equal(dirty_ring_harvest(&r, buf, 512, round % 2 ? DIRTY_RING_SCAN : 0, model_reset, m, &rep), 0);
		assert_int_equal(rep.collected, 100);
		assert_false(rep.overflow);
		assert_int_equal(rep.holes_fixed, 0);
		for (uint32_t i = 0; i < 100; i++)
			assert_int_equal(buf[i].offset, (round * 100 + i) % NPAGES);
	}
	assert_int_equal(m->reset_index, m->dirty_index);
	free(m);
}

/* Exactly the hole of the design notes: entries pushed past capacity
 * overwrite unread ones, the reset walk resets the lap, and the next
 * pushes land beyond an invalid run. */
static void test_hole_is_repaired(void **state)
{
	(void)state;
	struct kvm_dirty_gfn ring[256];
	struct model *m = calloc(1, sizeof(*m));
	struct dirty_ring r;
	struct dirty_gfn buf[512];
	struct dirty_ring_report rep;

	memset(ring, 0, sizeof(ring));
	m->ring = ring;
	m->size = 256;
	dirty_ring_init(&r, ring, 256);
	for (uint32_t i = 0; i < 256 + 40; i++)	/* 40 past capacity */
		push(m, i % NPAGES);
	assert_int_equal(dirty_ring_harvest(&r, buf, 512, 0, model_reset, m, &rep), 0);
	assert_true(rep.overflow);	/* a full ring: entries may be lost */
	for (uint32_t i = 0; i < 10; i++)
		push(m, 1000 + i);
	assert_int_equal(dirty_ring_harvest(&r, buf, 512, 0, model_reset, m, &rep), 0);
	assert_int_equal(rep.holes_fixed, 1);
	assert_int_equal(rep.collected, 10);
	assert_int_equal(buf[0].offset, 1000);
	assert_int_equal(m->reset_index, m->dirty_index);
	assert_int_equal(r.kreset, m->reset_index);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_overflow_no_resync),
		cmocka_unit_test(test_hole_is_repaired),
		cmocka_unit_test(test_lossless_under_overflow),
		cmocka_unit_test(test_naive_harvester_loses_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
