/* Lossless dirty-ring harvesting; see dirty-ring.h for the why. */
#include <errno.h>
#include <string.h>

#include "kvm/dirty-ring.h"

void dirty_ring_init(struct dirty_ring *r, struct kvm_dirty_gfn *gfns, uint32_t size)
{
	memset(r, 0, sizeof(*r));
	r->gfns = gfns;
	r->size = size;
}

static inline struct kvm_dirty_gfn *slot_at(struct dirty_ring *r, uint32_t idx)
{
	return &r->gfns[idx & (r->size - 1)];
}

/* Pairs with the kernel's smp_wmb() before it publishes DIRTY: once we see
 * the flag, slot/offset are the ones it wrote. */
static inline uint32_t flags_acquire(struct kvm_dirty_gfn *e)
{
	return __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
}

/* Our reads of slot/offset must complete before the kernel may reuse the
 * entry, which it may do as soon as it sees RESET. */
static inline void mark_reset(struct kvm_dirty_gfn *e)
{
	__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
}

/* A non-DIRTY entry at fetch followed by a DIRTY one means the kernel
 * pushed past entries it later overwrote or reset: returns the hole's
 * length, 0 if there is none. */
static uint32_t find_hole(struct dirty_ring *r)
{
	uint32_t j;

	for (j = 1; j < r->size; j++)
		if (flags_acquire(slot_at(r, r->fetch + j)) & KVM_DIRTY_GFN_F_DIRTY)
			break;
	if (j == r->size)
		return 0;
	/* The kernel publishes entries in order, so seeing j DIRTY means an
	 * in-order push at fetch would be visible by now: if fetch is still
	 * not DIRTY, it never will be. */
	if (flags_acquire(slot_at(r, r->fetch)) & KVM_DIRTY_GFN_F_DIRTY)
		return 0;
	return j;
}

static size_t collect(struct dirty_ring *r, struct dirty_gfn *out, size_t cap, bool scan,
		      struct dirty_ring_report *rep)
{
	size_t n = 0;

	for (;;) {
		while (n < cap) {
			struct kvm_dirty_gfn *e = slot_at(r, r->fetch);

			if (!(flags_acquire(e) & KVM_DIRTY_GFN_F_DIRTY))
				break;
			/* A DIRTY entry a whole ring ahead of the kernel's
			 * reset index replaced one we read but the kernel
			 * never reset: that page lost its write protection. */
			if (r->fetch - r->kreset >= r->size) {
				rep->overflow = true;
				rep->why |= DIRTY_RING_OVF_LAPPED;
			}
			out[n].slot = e->slot;
			out[n].offset = e->offset;
			n++;
			mark_reset(e);
			r->fetch++;
		}
		if (n == cap || !(scan || r->suspect))
			break;
		uint32_t hole = find_hole(r);
		if (!hole) {
			if (n)	/* pushes resumed at fetch: no hole there */
				r->suspect = false;
			break;
		}
		/* Hand the hole back to the kernel so its reset walk can pass
		 * it; the pages pushed into it are lost to us. */
		for (uint32_t k = 0; k < hole; k++) {
			struct kvm_dirty_gfn *e = slot_at(r, r->fetch + k);

			if (!(flags_acquire(e) & KVM_DIRTY_GFN_F_RESET))
				mark_reset(e);
		}
		r->fetch += hole;
		r->suspect = false;
		rep->overflow = true;
		rep->why |= DIRTY_RING_OVF_HOLE;
		rep->holes_fixed++;
	}
	/* A full ring of unreset entries: the kernel may have pushed past it
	 * and overwritten entries before we read them. */
	if (r->fetch - r->kreset >= r->size) {
		rep->overflow = true;
		rep->why |= DIRTY_RING_OVF_FULL_READ;
		r->suspect = true;
	}
	return n;
}

/* After a reset walk of len entries: if it stopped short of fetch, find
 * why and repair what can be repaired.  Returns 1 if another reset call is
 * needed, 0 if the kernel is caught up (or must wait for our next read). */
static int check_walk(struct dirty_ring *r, struct dirty_ring_report *rep)
{
	if (r->kreset == r->fetch)
		return 0;
	if ((int32_t)(r->fetch - r->kreset) < 0) {
		/* Cannot happen unless our model is wrong. */
		return -EPROTO;
	}
	rep->overflow = true;
	rep->why |= DIRTY_RING_OVF_WALK;
	struct kvm_dirty_gfn *e = slot_at(r, r->kreset);
	uint32_t f = flags_acquire(e);

	if (f & KVM_DIRTY_GFN_F_DIRTY) {
		/* A newer push overwrote a slot we marked: we read it on our
		 * next lap, and the walk resumes after that. */
		return 0;
	}
	/* The slot is invalid: the walk already reset it once, for an older
	 * lap (we had marked it twice).  Mark again every slot up to fetch
	 * that the walk has not reached. */
	for (uint32_t i = r->kreset; i != r->fetch; i++) {
		e = slot_at(r, i);
		f = flags_acquire(e);
		if (f & KVM_DIRTY_GFN_F_DIRTY)
			break;
		if (!(f & KVM_DIRTY_GFN_F_RESET))
			mark_reset(e);
	}
	return 1;
}

/* See "a hole at the tail" in dirty-ring.h.  Returns 1 if a slot was
 * handed back (another reset is due). */
static int phantom_step(struct dirty_ring *r, uint32_t collected, struct dirty_ring_report *rep)
{
	if (collected || r->kreset != r->fetch) {
		r->phantom_armed = false;
		return 0;
	}
	if (!r->phantom_armed || r->phantom_fetch != r->fetch) {
		r->phantom_armed = true;
		r->phantom_fetch = r->fetch;
		return 0;
	}
	struct kvm_dirty_gfn *e = slot_at(r, r->fetch);

	if (flags_acquire(e) & KVM_DIRTY_GFN_F_DIRTY)
		return 0;
	mark_reset(e);
	r->fetch++;
	r->phantom_fetch = r->fetch;
	r->suspect = true;
	rep->overflow = true;
	rep->why |= DIRTY_RING_OVF_PHANTOM;
	rep->holes_fixed++;
	return 1;
}

int dirty_ring_harvest(struct dirty_ring *r, struct dirty_gfn *out, size_t cap, unsigned int flags,
		       dirty_ring_reset_fn reset, void *opaque, struct dirty_ring_report *rep)
{
	bool scan = flags & (DIRTY_RING_SCAN | DIRTY_RING_FULL_EXIT);

	memset(rep, 0, sizeof(*rep));
	/* Bounded: each round reads what is there, resets, and either the
	 * kernel caught up, or we repaired a lap, or the walk stopped at an
	 * entry pushed over one of ours, which the next round reads. */
	for (int round = 0; round < 8; round++) {
		rep->collected += (uint32_t)collect(r, out + rep->collected, cap - rep->collected,
						    scan, rep);
		if (r->kreset == r->fetch)
			break;
		int c = reset(opaque);

		if (c < 0)
			return c;
		r->kreset += (uint32_t)c;
		int more = check_walk(r, rep);

		if (more < 0)
			return more;
		if (r->kreset == r->fetch)
			break;
	}
	if (rep->collected)
		r->phantom_armed = false;
	if ((flags & DIRTY_RING_FULL_EXIT) && phantom_step(r, rep->collected, rep)) {
		int c = reset(opaque);

		if (c < 0)
			return c;
		r->kreset += (uint32_t)c;
	}
	return 0;
}

void dirty_ring_unreset(struct dirty_ring *r, void (*fn)(void *ctx, uint32_t slot, uint64_t offset),
			void *ctx)
{
	for (uint32_t i = r->kreset; i != r->fetch; i++) {
		struct kvm_dirty_gfn *e = slot_at(r, i);

		if ((flags_acquire(e) & (KVM_DIRTY_GFN_F_DIRTY | KVM_DIRTY_GFN_F_RESET)) == KVM_DIRTY_GFN_F_RESET)
			fn(ctx, e->slot, e->offset);
	}
}
