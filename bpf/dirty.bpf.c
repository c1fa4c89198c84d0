// SPDX-License-Identifier: GPL-2.0-or-later
/* eBPF programs on the kvm:kvm_dirty_ring_* tracepoints of one VM process.
 *
 * They count, per vCPU, what the kernel's dirty ring does, and guard
 * against this host's ring overflow: kvm_dirty_ring_push() does not stop
 * at the ring's capacity, it overwrites the oldest entry not yet reset.
 * The page that entry named is then lost to the harvester and stays
 * writable and unlogged.  We keep a shadow of every slot's last push, so
 * when a push lands on an unreset entry we can still say which page it
 * was, and queue it on the "lost" ring buffer for the harvester to resend.
 *
 * BTF raw tracepoints (tp_btf/): they attach without tracefs and give us
 * the kernel's own struct kvm_dirty_ring, read with direct (CO-RE
 * relocated) loads: BPF_CORE_READ's probe-read helper calls cost ~300 ns a
 * push here, which the guest felt (9% of its dirtying throughput).  GPL: the tracing helpers need it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "dirty.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load; the verifier sees them as constants. */
const volatile __u32 target_tgid = 0;
const volatile __u32 nr_vcpus = 1;
const volatile __u32 dirty_ring_entries = 1;	/* power of two */

/* max_entries of every map below is set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);		/* nr_vcpus */
	__type(key, __u32);
	__type(value, struct kmig_dirty_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);	/* nr_vcpus * dirty_ring_entries */
	__type(key, __u32);
	__type(value, struct kmig_dirty_shadow);
} shadow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 4096);	/* bytes, power of two */
} lost SEC(".maps");

/* Records we could not queue: the lost list is incomplete. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline struct kmig_dirty_stats *vcpu_stats(__u32 vcpu)
{
	if (vcpu >= nr_vcpus)
		return NULL;
	return bpf_map_lookup_elem(&stats, &vcpu);
}

static __always_inline void emit_lost(__u32 vcpu, __u32 index, __u32 slot, __u64 offset,
				      __u32 flags)
{
	struct kmig_dirty_lost *r;
	__u32 zero = 0;
	__u64 *d;

	r = bpf_ringbuf_reserve(&lost, sizeof(*r), 0);
	if (!r) {
		d = bpf_map_lookup_elem(&dropped, &zero);
		if (d)
			__sync_fetch_and_add(d, 1);
		return;
	}
	r->vcpu = vcpu;
	r->slot = slot;
	r->offset = offset;
	r->index = index;
	r->flags = flags;
	/* The harvester polls every millisecond; a wakeup per record would
	 * only cost irq_work on the vCPU's path. */
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

/* Runs after the kernel wrote entry dirty_index - 1 and advanced
 * dirty_index.  Stats updates are plain per-CPU stores: a program never
 * nests with itself on one CPU, and the other programs write other fields. */
SEC("tp_btf/kvm_dirty_ring_push")
int BPF_PROG(kmig_dirty_push, struct kvm_dirty_ring *ring, __u32 slot, __u64 offset)
{
	struct kmig_dirty_stats *st;
	struct kmig_dirty_shadow *sh;
	__u32 vcpu, dirty, reset, size, used, idx, key;
	__u64 dirty_ring_id;

	if (!is_target())
		return 0;
	vcpu = ring->index;
	st = vcpu_stats(vcpu);
	if (!st)
		return 0;
	dirty = ring->dirty_index;
	reset = ring->reset_index;
	size = ring->size;
	dirty_ring_id = (__u64)ring->dirty_gfns;
	used = dirty - reset;
	idx = dirty - 1;

	st->pushes++;
	if (used > st->max_used)
		st->max_used = used;
	if (used > size)
		st->overwrites++;

	/* A ring of another size than the loader's: the shadow cannot be
	 * indexed, so an overwrite can only be reported as unknown. */
	if (size != dirty_ring_entries) {
		if (used > size)
			emit_lost(vcpu, idx - size, 0, 0, KMIG_DIRTY_LOST_UNKNOWN);
		return 0;
	}
	key = vcpu * dirty_ring_entries + (idx & (dirty_ring_entries - 1));
	sh = bpf_map_lookup_elem(&shadow, &key);
	if (!sh)
		return 0;
	if (used > size) {
		/* This push overwrote entry idx - size in the same slot. */
		if (sh->index_plus_1 == (__u64)(idx - size) + 1 && sh->dirty_ring_id == dirty_ring_id)
			emit_lost(vcpu, idx - size, sh->slot, sh->offset, 0);
		else
			emit_lost(vcpu, idx - size, 0, 0, KMIG_DIRTY_LOST_UNKNOWN);
	}
	sh->index_plus_1 = (__u64)idx + 1;
	sh->slot = slot;
	sh->offset = offset;
	sh->dirty_ring_id = dirty_ring_id;
	return 0;
}

SEC("tp_btf/kvm_dirty_ring_reset")
int BPF_PROG(kmig_dirty_reset, struct kvm_dirty_ring *ring)
{
	struct kmig_dirty_stats *st;

	if (!is_target())
		return 0;
	st = vcpu_stats(ring->index);
	if (st)
		st->resets++;
	return 0;
}

SEC("tp_btf/kvm_dirty_ring_exit")
int BPF_PROG(kmig_dirty_exit, struct kvm_vcpu *vcpu)
{
	struct kmig_dirty_stats *st;

	if (!is_target())
		return 0;
	st = vcpu_stats(vcpu->vcpu_idx);
	if (st)
		st->full_exits++;
	return 0;
}
