/* savevm/load.h — the destination's stream loader, apart from the machine
 * and the transport: it reads one migration stream from a savevm_in (a
 * connection, or bytes in memory for the fuzzer) into the entries of a
 * registry.  Every record is checked before it is acted on; nothing but
 * guest RAM (through the RAM entry) is written while the stream arrives;
 * device states wait in the registry until the whole stream proved valid,
 * and are applied only then (savevm_load_apply_devices).
 */
#ifndef KMIG_SAVEVM_LOAD_H
#define KMIG_SAVEVM_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "savevm/multifd.h"
#include "savevm/savevm.h"

struct savevm_load_env {
	struct savevm_registry *reg;
	uint64_t ram_size;		/* what the stream header must announce */
	uint32_t nr_vcpus;
	/* A CHANNELS record: accept its RAM channels and start receiving on
	 * them, each record through fn(fn_opaque, ...).  NULL: this
	 * destination takes RAM on the main connection only. */
	int (*open_channels)(void *opaque, const struct stream_channels *sc, struct savevm_in *main,
			     multifd_ram_fn fn, void *fn_opaque, struct multifd_recv **mr, char *err,
			     size_t errlen);
	/* The RAM channels now open (mr, nr), or gone (NULL, 0): whoever
	 * cancels a migration must reach them.  May be NULL. */
	void (*publish_channels)(void *opaque, struct multifd_recv *mr, unsigned int nr);
	void *opaque;
};

/* Read records from in until a valid EOF.  0: the stream was whole and
 * consistent, every device state is held in its entry; else -EPROTO
 * (malformed or inconsistent), -EPIPE (truncated), another -errno, with
 * the reason in err.  RAM channels are closed before it returns. */
int savevm_load_stream(const struct savevm_load_env *env, struct savevm_in *in, char *err, size_t errlen);
/* Load every held device state, in registration order, timing each. */
int savevm_load_apply_devices(struct savevm_registry *reg, char *err, size_t errlen);
/* Forget what a load left in the registry (held states, declarations). */
void savevm_load_reset(struct savevm_registry *reg);

#endif
