/* bpf/telemetry.h — eBPF telemetry and overflow guard for one VM's dirty
 * rings (the programs are bpf/dirty.bpf.c).
 *
 * Mode "bpf" when kmig_bpf_open() succeeds; otherwise the caller counts
 * with its harvester (mode "ring") and shows the reason it was given.
 * Every function returns 0 or -errno and never relies on errno; nothing is
 * printed (libbpf's log is captured and ends up in the reason). */
#ifndef KMIG_BPF_TELEMETRY_H
#define KMIG_BPF_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kmig_bpf;

struct kmig_bpf_vcpu_stats {
	uint64_t pushes;	/* dirty pages pushed into the vCPU's ring */
	uint64_t full_exits;	/* KVM_EXIT_DIRTY_RING_FULL exits */
	uint64_t resets;	/* KVM_RESET_DIRTY_RINGS walks of its ring */
	uint64_t overwrites;	/* pushes beyond the ring's capacity */
	uint32_t max_used;	/* highest ring occupancy seen */
};

/* Load and attach the programs for this process's VM: nr_vcpus vCPUs,
 * rings of dirty_ring_entries entries (power of two).  Returns 0 with *out set
 * (mode "bpf"), or -errno with *out NULL and why filled with a one-line
 * reason the operator can act on: "not running as root (CAP_BPF/CAP_PERFMON
 * needed)", "no kernel BTF at /sys/kernel/btf/vmlinux", "tracepoint
 * kvm:kvm_dirty_ring_push not found", "disabled by KMIG_BPF=0", "kmig was
 * built without eBPF: ...", or libbpf's own error text.  Must be called
 * before the vCPUs push anything that may later be overwritten: entries
 * pushed earlier are reported as unknown (incomplete) if lost. */
int kmig_bpf_open(pid_t tgid, unsigned int nr_vcpus, uint32_t dirty_ring_entries,
		  struct kmig_bpf **out, char *why, size_t whylen);

/* Counters of one vCPU, summed over CPUs (max_used: the max).  Safe from
 * any thread, concurrently with kmig_bpf_drain_lost(). */
int kmig_bpf_read_vcpu(struct kmig_bpf *b, unsigned int vcpu, struct kmig_bpf_vcpu_stats *st);

/* Drain the lost-entry queue: fn(opaque, vcpu, slot, offset) for each entry
 * the kernel overwrote before it was reset.  Returns how many, or -errno.
 * *incomplete is set true if any record said "unknown entry lost" or the
 * kernel side dropped records since the last call (the caller must then
 * re-protect and resend everything), false otherwise.  One thread at a
 * time. */
int kmig_bpf_drain_lost(struct kmig_bpf *b,
			void (*fn)(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset),
			void *opaque, bool *incomplete);

/* Detach and free; NULL is fine. */
void kmig_bpf_close(struct kmig_bpf *b);

/* Was kmig built with the eBPF programs? */
bool kmig_bpf_built(void);

#endif
