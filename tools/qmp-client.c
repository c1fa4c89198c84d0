#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tools/qmp-client.h"

#define REPLY_TIMEOUT_MS 30000

struct qmp_client {
	int fd;
	GString *buf;
	unsigned int next_id;
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

/* Next complete line (one JSON message), parsed; NULL on EOF/timeout. */
static JsonNode *read_message(struct qmp_client *c, int timeout_ms)
{
	for (;;) {
		char *nl = memchr(c->buf->str, '\n', c->buf->len);

		if (nl) {
			size_t n = (size_t)(nl - c->buf->str) + 1;
			char *line = g_strndup(c->buf->str, n);
			g_string_erase(c->buf, 0, (gssize)n);
			JsonParser *p = json_parser_new();
			JsonNode *node = NULL;

			if (json_parser_load_from_data(p, line, -1, NULL) && json_parser_get_root(p))
				node = json_node_copy(json_parser_get_root(p));
			g_object_unref(p);
			g_free(line);
			if (node && JSON_NODE_HOLDS_OBJECT(node))
				return node;
			if (node)
				json_node_unref(node);
			continue;
		}
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

		if (poll(&pfd, 1, timeout_ms) <= 0)
			return NULL;
		char tmp[65536];
		ssize_t r = read(c->fd, tmp, sizeof(tmp));

		if (r <= 0)
			return NULL;
		g_string_append_len(c->buf, tmp, r);
	}
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
	char *text = json_to_string(root, FALSE);
	GString *line = g_string_new(text);

	g_string_append(line, "\n");
	ssize_t w = write(c->fd, line->str, line->len);

	g_string_free(line, TRUE);
	g_free(text);
	json_node_unref(root);
	g_object_unref(b);
	return w < 0 ? -errno : 0;
}

int qmp_client_exec(struct qmp_client *c, const char *cmd, JsonNode *args, JsonNode **ret,
		    char *err, size_t errlen)
{
	unsigned int id = ++c->next_id;
	int r = send_cmd(c, cmd, args, id);

	if (r) {
		snprintf(err, errlen, "cannot send '%s': %s", cmd, strerror(-r));
		return r;
	}
	for (;;) {
		JsonNode *msg = read_message(c, REPLY_TIMEOUT_MS);

		if (!msg) {
			snprintf(err, errlen, "no reply to '%s' (connection closed or timed out)", cmd);
			return -EIO;
		}
		JsonObject *o = json_node_get_object(msg);

		if (json_object_has_member(o, "event") || qmp_get_int(o, "id", -1) != (gint64)id) {
			json_node_unref(msg);
			continue;
		}
		if (json_object_has_member(o, "error")) {
			JsonObject *e = json_object_get_object_member(o, "error");
			snprintf(err, errlen, "%s", e ? qmp_get_str(e, "desc", "error") : "error");
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

int qmp_client_open(const char *path, int timeout_ms, struct qmp_client **out, char *err, size_t errlen)
{
	int fd = connect_unix(path, timeout_ms);

	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to QMP socket '%s': %s", path, strerror(-fd));
		return fd;
	}
	struct qmp_client *c = calloc(1, sizeof(*c));

	c->fd = fd;
	c->buf = g_string_new(NULL);
	JsonNode *greeting = read_message(c, REPLY_TIMEOUT_MS);

	if (!greeting || !json_object_has_member(json_node_get_object(greeting), "QMP")) {
		snprintf(err, errlen, "'%s' did not greet like a QMP server", path);
		if (greeting)
			json_node_unref(greeting);
		qmp_client_close(c);
		return -EPROTO;
	}
	json_node_unref(greeting);
	int r = qmp_client_exec(c, "qmp_capabilities", NULL, NULL, err, errlen);

	if (r) {
		qmp_client_close(c);
		return r;
	}
	*out = c;
	return 0;
}

void qmp_client_close(struct qmp_client *c)
{
	if (!c)
		return;
	close(c->fd);
	g_string_free(c->buf, TRUE);
	free(c);
}

gint64 qmp_get_int(JsonObject *o, const char *member, gint64 dflt)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_int(n) : dflt;
}

double qmp_get_double(JsonObject *o, const char *member, double dflt)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_double(n) : dflt;
}

const char *qmp_get_str(JsonObject *o, const char *member, const char *dflt)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
		       ? json_node_get_string(n) : dflt;
}
