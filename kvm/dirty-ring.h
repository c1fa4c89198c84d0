/* kvm/dirty-ring.h — harvesting one vCPU's KVM dirty ring, losslessly, on a
 * kernel that can overflow the ring.
 *
 * The documented protocol (Documentation/virt/kvm/api.rst, "dirty ring"):
 * userspace reads entries in order from its fetch index while their flags
 * say DIRTY (load-acquire), records the GFN, sets the flags to RESET
 * (store-release), and calls KVM_RESET_DIRTY_RINGS, which walks each ring
 * from the kernel's reset index over RESET entries, re-protects their pages
 * and returns how many it reset.
 *
 * What the kernel of the hosts kmig was built on does wrong (measured
 * there; modelled by tests/unit/kvm/test_dirty_ring.c and provoked by the
 * migrate-ring-overflow integration tests): the vCPU does not
 * always exit at the ring's soft-full mark, so the kernel keeps pushing past
 * the ring's capacity and overwrites the oldest entry not yet reset.  Two
 * things can then go wrong:
 *  - an entry we had not read yet is overwritten: its GFN is lost, and its
 *    page stays writable and unlogged;
 *  - an entry we read but the kernel had not reset is overwritten: its page
 *    is never re-protected, so later writes to it are not logged.
 * Either way the kernel's reset walk later meets a slot that is not RESET
 * (a "hole") and stops for good; the vCPU then spins on ring-full exits.
 *
 * How we stay lossless:
 *  - we model the kernel's reset index (kreset): KVM_RESET_DIRTY_RINGS is
 *    called right after each ring's harvest, under one lock, so its return
 *    value is exactly this ring's walk length;
 *  - overflow detection: reading a DIRTY entry when fetch - kreset >= size
 *    (it overwrote one of ours), finishing a harvest with fetch - kreset >=
 *    size (the kernel may have overwritten entries we never saw), a reset
 *    walk that stops short, or a hole: a non-DIRTY entry at fetch with a
 *    DIRTY entry further on;
 *  - repair: holes and slots the walk could not pass are marked RESET so
 *    the kernel's reset index catches up with ours;
 *  - a hole at the tail that no later push reveals: the kernel counts
 *    entries we cannot see and keeps the vCPU in ring-full exits, so no
 *    push ever comes.  Two ring-full exits in a row with nothing to read
 *    and nothing collected by anyone in between prove it (the kernel's
 *    used count is at least its soft limit, all of it invisible), so the
 *    slot at fetch is inside the kernel's used range: we hand it back one
 *    slot per such exit until the vCPU runs and pushes past the hole;
 *  - recovery: the caller re-protects all RAM and resends it (a "resync"),
 *    because which pages were lost cannot be known from the ring alone.
 *
 * Pure logic: no ioctls here (the caller passes a reset callback), so the
 * unit tests can drive it against a model of the overflowing kernel ring.
 */
#ifndef KMIG_KVM_DIRTY_RING_H
#define KMIG_KVM_DIRTY_RING_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty_ring {
	struct kvm_dirty_gfn *gfns;
	uint32_t size;		/* entries, power of two */
	uint32_t fetch;		/* next entry to read (free-running) */
	uint32_t kreset;	/* the kernel's reset index, as we model it */
	bool suspect;		/* an overflow may have left a hole at fetch */
	/* phantom-full detection: fetch as of the last empty ring-full exit */
	bool phantom_armed;
	uint32_t phantom_fetch;
};

struct dirty_gfn {
	uint32_t slot;
	uint64_t offset;
};

/* which detector saw the overflow (dirty_ring_report.why) */
#define DIRTY_RING_OVF_LAPPED 1u	/* DIRTY entry a ring ahead of kreset */
#define DIRTY_RING_OVF_FULL_READ 2u	/* read a whole ring of unreset entries */
#define DIRTY_RING_OVF_WALK 4u		/* the reset walk stopped short */
#define DIRTY_RING_OVF_HOLE 8u		/* non-DIRTY at fetch, DIRTY further on */
#define DIRTY_RING_OVF_PHANTOM 16u	/* full, yet nothing to read, twice */

struct dirty_ring_report {
	uint32_t collected;	/* entries read */
	bool overflow;		/* pages may have been lost: resync needed */
	unsigned int why;	/* DIRTY_RING_OVF_* */
	uint32_t holes_fixed;
};

/* Returns the number of entries the kernel reset, or -errno. */
typedef int (*dirty_ring_reset_fn)(void *opaque);

/* dirty_ring_harvest flags */
#define DIRTY_RING_SCAN 1u	/* scan for holes even if nothing looks wrong */
#define DIRTY_RING_FULL_EXIT 2u	/* called for this vCPU's ring-full exit */

void dirty_ring_init(struct dirty_ring *r, struct kvm_dirty_gfn *gfns, uint32_t size);

/* Read every DIRTY entry into out[0..cap) and hand the ring back to the
 * kernel: mark RESET, call reset (possibly several times to repair), check
 * the walk.  Only when this returns may the collected pages be published
 * as dirty: by then KVM has re-protected them.  flags: DIRTY_RING_*.
 * cap must be at least 2 * size. */
int dirty_ring_harvest(struct dirty_ring *r, struct dirty_gfn *out, size_t cap, unsigned int flags,
		       dirty_ring_reset_fn reset, void *opaque, struct dirty_ring_report *rep);

/* Entries read but not yet reset by the kernel: after an overflow its
 * reset walk can stop short of fetch (at a slot a newer push overwrote),
 * and the pages of the entries behind that slot are not re-protected yet,
 * though dirty_ring_harvest returned them.  A publisher must keep treating
 * them as dirty until they are.  fn gets each such entry whose slot still
 * holds what was read (flagged RESET); one the kernel overwrote since is
 * named by the eBPF guard, or covered by a resync. */
void dirty_ring_unreset(struct dirty_ring *r, void (*fn)(void *ctx, uint32_t slot, uint64_t offset),
			void *ctx);

#endif
