/* Switch over when the rest fits in bandwidth × downtime-limit, as QEMU
 * does, but not while the passes still shrink the rest fast: one more
 * pass costs its own length in total time, with the guest running, and
 * leaves only what the guest dirtied meanwhile for the stop.  So another
 * pass runs while the last one left less than half of what the pass
 * before it left and more than a millisecond's worth of the link, for at
 * most SWITCHOVER_SHRINK_PASSES_MAX passes.  A guest that dirties as fast
 * as the link drains stops shrinking at once and switches over as with
 * QEMU; an idle guest has (almost) nothing left after its bulk pass. */
#include "savevm/switchover.h"

enum switchover_verdict switchover_decide(uint64_t pending, uint64_t prev_pending, uint64_t bandwidth,
					  uint64_t downtime_limit_ms, uint64_t shrink_passes)
{
	/* 128 bits: bandwidth × limit overflows 64 for absurd parameters */
	unsigned __int128 fit = (unsigned __int128)bandwidth * downtime_limit_ms;

	if (pending && (unsigned __int128)pending * 1000 > fit)
		return SWITCHOVER_NOT_YET;
	if ((unsigned __int128)pending * 2 < prev_pending && (unsigned __int128)pending * 1000 > bandwidth &&
	    shrink_passes < SWITCHOVER_SHRINK_PASSES_MAX)
		return SWITCHOVER_ONE_MORE;
	return SWITCHOVER_NOW;
}
