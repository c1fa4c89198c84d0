/* tests/unit/qmp/qmp_test_client.c — see qmp_test_client.h */
#include "qmp_test_client.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

static void iterate(void)
{
	while (g_main_context_iteration(NULL, FALSE))
		;
}

void tc_spin(int ms)
{
	gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;

	while (g_get_monotonic_time() < end) {
		iterate();
		g_usleep(1000);
	}
	iterate();
}

struct tclient *tc_connect(const char *path)
{
	struct sockaddr_un sa;
	struct tclient *c;
	int fd;

	gint64 end = g_get_monotonic_time() + (gint64)TC_TIMEOUT_MS * 1000;

	/* non-blocking: with the listen backlog full, connect() fails with
	 * EAGAIN until the server (this thread) accepts */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		assert_true(errno == EAGAIN || errno == EINTR);
		assert_true(g_get_monotonic_time() < end);
		iterate();
		g_usleep(200);
	}
	c = g_new0(struct tclient, 1);
	c->fd = fd;
	c->in = g_string_new(NULL);
	return c;
}

void tc_close(struct tclient *c)
{
	if (!c)
		return;
	close(c->fd);
	g_string_free(c->in, TRUE);
	g_free(c);
}

void tc_send_raw(struct tclient *c, const void *data, size_t len)
{
	const char *p = data;
	gint64 end = g_get_monotonic_time() + (gint64)TC_TIMEOUT_MS * 1000;

	while (len) {
		ssize_t n = send(c->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
			assert_true(g_get_monotonic_time() < end);
			/* let the server read; drain what it answers meanwhile */
			iterate();
			{
				char buf[4096];
				ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

				if (r > 0)
					g_string_append_len(c->in, buf, r);
			}
			g_usleep(200);
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	iterate();
}

void tc_send(struct tclient *c, const char *text)
{
	tc_send_raw(c, text, strlen(text));
}

char *tc_read_line(struct tclient *c, int timeout_ms)
{
	gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

	for (;;) {
		const char *start = c->in->str + c->pos;
		char *nl = memchr(start, '\n', c->in->len - c->pos);

		if (nl) {
			size_t len = (size_t)(nl - start);
			char *line;

			/* QMP ends every message with CRLF */
			assert_true(len > 0 && start[len - 1] == '\r');
			line = g_strndup(start, len - 1);
			c->pos += len + 1;
			if (c->pos > c->in->len / 2) { /* amortised compaction */
				g_string_erase(c->in, 0, (gssize)c->pos);
				c->pos = 0;
			}
			return line;
		}
		if (c->eof || g_get_monotonic_time() >= end)
			return NULL;
		iterate();
		{
			struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
			char buf[65536];

			if (poll(&pfd, 1, 1) > 0) {
				ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

				if (n > 0)
					g_string_append_len(c->in, buf, n);
				else if (n == 0)
					c->eof = true;
			}
		}
	}
}

JsonNode *tc_read(struct tclient *c, int timeout_ms)
{
	char *line = tc_read_line(c, timeout_ms);
	JsonParser *p;
	JsonNode *n;
	size_t i;

	if (!line)
		return NULL;
	/* QMP output is ASCII */
	for (i = 0; line[i]; i++)
		assert_true((unsigned char)line[i] < 0x80);
	p = json_parser_new();
	if (!json_parser_load_from_data(p, line, -1, NULL))
		fail_msg("server sent invalid JSON: %s", line);
	n = json_node_copy(json_parser_get_root(p));
	g_object_unref(p);
	g_free(line);
	return n;
}

JsonNode *tc_read_reply(struct tclient *c)
{
	for (;;) {
		JsonNode *n = tc_read(c, TC_TIMEOUT_MS);

		assert_non_null(n);
		assert_true(JSON_NODE_HOLDS_OBJECT(n));
		if (!json_object_has_member(json_node_get_object(n), "event"))
			return n;
		json_node_unref(n);
	}
}

JsonNode *tc_cmd(struct tclient *c, const char *text)
{
	tc_send(c, text);
	return tc_read_reply(c);
}

struct tclient *tc_connect_negotiated(const char *path)
{
	struct tclient *c = tc_connect(path);
	JsonNode *n = tc_read(c, TC_TIMEOUT_MS);

	assert_non_null(n);
	assert_true(json_object_has_member(json_node_get_object(n), "QMP"));
	json_node_unref(n);
	n = tc_cmd(c, "{\"execute\": \"qmp_capabilities\"}\n");
	tc_return_object(n);
	json_node_unref(n);
	return c;
}

char *tc_to_string(JsonNode *node)
{
	JsonGenerator *g = json_generator_new();
	char *s;

	json_generator_set_root(g, node);
	s = json_generator_to_data(g, NULL);
	g_object_unref(g);
	return s;
}

JsonObject *tc_return_object(JsonNode *reply)
{
	JsonObject *o;
	JsonNode *r;

	assert_true(JSON_NODE_HOLDS_OBJECT(reply));
	o = json_node_get_object(reply);
	if (!json_object_has_member(o, "return")) {
		char *s = tc_to_string(reply);

		fail_msg("expected a return, got %s", s);
	}
	r = json_object_get_member(o, "return");
	if (!JSON_NODE_HOLDS_OBJECT(r))
		return NULL;
	return json_node_get_object(r);
}

static JsonObject *error_of(JsonNode *reply)
{
	JsonObject *o;

	assert_true(JSON_NODE_HOLDS_OBJECT(reply));
	o = json_node_get_object(reply);
	if (!json_object_has_member(o, "error")) {
		char *s = tc_to_string(reply);

		fail_msg("expected an error, got %s", s);
	}
	assert_false(json_object_has_member(o, "return"));
	o = json_object_get_object_member(o, "error");
	/* exactly class and desc */
	assert_int_equal(json_object_get_size(o), 2);
	return o;
}

void tc_assert_error(JsonNode *reply, const char *cls, const char *desc)
{
	JsonObject *e = error_of(reply);

	assert_string_equal(json_object_get_string_member(e, "class"), cls);
	if (desc)
		assert_string_equal(json_object_get_string_member(e, "desc"), desc);
}

void tc_assert_error_prefix(JsonNode *reply, const char *cls, const char *desc_prefix)
{
	JsonObject *e = error_of(reply);
	const char *d = json_object_get_string_member(e, "desc");

	assert_string_equal(json_object_get_string_member(e, "class"), cls);
	if (!g_str_has_prefix(d, desc_prefix))
		fail_msg("error desc '%s' does not start with '%s'", d, desc_prefix);
}
