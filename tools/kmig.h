/* Shared between the kmig subcommands. */
#ifndef KMIG_TOOLS_KMIG_H
#define KMIG_TOOLS_KMIG_H

#include <stdbool.h>
#include <stdint.h>

#include "tools/qmp-client.h"

int cmd_run(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_demo(int argc, char **argv);

int parse_u64(const char *s, uint64_t max, uint64_t *out);
int parse_mem_mib(const char *s, uint64_t *mib);

/* Start a migration over an open QMP connection and follow it to the end,
 * printing progress (a bar on a terminal, lines otherwise), the final
 * query-migrate JSON and a summary.  Returns 0 if it completed. */
int migrate_and_watch(struct qmp_client *c, const char *uri, bool quiet_json);

#endif
