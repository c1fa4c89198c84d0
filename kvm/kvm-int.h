/* Private to kvm/: the structures its files share. */
#ifndef KMIG_KVM_INT_H
#define KMIG_KVM_INT_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/util.h"
#include "kvm/kvm.h"
#include "kvm/bitmap.h"
#include "kvm/dirty-ring.h"

#define KVM_MAX_SLOTS KVM_MEM_MAX_REGIONS
#define SERIAL_PORT 0x3f8
#define DEBUG_EXIT_PORT 0xf4

struct kvm_slot {
	uint32_t id;
	uint64_t gpa;
	uint64_t size;
	uint64_t offset;	/* in the memfd / linear mapping */
};

struct serial16550 {
	uint8_t ier, iir, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
};

struct kvm_vcpu {
	struct kvm_vm *vm;
	unsigned int idx;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	struct dirty_ring ring;
	/* dirty pages this vCPU's ring delivered (harvester's count) */
	uint64_t dirty_ring_pages;
	/* throttle (dirty limit): kept out of KVM_RUN until this monotonic
	 * time; throttled_ns = time spent so, in total */
	uint64_t throttle_until_ns;
	uint64_t throttled_ns;
	/* boot state set by the loader for the BSP */
	bool has_boot_state;
	struct kvm_regs boot_regs;
	struct kvm_sregs boot_sregs;
};

struct kvm_vm {
	struct kvm_vm_config cfg;
	struct kvm_vm_callbacks cb;
	int kvm_fd;
	int vm_fd;
	struct kvm_mem *mem;		/* guest RAM; slot i is its region i */
	struct kvm_slot slots[KVM_MAX_SLOTS];
	unsigned int nr_slots;

	struct kvm_vcpu vcpus[KMIG_MAX_VCPUS];
	unsigned int nr_vcpus;
	struct kvm_cpuid2 *cpuid;
	uint32_t *msr_list;		/* MSRs that can be read and written back */
	unsigned int nr_msrs;
	uint32_t xsave_size;

	/* run control: vCPUs run while !pause_req; pausing waits until every
	 * started vCPU thread has acknowledged it is outside KVM_RUN */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool pause_req;
	bool quit_req;
	unsigned int nr_outside;	/* vCPU threads parked outside KVM_RUN */
	unsigned int nr_threads;
	bool started;
	enum kvm_stop_reason stop_reason;
	int stop_code;

	/* diagnostics, from KMIG_TRACE_IO / KMIG_TRACE_DIRTY at creation */
	bool trace_io, trace_dirty;

	struct serial16550 serial;
	pthread_mutex_t serial_lock;

	/* dirty tracking */
	pthread_mutex_t dirty_lock;	/* serialises harvest + reset */
	unsigned int dirty_users;	/* migration, dirty-rate, dirty-limit */
	bool dirty_active;
	/* the eBPF guard (set by savevm): names the pages of ring entries the
	 * kernel overwrote; those pages stay "sticky" (published at every
	 * sync) until a resync re-protects all RAM */
	kvm_lost_drain_fn lost_drain;
	void *lost_opaque;
	uint64_t *sticky;		/* page indices */
	struct dirty_bitmap sticky_set;	/* the same, as a set (allocated at the first) */
	size_t nr_sticky, sticky_cap;
	bool sticky_overflow;		/* too many, or out of memory: resync */
	pthread_mutex_t users_lock;	/* dirty_users, start/stop */
	struct dirty_bitmap *dirty;	/* where pages are published: the RAM's */
	uint64_t *harvest_buf;		/* RAM page indices collected, pre-publish */
	size_t harvest_cap;
	unsigned long *log_buf;		/* KVM_GET_DIRTY_LOG scratch */
	struct kvm_dirty_stats dstats;
	/* a distinct-page window (kvm_dirty_observe_*): every page published
	 * is also noted here.  Under dirty_lock; NULL outside a window. */
	struct dirty_observer *observed;
	pthread_t harvester;
	bool harvester_running;
	bool harvester_rt;		/* runs SCHED_FIFO */
	bool harvester_stop;
};

int kvm_vcpu_run_loop_start(struct kvm_vm *vm);
int kvm_dirty_init(struct kvm_vm *vm, char *err, size_t errlen);
void kvm_dirty_fini(struct kvm_vm *vm);
/* from a vCPU thread on KVM_EXIT_DIRTY_RING_FULL */
void kvm_dirty_ring_full(struct kvm_vcpu *vcpu);

void serial_reset(struct serial16550 *s);
/* port I/O on COM1; returns true if handled */
void serial_io(struct kvm_vm *vm, uint16_t port, bool is_write, uint8_t *data);

int kvm_set_slot_flags(struct kvm_vm *vm, const struct kvm_slot *s, uint32_t flags);

#endif
