/* common/vm-types.h — what every layer says of a VM in the same words:
 * its vCPU limit and how its dirty pages are tracked.  One definition, so
 * that kvm/, savevm/, qapi/ and tools/ never translate between copies. */
#ifndef KMIG_COMMON_VM_TYPES_H
#define KMIG_COMMON_VM_TYPES_H

/* vCPUs of one VM: kvm/ creates at most this many, and every per-vCPU
 * array above it is this long.  (The stream format's own limit,
 * STREAM_MAX_VCPUS, is larger: a format outlives one VMM's limit.) */
#define KMIG_MAX_VCPUS 64

/* KVM's dirty ring, its dirty bitmap, or chosen by size: the bitmap below
 * KMIG_DIRTY_AUTO_RING_MIN_BYTES of RAM, the ring from there (measured in
 * bench/harvest_cost.c, see kvm_dirty_backend_auto()) */
enum kmig_dirty_tracking { KMIG_DIRTY_RING, KMIG_DIRTY_BITMAP, KMIG_DIRTY_AUTO };
#define KMIG_DIRTY_AUTO_RING_MIN_BYTES (256ull << 30)

#endif
