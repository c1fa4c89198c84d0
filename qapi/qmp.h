/* qapi/qmp.h — kmig's QMP server: QEMU's machine protocol over a unix
 * socket, so that QEMU tools (and people with socat) can drive a kmig guest
 * and its migration.  docs/qmp.md lists the commands, events and kmig's
 * extensions.
 *
 * The server lives on the thread that calls qmp_server_start(), in that
 * thread's default GMainContext (g_main_context_ref_thread_default()): it
 * only runs while that context is iterated (a GMainLoop, normally).  Every
 * function here must be called on that thread.  The machine may report
 * events from any thread; they are queued and handed to the context.
 */
#ifndef KMIG_QAPI_QMP_H
#define KMIG_QAPI_QMP_H

#include <stddef.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "machine/machine.h"

struct qmp_server;

/* Listen on the unix socket socket_path (created with mode 0600; a stale
 * socket file left by a dead process is replaced, anything else that
 * exists at that path is an error) and install the machine's event handler.
 * Returns 0, or -errno with a reason in err. */
int qmp_server_start(struct machine *m, const char *socket_path, struct qmp_server **out,
		     char *err, size_t errlen);
/* Remove the event handler, deliver the events still queued, flush what the
 * clients have not read yet (briefly), close them and unlink the socket.
 * NULL is a no-op. */
void qmp_server_stop(struct qmp_server *s);

/* JSON builders shared with tools/: QEMU's MigrationInfo (query-migrate),
 * with QEMU's rules for which members are present, plus kmig's "x-kmig"
 * member.  The string is single-line unless pretty, ASCII only, and is
 * freed with g_free(). */
JsonNode *qapi_migration_info_to_json(const struct migration_info *info);
char *qapi_migration_info_to_string(const struct migration_info *info, gboolean pretty);

#endif
