/* kvm/mem.h — guest RAM: one memfd mapped once, laid out in guest
 * physical space as the VM's memslots (low RAM from gpa 0 up to 3 GiB, the
 * rest from 4 GiB), the bitmap where dirty tracking publishes pages, and
 * the writes an incoming migration makes into it.
 *
 * It needs no /dev/kvm: the VM registers it with KVM (vm.c), while tests
 * and benchmarks drive the whole RAM path of a migration on it alone.
 *
 * RAM is addressed by gpa, or by "RAM offset" (offset into the memfd),
 * which is linear across regions and indexes the dirty bitmap
 * (page = offset / KVM_PAGE_SIZE). */
#ifndef KMIG_KVM_MEM_H
#define KMIG_KVM_MEM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "kvm/bitmap.h"

#define KVM_PAGE_SIZE 4096u
#define KVM_PAGE_SHIFT 12
/* RAM above this goes above 4 GiB, leaving the usual PCI/APIC hole */
#define KVM_LOW_RAM_END (3ull << 30)
#define KVM_HIGH_RAM_START (4ull << 30)
#define KVM_MEM_MAX_REGIONS 2

struct kvm_mem;

struct kvm_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t offset;	/* RAM offset of its first byte */
};

/* bytes: at least 16 MiB, a multiple of 2 MiB.  prealloc: fault every page
 * in now (QEMU's -mem-prealloc), refused when the host has less memory
 * available. */
int kvm_mem_create(uint64_t bytes, bool prealloc, struct kvm_mem **out, char *err, size_t errlen);
/* The size rule alone: 0, or -EINVAL with the reason in err. */
int kvm_mem_check_size(uint64_t bytes, char *err, size_t errlen);
void kvm_mem_destroy(struct kvm_mem *m);

uint64_t kvm_mem_size(const struct kvm_mem *m);
uint64_t kvm_mem_nr_pages(const struct kvm_mem *m);
/* offset o lives at kvm_mem_base(m) + o */
uint8_t *kvm_mem_base(const struct kvm_mem *m);
int kvm_mem_fd(const struct kvm_mem *m);
bool kvm_mem_prealloc(const struct kvm_mem *m);
unsigned int kvm_mem_nr_regions(const struct kvm_mem *m);
const struct kvm_mem_region *kvm_mem_region(const struct kvm_mem *m, unsigned int i);

/* RAM offset <-> gpa; -ERANGE / UINT64_MAX outside RAM */
int kvm_mem_gpa_to_offset(const struct kvm_mem *m, uint64_t gpa, uint64_t *offset);
uint64_t kvm_mem_offset_to_gpa(const struct kvm_mem *m, uint64_t offset);
/* host pointer of len bytes at gpa, or NULL unless all of them are RAM in
 * one region */
void *kvm_mem_gpa_ptr(const struct kvm_mem *m, uint64_t gpa, uint64_t len);

/* The published dirty bits (set by the dirty trackers, cleared by the
 * sender).  Always allocated, one bit per page. */
struct dirty_bitmap *kvm_mem_dirty(struct kvm_mem *m);
/* fn(ctx, first, end) for every run of pages [first, end) the memfd holds
 * data for (SEEK_DATA/SEEK_HOLE); the pages between were never written. */
typedef void (*kvm_mem_range_fn)(void *ctx, uint64_t first, uint64_t end);
void kvm_mem_for_each_populated(const struct kvm_mem *m, kvm_mem_range_fn fn, void *ctx);
/* Publish every page the guest ever touched.  Ranges still holes in the
 * memfd were never written: they read as zero on both sides and need not
 * be sent at all. */
void kvm_mem_mark_populated(struct kvm_mem *m);

/* ---- incoming pages ----
 * A destination's way to put received bytes into RAM besides splicing
 * into the memfd (ring/).  Guest RAM is fresh memory there, and on these
 * hosts a first touch through a user mapping costs several times the copy
 * (a page fault per page, taken by the copying thread).  A write the kernel
 * makes (process_vm_writev: the kernel faults each page in without an
 * exception and copies through its own mapping) does not pay that, and
 * unlike a write to the memfd it takes no inode lock; but a page faulted
 * in is zeroed before the copy, which a splice that fills it whole is not.
 * Where the kernel refuses it (no CONFIG_CROSS_MEMORY_ATTACH, a seccomp
 * or LSM policy), kvm_mem_write copies through the mapping instead. */

struct kvm_mem_run {
	uint64_t offset;	/* RAM offset */
	uint64_t len;
};
/* Copy buf into the runs, in order (buf holds the sum of their lengths).
 * Every run must lie inside RAM (-ERANGE otherwise, nothing written). */
int kvm_mem_write(struct kvm_mem *m, const void *buf, const struct kvm_mem_run *runs, unsigned int nruns);
/* Make [offset, offset+len) read as zero: a hole again (frees the memory),
 * or zeroes written in place when RAM was preallocated. */
int kvm_mem_zero(struct kvm_mem *m, uint64_t offset, uint64_t len);

#endif
