/* The RAM entry ("ram"/0): iterable, driven by the dirty bitmap of guest
 * RAM (kvm/mem.h) that a dirty tracker fills. */
#ifndef KMIG_SAVEVM_RAM_H
#define KMIG_SAVEVM_RAM_H

#include <stdint.h>

#include "kvm/kvm.h"
#include "savevm/savevm.h"

struct ram_stats {
	uint64_t normal;	/* pages sent with payload */
	uint64_t duplicate;	/* zero pages sent as headers only */
	uint64_t holes;		/* never-populated pages skipped in the bulk pass */
	uint64_t headers;	/* page headers sent (EOF cross-check) */
	uint64_t received;	/* destination: page headers received */
	uint64_t bytes;		/* RAM records sent, headers and payloads */
};

/* What collects dirty pages into the RAM's bitmap: a VM's KVM dirty
 * tracking (ram_tracker_for_vm), or nothing at all (NULL members) where
 * the writer publishes its own pages, as the tests without KVM do. */
struct ram_tracker {
	int (*start)(void *opaque, char *err, size_t errlen);
	void (*stop)(void *opaque);
	int (*sync)(void *opaque, bool final);
	void *opaque;
};
void ram_tracker_for_vm(struct ram_tracker *t, struct kvm_vm *vm);

/* How a destination moves received pages into RAM:
 *  - SPLICE: socket -> pipe -> memfd: no user-space buffer, no page
 *    faulted into a mapping, and a page written whole is never zeroed
 *    first; every write takes the memfd's inode lock;
 *  - WRITE: a record's payloads into the receiving thread's buffer in one
 *    receive, then kvm_mem_write (the kernel faults fresh pages in without
 *    a user-space fault and without the inode lock, but zeroes each before
 *    the copy);
 *  - MAPPING: read straight into the mapping (a fault per fresh page; none
 *    when RAM was preallocated).
 * AUTO, the default, takes MAPPING into preallocated RAM and SPLICE
 * otherwise, with one connection or several (measured against each other
 * in docs/transport.md).  KMIG_RECV_PATH=write|splice|mapping forces one. */
enum ram_recv_path { RAM_RECV_AUTO, RAM_RECV_WRITE, RAM_RECV_SPLICE, RAM_RECV_MAPPING };

struct ram_handler;
int ram_handler_register(struct savevm_registry *reg, struct kvm_mem *mem, const struct ram_tracker *tracker,
			 struct ram_handler **out);
/* Destination: the receive paths used so far, as "splice", "write+splice"... */
void ram_handler_recv_paths(const struct ram_handler *h, char *buf, size_t len);
void ram_handler_free(struct ram_handler *h);
void ram_handler_stats(struct ram_handler *h, struct ram_stats *st);
void ram_handler_reset_stats(struct ram_handler *h);

int devices_register(struct savevm_registry *reg, struct kvm_vm *vm);
void devices_free(struct savevm_registry *reg);

#endif
