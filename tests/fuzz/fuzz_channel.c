/* Fuzzer: one multifd RAM channel's connection as the destination reads
 * it (savevm/multifd.c): the hello, RAM records, epochs (PASS_END) and the
 * channel's EOF, over each of the three RAM receive paths. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "savevm/multifd.h"
#include "tests/fuzz/fuzz_dest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_dest *d = fuzz_dest_shared(fuzz_recv_path_for(size));
	uint64_t pages = 0;
	char err[512] = "";
	int r = multifd_recv_run_mem(data, size, FUZZ_CHANNEL_COOKIE, fuzz_dest_ram_record, d, &pages, err,
				     sizeof(err));

	fuzz_dest_check_bounds(d);
	FUZZ_CHECK(r <= 0 && (!r || err[0]), "result %d without a reason", r);
	FUZZ_CHECK(r != -EFAULT, "a write outside guest RAM: %s", err);
	if (!r)
		fuzz_dest_verify(d, data, size, 1);
	return 0;
}
