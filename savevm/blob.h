/* The blob device: an iterable device standing in for one with gigabytes
 * of state (a VFIO device).  See blob.c. */
#ifndef KMIG_SAVEVM_BLOB_H
#define KMIG_SAVEVM_BLOB_H

#include <stdint.h>

#include "kvm/kvm.h"
#include "savevm/savevm.h"

struct blob_config {
	char id[33];
	uint64_t size;		/* bytes, multiple of 64 KiB */
	uint64_t dirty_rate;	/* bytes/s rewritten while the guest runs */
	uint64_t stop_copy;	/* bytes only sent in stop-and-copy */
	uint32_t section_id;	/* set at registration */
};

struct blob;

/* "blob,id=NAME,size=SIZE[,dirty-rate=BYTES/S][,stop-copy=SIZE]"; sizes
 * take K/M/G suffixes. */
int blob_parse(const char *spec, struct blob_config *c, char *err, size_t errlen);
/* Registers entry "blob-NAME" and starts its mutator thread. */
int blob_register(struct savevm_registry *reg, struct kvm_vm *vm, const struct blob_config *c,
		  struct blob **out);
/* 0, or -errno when the mutator thread cannot start */
int blob_set_dirty_rate(struct blob *b, uint64_t rate);
const char *blob_id(const struct blob *b);
void blob_free(struct blob *b);

#endif
