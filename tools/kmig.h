/* Shared between the kmig subcommands. */
#ifndef KMIG_TOOLS_KMIG_H
#define KMIG_TOOLS_KMIG_H

#include <stdbool.h>
#include <stdint.h>

#include "tools/options.h"
#include "tools/qmp-client.h"

int cmd_run(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);


/* Start a migration over an open QMP connection and follow it to the end,
 * printing progress (a bar on a terminal, lines otherwise), the final
 * query-migrate JSON and a summary.  Returns 0 if it completed. */
int migrate_and_watch(struct qmp_client *c, const char *uri, bool quiet_json);

/* Reading QMP replies defensively (tools/cmd-info.c): a member that is
 * absent or of another type is "not there". */
JsonObject *kmig_json_object(JsonObject *o, const char *member);
bool kmig_json_u64(JsonObject *o, const char *member, uint64_t *out);
bool kmig_json_double(JsonObject *o, const char *member, double *out);
/* Present and true-ish: true, a non-zero number, a non-empty string other
 * than "false"/"no"/"off"/"0"/"none", a non-empty array; an object by its
 * "stalled" member if it has one (x-kmig-stall), else if non-empty. */
bool kmig_json_truthy(JsonObject *o, const char *member);

/* kmig run --stats-file (tools/cmd-info.c): while a migration runs, one
 * JSON line per period with query-migrate's MigrationInfo plus
 * "x-kmig-timestamp-ms", and one when it reaches a final state. */
#define STATS_PERIOD_DEFAULT_MS 1000
#define STATS_PERIOD_MIN_MS 10
#define STATS_PERIOD_MAX_MS 3600000
struct machine;
struct stats_file;
/* Create/truncate path (mode 0644); -errno and a reason in err. */
int stats_file_open(const char *path, unsigned int period_ms, struct stats_file **out, char *err,
		    size_t errlen);
/* Start sampling m: a GLib timeout on the default main context, which the
 * caller runs (NULL: no-op). */
void stats_file_start(struct stats_file *s, struct machine *m);
/* Stop; a final state reached since the last look still gets its line.
 * Call while the machine exists.  NULL is a no-op. */
void stats_file_close(struct stats_file *s);

#endif
