/* tools/options.h — parsing of kmig's command-line values. */
#ifndef KMIG_TOOLS_OPTIONS_H
#define KMIG_TOOLS_OPTIONS_H

#include <stdint.h>

/* A decimal integer up to max: no sign, no space, no suffix. */
int parse_u64(const char *s, uint64_t max, uint64_t *out);
/* "512", "512M", "2G" -> MiB (1 MiB to 4 TiB). */
int parse_mem_mib(const char *s, uint64_t *mib);
/* "verify,ws=64,rate=0" -> name "verify", command line "ws=64 rate=0"
 * (g_free both). */
int parse_guest(const char *spec, char **name, char **cmdline);

#endif
