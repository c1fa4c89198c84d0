/* bpf/dirty.h — records shared by dirty.bpf.c and its loader (telemetry.c).
 *
 * Included from the BPF side after vmlinux.h (which has the __u32/__u64
 * types) and from userspace, where <linux/types.h> provides them.  Layouts
 * are fixed-size and 8-byte aligned so both compilers agree. */
#ifndef KMIG_BPF_DIRTY_H
#define KMIG_BPF_DIRTY_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Per-vCPU counters, one copy per CPU (BPF_MAP_TYPE_PERCPU_ARRAY keyed by
 * the vCPU index); userspace sums them, and takes the max of max_used. */
struct kmig_dirty_stats {
	__u64 pushes;		/* dirty pages pushed into the vCPU's ring */
	__u64 full_exits;	/* KVM_EXIT_DIRTY_RING_FULL exits */
	__u64 resets;		/* KVM_RESET_DIRTY_RINGS walks of this ring */
	__u64 overwrites;	/* pushes beyond the ring's capacity */
	__u32 max_used;		/* highest dirty_index - reset_index seen */
	__u32 pad;
};

/* What the program last saw pushed into one ring slot (BPF_MAP_TYPE_ARRAY
 * keyed by vcpu * dirty_ring_entries + (index & (dirty_ring_entries - 1))): when the
 * kernel overwrites an unreset entry, this still names the old page. */
struct kmig_dirty_shadow {
	__u64 index_plus_1;	/* the entry's ring index + 1; 0: never seen */
	__u32 slot;
	__u32 pad;
	__u64 offset;
	/* the ring's kernel address (dirty_gfns): a shadow left by another
	 * VM of this process, or an earlier one, must not name a page */
	__u64 dirty_ring_id;
};

/* The old entry is not known (the programs were attached after it was
 * pushed, or the ring is not the size the loader was told): some page is
 * lost but which cannot be said, so the harvester must resync. */
#define KMIG_DIRTY_LOST_UNKNOWN 1u

/* One record of the "lost" BPF ring buffer: an entry the kernel overwrote
 * before it was reset.  Its page is lost to the harvester and stays
 * writable and unlogged until re-protected. */
struct kmig_dirty_lost {
	__u32 vcpu;
	__u32 slot;
	__u64 offset;
	__u32 index;		/* the overwritten entry's ring index */
	__u32 flags;		/* KMIG_DIRTY_LOST_* */
};

#endif
