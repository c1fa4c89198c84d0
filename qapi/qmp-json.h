/* qapi/qmp-json.h — QMP's JSON on the wire, for both ends: the splitter
 * that finds whole values in a byte stream within size and depth limits,
 * and the serialiser.  The server (qapi/) and kmig's client (tools/) use
 * the same pieces, so that both sides hold the same limits.
 */
#ifndef KMIG_QAPI_QMP_JSON_H
#define KMIG_QAPI_QMP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

/* Largest request accepted, in bytes; bigger ones get an error and are
 * skipped.  Deepest nesting of arrays and objects in a request. */
#define QMP_MAX_MESSAGE (1u << 20)
#define QMP_MAX_NESTING 1024

/* --------------------------------------------------------- JSON splitting */

/* Splits a byte stream into top-level JSON values without parsing them:
 * tracks strings (double- and, as QEMU allows, single-quoted, which are
 * rewritten as double-quoted), escapes and nesting.  For each complete value
 * it calls fn with the text (NUL-terminated, len bytes) and error NULL; for
 * input it must reject it calls fn with json NULL and a QMP error
 * description, then carries on with the next value:
 *  - a value larger than max_size bytes or nested deeper than max_depth is
 *    skipped to its end (without being stored) and reported once;
 *  - a control character (other than tab, CR, LF outside strings), a 0xFE
 *    or 0xFF byte, or a stray '}' / ']' reports an error and resets the
 *    splitter, which is how QMP clients resynchronise. */
struct json_splitter;
typedef void (*json_splitter_fn)(void *opaque, const char *json, size_t len, const char *error);
struct json_splitter *json_splitter_new(size_t max_size, unsigned int max_depth, json_splitter_fn fn,
					void *opaque);
void json_splitter_feed(struct json_splitter *js, const char *buf, size_t len);
/* While a value over the limits is being skipped, what is wrong with it
 * (reported through fn only at its end, which may never come); else NULL. */
const char *json_splitter_skipping(const struct json_splitter *js);
/* Drop a partial value (nothing is reported). */
void json_splitter_reset(struct json_splitter *js);
void json_splitter_free(struct json_splitter *js);

/* Parse one value from the splitter strictly: json-glib's errors in QMP's
 * words ("JSON parse error, ..."), and also refused: a \u0000 escape and a
 * key repeated in an object.  NULL with *error (g_free) on failure. */
JsonNode *qmp_json_parse(const char *text, size_t len, char **error);
/* A uint64 argument: a non-negative integer, or one above INT64_MAX (which
 * qmp_json_parse() hands over as a whole double).  false for anything else. */
bool qmp_json_get_uint64(JsonNode *n, uint64_t *out);

/* Serialise node as QMP sends it: one line (unless pretty), non-ASCII
 * characters escaped as \uXXXX, invalid UTF-8 replaced by U+FFFD. */
char *qmp_json_to_string(JsonNode *node, gboolean pretty);

#endif
