/* tools/qmp-client.c — kmig's synchronous QMP client (migrate, info, demo).
 *
 * The server on the other end may be anything that listens on the path:
 * the client holds the limits the server holds (qapi/qmp-json.h: message
 * size, nesting), checks the types of what it reads, and gives up after a
 * deadline, so that a garbage, endless, hostile or silent server costs a
 * clear message and a bounded time, never a crash or a hang.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "qapi/qmp-json.h"
#include "tools/qmp-client.h"

struct qmp_client {
	int fd;
	struct json_splitter *js;
	GQueue messages;		/* parsed objects not yet consumed */
	char bad[256];			/* the first protocol error seen, or "" */
	unsigned int next_id;
	volatile sig_atomic_t *interrupt;
};

static int connect_unix(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	for (int waited = 0;; waited += 20) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return -errno;
		if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
			return fd;
		int e = errno;
		close(fd);
		if ((e != ENOENT && e != ECONNREFUSED) || waited >= timeout_ms)
			return -e;
		usleep(20000);
	}
}

static void set_bad(struct qmp_client *c, const char *what)
{
	if (!c->bad[0])
		snprintf(c->bad, sizeof(c->bad), "%s", what);
}

/* One whole JSON value from the splitter: a QMP message is an object,
 * parsed as strictly as the server parses requests. */
static void on_value(void *opaque, const char *json, size_t len, const char *error)
{
	struct qmp_client *c = opaque;
	char *desc = NULL;
	JsonNode *root;

	if (!json) {
		set_bad(c, error);
		return;
	}
	root = qmp_json_parse(json, len, &desc);
	if (root && JSON_NODE_HOLDS_OBJECT(root))
		g_queue_push_tail(&c->messages, root);
	else
		set_bad(c, desc ? desc : "a message that is not a JSON object");
	if (root && !JSON_NODE_HOLDS_OBJECT(root))
		json_node_unref(root);
	g_free(desc);
}

/* The next message, waiting until deadline (ms, monotonic).  NULL with
 * *why set on a protocol error, a closed socket, the deadline, or an
 * interrupt (-EINTR). */
static JsonNode *read_message(struct qmp_client *c, int64_t deadline, int *why)
{
	for (;;) {
		if (c->bad[0]) {
			*why = -EPROTO;
			return NULL;
		}
		if (!g_queue_is_empty(&c->messages))
			return g_queue_pop_head(&c->messages);

		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int64_t left = deadline - kmig_now_ms();
		int n = left > 0 ? poll(&pfd, 1, (int)left) : 0;

		if (n < 0 && errno == EINTR) {
			if (c->interrupt && *c->interrupt) {
				*why = -EINTR;
				return NULL;
			}
			continue;
		}
		if (n <= 0) {
			*why = n < 0 ? -errno : -ETIMEDOUT;
			return NULL;
		}
		char tmp[65536];
		ssize_t r = read(c->fd, tmp, sizeof(tmp));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*why = r < 0 ? -errno : -EPIPE;
			return NULL;
		}
		json_splitter_feed(c->js, tmp, (size_t)r);
		/* an endless value is refused when it passes the limit, not at
		 * an end that may never come */
		if (json_splitter_skipping(c->js))
			set_bad(c, json_splitter_skipping(c->js));
	}
}

static void describe_failure(struct qmp_client *c, int why, const char *what, int timeout_ms, char *err,
			     size_t errlen)
{
	char *bad = qmp_printable(c->bad);

	if (why == -EPROTO)
		snprintf(err, errlen, "%s: the server sent %s", what, bad);
	else if (why == -ETIMEDOUT)
		snprintf(err, errlen, "%s: nothing from the server in %d ms", what, timeout_ms);
	else if (why == -EINTR)
		snprintf(err, errlen, "%s: interrupted", what);
	else if (why == -EPIPE)
		snprintf(err, errlen, "%s: the server closed the connection", what);
	else
		snprintf(err, errlen, "%s: %s", what, strerror(-why));
	g_free(bad);
}

static int send_cmd(struct qmp_client *c, const char *cmd, JsonNode *args, unsigned int id)
{
	JsonBuilder *b = json_builder_new();

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "execute");
	json_builder_add_string_value(b, cmd);
	if (args) {
		json_builder_set_member_name(b, "arguments");
		json_builder_add_value(b, json_node_copy(args));
	}
	json_builder_set_member_name(b, "id");
	json_builder_add_int_value(b, id);
	json_builder_end_object(b);
	JsonNode *root = json_builder_get_root(b);
	char *text = qmp_json_to_string(root, FALSE);
	GString *line = g_string_new(text);
	ssize_t w = 0;

	g_string_append(line, "\n");
	for (size_t off = 0; off < line->len; off += (size_t)w) {
		w = write(c->fd, line->str + off, line->len - off);
		if (w < 0 && errno == EINTR && !(c->interrupt && *c->interrupt)) {
			w = 0;
			continue;
		}
		if (w < 0)
			break;
	}
	g_string_free(line, TRUE);
	g_free(text);
	json_node_unref(root);
	g_object_unref(b);
	return w < 0 ? -errno : 0;
}

/* The reply's "error": its desc, made printable. */
static void reply_error(JsonObject *o, char *err, size_t errlen)
{
	JsonNode *e = json_object_get_member(o, "error");
	char *desc = qmp_printable(e && JSON_NODE_HOLDS_OBJECT(e)
					   ? qmp_get_str(json_node_get_object(e), "desc", "error") : "error");

	snprintf(err, errlen, "%s", desc);
	g_free(desc);
}

int qmp_client_exec(struct qmp_client *c, const char *cmd, JsonNode *args, JsonNode **ret,
		    char *err, size_t errlen)
{
	unsigned int id = ++c->next_id;
	int64_t deadline = kmig_now_ms() + QMP_CLIENT_REPLY_TIMEOUT_MS;
	char what[96];
	int r = send_cmd(c, cmd, args, id);

	snprintf(what, sizeof(what), "no reply to '%s'", cmd);
	if (r) {
		snprintf(err, errlen, "cannot send '%s': %s", cmd, r == -EINTR ? "interrupted" : strerror(-r));
		return r;
	}
	for (;;) {
		JsonNode *msg = read_message(c, deadline, &r);

		if (!msg) {
			describe_failure(c, r, what, QMP_CLIENT_REPLY_TIMEOUT_MS, err, errlen);
			return r;
		}
		JsonObject *o = json_node_get_object(msg);

		if (json_object_has_member(o, "event") || qmp_get_int(o, "id", -1) != (gint64)id) {
			json_node_unref(msg);
			continue;
		}
		if (json_object_has_member(o, "error")) {
			reply_error(o, err, errlen);
			json_node_unref(msg);
			return -EREMOTEIO;
		}
		if (ret) {
			JsonNode *rn = json_object_get_member(o, "return");
			*ret = rn ? json_node_copy(rn) : json_node_new(JSON_NODE_NULL);
		}
		json_node_unref(msg);
		return 0;
	}
}

static int read_greeting(struct qmp_client *c, const char *path, char *err, size_t errlen)
{
	int why = 0;
	JsonNode *g = read_message(c, kmig_now_ms() + QMP_CLIENT_GREETING_TIMEOUT_MS, &why);
	char what[160];

	snprintf(what, sizeof(what), "'%s' did not greet like a QMP server", path);
	if (!g) {
		describe_failure(c, why, what, QMP_CLIENT_GREETING_TIMEOUT_MS, err, errlen);
		return why;
	}
	bool ok = json_object_has_member(json_node_get_object(g), "QMP");

	json_node_unref(g);
	if (!ok) {
		snprintf(err, errlen, "%s: its first message has no \"QMP\" member", what);
		return -EPROTO;
	}
	return 0;
}

int qmp_client_open(const char *path, int timeout_ms, struct qmp_client **out, char *err, size_t errlen)
{
	int fd = connect_unix(path, timeout_ms);

	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to QMP socket '%s': %s", path, strerror(-fd));
		return fd;
	}
	struct qmp_client *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->fd = fd;
	c->js = json_splitter_new(QMP_MAX_MESSAGE, QMP_MAX_NESTING, on_value, c);
	g_queue_init(&c->messages);
	int r = read_greeting(c, path, err, errlen);

	if (!r)
		r = qmp_client_exec(c, "qmp_capabilities", NULL, NULL, err, errlen);
	if (r) {
		qmp_client_close(c);
		return r;
	}
	*out = c;
	return 0;
}

void qmp_client_set_interrupt(struct qmp_client *c, volatile sig_atomic_t *flag)
{
	c->interrupt = flag;
}

void qmp_client_close(struct qmp_client *c)
{
	if (!c)
		return;
	close(c->fd);
	json_splitter_free(c->js);
	g_queue_clear_full(&c->messages, (GDestroyNotify)json_node_unref);
	free(c);
}

/* Members are read only when they have the type asked for: a server that
 * sends a string where a number belongs gets the default, not a crash or
 * a json-glib critical. */
static JsonNode *scalar_member(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) ? n : NULL;
}

gint64 qmp_get_int(JsonObject *o, const char *member, gint64 dflt)
{
	JsonNode *n = scalar_member(o, member);
	GType t = n ? json_node_get_value_type(n) : G_TYPE_INVALID;
	double d = t == G_TYPE_DOUBLE ? json_node_get_double(n) : 0;

	if (t == G_TYPE_INT64)
		return json_node_get_int(n);
	/* a whole number written as a double, as some servers do */
	if (t == G_TYPE_DOUBLE && d >= -9.2e18 && d <= 9.2e18)
		return (gint64)d;
	return dflt;
}

double qmp_get_double(JsonObject *o, const char *member, double dflt)
{
	JsonNode *n = scalar_member(o, member);
	GType t = n ? json_node_get_value_type(n) : G_TYPE_INVALID;

	return t == G_TYPE_DOUBLE || t == G_TYPE_INT64 ? json_node_get_double(n) : dflt;
}

const char *qmp_get_str(JsonObject *o, const char *member, const char *dflt)
{
	JsonNode *n = scalar_member(o, member);

	return n && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n) : dflt;
}

char *qmp_printable(const char *s)
{
	char *t = g_strdup(s ? s : "?");

	for (char *p = t; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return t;
}
