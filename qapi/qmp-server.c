/* qapi/qmp-server.c — the QMP server: unix socket, clients, request
 * dispatch, events.
 *
 * Everything runs in the GMainContext that was the thread default when
 * qmp_server_start() was called.  Input is split into JSON values by
 * json-splitter.c, parsed by json-glib and dispatched through the command
 * table of qmp-commands.c.  Output is buffered per client and written
 * without blocking.  A client with more than QMP_OUTPUT_HIGH_WATER bytes
 * unread is not read from until it has caught up (QEMU, likewise, stops
 * reading requests); one with QMP_MAX_PENDING_OUTPUT unread (events keep
 * coming) is dropped.
 *
 * Machine events arrive on arbitrary threads: they are timestamped, queued
 * in an event_sink under its mutex, and an idle source on the server's
 * context delivers them (never synchronously, even when the machine reports
 * from the main thread in the middle of a command).  The sink is
 * reference-counted (server, pending idle source); qmp_server_stop()
 * delivers what is queued and cancels the idle source.
 *
 * Clients are never freed while their callbacks may be on the stack: a
 * failed client is marked dead (sockets closed, sources gone at once) and
 * freed by an idle "reaper".
 */
#include "qapi/qmp-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>

#include "common/util.h"

struct pending_event {
	enum machine_event ev;
	int64_t arg;
	int64_t when_us;
};

struct event_sink {
	gint refs;
	GMutex lock;
	GQueue events;		 /* struct pending_event * */
	struct qmp_server *srv;	 /* NULL once the server stopped */
	GMainContext *ctx;
	GSource *drain_src;	 /* pending drain source (a reference) */
};

struct qmp_conn {
	struct qmp_server *srv;
	GSocket *sock;
	GSource *in_src;
	GSource *out_src;
	GByteArray *out;	/* unsent output */
	struct json_splitter *js;
	bool negotiated;
	bool dead;
};

struct qmp_server {
	struct qmp_server_state st;
	GMainContext *ctx;
	char *path;
	dev_t dev;
	ino_t ino;
	GSocket *listener;
	GSource *listen_src;
	GPtrArray *clients;	/* struct qmp_conn * */
	GSource *reap_src;
	struct event_sink *sink;
	bool shutdown_sent;	/* SHUTDOWN went out: no second one */
	/* A descriptor held in reserve: out of descriptors, it is given up
	 * for a moment to accept a waiting client and close it at once.
	 * Otherwise the client would stay queued, the listening socket stay
	 * readable, and the main loop spin on it at full CPU. */
	int reserve_fd;
	bool said_emfile;	/* reported once per shortage */
};

struct qmp_server_state *qmp_server_state(struct qmp_server *s)
{
	return &s->st;
}

bool qmp_conn_negotiated(struct qmp_conn *c)
{
	return c->negotiated;
}

void qmp_conn_set_negotiated(struct qmp_conn *c)
{
	c->negotiated = true;
}

/* ------------------------------------------------------------ event sink */

static struct event_sink *sink_ref(struct event_sink *sink)
{
	g_atomic_int_inc(&sink->refs);
	return sink;
}

static void sink_unref(gpointer data)
{
	struct event_sink *sink = data;

	if (!g_atomic_int_dec_and_test(&sink->refs))
		return;
	g_queue_clear_full(&sink->events, g_free);
	g_mutex_clear(&sink->lock);
	g_main_context_unref(sink->ctx);
	g_free(sink);
}

/* --------------------------------------------------------------- clients */

static gboolean reap_clients(gpointer data)
{
	struct qmp_server *s = data;
	guint i = 0;

	s->reap_src = NULL;
	while (i < s->clients->len) {
		struct qmp_conn *c = g_ptr_array_index(s->clients, i);

		if (c->dead)
			g_ptr_array_remove_index(s->clients, i); /* frees it */
		else
			i++;
	}
	return G_SOURCE_REMOVE;
}

static void drop_source(GSource **src)
{
	if (*src) {
		g_source_destroy(*src);
		g_source_unref(*src);
		*src = NULL;
	}
}

static void client_free(gpointer data)
{
	struct qmp_conn *c = data;

	drop_source(&c->in_src);
	drop_source(&c->out_src);
	if (c->sock) {
		g_socket_close(c->sock, NULL);
		g_object_unref(c->sock);
	}
	json_splitter_free(c->js);
	g_byte_array_unref(c->out);
	g_free(c);
}

/* Close the connection now, free the client later. */
static void client_kill(struct qmp_conn *c)
{
	struct qmp_server *s = c->srv;

	if (c->dead)
		return;
	c->dead = true;
	drop_source(&c->in_src);
	drop_source(&c->out_src);
	g_socket_close(c->sock, NULL);
	if (!s->reap_src) {
		s->reap_src = g_idle_source_new();
		g_source_set_priority(s->reap_src, G_PRIORITY_DEFAULT);
		g_source_set_callback(s->reap_src, reap_clients, s, NULL);
		g_source_attach(s->reap_src, s->ctx);
		g_source_unref(s->reap_src); /* the context keeps it until it runs */
	}
}

enum flush_result { FLUSH_DONE, FLUSH_PENDING, FLUSH_FAILED };

static enum flush_result client_try_flush(struct qmp_conn *c)
{
	while (c->out->len) {
		GError *gerr = NULL;
		gssize n = g_socket_send(c->sock, (const gchar *)c->out->data, c->out->len, NULL, &gerr);

		if (n < 0) {
			bool again = g_error_matches(gerr, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);

			g_error_free(gerr);
			return again ? FLUSH_PENDING : FLUSH_FAILED;
		}
		g_byte_array_remove_range(c->out, 0, (guint)n);
	}
	return FLUSH_DONE;
}

static void client_watch_input(struct qmp_conn *c);

static gboolean on_client_out(GSocket *sock, GIOCondition cond, gpointer data)
{
	struct qmp_conn *c = data;

	switch (client_try_flush(c)) {
	case FLUSH_PENDING:
		return G_SOURCE_CONTINUE;
	case FLUSH_DONE:
		g_source_unref(c->out_src);
		c->out_src = NULL;
		/* reading was paused while the client did not read */
		if (!c->in_src)
			client_watch_input(c);
		return G_SOURCE_REMOVE;
	case FLUSH_FAILED:
		break;
	}
	client_kill(c);
	return G_SOURCE_REMOVE;
}

static void client_flush(struct qmp_conn *c)
{
	if (c->dead || c->out_src)
		return; /* the out source is on it */
	switch (client_try_flush(c)) {
	case FLUSH_DONE:
		break;
	case FLUSH_PENDING:
		c->out_src = g_socket_create_source(c->sock, G_IO_OUT, NULL);
		g_source_set_callback(c->out_src, (GSourceFunc)(void (*)(void))on_client_out, c, NULL);
		g_source_attach(c->out_src, c->srv->ctx);
		break;
	case FLUSH_FAILED:
		client_kill(c);
		break;
	}
}

/* Queue one QMP message (a line ending in CRLF) and try to send it. */
static void client_send(struct qmp_conn *c, JsonNode *msg)
{
	char *text;

	if (c->dead)
		return;
	text = qmp_json_to_string(msg, FALSE);
	g_byte_array_append(c->out, (const guint8 *)text, (guint)strlen(text));
	g_byte_array_append(c->out, (const guint8 *)"\r\n", 2);
	g_free(text);
	if (c->out->len > QMP_MAX_PENDING_OUTPUT) {
		client_kill(c);
		return;
	}
	client_flush(c);
}

/* {"return": value, "id": id} or {"error": {...}, "id": id}; takes value */
static void send_reply(struct qmp_conn *c, const char *key, JsonNode *value, JsonNode *id)
{
	JsonObject *o = json_object_new();
	JsonNode *msg = json_node_new(JSON_NODE_OBJECT);

	json_object_set_member(o, key, value);
	if (id)
		json_object_set_member(o, "id", qmp_json_sanitized_copy(id));
	json_node_take_object(msg, o);
	client_send(c, msg);
	json_node_unref(msg);
}

static void send_error(struct qmp_conn *c, JsonNode *id, enum qmp_error_class cls, const char *desc)
{
	JsonObject *e = json_object_new();
	JsonNode *n = json_node_new(JSON_NODE_OBJECT);

	json_object_set_string_member(e, "class", qmp_error_class_name(cls));
	json_object_set_string_member(e, "desc", desc);
	json_node_take_object(n, e);
	send_reply(c, "error", n, id);
}

static void send_gerror(struct qmp_conn *c, JsonNode *id, GError *gerr)
{
	enum qmp_error_class cls = QMP_ERROR_GENERIC;

	if (gerr->domain == QMP_ERROR && gerr->code >= 0 && gerr->code < QMP_ERROR__MAX)
		cls = (enum qmp_error_class)gerr->code;
	send_error(c, id, cls, gerr->message);
}

/* ----------------------------------------------------------- dispatching */

static void handle_request(struct qmp_conn *c, JsonNode *root)
{
	const struct qmp_command *cmd;
	const char *name = NULL;
	JsonObject *req, *args = NULL;
	JsonNode *id, *ret;
	GList *members, *l;
	GError *gerr = NULL;
	char *bad = NULL;

	if (!JSON_NODE_HOLDS_OBJECT(root)) {
		send_error(c, NULL, QMP_ERROR_GENERIC, "QMP input must be a JSON object");
		return;
	}
	req = json_node_get_object(root);
	id = json_object_get_member(req, "id");

	members = json_object_get_members(req);
	for (l = members; l && !bad; l = l->next) {
		const char *key = l->data;
		JsonNode *n = json_object_get_member(req, key);

		if (!strcmp(key, "execute")) {
			if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
				bad = g_strdup("QMP input member 'execute' must be a string");
			else
				name = json_node_get_string(n);
		} else if (!strcmp(key, "arguments")) {
			if (!JSON_NODE_HOLDS_OBJECT(n))
				bad = g_strdup("QMP input member 'arguments' must be an object");
			else
				args = json_node_get_object(n);
		} else if (strcmp(key, "id")) {
			bad = g_strdup_printf("QMP input member '%s' is unexpected", key);
		}
	}
	g_list_free(members);
	if (!bad && !name)
		bad = g_strdup("QMP input lacks member 'execute'");
	if (bad) {
		send_error(c, id, QMP_ERROR_GENERIC, bad);
		g_free(bad);
		return;
	}

	cmd = qmp_command_lookup(name);
	if (!c->negotiated && (!cmd || !(cmd->flags & QMP_CMD_NEGOTIATION))) {
		send_error(c, id, QMP_ERROR_COMMAND_NOT_FOUND,
			   "Expecting capabilities negotiation with 'qmp_capabilities'");
		return;
	}
	if (!cmd) {
		char *desc = g_strdup_printf("The command %s has not been found", name);

		send_error(c, id, QMP_ERROR_COMMAND_NOT_FOUND, desc);
		g_free(desc);
		return;
	}

	if (args)
		json_object_ref(args);
	else
		args = json_object_new();
	if (qmp_check_args(cmd->args, args, &gerr))
		ret = cmd->fn(c->srv, c, args, &gerr);
	else
		ret = NULL;
	json_object_unref(args);

	if (ret) {
		send_reply(c, "return", ret, id);
	} else {
		if (!gerr)
			g_set_error(&gerr, QMP_ERROR, QMP_ERROR_GENERIC, "Command %s failed", name);
		send_gerror(c, id, gerr);
		g_error_free(gerr);
	}
}

/* json-glib says "<data>:1:13: Parse error: unexpected ..." */
static void sink_push(struct event_sink *sink, enum machine_event ev, int64_t arg);

static void after_reply(struct qmp_server *s)
{
	if (s->st.quit_pending) {
		s->st.quit_pending = false;
		s->st.quit_requested = true;
		machine_request_quit(s->st.machine);
		/* QEMU announces the quit with SHUTDOWN (host-qmp-quit); the
		 * machine does not report a quit it was asked for */
		sink_push(s->sink, MACHINE_EVENT_SHUTDOWN, -1);
	}
}

static void on_message(void *opaque, const char *json, size_t len, const char *error)
{
	struct qmp_conn *c = opaque;
	char *desc = NULL;
	JsonNode *root;

	if (c->dead)
		return;
	if (error) {
		send_error(c, NULL, QMP_ERROR_GENERIC, error);
		return;
	}
	root = qmp_json_parse(json, len, &desc);
	if (root) {
		handle_request(c, root);
		json_node_unref(root);
	} else {
		send_error(c, NULL, QMP_ERROR_GENERIC, desc);
		g_free(desc);
	}
	after_reply(c->srv);
}

static gboolean on_client_in(GSocket *sock, GIOCondition cond, gpointer data)
{
	struct qmp_conn *c = data;
	char buf[16384];
	GError *gerr = NULL;
	gssize n;

	n = g_socket_receive(sock, buf, sizeof(buf), NULL, &gerr);
	if (n < 0) {
		bool again = g_error_matches(gerr, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);

		g_error_free(gerr);
		if (again)
			return G_SOURCE_CONTINUE;
		client_kill(c);
		return G_SOURCE_REMOVE;
	}
	if (n == 0) {
		client_kill(c);
		return G_SOURCE_REMOVE;
	}
	json_splitter_feed(c->js, buf, (size_t)n);
	if (c->dead)
		return G_SOURCE_REMOVE;
	if (c->out->len > QMP_OUTPUT_HIGH_WATER && c->out_src) {
		/* the client sends requests faster than it reads answers:
		 * stop reading until it has caught up (on_client_out) */
		drop_source(&c->in_src);
		return G_SOURCE_REMOVE;
	}
	return G_SOURCE_CONTINUE;
}

static void client_watch_input(struct qmp_conn *c)
{
	c->in_src = g_socket_create_source(c->sock, G_IO_IN, NULL);
	g_source_set_callback(c->in_src, (GSourceFunc)(void (*)(void))on_client_in, c, NULL);
	g_source_attach(c->in_src, c->srv->ctx);
}

static void send_greeting(struct qmp_conn *c)
{
	JsonObject *qmp = json_object_new();
	JsonObject *top = json_object_new();
	JsonNode *msg = json_node_new(JSON_NODE_OBJECT);

	json_object_set_member(qmp, "version", qmp_version_json());
	json_object_set_array_member(qmp, "capabilities", json_array_new());
	json_object_set_object_member(top, "QMP", qmp);
	json_node_take_object(msg, top);
	client_send(c, msg);
	json_node_unref(msg);
}

static void client_new(struct qmp_server *s, int fd)
{
	struct qmp_conn *c;
	GSocket *sock;

	sock = g_socket_new_from_fd(fd, NULL);
	if (!sock) {
		close(fd);
		return;
	}
	g_socket_set_blocking(sock, FALSE);
	c = g_new0(struct qmp_conn, 1);
	c->srv = s;
	c->sock = sock;
	c->out = g_byte_array_new();
	c->js = json_splitter_new(QMP_MAX_MESSAGE, QMP_MAX_NESTING, on_message, c);
	g_ptr_array_add(s->clients, c);
	client_watch_input(c);
	send_greeting(c);
}

void qmp_server_adopt(struct qmp_server *s, int fd)
{
	client_new(s, fd);
}

/* Out of descriptors with a client waiting: turn it away (it sees the
 * connection closed) rather than leave it queued.  Returns whether one
 * was turned away. */
static bool refuse_one(struct qmp_server *s, int lfd)
{
	if (s->reserve_fd < 0)
		return false;
	close(s->reserve_fd);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd >= 0)
		close(fd);
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!s->said_emfile) {
		fprintf(stderr, "kmig: QMP: out of file descriptors; turning clients away\n");
		s->said_emfile = true;
	}
	return fd >= 0;
}

static gboolean on_accept(GSocket *ls, GIOCondition cond, gpointer data)
{
	struct qmp_server *s = data;
	int lfd = g_socket_get_fd(ls);

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0 && errno == EINTR)
			continue;
		if (fd < 0 && (errno == EMFILE || errno == ENFILE) && refuse_one(s, lfd))
			continue;
		if (fd < 0)
			break;	/* EAGAIN: all taken */
		s->said_emfile = false;
		client_new(s, fd);
	}
	return G_SOURCE_CONTINUE;
}

/* ---------------------------------------------------------------- events */

static const char *shutdown_reason(struct qmp_server *s, int64_t arg)
{
	if (arg >= 0)
		return "guest-shutdown";
	if (s->st.quit_requested)
		return "host-qmp-quit";
	/* machine.h gives no cause for host-side shutdowns: a fatal error
	 * leaves the machine in internal-error, anything else is taken to be
	 * a signal (kmig's other way to quit) */
	if (machine_runstate(s->st.machine) == RUNSTATE_INTERNAL_ERROR)
		return "host-error";
	return "host-signal";
}

static void deliver_event(struct qmp_server *s, const struct pending_event *pe)
{
	JsonBuilder *b = NULL;
	const char *name;
	JsonNode *data = NULL, *msg;
	guint i;

	switch (pe->ev) {
	case MACHINE_EVENT_STOP:
		name = "STOP";
		break;
	case MACHINE_EVENT_RESUME:
		name = "RESUME";
		break;
	case MACHINE_EVENT_SHUTDOWN:
		/* one SHUTDOWN, as QEMU: after a quit, the machine may still
		 * report its own end */
		if (s->shutdown_sent)
			return;
		s->shutdown_sent = true;
		name = "SHUTDOWN";
		b = json_builder_new();
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "guest");
		json_builder_add_boolean_value(b, pe->arg >= 0);
		json_builder_set_member_name(b, "reason");
		json_builder_add_string_value(b, shutdown_reason(s, pe->arg));
		json_builder_end_object(b);
		break;
	case MACHINE_EVENT_MIGRATION: {
		const char *st = pe->arg >= 0 && pe->arg <= INT32_MAX ?
					 migration_status_name((enum migration_status)pe->arg) :
					 NULL;

		/* QEMU sends MIGRATION and MIGRATION_PASS only with the
		 * "events" capability */
		if (!s->st.caps[QMP_MIGCAP_EVENTS] || !st)
			return;
		name = "MIGRATION";
		b = json_builder_new();
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "status");
		json_builder_add_string_value(b, st);
		json_builder_end_object(b);
		break;
	}
	case MACHINE_EVENT_STALL:
		/* kmig's own event, sent whether or not "events" is on: a
		 * management tool that asked nothing still wants to know */
		name = "X_KMIG_MIGRATION_STALL";
		b = json_builder_new();
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "stalled");
		json_builder_add_boolean_value(b, pe->arg != 0);
		json_builder_end_object(b);
		break;
	case MACHINE_EVENT_MIGRATION_PASS:
		if (!s->st.caps[QMP_MIGCAP_EVENTS])
			return;
		name = "MIGRATION_PASS";
		b = json_builder_new();
		json_builder_begin_object(b);
		qmp_builder_add_int(b, "pass", pe->arg);
		json_builder_end_object(b);
		break;
	default:
		return;
	}
	if (b) {
		data = json_builder_get_root(b);
		g_object_unref(b);
	}
	msg = qmp_event_build(name, data, pe->when_us);
	if (data)
		json_node_unref(data);
	for (i = 0; i < s->clients->len; i++) {
		struct qmp_conn *c = g_ptr_array_index(s->clients, i);

		/* no events during capabilities negotiation */
		if (!c->dead && c->negotiated)
			client_send(c, msg);
	}
	json_node_unref(msg);
}

/* Take the queued events (and the server, NULL if stopped). */
static struct qmp_server *sink_take(struct event_sink *sink, GQueue *out, bool detach)
{
	struct qmp_server *srv;
	GSource *drain;

	g_mutex_lock(&sink->lock);
	srv = sink->srv;
	*out = sink->events;
	g_queue_init(&sink->events);
	drain = sink->drain_src;
	sink->drain_src = NULL;
	if (detach)
		sink->srv = NULL;
	g_mutex_unlock(&sink->lock);
	if (drain) {
		/* inside drain_events this only drops our reference; from
		 * qmp_server_stop it also cancels the pending drain */
		g_source_destroy(drain);
		g_source_unref(drain);
	}
	return srv;
}

static void deliver_all(struct qmp_server *s, GQueue *q)
{
	struct pending_event *pe;

	while ((pe = g_queue_pop_head(q))) {
		if (s)
			deliver_event(s, pe);
		g_free(pe);
	}
}

static gboolean drain_events(gpointer data)
{
	struct event_sink *sink = data;
	GQueue q;
	struct qmp_server *s = sink_take(sink, &q, false);

	deliver_all(s, &q);
	return G_SOURCE_REMOVE;
}

static void sink_push(struct event_sink *sink, enum machine_event ev, int64_t arg)
{
	struct pending_event *pe = g_new(struct pending_event, 1);

	pe->ev = ev;
	pe->arg = arg;
	pe->when_us = g_get_real_time();

	g_mutex_lock(&sink->lock);
	if (!sink->srv) {
		g_mutex_unlock(&sink->lock);
		g_free(pe);
		return;
	}
	g_queue_push_tail(&sink->events, pe);
	if (!sink->drain_src) {
		sink->drain_src = g_idle_source_new();
		g_source_set_priority(sink->drain_src, G_PRIORITY_DEFAULT);
		g_source_set_callback(sink->drain_src, drain_events, sink_ref(sink), sink_unref);
		g_source_attach(sink->drain_src, sink->ctx);
	}
	g_mutex_unlock(&sink->lock);
}

/* machine_event_fn: any thread, must not call into the machine.  The
 * server's reference keeps the sink alive: qmp_server_stop() drops it only
 * after machine_set_event_handler() has replaced this handler, and that
 * returns only once no call to it is running. */
static void on_machine_event(void *opaque, enum machine_event ev, int64_t arg)
{
	sink_push(opaque, ev, arg);
}

/* ---------------------------------------------------------- start / stop */

/* Make room for our socket at path: nothing there, or a stale socket. */
static int clear_path(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		r = -errno;
		kmig_set_err(err, errlen, "%s: %s", path, g_strerror(errno));
		return r;
	}
	if (!S_ISSOCK(st.st_mode)) {
		kmig_set_err(err, errlen, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	/* someone listening there? then it is not stale */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd >= 0) {
		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		memcpy(sa.sun_path, path, strlen(path) + 1);
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		if (r == 0 || errno == EAGAIN || errno == EINPROGRESS) {
			close(fd);
			kmig_set_err(err, errlen, "%s is in use by a running server", path);
			return -EADDRINUSE;
		}
		close(fd);
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		r = -errno;
		kmig_set_err(err, errlen, "cannot remove stale socket %s: %s", path, g_strerror(errno));
		return r;
	}
	return 0;
}

static int listen_unix(const char *path, struct stat *st, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int fd, r;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		kmig_set_err(err, errlen, "socket: %s", g_strerror(errno));
		return r;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		kmig_set_err(err, errlen, "bind %s: %s", path, g_strerror(errno));
		close(fd);
		return r;
	}
	/* nobody can connect before listen(), so there is no window in which
	 * the socket is reachable with the umask's mode */
	if (chmod(path, 0600) < 0 || lstat(path, st) < 0) {
		r = -errno;
		kmig_set_err(err, errlen, "chmod %s: %s", path, g_strerror(errno));
		goto fail;
	}
	if (listen(fd, 64) < 0) {
		r = -errno;
		kmig_set_err(err, errlen, "listen %s: %s", path, g_strerror(errno));
		goto fail;
	}
	return fd;
fail:
	unlink(path);
	close(fd);
	return r;
}

int qmp_server_start(struct machine *m, const char *socket_path, struct qmp_server **out, char *err,
		     size_t errlen)
{
	struct sockaddr_un sa;
	struct qmp_server *s;
	struct stat st;
	GSocket *ls;
	int fd, r;

	if (!m || !socket_path || !*socket_path || !out) {
		kmig_set_err(err, errlen, "qmp_server_start: invalid argument");
		return -EINVAL;
	}
	if (strlen(socket_path) >= sizeof(sa.sun_path)) {
		kmig_set_err(err, errlen, "socket path too long (at most %zu bytes): %s", sizeof(sa.sun_path) - 1,
			     socket_path);
		return -ENAMETOOLONG;
	}
	r = clear_path(socket_path, err, errlen);
	if (r < 0)
		return r;
	fd = listen_unix(socket_path, &st, err, errlen);
	if (fd < 0)
		return fd;
	ls = g_socket_new_from_fd(fd, NULL);
	if (!ls) {
		kmig_set_err(err, errlen, "cannot use the socket of %s", socket_path);
		unlink(socket_path);
		close(fd);
		return -EIO;
	}
	g_socket_set_blocking(ls, FALSE);

	s = g_new0(struct qmp_server, 1);
	s->st.machine = m;
	s->ctx = g_main_context_ref_thread_default();
	s->path = g_strdup(socket_path);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->listener = ls;
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s->clients = g_ptr_array_new_with_free_func(client_free);

	s->sink = g_new0(struct event_sink, 1);
	s->sink->refs = 1;
	g_mutex_init(&s->sink->lock);
	g_queue_init(&s->sink->events);
	s->sink->srv = s;
	s->sink->ctx = g_main_context_ref(s->ctx);

	s->listen_src = g_socket_create_source(ls, G_IO_IN, NULL);
	g_source_set_callback(s->listen_src, (GSourceFunc)(void (*)(void))on_accept, s, NULL);
	g_source_attach(s->listen_src, s->ctx);

	machine_set_event_handler(m, on_machine_event, s->sink);
	*out = s;
	return 0;
}

/* Best effort: give every client a little time to take its last output. */
static void flush_clients_before_close(struct qmp_server *s)
{
	gint64 deadline = g_get_monotonic_time() + 500 * 1000;
	guint i;

	for (i = 0; i < s->clients->len; i++) {
		struct qmp_conn *c = g_ptr_array_index(s->clients, i);

		while (!c->dead && c->out->len) {
			gint64 left = deadline - g_get_monotonic_time();
			enum flush_result fr = client_try_flush(c);

			if (fr != FLUSH_PENDING || left <= 0)
				break;
			if (!g_socket_condition_timed_wait(c->sock, G_IO_OUT, left, NULL, NULL))
				break;
		}
	}
}

void qmp_server_stop(struct qmp_server *s)
{
	struct stat st;
	GQueue q;

	if (!s)
		return;
	/* once it returns, no event call is running or will run */
	machine_set_event_handler(s->st.machine, NULL, NULL);
	/* last events (SHUTDOWN, typically) still go out */
	deliver_all(sink_take(s->sink, &q, true), &q);
	sink_unref(s->sink);

	flush_clients_before_close(s);
	g_ptr_array_free(s->clients, TRUE);
	if (s->reap_src)
		g_source_destroy(s->reap_src);

	drop_source(&s->listen_src);
	g_socket_close(s->listener, NULL);
	g_object_unref(s->listener);
	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	/* unlink only what is still our socket */
	if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	g_main_context_unref(s->ctx);
	g_free(s->path);
	g_free(s);
}
