/* Fuzzer: the QMP server as a client sees it — the JSON splitter, the
 * parse, capabilities negotiation and every command's dispatch and
 * argument checks — against the fake machine of the QMP unit tests
 * (tests/unit/qmp/fake_machine.c).  The input is what a client sends;
 * every line the server sends back must be one JSON object: the greeting,
 * a return, an error or an event.  The server must close the connection
 * once the client has sent everything and shut its side. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "qapi/qmp-internal.h"
#include "tests/fuzz/fuzz_dest.h"
#include "tests/unit/qmp/fake_machine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply_line(const char *line, size_t len)
{
	JsonParser *p = json_parser_new();
	GError *e = NULL;

	FUZZ_CHECK(json_parser_load_from_data(p, line, (gssize)len, &e), "server sent invalid JSON: %.*s (%s)",
		   (int)(len > 300 ? 300 : len), line, e ? e->message : "?");
	JsonNode *root = json_parser_get_root(p);

	FUZZ_CHECK(root && JSON_NODE_HOLDS_OBJECT(root), "server sent a non-object: %.*s", (int)len, line);
	JsonObject *o = json_node_get_object(root);
	int kinds = json_object_has_member(o, "QMP") + json_object_has_member(o, "return") +
		    json_object_has_member(o, "error") + json_object_has_member(o, "event");

	FUZZ_CHECK(kinds == 1, "server sent a message that is not one of greeting/return/error/event: %.*s",
		   (int)len, line);
	g_object_unref(p);
}

static void check_replies(GByteArray *out)
{
	const char *b = (const char *)out->data;
	size_t start = 0;

	for (size_t i = 0; i < out->len; i++) {
		if (b[i] != '\n')
			continue;
		if (i > start + 1 || (i == start + 1 && b[start] != '\r'))
			check_reply_line(b + start, i - start);
		start = i + 1;
	}
	FUZZ_CHECK(start == out->len, "server output does not end with a newline");
}

static gboolean wake(gint fd, GIOCondition cond, gpointer data)
{
	return G_SOURCE_CONTINUE;	/* only to end a blocking iteration */
}

static bool drain(int fd, GByteArray *out)
{
	uint8_t buf[65536];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0)
			return true;		/* the server hung up */
		if (n < 0) {
			/* the server may close with replies unread */
			FUZZ_CHECK(errno == EAGAIN || errno == ECONNRESET, "recv: %s", strerror(errno));
			return errno == ECONNRESET;
		}
		g_byte_array_append(out, buf, (guint)n);
	}
}

/* Send data (it fits in the socket's buffer: -max_len is far below it),
 * end it, and read everything back until the server hangs up.  The
 * iterations block until the server or this end has something to do; a
 * server that never hangs up is libFuzzer's timeout. */
static void converse(int fd, const uint8_t *data, size_t size, GByteArray *out)
{
	int sndbuf = 4 << 20;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
	ssize_t n = size ? send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;

	FUZZ_CHECK((size_t)n == size, "could not hand %zu bytes to the server at once (%zd)", size, n);
	shutdown(fd, SHUT_WR);
	guint watch = g_unix_fd_add(fd, G_IO_IN | G_IO_HUP | G_IO_ERR, wake, NULL);

	while (!drain(fd, out))
		g_main_context_iteration(NULL, TRUE);
	g_source_remove(watch);
}

/* A fresh machine and server for each input, so that an input alone
 * reproduces what it found and every allocation is freed by its end (the
 * leak check). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct machine *m = fake_machine_new(NULL);
	struct qmp_server *s = NULL;
	GByteArray *out = g_byte_array_new();
	char err[256];
	int sv[2];

	if (!path[0])
		snprintf(path, sizeof(path), "/tmp/kmig-fuzz-qmp-%d.sock", (int)getpid());
	FUZZ_CHECK(!qmp_server_start(m, path, &s, err, sizeof(err)), "qmp_server_start: %s", err);
	FUZZ_CHECK(!socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair: %s", strerror(errno));
	qmp_server_adopt(s, sv[1]);
	converse(sv[0], data, size, out);
	check_replies(out);
	qmp_server_stop(s);
	machine_destroy(m);
	while (g_main_context_iteration(NULL, FALSE))
		;
	close(sv[0]);
	g_byte_array_unref(out);
	return 0;
}
