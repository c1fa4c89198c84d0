/* tests/unit/qmp/fake_machine.h — a struct machine without KVM for the QMP
 * tests: fake_machine.c implements every function of machine/machine.h over
 * state the test controls, and records the calls it gets.
 *
 * Behaviour worth knowing:
 *  - machine_create() keeps cfg->incoming; migrate-incoming needs "defer".
 *  - machine_stop()/machine_cont() change the run state and report STOP /
 *    RESUME synchronously on the calling thread (as a machine may).
 *  - machine_migrate() goes to "setup" and reports MIGRATION from another
 *    thread; machine_request_quit() reports SHUTDOWN(-1) from another thread
 *    (machine/machine.c reports nothing there: the server must cope with
 *    both, and send one SHUTDOWN).
 *  - the handler runs under a lock that machine_set_event_handler() takes;
 *    fake_machine_get_handler() allows a late call like machine.c's.
 *  - fake_machine_fail_next() makes the next call of a function fail.
 *  - the dirty rate and dirty limit calls record their arguments (failing
 *    or not) and change nothing: the queries report what the test set.
 *  - machine_set_params() keeps what it is given (defaults: downtime-limit
 *    300, vcpu-dirty-limit 1, x-vcpu-dirty-limit-period 1000).
 */
#ifndef KMIG_TESTS_FAKE_MACHINE_H
#define KMIG_TESTS_FAKE_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "machine/machine.h"

struct machine *fake_machine_new(const char *incoming);
void fake_machine_set_runstate(struct machine *m, enum machine_runstate s);
void fake_machine_set_migration(struct machine *m, const struct migration_info *info);
/* the next call of fn ("machine_migrate", ...) returns ret with err */
void fake_machine_fail_next(struct machine *m, const char *fn, int ret, const char *err);
/* call the event handler, from a new thread if from_thread */
void fake_machine_emit(struct machine *m, enum machine_event ev, int64_t arg, bool from_thread);
unsigned int fake_machine_calls(struct machine *m, const char *fn);
/* last URI given to machine_migrate / machine_migrate_incoming ("" if none) */
const char *fake_machine_last_uri(struct machine *m);
bool fake_machine_quit_requested(struct machine *m);
bool fake_machine_has_handler(struct machine *m);
/* the handler now installed (to call it late, as machine.c's machine_emit
 * can: it calls a handler it read before machine_set_event_handler()
 * replaced it) */
void fake_machine_get_handler(struct machine *m, machine_event_fn *fn, void **opaque);
/* wait (up to timeout_ms) for the threads the fake started to finish */
void fake_machine_join_threads(struct machine *m);

/* what machine_query_dirty_rate() and machine_query_vcpu_dirty_limit()
 * report from now on (n at most KMIG_MAX_VCPUS) */
void fake_machine_set_dirty_rate(struct machine *m, const struct dirtyrate_info *info);
void fake_machine_set_dirty_limits(struct machine *m, const struct dirtylimit_vcpu *v, unsigned int n);
/* the arguments of the last call of each dirty rate / dirty limit function */
struct fake_dirty_args {
	int64_t calc_time_ms;		/* machine_calc_dirty_rate */
	enum dirtyrate_mode calc_mode;
	uint64_t calc_sample_pages;
	int limit_cpu;			/* machine_set_vcpu_dirty_limit */
	uint64_t limit_rate;
	int cancel_cpu;			/* machine_cancel_vcpu_dirty_limit */
	unsigned int query_limit_max;	/* machine_query_vcpu_dirty_limit */
};
void fake_machine_dirty_args(struct machine *m, struct fake_dirty_args *out);

#endif
