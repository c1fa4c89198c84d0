/* kvm/ — the reference VMM's KVM layer: one VM, its vCPUs, its RAM (memfd
 * backed memslots), dirty tracking, and the save/load of every piece of
 * vCPU and VM state.  Knows nothing of migration streams (savevm/ does).
 *
 * Functions return 0 or -errno; where a human needs a reason, they take an
 * err buffer.  Guest RAM is addressed two ways: by guest physical address
 * (gpa), and by "RAM offset" (offset into the memfd), which is linear across
 * slots and indexes the dirty bitmap (page = offset / KVM_PAGE_SIZE).
 */
#ifndef KMIG_KVM_H
#define KMIG_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vm-types.h"
#include "kvm/mem.h"

struct kvm_vm;

/* enum kmig_dirty_tracking (common/vm-types.h): KMIG_DIRTY_AUTO is the
 * backend kvm_dirty_backend_auto() picks for the VM's RAM size (the rule
 * and its measurements are in dirty.c), resolved by kvm_vm_create;
 * kvm_dirty_backend_name() then names the one in use. */

struct kvm_vm_config {
	uint64_t mem_bytes;
	unsigned int nr_vcpus;
	enum kmig_dirty_tracking dirty_backend;
	uint32_t dirty_ring_entries;	/* per vCPU, power of two */
	/* fault every page of RAM in at creation (QEMU's -mem-prealloc):
	 * refused when the host has less memory available than RAM */
	bool prealloc;
};

/* What stopped the guest for good */
enum kvm_stop_reason {
	KVM_STOP_NONE,
	KVM_STOP_GUEST_EXIT,	/* the guest wrote its exit code to port 0xf4 */
	KVM_STOP_SHUTDOWN,	/* triple fault */
	KVM_STOP_ERROR,		/* internal error / failed entry / unhandled */
};

struct kvm_vm_callbacks {
	/* a byte the guest wrote to COM1 (from a vCPU thread) */
	void (*serial_out)(void *opaque, const char *buf, size_t len);
	/* the guest stopped for good (from a vCPU thread) */
	void (*stopped)(void *opaque, enum kvm_stop_reason why, int code, const char *detail);
	void *opaque;
};

int kvm_vm_create(const struct kvm_vm_config *cfg, const struct kvm_vm_callbacks *cb,
		  struct kvm_vm **out, char *err, size_t errlen);
void kvm_vm_destroy(struct kvm_vm *vm);

unsigned int kvm_vm_nr_vcpus(const struct kvm_vm *vm);
/* the VM's RAM (kvm/mem.h); the accessors below are shorthands for it */
struct kvm_mem *kvm_vm_mem(const struct kvm_vm *vm);
uint64_t kvm_vm_ram_size(const struct kvm_vm *vm);
uint64_t kvm_vm_nr_pages(const struct kvm_vm *vm);
/* host pointer of len bytes at gpa, or NULL if any byte is outside RAM */
void *kvm_vm_gpa_ptr(struct kvm_vm *vm, uint64_t gpa, uint64_t len);
/* RAM offset <-> gpa; -ERANGE if outside RAM */
int kvm_vm_gpa_to_offset(const struct kvm_vm *vm, uint64_t gpa, uint64_t *offset);
uint64_t kvm_vm_offset_to_gpa(const struct kvm_vm *vm, uint64_t offset);
/* base of the linear RAM mapping: offset o lives at kvm_vm_ram_base()+o */
uint8_t *kvm_vm_ram_base(struct kvm_vm *vm);
int kvm_vm_memfd(const struct kvm_vm *vm);
/* RAM was preallocated (kvm_vm_config.prealloc): keep every page allocated */
bool kvm_vm_prealloc(const struct kvm_vm *vm);

/* ---- loading a guest (loader.c) ---- */
/* Multiboot v1 ELF: loads PT_LOAD segments, builds the multiboot info with
 * the memory map and cmdline, and puts the boot vCPU in 32-bit protected
 * mode, paging off, EAX=0x2BADB002, EBX=info — as QEMU's -kernel does. */
int kvm_load_multiboot(struct kvm_vm *vm, const void *image, size_t size, const char *cmdline,
		       char *err, size_t errlen);
/* Flat binary at addr, entered at addr in the same 32-bit state. */
int kvm_load_flat(struct kvm_vm *vm, const void *image, size_t size, uint64_t addr,
		  char *err, size_t errlen);

/* ---- running ---- */
int kvm_vm_start(struct kvm_vm *vm);		/* create vCPU threads, run */
/* Stop every vCPU outside KVM_RUN and wait until they are; idempotent. */
void kvm_vm_pause(struct kvm_vm *vm);
void kvm_vm_resume(struct kvm_vm *vm);
bool kvm_vm_paused(struct kvm_vm *vm);
/* End the vCPU threads (the VM cannot run again). */
void kvm_vm_shutdown(struct kvm_vm *vm);
enum kvm_stop_reason kvm_vm_stop_reason(struct kvm_vm *vm, int *code);

/* ---- dirty tracking (dirty.c) ----
 * One interface, two backends.  While tracking, every page the guest writes
 * ends up in the VM's dirty bitmap (RAM-offset indexed, one bit per page)
 * and is re-protected in KVM *before* its bit becomes visible there, so a
 * page read after its bit was cleared can only be stale if a later write
 * sets the bit again. */
int kvm_dirty_start(struct kvm_vm *vm, char *err, size_t errlen);
/* start/stop are counted: a migration, a dirty-rate measurement and a
 * dirty limit may each hold tracking on; the first start resets the
 * statistics, the last stop turns logging off and clears the bitmap. */
bool kvm_dirty_active(struct kvm_vm *vm);
enum kmig_dirty_tracking kvm_dirty_backend(const struct kvm_vm *vm);
/* Dirty pages vCPU idx's ring delivered so far (dirty-ring backend; the
 * harvester's count, monotonic). */
uint64_t kvm_vcpu_dirty_ring_pages(struct kvm_vm *vm, unsigned int idx);
/* Ring entries the harvester collects per vCPU ring. */
uint32_t kvm_dirty_ring_entries(const struct kvm_vm *vm);

/* The eBPF overflow guard's hook: drain(opaque, lost, ctx, &incomplete)
 * calls lost(ctx, slot, offset) for every ring entry the kernel overwrote
 * before it was harvested and reset, returns how many or -errno, and sets
 * incomplete if it cannot name them all.  With a drain set, an overflow
 * costs a resend of exactly those pages instead of all RAM. */
typedef void (*kvm_lost_fn)(void *ctx, uint32_t slot, uint64_t offset);
typedef int (*kvm_lost_drain_fn)(void *opaque, kvm_lost_fn lost, void *ctx, bool *incomplete);
void kvm_dirty_set_lost_drain(struct kvm_vm *vm, kvm_lost_drain_fn drain, void *opaque);

/* Throttle (dirty limit): keep vCPU idx out of KVM_RUN until the
 * CLOCK_MONOTONIC time until_ns (kicking it out now if it is inside);
 * 0 lifts it.  A paused or quitting VM is not held up by it. */
void kvm_vcpu_throttle(struct kvm_vm *vm, unsigned int idx, uint64_t until_ns);
/* Total time vCPU idx has spent throttled. */
uint64_t kvm_vcpu_throttled_ns(struct kvm_vm *vm, unsigned int idx);
/* Collect everything KVM has logged into the bitmap.  final = vCPUs are
 * stopped: also scan for ring holes so nothing can hide. */
int kvm_dirty_sync(struct kvm_vm *vm, bool final);
void kvm_dirty_stop(struct kvm_vm *vm);
/* A window in which every page harvested counts once, however often the
 * guest rewrote it and the harvester re-protected it: the distinct pages
 * behind calc-dirty-rate.  One window at a time (-EBUSY); -ENOMEM. */
int kvm_dirty_observe_begin(struct kvm_vm *vm);
/* Ends the window: the distinct pages seen, and per vCPU (n entries, may
 * be NULL) the pages its dirty ring brought first; pages no ring brought
 * (the bitmap backend) count in the total only. */
uint64_t kvm_dirty_observe_end(struct kvm_vm *vm, uint64_t *per_vcpu, unsigned int n);
/* Mark every page the guest ever touched dirty (start of migration, and
 * overflow recovery); memory never populated reads as zero everywhere. */
void kvm_dirty_mark_all(struct kvm_vm *vm);
/* Atomically test-and-clear the bit of page index pg. */
bool kvm_dirty_test_and_clear(struct kvm_vm *vm, uint64_t pg);
/* Next set bit at or after pg, or nr_pages if none. */
uint64_t kvm_dirty_find_next(struct kvm_vm *vm, uint64_t pg);
uint64_t kvm_dirty_count(struct kvm_vm *vm);
const char *kvm_dirty_backend_name(const struct kvm_vm *vm);
/* The backend that costs least for a VM with this much RAM (RING or
 * BITMAP; the dirty rate is not known when the VM is created).  Pure: it
 * does not ask the kernel whether it has dirty rings. */
enum kmig_dirty_tracking kvm_dirty_backend_auto(uint64_t mem_bytes, unsigned int nr_vcpus);

struct kvm_dirty_stats {
	uint64_t harvested;		/* GFNs collected from rings / bitmaps */
	uint64_t dirty_ring_full_exits;
	uint64_t overflows;		/* ring overflows detected */
	uint64_t holes_fixed;		/* ring index holes repaired */
	uint64_t resyncs;		/* whole-RAM re-protect + resend */
	uint64_t lost_pages;		/* pages made sticky by the exact recovery */
	/* what collecting costs the host (bench/harvest_cost.c) */
	uint64_t harvests;		/* passes: every ring or every slot once, or
					 * one ring for a ring-full exit */
	uint64_t harvest_cpu_ns;	/* thread CPU time of harvesting, every thread:
					 * sync calls, ring-full exits, and the whole
					 * background harvester (its wake-ups too) */
	uint64_t final_sync_ns;		/* wall time of the last final sync */
	uint64_t final_sync_pages;	/* pages it collected */
};
void kvm_dirty_get_stats(struct kvm_vm *vm, struct kvm_dirty_stats *st);

/* ---- state save/load (state.c) ----
 * Each piece of state is a self-describing byte blob: a sequence of
 * (u32 tag, u32 len, bytes) items.  Loading validates every tag and length
 * before it touches KVM (kvm_state_check), so a torn or hostile blob is
 * refused whole.  The vCPUs must be paused (or not yet started). */
enum kvm_state_kind {
	KVM_STATE_CPU,		/* regs, sregs, xsave, xcrs, msrs, events, mp, debugregs */
	KVM_STATE_APIC,		/* LAPIC registers + TSC deadline */
	KVM_STATE_PIC,		/* instance 0 master, 1 slave */
	KVM_STATE_IOAPIC,
	KVM_STATE_PIT,
	KVM_STATE_KVMCLOCK,
	KVM_STATE_SERIAL,
};
/* Upper bound of any blob, for buffers */
#define KVM_STATE_MAX_SIZE (64u << 10)
/* Returns the blob size (> 0) or -errno. */
int kvm_state_save(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		   uint8_t *buf, size_t len);
int kvm_state_check(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		    const uint8_t *buf, size_t len, char *err, size_t errlen);
int kvm_state_load(struct kvm_vm *vm, enum kvm_state_kind kind, unsigned int instance,
		   const uint8_t *buf, size_t len, char *err, size_t errlen);

/* Print a vCPU's registers (for error reports). */
void kvm_vcpu_dump(struct kvm_vm *vm, unsigned int idx, char *buf, size_t len);

#endif
