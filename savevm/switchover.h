/* The switchover decision taken after every precopy pass, as a pure
 * function of what the pass measured, so that it can be tested alone. */
#ifndef KMIG_SAVEVM_SWITCHOVER_H
#define KMIG_SAVEVM_SWITCHOVER_H

#include <stdint.h>

/* at most this many passes beyond the first that fit the downtime limit */
#define SWITCHOVER_SHRINK_PASSES_MAX 8

enum switchover_verdict {
	SWITCHOVER_NOT_YET,	/* the rest does not fit the downtime limit */
	SWITCHOVER_NOW,
	SWITCHOVER_ONE_MORE,	/* it fits, but one more pass is worth it */
};

/* pending: bytes pending after this pass; prev_pending: before it;
 * bandwidth: bytes/s the switchover may count on; shrink_passes: how many
 * ONE_MORE verdicts this migration has had already. */
enum switchover_verdict switchover_decide(uint64_t pending, uint64_t prev_pending, uint64_t bandwidth,
					  uint64_t downtime_limit_ms, uint64_t shrink_passes);

#endif
