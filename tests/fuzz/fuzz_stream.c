/* Fuzzer: the destination's stream loader (savevm/load.c) with every
 * record type, every device kind's state, blob PART records and manifests,
 * over each of the three RAM receive paths, into a destination that
 * checks every write (fuzz_dest.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz_dest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_dest *d = fuzz_dest_shared(fuzz_recv_path_for(size));
	const struct savevm_load_env *env = fuzz_dest_env(d);
	struct savevm_in in;
	char err[512];

	savevm_in_init_mem(&in, data, size);
	int r = savevm_load_stream(env, &in, err, sizeof(err));

	savevm_in_fini(&in);
	fuzz_dest_check_bounds(d);
	FUZZ_CHECK(r <= 0 && (!r || err[0]), "result %d without a reason", r);
	FUZZ_CHECK(r != -EFAULT, "a write outside guest RAM: %s", err);
	if (!r) {
		r = savevm_load_apply_devices(env->reg, err, sizeof(err));
		FUZZ_CHECK(!r, "a device state that passed its check failed to load: %s", err);
		fuzz_dest_verify(d, data, size, 0);
	}
	return 0;
}
