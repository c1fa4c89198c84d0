/* tests/unit/qmp/qmp_test_client.h — a QMP client for the tests, over a
 * real unix socket.  The server runs in the same thread: every wait here
 * iterates the thread-default GMainContext while it polls the socket.
 */
#ifndef KMIG_TESTS_QMP_TEST_CLIENT_H
#define KMIG_TESTS_QMP_TEST_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#define TC_TIMEOUT_MS 5000

struct tclient {
	int fd;
	GString *in;	/* received, not yet consumed from pos on */
	size_t pos;
	bool eof;
};

struct tclient *tc_connect(const char *path);
void tc_close(struct tclient *c);
/* send everything (never blocks the server) */
void tc_send_raw(struct tclient *c, const void *data, size_t len);
void tc_send(struct tclient *c, const char *text);
/* next line without its CRLF (checked), NULL on timeout or EOF */
char *tc_read_line(struct tclient *c, int timeout_ms);
/* next message, parsed; NULL on timeout */
JsonNode *tc_read(struct tclient *c, int timeout_ms);
/* next message that is not an event */
JsonNode *tc_read_reply(struct tclient *c);
/* send text, return the reply */
JsonNode *tc_cmd(struct tclient *c, const char *text);
/* connect, read the greeting, negotiate */
struct tclient *tc_connect_negotiated(const char *path);
/* spin the main context for ms */
void tc_spin(int ms);

/* accessors for replies (assert on shape) */
JsonObject *tc_return_object(JsonNode *reply);
void tc_assert_error(JsonNode *reply, const char *cls, const char *desc);
void tc_assert_error_prefix(JsonNode *reply, const char *cls, const char *desc_prefix);
char *tc_to_string(JsonNode *node);

#endif
