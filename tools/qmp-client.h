/* A small synchronous QMP client for the kmig CLI (migrate, demo): connect
 * to a unix socket, negotiate, execute commands, skip events. */
#ifndef KMIG_TOOLS_QMP_CLIENT_H
#define KMIG_TOOLS_QMP_CLIENT_H

#include <json-glib/json-glib.h>

struct qmp_client;

/* Connect (retrying up to timeout_ms while the socket is not there yet),
 * read the greeting, send qmp_capabilities. */
int qmp_client_open(const char *path, int timeout_ms, struct qmp_client **out, char *err, size_t errlen);
void qmp_client_close(struct qmp_client *c);
/* Execute; on success *ret is the "return" node (caller frees with
 * json_node_unref).  A QMP error returns -EREMOTEIO with its desc in err. */
int qmp_client_exec(struct qmp_client *c, const char *cmd, JsonNode *args, JsonNode **ret,
		    char *err, size_t errlen);
/* Helpers for reading returned objects. */
gint64 qmp_get_int(JsonObject *o, const char *member, gint64 dflt);
double qmp_get_double(JsonObject *o, const char *member, double dflt);
const char *qmp_get_str(JsonObject *o, const char *member, const char *dflt);

#endif
