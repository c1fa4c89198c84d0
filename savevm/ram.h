/* The RAM entry ("ram"/0): iterable, driven by kvm/'s dirty bitmap. */
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

struct ram_handler;
int ram_handler_register(struct savevm_registry *reg, struct kvm_vm *vm, struct ram_handler **out);
void ram_handler_free(struct ram_handler *h);
void ram_handler_stats(struct ram_handler *h, struct ram_stats *st);
void ram_handler_reset_stats(struct ram_handler *h);

int devices_register(struct savevm_registry *reg, struct kvm_vm *vm);
void devices_free(struct savevm_registry *reg);

#endif
