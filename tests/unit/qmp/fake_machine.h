/* tests/unit/qmp/fake_machine.h — a struct machine without KVM for the QMP
 * tests: fake_machine.c implements every function of savevm/machine.h over
 * state the test controls, and records the calls it gets.
 *
 * Behaviour worth knowing:
 *  - machine_create() keeps cfg->incoming; migrate-incoming needs "defer".
 *  - machine_stop()/machine_cont() change the run state and report STOP /
 *    RESUME synchronously on the calling thread (as a machine may).
 *  - machine_migrate() goes to "setup" and reports MIGRATION from another
 *    thread; machine_request_quit() reports SHUTDOWN(-1) from another thread
 *    (savevm/machine.c reports nothing there: the server must cope with
 *    both, and send one SHUTDOWN).
 *  - the handler runs under a lock that machine_set_event_handler() takes;
 *    fake_machine_get_handler() allows a late call like machine.c's.
 *  - fake_machine_fail_next() makes the next call of a function fail.
 */
#ifndef KMIG_TESTS_FAKE_MACHINE_H
#define KMIG_TESTS_FAKE_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "savevm/machine.h"

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

#endif
