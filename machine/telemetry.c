/* Per-vCPU dirty counts and the ring overflow guard: the eBPF programs on
 * the kvm:kvm_dirty_ring_* tracepoints when they can be attached (mode
 * "bpf"), the harvester's own counts when not (mode "ring", with the
 * reason kept for query-migrate).  A VM on the dirty bitmap has no rings:
 * mode "none". */
#include <stdio.h>
#include <unistd.h>

#include "machine/machine-int.h"

struct lost_ctx {
	kvm_lost_fn fn;
	void *ctx;
};

static void lost_one(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset)
{
	struct lost_ctx *l = opaque;

	(void)vcpu;
	l->fn(l->ctx, slot, offset);
}

/* kvm's hook, called by the harvester with its lock held */
static int drain_lost(void *opaque, kvm_lost_fn fn, void *ctx, bool *incomplete)
{
	struct lost_ctx l = { fn, ctx };

	return kmig_bpf_drain_lost(opaque, lost_one, &l, incomplete);
}

void telemetry_open(struct machine *m)
{
	m->telemetry = "none";
	if (kvm_dirty_backend(m->vm) != KMIG_DIRTY_RING) {
		snprintf(m->telemetry_why, sizeof(m->telemetry_why),
			 "dirty bitmap backend: no dirty rings to count");
		return;
	}
	int r = kmig_bpf_open(getpid(), kvm_vm_nr_vcpus(m->vm), kvm_dirty_ring_entries(m->vm), &m->bpf,
			      m->telemetry_why, sizeof(m->telemetry_why));

	if (r) {
		m->telemetry = "ring";
		return;
	}
	m->telemetry = "bpf";
	m->telemetry_why[0] = 0;
	kvm_dirty_set_lost_drain(m->vm, drain_lost, m->bpf);
}

void telemetry_close(struct machine *m)
{
	if (!m->bpf)
		return;
	kvm_dirty_set_lost_drain(m->vm, NULL, NULL);
	kmig_bpf_close(m->bpf);
	m->bpf = NULL;
}

uint64_t telemetry_vcpu_pages(struct machine *m, unsigned int idx)
{
	struct kmig_bpf_vcpu_stats st;

	if (m->bpf && !kmig_bpf_read_vcpu(m->bpf, idx, &st))
		return st.pushes;
	return kvm_vcpu_dirty_ring_pages(m->vm, idx);
}
