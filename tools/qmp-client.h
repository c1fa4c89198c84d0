/* A small synchronous QMP client for the kmig CLI (migrate, demo): connect
 * to a unix socket, negotiate, execute commands, skip events. */
#ifndef KMIG_TOOLS_QMP_CLIENT_H
#define KMIG_TOOLS_QMP_CLIENT_H

#include <signal.h>

#include <json-glib/json-glib.h>

/* A QMP server greets at once and answers within moments (kmig's and
 * QEMU's answer from a thread of their own): longer means it is not one. */
#define QMP_CLIENT_GREETING_TIMEOUT_MS 5000
#define QMP_CLIENT_REPLY_TIMEOUT_MS 10000

struct qmp_client;

/* Connect (retrying up to timeout_ms while the socket is not there yet),
 * read the greeting, send qmp_capabilities. */
int qmp_client_open(const char *path, int timeout_ms, struct qmp_client **out, char *err, size_t errlen);
void qmp_client_close(struct qmp_client *c);
/* Execute; on success *ret is the "return" node (caller frees with
 * json_node_unref).  A QMP error returns -EREMOTEIO with its desc (made
 * printable) in err; no reply in QMP_CLIENT_REPLY_TIMEOUT_MS -ETIMEDOUT;
 * a reply over the limits of qapi/qmp-json.h or not JSON -EPROTO. */
int qmp_client_exec(struct qmp_client *c, const char *cmd, JsonNode *args, JsonNode **ret,
		    char *err, size_t errlen);
/* A signal that sets *flag (installed without SA_RESTART) makes a waiting
 * qmp_client_exec() return -EINTR; other interruptions are retried. */
void qmp_client_set_interrupt(struct qmp_client *c, volatile sig_atomic_t *flag);
/* Helpers for reading returned objects: a member of another type than
 * asked for gives dflt. */
gint64 qmp_get_int(JsonObject *o, const char *member, gint64 dflt);
double qmp_get_double(JsonObject *o, const char *member, double dflt);
const char *qmp_get_str(JsonObject *o, const char *member, const char *dflt);

/* A copy of server text safe for a terminal: control characters (escape
 * sequences included) become '?'.  g_free() it. */
char *qmp_printable(const char *s);

#endif
