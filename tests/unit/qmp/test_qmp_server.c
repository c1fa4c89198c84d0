/* tests/unit/qmp/test_qmp_server.c — the QMP server over a real unix
 * socket, with a fake machine (fake_machine.c) instead of KVM.  The server
 * runs in this thread's main context, which the client helpers iterate
 * while they wait (qmp_test_client.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib/gstdio.h>

#include "qapi/qmp-internal.h"
#include "qapi/qmp.h"

#include "fake_machine.h"
#include "qmp_test_client.h"

struct fx {
	char *dir;
	char *path;
	struct machine *m;
	struct qmp_server *s;
};

static struct fx *fx_new(const char *incoming)
{
	struct fx *f = g_new0(struct fx, 1);
	char err[256] = "";

	f->dir = g_dir_make_tmp("kmig-qmp-XXXXXX", NULL);
	assert_non_null(f->dir);
	f->path = g_build_filename(f->dir, "qmp.sock", NULL);
	f->m = fake_machine_new(incoming);
	assert_int_equal(machine_start(f->m, err, sizeof(err)), 0);
	if (qmp_server_start(f->m, f->path, &f->s, err, sizeof(err)) != 0)
		fail_msg("qmp_server_start: %s", err);
	return f;
}

static int setup(void **state)
{
	*state = fx_new(NULL);
	return 0;
}

static int setup_defer(void **state)
{
	*state = fx_new("defer");
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	qmp_server_stop(f->s);
	machine_destroy(f->m);
	/* the stopped server left nothing behind in the context */
	assert_false(g_main_context_pending(NULL));
	g_remove(f->path);
	g_rmdir(f->dir);
	g_free(f->path);
	g_free(f->dir);
	g_free(f);
	return 0;
}

/* -------------------------------------------------------------- helpers */

static void assert_members(JsonObject *o, const char *const *names)
{
	guint n = 0;

	for (; *names; names++, n++)
		if (!json_object_has_member(o, *names))
			fail_msg("member '%s' missing", *names);
	if (json_object_get_size(o) != n) {
		JsonNode *node = json_node_new(JSON_NODE_OBJECT);
		char *s;

		json_node_set_object(node, o);
		s = tc_to_string(node);
		fail_msg("expected %u members, got %s", n, s);
	}
}

static JsonNode *cmd(struct tclient *c, const char *text)
{
	return tc_cmd(c, text);
}

static void cmd_ok(struct tclient *c, const char *text)
{
	JsonNode *r = tc_cmd(c, text);

	tc_return_object(r);
	json_node_unref(r);
}

static void cmd_err(struct tclient *c, const char *text, const char *cls, const char *desc)
{
	JsonNode *r = tc_cmd(c, text);

	tc_assert_error(r, cls, desc);
	json_node_unref(r);
}

static JsonNode *read_event(struct tclient *c, const char *name)
{
	JsonNode *n = tc_read(c, TC_TIMEOUT_MS);
	JsonObject *o, *ts;
	gint64 now = g_get_real_time() / G_USEC_PER_SEC;

	assert_non_null(n);
	o = json_node_get_object(n);
	if (!json_object_has_member(o, "event")) {
		char *s = tc_to_string(n);

		fail_msg("expected event %s, got %s", name, s);
	}
	assert_string_equal(json_object_get_string_member(o, "event"), name);
	ts = json_object_get_object_member(o, "timestamp");
	assert_non_null(ts);
	assert_int_equal(json_object_get_size(ts), 2);
	assert_true(json_object_get_int_member(ts, "seconds") >= now - 5);
	assert_true(json_object_get_int_member(ts, "seconds") <= now + 1);
	assert_true(json_object_get_int_member(ts, "microseconds") >= 0);
	assert_true(json_object_get_int_member(ts, "microseconds") <= 999999);
	return n;
}

static void assert_no_message(struct tclient *c, int ms)
{
	char *line = tc_read_line(c, ms);

	if (line)
		fail_msg("unexpected message: %s", line);
}

static JsonObject *ret_obj(JsonNode *r)
{
	JsonObject *o = tc_return_object(r);

	assert_non_null(o);
	return o;
}

/* ------------------------------------------------------------- greeting */

static void test_greeting(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect(f->path);
	JsonNode *n = tc_read(c, TC_TIMEOUT_MS);
	JsonObject *o, *qmp, *ver, *qemu;
	static const char *const top[] = { "QMP", NULL };
	static const char *const qmp_m[] = { "version", "capabilities", NULL };
	static const char *const ver_m[] = { "qemu", "package", NULL };
	static const char *const qemu_m[] = { "micro", "minor", "major", NULL };

	assert_non_null(n);
	o = json_node_get_object(n);
	assert_members(o, top);
	qmp = json_object_get_object_member(o, "QMP");
	assert_members(qmp, qmp_m);
	assert_int_equal(json_array_get_length(json_object_get_array_member(qmp, "capabilities")), 0);
	ver = json_object_get_object_member(qmp, "version");
	assert_members(ver, ver_m);
	assert_string_equal(json_object_get_string_member(ver, "package"), "kmig-" KMIG_VERSION);
	qemu = json_object_get_object_member(ver, "qemu");
	assert_members(qemu, qemu_m);
	assert_int_equal(json_object_get_int_member(qemu, "major"), 7);
	assert_int_equal(json_object_get_int_member(qemu, "minor"), 2);
	assert_int_equal(json_object_get_int_member(qemu, "micro"), 0);
	json_node_unref(n);
	/* nothing else until asked */
	assert_no_message(c, 50);
	tc_close(c);
}

/* ---------------------------------------------------------- negotiation */

static void test_negotiation(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect(f->path), *c2;
	JsonNode *n = tc_read(c, TC_TIMEOUT_MS);
	const char *expecting = "Expecting capabilities negotiation with 'qmp_capabilities'";

	json_node_unref(n);
	cmd_err(c, "{\"execute\": \"query-status\"}", "CommandNotFound", expecting);
	cmd_err(c, "{\"execute\": \"no-such-command\"}", "CommandNotFound", expecting);
	cmd_err(c, "{\"execute\": \"stop\"}", "CommandNotFound", expecting);
	assert_int_equal(fake_machine_calls(f->m, "machine_stop"), 0);
	/* request-level errors are still GenericError */
	cmd_err(c, "{\"arguments\": {}}", "GenericError", "QMP input lacks member 'execute'");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}", "GenericError",
		"Capability 'oob' not available");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"foo\"]}}", "GenericError",
		"Parameter 'enable[0]' does not accept value 'foo'");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}}", "GenericError",
		"Parameter 'enable[0]' expects string");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": \"oob\"}}", "GenericError",
		"Parameter 'enable' expects array");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1}}", "GenericError",
		"Parameter 'x' is unexpected");
	/* still negotiating after all those */
	cmd_err(c, "{\"execute\": \"query-status\"}", "CommandNotFound", expecting);

	cmd_ok(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": []}}");
	cmd_err(c, "{\"execute\": \"qmp_capabilities\"}", "CommandNotFound",
		"Capabilities negotiation is already complete, command ignored");
	cmd_ok(c, "{\"execute\": \"query-status\"}");
	cmd_err(c, "{\"execute\": \"no-such-command\"}", "CommandNotFound",
		"The command no-such-command has not been found");

	/* negotiation is per connection */
	c2 = tc_connect(f->path);
	n = tc_read(c2, TC_TIMEOUT_MS);
	json_node_unref(n);
	cmd_err(c2, "{\"execute\": \"query-status\"}", "CommandNotFound", expecting);
	cmd_ok(c2, "{\"execute\": \"qmp_capabilities\"}");
	cmd_ok(c2, "{\"execute\": \"query-status\"}");
	tc_close(c2);
	tc_close(c);
}

/* ------------------------------------------------------------------ ids */

/* send cmd_head + id_json + "}" */
static void check_id(struct tclient *c, const char *cmd_head, const char *id_json, bool want_return)
{
	char *text = g_strconcat(cmd_head, id_json, "}", NULL);
	JsonNode *r = tc_cmd(c, text);
	JsonParser *p = json_parser_new();
	JsonObject *o = json_node_get_object(r);

	assert_true(json_parser_load_from_data(p, id_json, -1, NULL));
	assert_true(json_object_has_member(o, "id"));
	if (!json_node_equal(json_object_get_member(o, "id"), json_parser_get_root(p)))
		fail_msg("id %s not echoed: %s", id_json, tc_to_string(r));
	assert_int_equal(json_object_has_member(o, "return"), want_return);
	assert_int_equal(json_object_has_member(o, "error"), !want_return);
	g_object_unref(p);
	json_node_unref(r);
	g_free(text);
}

static void test_id_echo(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *ok = "{\"execute\": \"query-status\", \"id\": ";
	const char *bad = "{\"execute\": \"nope\", \"id\": ";
	const char *noexec = "{\"id\": ";
	JsonNode *r;

	check_id(c, ok, "42", true);
	check_id(c, ok, "-7", true);
	check_id(c, ok, "1.5", true);
	check_id(c, ok, "\"abc\"", true);
	check_id(c, ok, "\"\"", true);
	check_id(c, ok, "{\"a\": [1, \"x\", {\"b\": null}], \"c\": true}", true);
	check_id(c, ok, "[1, 2, 3]", true);
	check_id(c, ok, "null", true);
	check_id(c, ok, "false", true);
	/* errors carry the id too, once it could be read */
	check_id(c, bad, "42", false);
	check_id(c, bad, "{\"k\": \"v\"}", false);
	check_id(c, noexec, "\"x\"", false);
	/* the id before execute */
	r = cmd(c, "{\"id\": 9, \"execute\": \"query-status\"}");
	assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), 9);
	json_node_unref(r);
	/* no id on a parse error */
	r = cmd(c, "{\"execute\": \"query-status\", \"id\": 5,}");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, ");
	assert_false(json_object_has_member(json_node_get_object(r), "id"));
	json_node_unref(r);
	/* json-glib takes these; QMP must not: a repeated key (json-glib keeps
	 * the last) and \u0000 (a C string ends there) */
	r = cmd(c, "{\"execute\": \"query-status\", \"execute\": \"quit\"}");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, duplicate key");
	json_node_unref(r);
	r = cmd(c, "{\"execute\": \"query-status\", \"arguments\": {\"a\": 1, \"b\": {\"a\": 2, \"a\": 3}}}");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, duplicate key");
	json_node_unref(r);
	r = cmd(c, "{\"execute\": \"query-\\u0000status\"}");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, \\u0000 is not supported");
	json_node_unref(r);
	/* the same words inside strings are only text */
	r = cmd(c, "{\"execute\": \"query-status\", \"id\": \"a:b:\\\\u0000\"}");
	assert_true(json_object_has_member(json_node_get_object(r), "return"));
	json_node_unref(r);
	/* an id that is not valid JSON on output becomes null */
	r = cmd(c, "{\"execute\": \"query-status\", \"id\": 1e400}");
	assert_true(JSON_NODE_HOLDS_NULL(json_object_get_member(json_node_get_object(r), "id")));
	json_node_unref(r);
	tc_close(c);
}

/* -------------------------------------------------------- request errors */

static void test_request_errors(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *ge = "GenericError";

	/* a number ends at a delimiter, as with QEMU */
	cmd_err(c, "42\n", ge, "QMP input must be a JSON object");
	cmd_err(c, "[{\"execute\": \"query-status\"}]", ge, "QMP input must be a JSON object");
	cmd_err(c, "\"query-status\"", ge, "QMP input must be a JSON object");
	cmd_err(c, "null\n", ge, "QMP input must be a JSON object");
	cmd_err(c, "{}", ge, "QMP input lacks member 'execute'");
	cmd_err(c, "{\"execute\": 1}", ge, "QMP input member 'execute' must be a string");
	cmd_err(c, "{\"execute\": null}", ge, "QMP input member 'execute' must be a string");
	cmd_err(c, "{\"execute\": \"query-status\", \"arguments\": []}", ge,
		"QMP input member 'arguments' must be an object");
	cmd_err(c, "{\"execute\": \"query-status\", \"foo\": 1}", ge, "QMP input member 'foo' is unexpected");
	cmd_err(c, "{\"exec-oob\": \"query-status\"}", ge, "QMP input member 'exec-oob' is unexpected");
	cmd_err(c, "{\"execute\": \"foo\"}", "CommandNotFound", "The command foo has not been found");
	cmd_err(c, "{\"execute\": \"caf\\u00e9\"}", "CommandNotFound",
		"The command caf\xc3\xa9 has not been found");

	/* arguments, checked generically before the command runs */
	cmd_err(c, "{\"execute\": \"query-status\", \"arguments\": {\"x\": 1}}", ge, "Parameter 'x' is unexpected");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": 42}}", ge, "Parameter 'uri' expects string");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": null}}", ge,
		"Parameter 'uri' expects string");
	cmd_err(c, "{\"execute\": \"migrate\"}", ge, "Parameter 'uri' is missing");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {}}", ge, "Parameter 'uri' is missing");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\", \"blk\": \"yes\"}}", ge,
		"Parameter 'blk' expects boolean");
	/* like QEMU: missing before unexpected */
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"bogus\": 1}}", ge, "Parameter 'uri' is missing");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\", \"bogus\": 1}}", ge,
		"Parameter 'bogus' is unexpected");
	cmd_err(c, "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": true}}", ge,
		"Parameter 'uri' expects string");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": \"x\"}}", ge,
		"Parameter 'downtime-limit' expects uint64");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 1.5}}", ge,
		"Parameter 'max-bandwidth' expects uint64");
	cmd_err(c, "{\"execute\": \"migrate-set-capabilities\"}", ge, "Parameter 'capabilities' is missing");
	cmd_err(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": {}}}", ge,
		"Parameter 'capabilities' expects array");
	cmd_err(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": [1]}}", ge,
		"Parameter 'capabilities[0]' expects object");
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": false}, {\"capability\": \"events\"}]}}",
		ge, "Parameter 'capabilities[1].state' is missing");
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": 1}]}}",
		ge, "Parameter 'capabilities[0].state' expects boolean");
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": true, \"x\": 1}]}}",
		ge, "Parameter 'capabilities[0].x' is unexpected");
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"bogus\", \"state\": false}]}}",
		ge, "Parameter 'capability' does not accept value 'bogus'");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 4096}}", ge,
		"Parameter 'filename' is missing");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"size\": 1, \"filename\": \"/tmp/x\"}}", ge,
		"Parameter 'val' is missing");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": \"0\", \"size\": 1, \"filename\": \"f\"}}",
		ge, "Parameter 'val' expects integer");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 1.5, \"filename\": \"f\"}}",
		ge, "Parameter 'size' expects integer");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 1, \"filename\": 7}}", ge,
		"Parameter 'filename' expects string");
	cmd_err(c,
		"{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": 1, \"filename\": \"f\", "
		"\"cpu-index\": 0}}",
		ge, "Parameter 'cpu-index' is unexpected");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": -1, \"size\": 1, \"filename\": \"f\"}}",
		ge, "Parameter 'val' expects a non-negative integer");
	cmd_err(c, "{\"execute\": \"pmemsave\", \"arguments\": {\"val\": 0, \"size\": -4096, \"filename\": \"f\"}}",
		ge, "Parameter 'size' expects a non-negative integer");

	/* nothing reached the machine */
	assert_int_equal(fake_machine_calls(f->m, "machine_migrate"), 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_migrate_incoming"), 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_set_params"), 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_pmemsave"), 0);
	tc_close(c);
}

/* the machine's errors: every class a command can produce today */
static void test_error_classes(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);

	/* GenericError from the machine, with its text ... */
	fake_machine_fail_next(f->m, "machine_stop", -EPERM, "cannot stop now");
	cmd_err(c, "{\"execute\": \"stop\"}", "GenericError", "cannot stop now");
	fake_machine_fail_next(f->m, "machine_cont", -EPERM, "cannot cont now");
	cmd_err(c, "{\"execute\": \"cont\"}", "GenericError", "cannot cont now");
	/* ... or strerror when it gave none */
	fake_machine_fail_next(f->m, "machine_migrate_cancel", -EIO, "");
	cmd_err(c, "{\"execute\": \"migrate_cancel\"}", "GenericError", g_strerror(EIO));
	/* CommandNotFound */
	cmd_err(c, "{\"execute\": \"query-kvm\"}", "CommandNotFound", "The command query-kvm has not been found");
	/* the class names QEMU defines, all five */
	assert_string_equal(qmp_error_class_name(QMP_ERROR_GENERIC), "GenericError");
	assert_string_equal(qmp_error_class_name(QMP_ERROR_COMMAND_NOT_FOUND), "CommandNotFound");
	assert_string_equal(qmp_error_class_name(QMP_ERROR_DEVICE_NOT_ACTIVE), "DeviceNotActive");
	assert_string_equal(qmp_error_class_name(QMP_ERROR_DEVICE_NOT_FOUND), "DeviceNotFound");
	assert_string_equal(qmp_error_class_name(QMP_ERROR_KVM_MISSING_CAP), "KVMMissingCap");
	tc_close(c);
}

/* ------------------------------------------------------- stream handling */

static void test_malformed_then_valid(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	JsonNode *r;

	tc_send(c, "{\"execute\": }\n{\"execute\": \"query-status\", \"id\": 1}\n");
	r = tc_read_reply(c);
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, ");
	assert_false(json_object_has_member(json_node_get_object(r), "id"));
	json_node_unref(r);
	r = tc_read_reply(c);
	ret_obj(r);
	assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), 1);
	json_node_unref(r);

	/* trailing comma, bare word, stray closer */
	r = cmd(c, "{\"execute\": \"query-status\",}");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, ");
	json_node_unref(r);
	r = cmd(c, "nonsense ");
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, ");
	json_node_unref(r);
	cmd_err(c, "}", "GenericError", "JSON parse error, stray '}'");
	cmd_ok(c, "{\"execute\": \"query-status\"}");

	/* an unfinished value, then a control character resets the parser */
	tc_send(c, "{\"execute\": \"query-st");
	assert_no_message(c, 20);
	cmd_err(c, "\x01", "GenericError", "JSON parse error, invalid byte 0x01");
	cmd_ok(c, "{\"execute\": \"query-status\"}");
	/* so does 0xff, even inside a string */
	tc_send(c, "{\"execute\": \"qu");
	cmd_err(c, "\xff", "GenericError", "JSON parse error, invalid byte 0xff");
	cmd_ok(c, "{\"execute\": \"query-status\"}");

	/* QEMU's single-quoted strings, with \' */
	r = cmd(c, "{'execute': 'query-status', 'id': 'it\\'s \"quoted\"'}");
	ret_obj(r);
	assert_string_equal(json_object_get_string_member(json_node_get_object(r), "id"), "it's \"quoted\"");
	json_node_unref(r);

	/* several values in one write, no separators, and blank lines */
	tc_send(c, "\r\n\n  {\"execute\":\"query-status\",\"id\":1}{\"execute\":\"query-version\",\"id\":2}\n");
	r = tc_read_reply(c);
	assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), 1);
	assert_true(json_object_has_member(ret_obj(r), "status"));
	json_node_unref(r);
	r = tc_read_reply(c);
	assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), 2);
	assert_true(json_object_has_member(ret_obj(r), "qemu"));
	json_node_unref(r);

	/* one value in one-byte writes */
	{
		const char *text = "{\"execute\": \"query-status\", \"id\": \"slow\"}";
		size_t i;

		for (i = 0; text[i]; i++)
			tc_send_raw(c, text + i, 1);
		r = tc_read_reply(c);
		assert_string_equal(json_object_get_string_member(json_node_get_object(r), "id"), "slow");
		json_node_unref(r);
	}
	tc_close(c);
}

static void test_oversized(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	size_t big = 2u << 20;
	GString *msg = g_string_sized_new(big + 64);
	JsonNode *r;
	size_t i;

	g_string_append(msg, "{\"execute\": \"query-status\", \"id\": \"");
	for (i = 0; i < big; i++)
		g_string_append_c(msg, 'A');
	g_string_append(msg, "\"}\n{\"execute\": \"query-status\", \"id\": 2}\n");
	tc_send_raw(c, msg->str, msg->len);
	r = tc_read_reply(c);
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, message too large");
	assert_false(json_object_has_member(json_node_get_object(r), "id"));
	json_node_unref(r);
	r = tc_read_reply(c);
	assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), 2);
	json_node_unref(r);

	/* just under the limit is fine */
	g_string_truncate(msg, 0);
	g_string_append(msg, "{\"execute\": \"query-status\", \"id\": \"");
	while (msg->len < QMP_MAX_MESSAGE - 2)
		g_string_append_c(msg, 'B');
	g_string_append(msg, "\"}");
	assert_int_equal(msg->len, QMP_MAX_MESSAGE);
	r = cmd(c, msg->str);
	ret_obj(r);
	assert_int_equal(strlen(json_object_get_string_member(json_node_get_object(r), "id")),
			 QMP_MAX_MESSAGE - 2 - strlen("{\"execute\": \"query-status\", \"id\": \""));
	json_node_unref(r);

	/* nesting far too deep: one error, then business as usual */
	g_string_truncate(msg, 0);
	for (i = 0; i < 5000; i++)
		g_string_append_c(msg, '[');
	for (i = 0; i < 5000; i++)
		g_string_append_c(msg, ']');
	r = cmd(c, msg->str);
	tc_assert_error_prefix(r, "GenericError", "JSON parse error, nesting too deep");
	json_node_unref(r);
	cmd_ok(c, "{\"execute\": \"query-status\"}");
	assert_no_message(c, 20);
	g_string_free(msg, TRUE);
	tc_close(c);
}

/* ----------------------------------------------------------- many clients */

#define N_CLIENTS 20

static void test_many_clients(void **state)
{
	struct fx *f = *state;
	struct tclient *c[N_CLIENTS], *lurker;
	JsonNode *r;
	int i;

	for (i = 0; i < N_CLIENTS; i++)
		c[i] = tc_connect(f->path);
	lurker = tc_connect(f->path);
	/* greetings for everyone */
	for (i = 0; i < N_CLIENTS; i++) {
		r = tc_read(c[i], TC_TIMEOUT_MS);
		assert_non_null(r);
		assert_true(json_object_has_member(json_node_get_object(r), "QMP"));
		json_node_unref(r);
	}
	r = tc_read(lurker, TC_TIMEOUT_MS);
	json_node_unref(r);

	/* all ask at once, then all read */
	for (i = 0; i < N_CLIENTS; i++)
		tc_send(c[i], "{\"execute\": \"qmp_capabilities\"}");
	for (i = 0; i < N_CLIENTS; i++) {
		r = tc_read_reply(c[i]);
		ret_obj(r);
		json_node_unref(r);
	}
	for (i = 0; i < N_CLIENTS; i++) {
		char *t = g_strdup_printf("{\"execute\": \"query-status\", \"id\": %d}", i);

		tc_send(c[i], t);
		g_free(t);
	}
	for (i = 0; i < N_CLIENTS; i++) {
		r = tc_read_reply(c[i]);
		assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), i);
		json_node_unref(r);
	}

	/* an event from another thread reaches every negotiated client */
	fake_machine_emit(f->m, MACHINE_EVENT_STOP, 0, true);
	fake_machine_join_threads(f->m);
	for (i = 0; i < N_CLIENTS; i++) {
		r = read_event(c[i], "STOP");
		json_node_unref(r);
	}
	/* but not one still negotiating */
	assert_no_message(lurker, 50);

	for (i = 0; i < N_CLIENTS; i++)
		tc_close(c[i]);
	tc_close(lurker);
	/* the server lives on */
	c[0] = tc_connect_negotiated(f->path);
	cmd_ok(c[0], "{\"execute\": \"query-status\"}");
	tc_close(c[0]);
}

/* ----------------------------------------------------------- resources */

#define MANY_CLIENTS 200

/* 200 clients at once, each negotiating and asking. */
static void test_200_clients(void **state)
{
	struct fx *f = *state;
	struct tclient **c = g_new0(struct tclient *, MANY_CLIENTS);

	for (int i = 0; i < MANY_CLIENTS; i++)
		c[i] = tc_connect_negotiated(f->path);
	for (int i = 0; i < MANY_CLIENTS; i++) {
		char *t = g_strdup_printf("{\"execute\": \"query-status\", \"id\": %d}", i);

		tc_send(c[i], t);
		g_free(t);
	}
	for (int i = 0; i < MANY_CLIENTS; i++) {
		JsonNode *r = tc_read_reply(c[i]);

		assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), i);
		json_node_unref(r);
	}
	for (int i = 0; i < MANY_CLIENTS; i++)
		tc_close(c[i]);
	g_free(c);
}

/* Out of file descriptors with clients waiting: the server turns them
 * away (they see the connection closed) instead of spinning on its
 * listening socket, and serves again once descriptors are back. */
static void test_out_of_descriptors(void **state)
{
	struct fx *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct rlimit old, tight;
	int fds[5];

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	for (int i = 0; i < 5; i++)
		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int top = fds[0];

	for (int i = 1; i < 5; i++)
		top = fds[i] > top ? fds[i] : top;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	tight = old;
	tight.rlim_cur = (rlim_t)top + 1;	/* no descriptor above the last in use */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* one iteration at a time: a server that spins would never let a
	 * "run until idle" loop end */
	gint64 end = g_get_monotonic_time() + 400 * 1000;
	int dispatches = 0;

	while (g_get_monotonic_time() < end) {
		if (g_main_context_iteration(NULL, FALSE))
			dispatches++;
		else
			g_usleep(1000);
	}
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	if (dispatches > 50)
		fail_msg("the server spun on its listening socket while out of descriptors: %d dispatches in 0.4 s",
			 dispatches);
	for (int i = 0; i < 5; i++) {
		char b;
		struct timeval tv = { 2, 0 };

		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		assert_int_equal(recv(fds[i], &b, 1, 0), 0);	/* turned away: closed */
		close(fds[i]);
	}
	struct tclient *c = tc_connect_negotiated(f->path);

	cmd_ok(c, "{\"execute\": \"query-status\"}");
	tc_close(c);
}

/* A client that never reads while events pile up is cut off once it owes
 * QMP_MAX_PENDING_OUTPUT, so the server's memory stays bounded; a client
 * that reads gets every event. */
static void test_lazy_reader(void **state)
{
	struct fx *f = *state;
	struct tclient *lazy = tc_connect_negotiated(f->path), *busy = tc_connect_negotiated(f->path);
	const int n = 250000;	/* ~20 MiB of STOP events */
	int got = 0, sndbuf = 4096;
	char buf[65536];

	setsockopt(lazy->fd, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	for (int i = 0; i < n; i++) {
		fake_machine_emit(f->m, MACHINE_EVENT_STOP, 0, false);
		if (i % 500 != 499 && i != n - 1)
			continue;
		while (g_main_context_iteration(NULL, FALSE))
			;
		for (ssize_t r; (r = recv(busy->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0;)
			for (ssize_t k = 0; k < r; k++)
				got += buf[k] == '\n';
	}
	for (int spin = 0; got < n && spin < 2000; spin++) {
		while (g_main_context_iteration(NULL, FALSE))
			;
		ssize_t r = recv(busy->fd, buf, sizeof(buf), MSG_DONTWAIT);

		for (ssize_t k = 0; k < r; k++)
			got += buf[k] == '\n';
		if (r <= 0)
			g_usleep(1000);
	}
	assert_int_equal(got, n);
	/* the lazy one was cut off: reading it all ends in EOF */
	struct timeval tv = { 5, 0 };
	ssize_t r;

	setsockopt(lazy->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while ((r = recv(lazy->fd, buf, sizeof(buf), 0)) > 0)
		;
	assert_int_equal(r, 0);
	cmd_ok(busy, "{\"execute\": \"query-status\"}");
	tc_close(lazy);
	tc_close(busy);
}

/* ---------------------------------------------------------- disconnects */

static void test_disconnect_mid_command(void **state)
{
	struct fx *f = *state;
	struct tclient *c;
	GString *many;
	int i;

	/* command sent, connection gone before the answer */
	c = tc_connect_negotiated(f->path);
	tc_send(c, "{\"execute\": \"query-commands\"}");
	tc_close(c);
	tc_spin(20);

	/* no time even for the server to read it */
	c = tc_connect(f->path);
	{
		const char *t = "{\"execute\": \"qmp_capabilities\"}{\"execute\": \"stop\"}";

		assert_int_equal(send(c->fd, t, strlen(t), MSG_NOSIGNAL), (ssize_t)strlen(t));
	}
	tc_close(c);
	tc_spin(20);
	/* whether the server got to read it before it saw the peer gone
	 * (writing the greeting) does not matter: no harm either way */
	assert_true(fake_machine_calls(f->m, "machine_stop") <= 1);

	/* half a command */
	c = tc_connect_negotiated(f->path);
	tc_send(c, "{\"execute\": \"query-sta");
	tc_close(c);
	tc_spin(20);

	/* lots of answers to a peer that is gone (EPIPE, not SIGPIPE) */
	c = tc_connect_negotiated(f->path);
	many = g_string_new(NULL);
	for (i = 0; i < 2000; i++)
		g_string_append(many, "{\"execute\": \"query-migrate-capabilities\"}");
	tc_send_raw(c, many->str, many->len);
	tc_close(c);
	g_string_free(many, TRUE);
	tc_spin(50);

	/* an event for clients that are gone */
	fake_machine_emit(f->m, MACHINE_EVENT_RESUME, 0, true);
	fake_machine_join_threads(f->m);
	tc_spin(20);

	c = tc_connect_negotiated(f->path);
	cmd_ok(c, "{\"execute\": \"query-status\"}");
	tc_close(c);
}

/* A client that pipelines far more answers than it reads: the server stops
 * reading it (back-pressure) instead of buffering without end or dropping
 * it; every answer arrives, in order. */
static void test_pipelining(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const int n = 25000; /* ~24 MiB of answers: more than QMP_MAX_PENDING_OUTPUT */
	GString *req = g_string_new(NULL);
	size_t off = 0;
	int i, stuck = 0;

	for (i = 0; i < n; i++)
		g_string_append_printf(req, "{\"execute\":\"query-migrate-capabilities\",\"id\":%d}", i);
	while (off < req->len) {
		ssize_t w = send(c->fd, req->str + off, req->len - off, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0) {
			off += (size_t)w;
			stuck = 0;
			continue;
		}
		assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
		while (g_main_context_iteration(NULL, FALSE))
			;
		/* read only once the server has stopped reading us */
		if (++stuck > 20) {
			char buf[65536];
			ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (r > 0)
				g_string_append_len(c->in, buf, r);
		}
	}
	g_string_free(req, TRUE);
	for (i = 0; i < n; i++) {
		JsonNode *r = tc_read_reply(c);

		assert_int_equal(json_object_get_int_member(json_node_get_object(r), "id"), i);
		json_node_unref(r);
	}
	assert_no_message(c, 20);
	tc_close(c);
}

/* -------------------------------------------------------- query-migrate */

static void fill_stats(struct migration_info *mi)
{
	mi->has_times = true;
	mi->total_time_ms = 1234;
	mi->setup_time_ms = 12;
	mi->has_expected_downtime = true;
	mi->expected_downtime_ms = 77;
	mi->downtime_ms = 55;
	mi->has_ram = true;
	mi->ram.transferred = 1000000;
	mi->ram.remaining = 4096;
	mi->ram.total = 67108864;
	mi->ram.duplicate = 100;
	mi->ram.normal = 200;
	mi->ram.normal_bytes = 819200;
	mi->ram.dirty_sync_count = 3;
	mi->ram.page_size = 4096;
	mi->ram.pages_per_second = 5000;
	mi->ram.dirty_pages_rate = 42;
	mi->ram.precopy_bytes = 900000;
	mi->ram.downtime_bytes = 100000;
	mi->ram.mbps = 268.5;
	mi->kmig.dirty_mode = "dirty-ring";
	mi->kmig.dirty_ring_overflows = 1;
	mi->kmig.dirty_ring_full_exits = 2;
	mi->kmig.dirty_ring_resyncs = 3;
	mi->kmig.pages_harvested = 4;
	mi->kmig.passes = 5;
	mi->kmig.shrink_passes = 2;
}

static JsonNode *query_migrate(struct tclient *c, struct fx *f, const struct migration_info *mi)
{
	fake_machine_set_migration(f->m, mi);
	return cmd(c, "{\"execute\": \"query-migrate\"}");
}

static const char *const ram_members[] = {
	"transferred", "remaining", "total", "duplicate", "normal", "normal-bytes",
	"dirty-pages-rate", "mbps", "dirty-sync-count", "postcopy-requests", "page-size", "multifd-bytes",
	"pages-per-second", "precopy-bytes", "downtime-bytes", "postcopy-bytes", "dirty-sync-missed-zero-copy",
	NULL,
};
static const char *const kmig_members[] = {
	"dirty-mode", "ring-overflows", "ring-full-exits", "ring-resyncs", "pages-harvested", "passes",
	"shrink-passes", "channels", "zero-copy-notifications", "zero-copy-copied", "ring-lost-pages", NULL,
};

static void check_kmig(JsonObject *o)
{
	JsonObject *k = json_object_get_object_member(o, "x-kmig");

	assert_members(k, kmig_members);
	assert_string_equal(json_object_get_string_member(k, "dirty-mode"), "dirty-ring");
	assert_int_equal(json_object_get_int_member(k, "ring-overflows"), 1);
	assert_int_equal(json_object_get_int_member(k, "ring-full-exits"), 2);
	assert_int_equal(json_object_get_int_member(k, "ring-resyncs"), 3);
	assert_int_equal(json_object_get_int_member(k, "pages-harvested"), 4);
	assert_int_equal(json_object_get_int_member(k, "passes"), 5);
	assert_int_equal(json_object_get_int_member(k, "shrink-passes"), 2);
}

static void check_ram(JsonObject *o, bool completed)
{
	JsonObject *ram = json_object_get_object_member(o, "ram");
	JsonNode *mbps;

	assert_members(ram, ram_members);
	assert_int_equal(json_object_get_int_member(ram, "transferred"), 1000000);
	assert_int_equal(json_object_get_int_member(ram, "remaining"), completed ? 0 : 4096);
	assert_int_equal(json_object_get_int_member(ram, "total"), 67108864);
	assert_int_equal(json_object_get_int_member(ram, "duplicate"), 100);
	assert_false(json_object_has_member(ram, "skipped"));	/* not in the reference schema */
	assert_int_equal(json_object_get_int_member(ram, "normal"), 200);
	assert_int_equal(json_object_get_int_member(ram, "normal-bytes"), 819200);
	assert_int_equal(json_object_get_int_member(ram, "dirty-pages-rate"), completed ? 0 : 42);
	assert_int_equal(json_object_get_int_member(ram, "dirty-sync-count"), 3);
	assert_int_equal(json_object_get_int_member(ram, "postcopy-requests"), 0);
	assert_int_equal(json_object_get_int_member(ram, "page-size"), 4096);
	assert_int_equal(json_object_get_int_member(ram, "multifd-bytes"), 0);
	assert_int_equal(json_object_get_int_member(ram, "pages-per-second"), 5000);
	assert_int_equal(json_object_get_int_member(ram, "precopy-bytes"), 900000);
	assert_int_equal(json_object_get_int_member(ram, "downtime-bytes"), 100000);
	assert_int_equal(json_object_get_int_member(ram, "postcopy-bytes"), 0);
	assert_int_equal(json_object_get_int_member(ram, "dirty-sync-missed-zero-copy"), 0);
	/* mbps is a JSON number with a fraction */
	mbps = json_object_get_member(ram, "mbps");
	assert_int_equal(json_node_get_value_type(mbps), G_TYPE_DOUBLE);
	assert_true(json_node_get_double(mbps) == 268.5);
}

static void test_query_migrate_shapes(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	struct migration_info mi;
	JsonNode *r;
	JsonObject *o;
	static const char *const active_m[] = { "status", "setup-time", "total-time", "expected-downtime", "ram",
						"x-kmig", NULL };
	static const char *const completed_m[] = { "status", "setup-time", "total-time", "downtime", "ram",
						   "x-kmig", NULL };
	static const char *const failed_m[] = { "status", "error-desc", "x-kmig", NULL };
	static const char *const status_m[] = { "status", "x-kmig", NULL };

	/* none: an empty object, like QEMU before the first migration */
	memset(&mi, 0, sizeof(mi));
	fill_stats(&mi);
	mi.status = MIGRATION_STATUS_NONE;
	r = query_migrate(c, f, &mi);
	assert_int_equal(json_object_get_size(ret_obj(r)), 0);
	json_node_unref(r);

	mi.status = MIGRATION_STATUS_SETUP;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, status_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "setup");
	json_node_unref(r);

	mi.status = MIGRATION_STATUS_ACTIVE;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, active_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "active");
	assert_int_equal(json_object_get_int_member(o, "setup-time"), 12);
	assert_int_equal(json_object_get_int_member(o, "total-time"), 1234);
	assert_int_equal(json_object_get_int_member(o, "expected-downtime"), 77);
	check_ram(o, false);
	check_kmig(o);
	json_node_unref(r);

	/* the shape follows the status, whatever the has_* flags say */
	mi.status = MIGRATION_STATUS_DEVICE;
	mi.has_ram = false;
	mi.has_times = false;
	r = query_migrate(c, f, &mi);
	assert_members(ret_obj(r), active_m);
	json_node_unref(r);
	mi.status = MIGRATION_STATUS_CANCELLING;
	r = query_migrate(c, f, &mi);
	assert_members(ret_obj(r), active_m);
	json_node_unref(r);

	mi.status = MIGRATION_STATUS_COMPLETED;
	mi.has_downtime = true;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, completed_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "completed");
	assert_int_equal(json_object_get_int_member(o, "downtime"), 55);
	check_ram(o, true);
	check_kmig(o);
	json_node_unref(r);

	mi.status = MIGRATION_STATUS_FAILED;
	mi.has_error = true;
	snprintf(mi.error_desc, sizeof(mi.error_desc), "connection to tcp:10.0.0.2:4444 refused");
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, failed_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "failed");
	assert_string_equal(json_object_get_string_member(o, "error-desc"),
			    "connection to tcp:10.0.0.2:4444 refused");
	check_kmig(o);
	json_node_unref(r);

	mi.status = MIGRATION_STATUS_CANCELLED;
	mi.has_error = false;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, status_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "cancelled");
	json_node_unref(r);

	/* destination side: status only, as QEMU */
	mi.status = MIGRATION_STATUS_ACTIVE;
	mi.is_incoming = true;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, status_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "active");
	json_node_unref(r);
	tc_close(c);
}

/* ---------------------------------------------------------------- events */

static void test_events(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	struct tclient *neg = tc_connect(f->path); /* never negotiates */
	JsonNode *r, *e;
	JsonObject *d;

	json_node_unref(tc_read(neg, TC_TIMEOUT_MS));

	/* stop: the answer, then the STOP the machine reported meanwhile
	 * (synchronously, from this very thread) */
	tc_send(c, "{\"execute\": \"stop\", \"id\": \"s\"}");
	r = tc_read(c, TC_TIMEOUT_MS);
	assert_string_equal(json_object_get_string_member(json_node_get_object(r), "id"), "s");
	json_node_unref(r);
	e = read_event(c, "STOP");
	/* QEMU's STOP and RESUME have no data */
	assert_int_equal(json_object_get_size(json_node_get_object(e)), 2);
	json_node_unref(e);
	cmd_ok(c, "{\"execute\": \"cont\"}");
	e = read_event(c, "RESUME");
	assert_false(json_object_has_member(json_node_get_object(e), "data"));
	json_node_unref(e);

	/* MIGRATION and MIGRATION_PASS only with the events capability */
	fake_machine_emit(f->m, MACHINE_EVENT_MIGRATION, MIGRATION_STATUS_ACTIVE, true);
	fake_machine_emit(f->m, MACHINE_EVENT_MIGRATION_PASS, 2, true);
	fake_machine_join_threads(f->m);
	assert_no_message(c, 50);
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": true}]}}");
	fake_machine_emit(f->m, MACHINE_EVENT_MIGRATION, MIGRATION_STATUS_ACTIVE, true);
	fake_machine_join_threads(f->m);
	fake_machine_emit(f->m, MACHINE_EVENT_MIGRATION_PASS, 3, true);
	fake_machine_join_threads(f->m);
	e = read_event(c, "MIGRATION");
	d = json_object_get_object_member(json_node_get_object(e), "data");
	assert_int_equal(json_object_get_size(d), 1);
	assert_string_equal(json_object_get_string_member(d, "status"), "active");
	json_node_unref(e);
	e = read_event(c, "MIGRATION_PASS");
	d = json_object_get_object_member(json_node_get_object(e), "data");
	assert_int_equal(json_object_get_size(d), 1);
	assert_int_equal(json_object_get_int_member(d, "pass"), 3);
	json_node_unref(e);

	/* a migration started over QMP reports "setup" */
	cmd_ok(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:4444\"}}");
	e = read_event(c, "MIGRATION");
	d = json_object_get_object_member(json_node_get_object(e), "data");
	assert_string_equal(json_object_get_string_member(d, "status"), "setup");
	json_node_unref(e);
	{
		struct migration_info none;

		memset(&none, 0, sizeof(none));
		fake_machine_set_migration(f->m, &none);
	}

	/* the client still negotiating saw none of it */
	assert_no_message(neg, 20);

	/* events gated again once the capability is off */
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": false}]}}");
	fake_machine_emit(f->m, MACHINE_EVENT_MIGRATION_PASS, 4, true);
	fake_machine_join_threads(f->m);
	assert_no_message(c, 50);

	/* quit: {} first, then the machine is asked to quit and SHUTDOWN
	 * says who asked; just one, though the (fake) machine reports its
	 * end too */
	r = cmd(c, "{\"execute\": \"quit\", \"id\": 99}");
	assert_int_equal(json_object_get_size(ret_obj(r)), 0);
	json_node_unref(r);
	assert_true(fake_machine_quit_requested(f->m));
	fake_machine_join_threads(f->m);
	e = read_event(c, "SHUTDOWN");
	d = json_object_get_object_member(json_node_get_object(e), "data");
	assert_int_equal(json_object_get_size(d), 2);
	assert_false(json_object_get_boolean_member(d, "guest"));
	assert_string_equal(json_object_get_string_member(d, "reason"), "host-qmp-quit");
	json_node_unref(e);
	assert_no_message(c, 50);
	tc_close(neg);
	tc_close(c);
}

/* SHUTDOWN reasons for what the machine reports (exit code or -1) */
static void test_shutdown_reasons(void **state)
{
	static const struct {
		int64_t arg;
		enum machine_runstate rs;
		bool guest;
		const char *reason;
	} cases[] = {
		{ 0, RUNSTATE_SHUTDOWN, true, "guest-shutdown" },
		{ 3, RUNSTATE_SHUTDOWN, true, "guest-shutdown" },
		{ -1, RUNSTATE_INTERNAL_ERROR, false, "host-error" },
		{ -1, RUNSTATE_RUNNING, false, "host-signal" },
	};
	size_t i;

	for (i = 0; i < G_N_ELEMENTS(cases); i++) {
		struct fx *f = fx_new(NULL);
		struct tclient *c = tc_connect_negotiated(f->path);
		JsonNode *e;
		JsonObject *d;
		void *fs = f;

		fake_machine_set_runstate(f->m, cases[i].rs);
		fake_machine_emit(f->m, MACHINE_EVENT_SHUTDOWN, cases[i].arg, true);
		fake_machine_join_threads(f->m);
		e = read_event(c, "SHUTDOWN");
		d = json_object_get_object_member(json_node_get_object(e), "data");
		assert_int_equal(json_object_get_size(d), 2);
		assert_int_equal(json_object_get_boolean_member(d, "guest"), cases[i].guest);
		assert_string_equal(json_object_get_string_member(d, "reason"), cases[i].reason);
		json_node_unref(e);
		/* once only */
		fake_machine_emit(f->m, MACHINE_EVENT_SHUTDOWN, -1, true);
		fake_machine_join_threads(f->m);
		assert_no_message(c, 30);
		tc_close(c);
		teardown(&fs);
	}
}

/* ----------------------------------------------------- parameters, caps */

static void check_params(struct tclient *c, int64_t downtime, int64_t bw)
{
	JsonNode *r = cmd(c, "{\"execute\": \"query-migrate-parameters\"}");
	JsonObject *o = ret_obj(r);
	static const char *const m[] = { "downtime-limit", "max-bandwidth", "avail-switchover-bandwidth",
					 "multifd-channels", "x-vcpu-dirty-limit-period", "vcpu-dirty-limit",
					 "x-kmig-stall-iterations", "x-kmig-stall-ms", "x-kmig-io-timeout",
					 "x-kmig-send-mode", "tls-creds", "tls-hostname", "tls-authz", NULL };

	assert_members(o, m);
	assert_int_equal(json_object_get_int_member(o, "downtime-limit"), downtime);
	assert_int_equal(json_object_get_int_member(o, "max-bandwidth"), bw);
	json_node_unref(r);
}

/* Every row of the parameter table: set a value in range and read it back;
 * one above the range (and below, where there is one) is refused with the
 * table's text, the same text the machine gives, and changes nothing. */
static void test_param_table_round_trip(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);

	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];
		char req[256], want[256];
		uint64_t v = d->min + (d->max > d->min ? 1 : 0);

		if (d->capability)
			continue;
		if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM)
			snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
				 "{\"%s\": \"%s\"}}", d->name, migration_param_enum_name(d, v));
		else if (d->type == MIGRATION_PARAM_STRING)
			snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
				 "{\"%s\": \"x-%s\"}}", d->name, d->name);
		else
			snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
				 "{\"%s\": %" PRIu64 "}}", d->name, v);
		cmd_ok(c, req);
		JsonNode *q = cmd(c, "{\"execute\": \"query-migrate-parameters\"}");
		JsonNode *got = json_object_get_member(ret_obj(q), d->name);

		uint64_t back = 0;

		assert_non_null(got);
		if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM) {
			assert_string_equal(json_node_get_string(got), migration_param_enum_name(d, v));
		} else if (d->type == MIGRATION_PARAM_STRING) {
			snprintf(want, sizeof(want), "x-%s", d->name);
			assert_string_equal(json_node_get_string(got), want);
		} else {
			assert_true(qmp_json_get_uint64(got, &back));
			assert_int_equal(back, v);
		}
		json_node_unref(q);
		if (d->type == MIGRATION_PARAM_UINT64 && d->max < UINT64_MAX) {
			assert_int_equal(migration_param_check(d, d->max + 1, want, sizeof(want)), -EINVAL);
			snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
				 "{\"%s\": %" PRIu64 "}}", d->name, d->max + 1);
			cmd_err(c, req, "GenericError", want);
		}
		if (d->type == MIGRATION_PARAM_UINT64 && d->min > 0) {
			assert_int_equal(migration_param_check(d, d->min - 1, want, sizeof(want)), -EINVAL);
			snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
				 "{\"%s\": %" PRIu64 "}}", d->name, d->min - 1);
			cmd_err(c, req, "GenericError", want);
		}
		/* back to the default, for the next test */
		struct migration_params p;

		migration_params_default(&p);
		assert_int_equal(machine_set_params(f->m, &p, d->mask, want, sizeof(want)), 0);
	}
	/* QEMU's words, where QEMU has the parameter */
	static const struct { const char *name; uint64_t v; const char *text; } qemu[] = {
		{ "downtime-limit", 2000001, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms" },
		{ "multifd-channels", 0, "Parameter 'multifd_channels' expects a value between 1 and 255" },
		{ "multifd-channels", 256, "Parameter 'multifd_channels' expects a value between 1 and 255" },
		{ "x-vcpu-dirty-limit-period", 0, "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000" },
		{ "vcpu-dirty-limit", 0, "Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s" },
		{ "x-kmig-io-timeout", 3600001, "Parameter 'x-kmig-io-timeout' expects an integer in the range of 0 to 3600000 ms" },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(qemu); i++) {
		char req[256];

		snprintf(req, sizeof(req), "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
			 "{\"%s\": %" PRIu64 "}}", qemu[i].name, qemu[i].v);
		cmd_err(c, req, "GenericError", qemu[i].text);
	}
	tc_close(c);
}

static void test_parameters(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *ge = "GenericError";

	check_params(c, 300, 0);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		  "{\"downtime-limit\": 500, \"max-bandwidth\": 1000000000}}");
	check_params(c, 500, 1000000000);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 0}}");
	check_params(c, 500, 0);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 2000000}}");
	check_params(c, 2000000, 0);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 0}}");
	check_params(c, 0, 0);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 300}}");

	/* validation */
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": -1}}", ge,
		"Parameter 'downtime-limit' expects uint64");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 2000001}}", ge,
		"Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": -5}}", ge,
		"Parameter 'max-bandwidth' expects uint64");
	/* beyond int64: still a uint64, so the range is what is wrong (json-glib
	 * alone hands 2^63 over as -2^63) */
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 9223372036854775808}}",
		ge, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": 18446744073709551615}}",
		ge, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms");
	cmd_err(c,
		"{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		"{\"max-bandwidth\": 184467440737095516150}}",
		ge, "Parameter 'max-bandwidth' expects uint64");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"downtime-limit\": -9223372036854775809}}",
		ge, "Parameter 'downtime-limit' expects uint64");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"xbzrle-cache-size\": 2}}", ge,
		"Parameter 'xbzrle-cache-size' is not supported by kmig yet");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"announce-initial\": 50}}", ge,
		"Parameter 'announce-initial' is not supported by kmig yet");
	/* StrOrNull: null is "", a number is refused, a long id is refused */
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"tls-creds\": null}}");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"tls-creds\": 5}}", ge,
		"Parameter 'tls-creds' expects string");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"tls-authz\": "
		"\"0123456789012345678901234567890123456789012345678901234567890123\"}}", ge,
		"Parameter 'tls-authz' expects a string of at most 63 bytes");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"compress-level\": 1}}", ge,
		"Parameter 'compress-level' is not supported by kmig yet");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"bogus\": 1}}", ge,
		"Parameter 'bogus' is unexpected");
	/* all or nothing */
	cmd_err(c,
		"{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		"{\"downtime-limit\": 100, \"xbzrle-cache-size\": 2}}",
		ge, "Parameter 'xbzrle-cache-size' is not supported by kmig yet");
	cmd_err(c,
		"{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		"{\"max-bandwidth\": 100, \"downtime-limit\": 9999999}}",
		ge, "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 ms");
	check_params(c, 300, 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_set_params"), 6);	/* with tls-creds: null */

	/* nothing to set is fine, and does not bother the machine */
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {}}");
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\"}");
	assert_int_equal(fake_machine_calls(f->m, "machine_set_params"), 6);

	/* the machine has the last word */
	fake_machine_fail_next(f->m, "machine_set_params", -EINVAL, "max-bandwidth too small for this guest");
	cmd_err(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 1}}", ge,
		"max-bandwidth too small for this guest");
	check_params(c, 300, 0);
	/* kmig's peer timeout round-trips */
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"x-kmig-io-timeout\": 2500}}");
	JsonNode *io = cmd(c, "{\"execute\": \"query-migrate-parameters\"}");

	assert_int_equal(json_object_get_int_member(ret_obj(io), "x-kmig-io-timeout"), 2500);
	json_node_unref(io);
	tc_close(c);
}

static const char *const schema_caps[] = {
	"xbzrle", "rdma-pin-all", "auto-converge", "events", "postcopy-ram", "x-colo", "release-ram",
	"return-path", "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
	"late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot", "zero-copy-send",
	"postcopy-preempt", "switchover-ack", "dirty-limit", "mapped-ram", NULL,
};

static void check_caps(struct tclient *c, bool events)
{
	JsonNode *r = cmd(c, "{\"execute\": \"query-migrate-capabilities\"}");
	JsonArray *a;
	guint i;

	assert_true(JSON_NODE_HOLDS_ARRAY(json_object_get_member(json_node_get_object(r), "return")));
	a = json_object_get_array_member(json_node_get_object(r), "return");
	assert_int_equal(json_array_get_length(a), g_strv_length((char **)schema_caps));
	for (i = 0; i < json_array_get_length(a); i++) {
		JsonObject *o = json_array_get_object_element(a, i);
		static const char *const m[] = { "capability", "state", NULL };

		assert_members(o, m);
		assert_string_equal(json_object_get_string_member(o, "capability"), schema_caps[i]);
		assert_int_equal(json_object_get_boolean_member(o, "state"),
				 !strcmp(schema_caps[i], "events") ? events : false);
	}
	json_node_unref(r);
}

static void test_capabilities(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	struct migration_info mi;
	const char *ge = "GenericError";
	const char *const *cap;

	check_caps(c, false);
	/* every capability can be set to false */
	for (cap = schema_caps; *cap; cap++) {
		char *t = g_strdup_printf("{\"execute\": \"migrate-set-capabilities\", \"arguments\": "
					  "{\"capabilities\": [{\"capability\": \"%s\", \"state\": false}]}}",
					  *cap);

		cmd_ok(c, t);
		g_free(t);
	}
	/* and all but those kmig implements refuse true */
	for (cap = schema_caps; *cap; cap++) {
		char *t, *want;

		if (!strcmp(*cap, "events") || !strcmp(*cap, "multifd") || !strcmp(*cap, "zero-copy-send") ||
		    !strcmp(*cap, "dirty-limit"))
			continue;
		t = g_strdup_printf("{\"execute\": \"migrate-set-capabilities\", \"arguments\": "
				    "{\"capabilities\": [{\"capability\": \"%s\", \"state\": true}]}}",
				    *cap);
		want = g_strdup_printf("Capability '%s' is not supported by kmig yet", *cap);
		cmd_err(c, t, ge, want);
		g_free(t);
		g_free(want);
	}
	check_caps(c, false);
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": true}]}}");
	check_caps(c, true);
	/* all or nothing */
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": false}]}}");
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": true}, {\"capability\": \"xbzrle\", \"state\": true}]}}",
		ge, "Capability 'xbzrle' is not supported by kmig yet");
	check_caps(c, false);
	/* an empty list changes nothing */
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": []}}");
	/* not while a migration runs */
	memset(&mi, 0, sizeof(mi));
	mi.status = MIGRATION_STATUS_ACTIVE;
	fake_machine_set_migration(f->m, &mi);
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": true}]}}",
		ge, "There's a migration process in progress");
	check_caps(c, false);
	/* and once it is over, again */
	mi.status = MIGRATION_STATUS_COMPLETED;
	fake_machine_set_migration(f->m, &mi);
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": true}]}}");
	check_caps(c, true);
	tc_close(c);
}

/* ------------------------------------------------------------- migrate */

static void test_migrate(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *ge = "GenericError";
	JsonNode *r;

	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\", \"blk\": true}}", ge,
		"Block migration (blk/inc) is not supported by kmig");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\", \"inc\": true}}", ge,
		"Block migration (blk/inc) is not supported by kmig");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\", \"resume\": true}}", ge,
		"Cannot resume if there is no paused migration");
	assert_int_equal(fake_machine_calls(f->m, "machine_migrate"), 0);

	r = cmd(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:4444\", \"blk\": false, "
		   "\"inc\": false, \"detach\": true, \"resume\": false}}");
	assert_int_equal(json_object_get_size(ret_obj(r)), 0);
	json_node_unref(r);
	assert_int_equal(fake_machine_calls(f->m, "machine_migrate"), 1);
	assert_string_equal(fake_machine_last_uri(f->m), "tcp:127.0.0.1:4444");
	/* the machine refuses a second one with its own words */
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:4444\"}}", ge,
		"There's a migration process in progress");
	cmd_ok(c, "{\"execute\": \"migrate_cancel\"}");
	assert_int_equal(fake_machine_calls(f->m, "machine_migrate_cancel"), 1);
	r = cmd(c, "{\"execute\": \"query-migrate\"}");
	assert_string_equal(json_object_get_string_member(ret_obj(r), "status"), "cancelled");
	json_node_unref(r);
	/* nothing to cancel: still fine */
	cmd_ok(c, "{\"execute\": \"migrate_cancel\"}");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"bogus:x\"}}", ge,
		"invalid migration URI (expected tcp: or unix:)");

	/* migrate-incoming needs --incoming defer: the machine says so */
	cmd_err(c, "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"tcp:0:4444\"}}", ge,
		"'--incoming defer' was not given: migrate-incoming is not allowed");
	fake_machine_join_threads(f->m);
	tc_close(c);
}

static void test_migrate_incoming_defer(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	JsonObject *o;
	JsonNode *r;

	r = cmd(c, "{\"execute\": \"query-status\"}");
	o = ret_obj(r);
	assert_false(json_object_get_boolean_member(o, "running"));
	assert_string_equal(json_object_get_string_member(o, "status"), "inmigrate");
	json_node_unref(r);

	cmd_ok(c, "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"tcp:0:4444\"}}");
	assert_string_equal(fake_machine_last_uri(f->m), "tcp:0:4444");
	cmd_err(c, "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"tcp:0:4444\"}}", "GenericError",
		"The incoming migration has already been started");
	cmd_err(c, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:h:1\"}}", "GenericError",
		"this machine is the destination of a migration");
	tc_close(c);
}

/* object-add/object-del: QEMU's flat form, each property checked by the
 * shared spec code, the machine asked only with a whole spec */
static void test_objects(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *ge = "GenericError";

	cmd_ok(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"tls-creds-x509\", "
		  "\"id\": \"tls0\", \"endpoint\": \"server\", \"dir\": \"/etc/pki\", \"verify-peer\": false}}");
	assert_int_equal(fake_machine_calls(f->m, "machine_object_add"), 1);
	cmd_err(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"secret\", \"id\": \"s\"}}", ge,
		"invalid object type: secret (kmig has tls-creds-x509 and authz-simple)");
	cmd_err(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"authz-simple\", \"id\": \"a\", "
		   "\"dir\": \"/x\"}}", ge, "Property 'authz-simple.dir' not found");
	cmd_err(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"tls-creds-x509\", \"id\": \"t\", "
		   "\"endpoint\": \"middle\"}}", ge, "Parameter 'endpoint' does not accept value 'middle'");
	cmd_err(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"tls-creds-x509\"}}", ge,
		"Parameter 'id' is missing");
	cmd_err(c, "{\"execute\": \"object-add\", \"arguments\": {\"qom-type\": \"tls-creds-x509\", \"id\": \"t\", "
		   "\"verify-peer\": \"yes\"}}", ge, "Parameter 'verify-peer' expects boolean");
	assert_int_equal(fake_machine_calls(f->m, "machine_object_add"), 1);
	cmd_err(c, "{\"execute\": \"object-del\", \"arguments\": {\"id\": \"nope\"}}", ge,
		"object 'nope' not found");
	cmd_ok(c, "{\"execute\": \"object-del\", \"arguments\": {\"id\": \"tls0\"}}");
	tc_close(c);
}

/* ------------------------------------------------------- simple queries */

static void test_queries(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	static const char *const status_m[] = { "running", "singlestep", "status", NULL };
	static const char *const expected_cmds[] = {
		"qmp_capabilities", "query-commands", "query-version", "query-status", "stop", "cont", "quit",
		"migrate", "migrate-incoming", "migrate_cancel", "query-migrate", "migrate-set-parameters",
		"query-migrate-parameters", "migrate-set-capabilities", "query-migrate-capabilities",
		"x-kmig-blob-set", "pmemsave", "calc-dirty-rate", "query-dirty-rate", "set-vcpu-dirty-limit",
		"cancel-vcpu-dirty-limit", "query-vcpu-dirty-limit", "object-add", "object-del", NULL,
	};
	static const struct {
		enum machine_runstate rs;
		const char *name;
		bool running;
	} states[] = {
		{ RUNSTATE_RUNNING, "running", true },	       { RUNSTATE_PAUSED, "paused", false },
		{ RUNSTATE_PRELAUNCH, "prelaunch", false },    { RUNSTATE_INMIGRATE, "inmigrate", false },
		{ RUNSTATE_FINISH_MIGRATE, "finish-migrate", false },
		{ RUNSTATE_POSTMIGRATE, "postmigrate", false },
		{ RUNSTATE_SHUTDOWN, "shutdown", false },
		{ RUNSTATE_INTERNAL_ERROR, "internal-error", false },
		{ RUNSTATE_RESTORE_VM, "restore-vm", false },
	};
	JsonNode *r, *v;
	JsonObject *o;
	JsonArray *a;
	const char *const *name;
	size_t i;

	for (i = 0; i < G_N_ELEMENTS(states); i++) {
		fake_machine_set_runstate(f->m, states[i].rs);
		r = cmd(c, "{\"execute\": \"query-status\"}");
		o = ret_obj(r);
		assert_members(o, status_m);
		assert_int_equal(json_object_get_boolean_member(o, "running"), states[i].running);
		assert_false(json_object_get_boolean_member(o, "singlestep"));
		assert_string_equal(json_object_get_string_member(o, "status"), states[i].name);
		json_node_unref(r);
	}

	r = cmd(c, "{\"execute\": \"query-version\"}");
	v = json_node_copy(json_object_get_member(json_node_get_object(r), "return"));
	json_node_unref(r);
	{
		/* the same as in the greeting */
		struct tclient *c2 = tc_connect(f->path);
		JsonNode *g = tc_read(c2, TC_TIMEOUT_MS);
		JsonObject *qmp = json_object_get_object_member(json_node_get_object(g), "QMP");

		assert_true(json_node_equal(v, json_object_get_member(qmp, "version")));
		json_node_unref(g);
		tc_close(c2);
	}
	json_node_unref(v);

	r = cmd(c, "{\"execute\": \"query-commands\"}");
	a = json_object_get_array_member(json_node_get_object(r), "return");
	assert_int_equal(json_array_get_length(a), g_strv_length((char **)expected_cmds));
	for (name = expected_cmds; *name; name++) {
		bool found = false;

		for (i = 0; i < json_array_get_length(a); i++) {
			JsonObject *e = json_array_get_object_element(a, (guint)i);

			assert_int_equal(json_object_get_size(e), 1);
			if (!strcmp(json_object_get_string_member(e, "name"), *name))
				found = true;
		}
		if (!found)
			fail_msg("query-commands lacks %s", *name);
	}
	json_node_unref(r);
	tc_close(c);
}

/* ------------------------------------------ dirty page rate, dirty limit */

static JsonArray *ret_array(JsonNode *r)
{
	JsonNode *v;

	assert_true(JSON_NODE_HOLDS_OBJECT(r));
	v = json_object_get_member(json_node_get_object(r), "return");
	if (!v || !JSON_NODE_HOLDS_ARRAY(v)) {
		char *s = tc_to_string(r);

		fail_msg("expected an array, got %s", s);
	}
	return json_node_get_array(v);
}

static struct fake_dirty_args dirty_args(struct fx *f)
{
	struct fake_dirty_args a;

	fake_machine_dirty_args(f->m, &a);
	return a;
}

/* calc-dirty-rate with these arguments reaches the machine as (ms, mode,
 * sample_pages), and returns {} */
static void calc_ok(struct fx *f, struct tclient *c, const char *json_args, int64_t ms,
		    enum dirtyrate_mode mode, uint64_t pages)
{
	char *t = g_strdup_printf("{\"execute\": \"calc-dirty-rate\", \"arguments\": %s}", json_args);
	unsigned int n = fake_machine_calls(f->m, "machine_calc_dirty_rate");
	JsonNode *r = cmd(c, t);
	struct fake_dirty_args a = dirty_args(f);

	assert_int_equal(json_object_get_size(ret_obj(r)), 0);
	json_node_unref(r);
	assert_int_equal(fake_machine_calls(f->m, "machine_calc_dirty_rate"), n + 1);
	assert_int_equal(a.calc_time_ms, ms);
	assert_int_equal(a.calc_mode, mode);
	assert_int_equal(a.calc_sample_pages, pages);
	g_free(t);
}

static void calc_err(struct tclient *c, const char *json_args, const char *desc)
{
	char *t = g_strdup_printf("{\"execute\": \"calc-dirty-rate\", \"arguments\": %s}", json_args);

	cmd_err(c, t, "GenericError", desc);
	g_free(t);
}

static void test_calc_dirty_rate(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);

	/* seconds by default, page-sampling with 512 pages per GiB */
	calc_ok(f, c, "{\"calc-time\": 1}", 1000, DIRTYRATE_PAGE_SAMPLING, 512);
	calc_ok(f, c, "{\"calc-time\": 60, \"calc-time-unit\": \"second\", \"sample-pages\": 4096}", 60000,
		DIRTYRATE_PAGE_SAMPLING, 4096);
	calc_ok(f, c,
		"{\"calc-time\": 50, \"calc-time-unit\": \"millisecond\", \"mode\": \"page-sampling\", "
		"\"sample-pages\": 128}",
		50, DIRTYRATE_PAGE_SAMPLING, 128);
	/* QEMU's example; the other modes get no sample pages */
	calc_ok(f, c, "{\"calc-time\": 500, \"calc-time-unit\": \"millisecond\", \"mode\": \"dirty-bitmap\"}", 500,
		DIRTYRATE_DIRTY_BITMAP, 0);
	calc_ok(f, c, "{\"calc-time\": 60000, \"calc-time-unit\": \"millisecond\", \"mode\": \"dirty-ring\"}",
		60000, DIRTYRATE_DIRTY_RING, 0);
	calc_ok(f, c, "{\"mode\": \"dirty-ring\", \"calc-time\": 2}", 2000, DIRTYRATE_DIRTY_RING, 0);
	tc_close(c);
}

static void test_calc_dirty_rate_errors(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *range = "Calculation time is out of range [50ms, 60000ms].";
	const char *pages = "sample-pages is out of range[128, 4096].";
	const char *only = "sample-pages is used only in page-sampling mode";
	struct dirtyrate_info info;

	/* the generic checks */
	cmd_err(c, "{\"execute\": \"calc-dirty-rate\"}", "GenericError", "Parameter 'calc-time' is missing");
	calc_err(c, "{\"calc-time-ms\": 500}", "Parameter 'calc-time' is missing");
	calc_err(c, "{\"calc-time\": \"1\"}", "Parameter 'calc-time' expects integer");
	calc_err(c, "{\"calc-time\": 1.5}", "Parameter 'calc-time' expects integer");
	calc_err(c, "{\"calc-time\": null}", "Parameter 'calc-time' expects integer");
	calc_err(c, "{\"calc-time\": 1, \"sample-pages\": \"512\"}", "Parameter 'sample-pages' expects integer");
	calc_err(c, "{\"calc-time\": 1, \"mode\": 1}", "Parameter 'mode' expects string");
	calc_err(c, "{\"calc-time\": 1, \"calc-time-unit\": true}", "Parameter 'calc-time-unit' expects string");
	calc_err(c, "{\"calc-time\": 1, \"bogus\": 1}", "Parameter 'bogus' is unexpected");
	/* enum values, as QEMU's input visitor words it */
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"ring\"}", "Parameter 'mode' does not accept value 'ring'");
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"Dirty-Ring\"}",
		 "Parameter 'mode' does not accept value 'Dirty-Ring'");
	calc_err(c, "{\"calc-time\": 1, \"calc-time-unit\": \"minute\"}",
		 "Parameter 'calc-time-unit' does not accept value 'minute'");
	calc_err(c, "{\"calc-time\": 1, \"calc-time-unit\": \"\"}",
		 "Parameter 'calc-time-unit' does not accept value ''");
	/* calc-time, in either unit, converted to ms: 50 ms .. 60 s */
	calc_err(c, "{\"calc-time\": 49, \"calc-time-unit\": \"millisecond\"}", range);
	calc_err(c, "{\"calc-time\": 60001, \"calc-time-unit\": \"millisecond\"}", range);
	calc_err(c, "{\"calc-time\": 61}", range);
	calc_err(c, "{\"calc-time\": 61, \"calc-time-unit\": \"second\"}", range);
	calc_err(c, "{\"calc-time\": 0}", range);
	calc_err(c, "{\"calc-time\": -1}", range);
	calc_err(c, "{\"calc-time\": -1, \"calc-time-unit\": \"millisecond\"}", range);
	/* no overflow into the range */
	calc_err(c, "{\"calc-time\": 9223372036854775807}", range);
	calc_err(c, "{\"calc-time\": -9223372036854775808}", range);
	calc_err(c, "{\"calc-time\": 18446744073709551}", range);
	/* sample-pages: page-sampling only, 128 .. 4096 */
	calc_err(c, "{\"calc-time\": 1, \"sample-pages\": 127}", pages);
	calc_err(c, "{\"calc-time\": 1, \"sample-pages\": 4097}", pages);
	calc_err(c, "{\"calc-time\": 1, \"sample-pages\": 0}", pages);
	calc_err(c, "{\"calc-time\": 1, \"sample-pages\": -512}", pages);
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"dirty-ring\", \"sample-pages\": 512}", only);
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"dirty-bitmap\", \"sample-pages\": 512}", only);
	/* QEMU's order: enum values, calc-time, the mode, sample-pages */
	calc_err(c, "{\"calc-time\": 0, \"mode\": \"nope\"}", "Parameter 'mode' does not accept value 'nope'");
	calc_err(c, "{\"calc-time\": 0, \"sample-pages\": 1}", range);
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"dirty-ring\", \"sample-pages\": 1}", only);
	assert_int_equal(fake_machine_calls(f->m, "machine_calc_dirty_rate"), 0);

	/* QEMU refuses anything while a measurement runs, before the range */
	memset(&info, 0, sizeof(info));
	info.status = DIRTYRATE_MEASURING;
	fake_machine_set_dirty_rate(f->m, &info);
	calc_err(c, "{\"calc-time\": 0}", "the dirty rate is already being measured.");
	calc_err(c, "{\"calc-time\": 1}", "the dirty rate is already being measured.");
	assert_int_equal(fake_machine_calls(f->m, "machine_calc_dirty_rate"), 0);
	info.status = DIRTYRATE_MEASURED;
	fake_machine_set_dirty_rate(f->m, &info);

	/* the machine's errors, with its words */
	fake_machine_fail_next(f->m, "machine_calc_dirty_rate", -ENOTSUP,
			       "mode dirty-ring is not enabled, use other method instead.");
	calc_err(c, "{\"calc-time\": 1, \"mode\": \"dirty-ring\"}",
		 "mode dirty-ring is not enabled, use other method instead.");
	fake_machine_fail_next(f->m, "machine_calc_dirty_rate", -EBUSY, "the dirty rate is already being measured.");
	calc_err(c, "{\"calc-time\": 1}", "the dirty rate is already being measured.");
	fake_machine_fail_next(f->m, "machine_calc_dirty_rate", -EINVAL, "");
	calc_err(c, "{\"calc-time\": 1}", g_strerror(EINVAL));
	assert_int_equal(fake_machine_calls(f->m, "machine_calc_dirty_rate"), 3);
	tc_close(c);
}

static JsonNode *query_dirty_rate(struct fx *f, struct tclient *c, const struct dirtyrate_info *info,
				  const char *unit)
{
	char *t = unit ? g_strdup_printf("{\"execute\": \"query-dirty-rate\", \"arguments\": "
					 "{\"calc-time-unit\": \"%s\"}}",
					 unit)
		       : g_strdup("{\"execute\": \"query-dirty-rate\"}");
	JsonNode *r;

	fake_machine_set_dirty_rate(f->m, info);
	r = cmd(c, t);
	g_free(t);
	return r;
}

static void test_query_dirty_rate(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	static const char *const base_m[] = { "status", "start-time", "calc-time", "calc-time-unit",
					      "sample-pages", "mode", NULL };
	static const char *const measuring_m[] = { "status", "start-time", "calc-time", "calc-time-unit",
						   "sample-pages", "mode", "x-kmig-counted-by", NULL };
	static const char *const measured_m[] = { "dirty-rate", "status", "start-time", "calc-time",
						  "calc-time-unit", "sample-pages", "mode", "x-kmig-counted-by",
						  NULL };
	static const char *const ring_m[] = { "dirty-rate", "status", "start-time", "calc-time",
					      "calc-time-unit", "sample-pages", "mode", "vcpu-dirty-rate",
					      "x-kmig-counted-by", "x-kmig-ring-push-rate",
					      "x-kmig-ring-pushes-counted-by", NULL };
	static const char *const vcpu_m[] = { "id", "dirty-rate", NULL };
	struct dirtyrate_info info;
	JsonObject *o;
	JsonArray *a;
	JsonNode *r;
	guint i;

	/* nothing measured yet */
	memset(&info, 0, sizeof(info));
	r = query_dirty_rate(f, c, &info, NULL);
	o = ret_obj(r);
	assert_members(o, base_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "unstarted");
	assert_string_equal(json_object_get_string_member(o, "mode"), "page-sampling");
	assert_string_equal(json_object_get_string_member(o, "calc-time-unit"), "second");
	json_node_unref(r);

	/* measuring: no dirty-rate yet; calc-time rounded down to seconds */
	info.status = DIRTYRATE_MEASURING;
	info.start_time_s = 1693900454;
	info.calc_time_ms = 1999;
	info.sample_pages = 512;
	info.counted_by = "sampling";
	r = query_dirty_rate(f, c, &info, NULL);
	o = ret_obj(r);
	assert_members(o, measuring_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "measuring");
	assert_int_equal(json_object_get_int_member(o, "start-time"), 1693900454);
	assert_int_equal(json_object_get_int_member(o, "calc-time"), 1);
	assert_string_equal(json_object_get_string_member(o, "calc-time-unit"), "second");
	assert_int_equal(json_object_get_int_member(o, "sample-pages"), 512);
	assert_string_equal(json_object_get_string_member(o, "x-kmig-counted-by"), "sampling");
	json_node_unref(r);
	r = query_dirty_rate(f, c, &info, "millisecond");
	o = ret_obj(r);
	assert_members(o, measuring_m);
	assert_int_equal(json_object_get_int_member(o, "calc-time"), 1999);
	assert_string_equal(json_object_get_string_member(o, "calc-time-unit"), "millisecond");
	json_node_unref(r);
	info.calc_time_ms = 999;
	r = query_dirty_rate(f, c, &info, "second");
	assert_int_equal(json_object_get_int_member(ret_obj(r), "calc-time"), 0);
	json_node_unref(r);

	/* measured, page-sampling: a rate, no per-vCPU rates */
	info.status = DIRTYRATE_MEASURED;
	info.calc_time_ms = 10000;
	info.has_dirty_rate = true;
	info.dirty_rate = 108;
	info.nr_vcpus = 2;	/* not for this mode */
	r = query_dirty_rate(f, c, &info, NULL);
	o = ret_obj(r);
	assert_members(o, measured_m);
	assert_int_equal(json_object_get_int_member(o, "dirty-rate"), 108);
	assert_int_equal(json_object_get_int_member(o, "calc-time"), 10);
	json_node_unref(r);

	/* dirty-bitmap: no per-vCPU rates either */
	info.mode = DIRTYRATE_DIRTY_BITMAP;
	info.sample_pages = 0;
	info.counted_by = "bitmap";
	r = query_dirty_rate(f, c, &info, NULL);
	o = ret_obj(r);
	assert_members(o, measured_m);
	assert_string_equal(json_object_get_string_member(o, "mode"), "dirty-bitmap");
	assert_int_equal(json_object_get_int_member(o, "sample-pages"), 0);
	json_node_unref(r);

	/* dirty-ring, measured: one rate per vCPU */
	info.mode = DIRTYRATE_DIRTY_RING;
	info.counted_by = "ring";
	info.has_dirty_ring_push_rate = true;
	info.dirty_ring_push_rate = 615;
	info.telemetry_by = "bpf";
	info.nr_vcpus = 3;
	info.vcpu_dirty_rate[0] = 5;
	info.vcpu_dirty_rate[1] = 0;
	info.vcpu_dirty_rate[2] = 1234;
	r = query_dirty_rate(f, c, &info, "millisecond");
	o = ret_obj(r);
	assert_members(o, ring_m);
	assert_string_equal(json_object_get_string_member(o, "mode"), "dirty-ring");
	assert_int_equal(json_object_get_int_member(o, "calc-time"), 10000);
	a = json_object_get_array_member(o, "vcpu-dirty-rate");
	assert_int_equal(json_array_get_length(a), 3);
	for (i = 0; i < 3; i++) {
		JsonObject *v = json_array_get_object_element(a, i);

		assert_members(v, vcpu_m);
		assert_int_equal(json_object_get_int_member(v, "id"), i);
		assert_int_equal(json_object_get_int_member(v, "dirty-rate"), info.vcpu_dirty_rate[i]);
	}
	assert_string_equal(json_object_get_string_member(o, "x-kmig-counted-by"), "ring");
	assert_int_equal(json_object_get_int_member(o, "x-kmig-ring-push-rate"), 615);
	assert_string_equal(json_object_get_string_member(o, "x-kmig-ring-pushes-counted-by"), "bpf");
	json_node_unref(r);

	/* dirty-ring, still measuring: neither rate */
	info.status = DIRTYRATE_MEASURING;
	info.has_dirty_rate = false;
	info.has_dirty_ring_push_rate = false;
	info.counted_by = NULL;
	r = query_dirty_rate(f, c, &info, NULL);
	o = ret_obj(r);
	assert_members(o, base_m);
	assert_string_equal(json_object_get_string_member(o, "status"), "measuring");
	json_node_unref(r);

	/* arguments */
	cmd_err(c, "{\"execute\": \"query-dirty-rate\", \"arguments\": {\"calc-time-unit\": \"hour\"}}",
		"GenericError", "Parameter 'calc-time-unit' does not accept value 'hour'");
	cmd_err(c, "{\"execute\": \"query-dirty-rate\", \"arguments\": {\"calc-time-unit\": 1}}", "GenericError",
		"Parameter 'calc-time-unit' expects string");
	cmd_err(c, "{\"execute\": \"query-dirty-rate\", \"arguments\": {\"calc-time\": 1}}", "GenericError",
		"Parameter 'calc-time' is unexpected");
	tc_close(c);
}

static void limit_cmd_ok(struct tclient *c, const char *name, const char *json_args)
{
	char *t = g_strdup_printf("{\"execute\": \"%s\", \"arguments\": %s}", name, json_args);
	JsonNode *r = cmd(c, t);

	assert_int_equal(json_object_get_size(ret_obj(r)), 0);
	json_node_unref(r);
	g_free(t);
}

static void limit_cmd_err(struct tclient *c, const char *name, const char *json_args, const char *desc)
{
	char *t = g_strdup_printf("{\"execute\": \"%s\", \"arguments\": %s}", name, json_args);

	cmd_err(c, t, "GenericError", desc);
	g_free(t);
}

static void test_set_cancel_vcpu_dirty_limit(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *set = "set-vcpu-dirty-limit", *cancel = "cancel-vcpu-dirty-limit";

	limit_cmd_ok(c, set, "{\"dirty-rate\": 200, \"cpu-index\": 1}");
	assert_int_equal(dirty_args(f).limit_cpu, 1);
	assert_int_equal(dirty_args(f).limit_rate, 200);
	/* no cpu-index: every vCPU */
	limit_cmd_ok(c, set, "{\"dirty-rate\": 9007199254740993}");
	assert_int_equal(dirty_args(f).limit_cpu, -1);
	assert_true(dirty_args(f).limit_rate == 9007199254740993ull);
	assert_int_equal(fake_machine_calls(f->m, "machine_set_vcpu_dirty_limit"), 2);
	/* a limit of 0 cancels, as in QEMU */
	limit_cmd_ok(c, set, "{\"cpu-index\": 2, \"dirty-rate\": 0}");
	assert_int_equal(dirty_args(f).cancel_cpu, 2);
	limit_cmd_ok(c, set, "{\"dirty-rate\": 0}");
	assert_int_equal(dirty_args(f).cancel_cpu, -1);
	assert_int_equal(fake_machine_calls(f->m, "machine_set_vcpu_dirty_limit"), 2);
	assert_int_equal(fake_machine_calls(f->m, "machine_cancel_vcpu_dirty_limit"), 2);
	limit_cmd_ok(c, cancel, "{\"cpu-index\": 3}");
	assert_int_equal(dirty_args(f).cancel_cpu, 3);
	cmd_ok(c, "{\"execute\": \"cancel-vcpu-dirty-limit\"}");
	assert_int_equal(dirty_args(f).cancel_cpu, -1);
	limit_cmd_ok(c, cancel, "{\"cpu-index\": 0}");
	assert_int_equal(dirty_args(f).cancel_cpu, 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_cancel_vcpu_dirty_limit"), 5);
	tc_close(c);
}

static void test_vcpu_dirty_limit_errors(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *set = "set-vcpu-dirty-limit", *cancel = "cancel-vcpu-dirty-limit";
	const char *idx = "incorrect cpu index specified";
	const char *ring = "dirty page limit feature requires KVM with accelerator property 'dirty-ring-size' set'";

	cmd_err(c, "{\"execute\": \"set-vcpu-dirty-limit\"}", "GenericError", "Parameter 'dirty-rate' is missing");
	limit_cmd_err(c, set, "{\"cpu-index\": 1}", "Parameter 'dirty-rate' is missing");
	limit_cmd_err(c, set, "{\"dirty-rate\": -1}", "Parameter 'dirty-rate' expects uint64");
	limit_cmd_err(c, set, "{\"dirty-rate\": 184467440737095516150}", "Parameter 'dirty-rate' expects uint64");
	limit_cmd_err(c, set, "{\"dirty-rate\": 1.5}", "Parameter 'dirty-rate' expects uint64");
	limit_cmd_err(c, set, "{\"dirty-rate\": \"100\"}", "Parameter 'dirty-rate' expects uint64");
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu-index\": true}", "Parameter 'cpu-index' expects integer");
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu-index\": \"1\"}", "Parameter 'cpu-index' expects integer");
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu\": 1}", "Parameter 'cpu' is unexpected");
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu-index\": -1}", idx);
	limit_cmd_err(c, set, "{\"dirty-rate\": 0, \"cpu-index\": -1}", idx);
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu-index\": 4294967296}", idx);
	limit_cmd_err(c, cancel, "{\"cpu-index\": false}", "Parameter 'cpu-index' expects integer");
	limit_cmd_err(c, cancel, "{\"cpu-index\": -5}", idx);
	limit_cmd_err(c, cancel, "{\"dirty-rate\": 1}", "Parameter 'dirty-rate' is unexpected");
	cmd_err(c, "{\"execute\": \"query-vcpu-dirty-limit\", \"arguments\": {\"cpu-index\": 0}}", "GenericError",
		"Parameter 'cpu-index' is unexpected");
	assert_int_equal(fake_machine_calls(f->m, "machine_set_vcpu_dirty_limit"), 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_cancel_vcpu_dirty_limit"), 0);
	assert_int_equal(fake_machine_calls(f->m, "machine_query_vcpu_dirty_limit"), 0);

	/* the machine's errors, with its words */
	fake_machine_fail_next(f->m, "machine_set_vcpu_dirty_limit", -EINVAL, idx);
	limit_cmd_err(c, set, "{\"dirty-rate\": 100, \"cpu-index\": 64}", idx);
	assert_int_equal(dirty_args(f).limit_cpu, 64);
	fake_machine_fail_next(f->m, "machine_set_vcpu_dirty_limit", -ENOTSUP, ring);
	limit_cmd_err(c, set, "{\"dirty-rate\": 100}", ring);
	fake_machine_fail_next(f->m, "machine_cancel_vcpu_dirty_limit", -EINVAL, idx);
	limit_cmd_err(c, cancel, "{\"cpu-index\": 64}", idx);
	fake_machine_fail_next(f->m, "machine_cancel_vcpu_dirty_limit", -ENOTSUP, ring);
	limit_cmd_err(c, set, "{\"dirty-rate\": 0, \"cpu-index\": 1}", ring);
	fake_machine_fail_next(f->m, "machine_cancel_vcpu_dirty_limit", -EPERM, "");
	limit_cmd_err(c, cancel, "{}", g_strerror(EPERM));
	tc_close(c);
}

static void test_query_vcpu_dirty_limit(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	static const char *const m[] = { "cpu-index", "limit-rate", "current-rate", NULL };
	static const struct dirtylimit_vcpu v[] = { { 0, 60, 3 }, { 5, 200, 1000000 } };
	JsonArray *a;
	JsonNode *r;
	guint i;

	/* no limits: an empty list */
	r = cmd(c, "{\"execute\": \"query-vcpu-dirty-limit\"}");
	assert_int_equal(json_array_get_length(ret_array(r)), 0);
	json_node_unref(r);
	assert_int_equal(dirty_args(f).query_limit_max, KMIG_MAX_VCPUS);

	fake_machine_set_dirty_limits(f->m, v, G_N_ELEMENTS(v));
	r = cmd(c, "{\"execute\": \"query-vcpu-dirty-limit\", \"arguments\": {}}");
	a = ret_array(r);
	assert_int_equal(json_array_get_length(a), 2);
	for (i = 0; i < 2; i++) {
		JsonObject *o = json_array_get_object_element(a, i);

		assert_members(o, m);
		assert_int_equal(json_object_get_int_member(o, "cpu-index"), v[i].cpu_index);
		assert_int_equal(json_object_get_int_member(o, "limit-rate"), v[i].limit_rate);
		assert_int_equal(json_object_get_int_member(o, "current-rate"), v[i].current_rate);
	}
	json_node_unref(r);
	tc_close(c);
}

static void check_dirty_limit_cap(struct fx *f, struct tclient *c, bool on)
{
	JsonNode *r = cmd(c, "{\"execute\": \"query-migrate-capabilities\"}");
	JsonArray *a = ret_array(r);
	struct migration_params p;
	guint i;

	for (i = 0; i < json_array_get_length(a); i++) {
		JsonObject *o = json_array_get_object_element(a, i);

		if (!strcmp(json_object_get_string_member(o, "capability"), "dirty-limit"))
			assert_int_equal(json_object_get_boolean_member(o, "state"), on);
	}
	json_node_unref(r);
	machine_get_params(f->m, &p);
	assert_int_equal(p.dirty_limit, on);
}

static void set_dirty_limit_cap(struct tclient *c, bool on, const char *err)
{
	char *t = g_strdup_printf("{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
				  "[{\"capability\": \"dirty-limit\", \"state\": %s}]}}",
				  on ? "true" : "false");

	if (err)
		cmd_err(c, t, "GenericError", err);
	else
		cmd_ok(c, t);
	g_free(t);
}

static void test_dirty_limit_capability(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *no_ring = "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set";
	struct migration_info mi;

	check_dirty_limit_cap(f, c, false);
	set_dirty_limit_cap(c, true, NULL);
	check_dirty_limit_cap(f, c, true);
	/* setting another capability keeps it */
	cmd_ok(c, "{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		  "[{\"capability\": \"events\", \"state\": true}]}}");
	check_dirty_limit_cap(f, c, true);
	set_dirty_limit_cap(c, false, NULL);
	check_dirty_limit_cap(f, c, false);

	/* the machine refuses (no dirty ring): stays off, with its words, and
	 * the whole request is refused */
	fake_machine_fail_next(f->m, "machine_set_params", -ENOTSUP, no_ring);
	cmd_err(c,
		"{\"execute\": \"migrate-set-capabilities\", \"arguments\": {\"capabilities\": "
		"[{\"capability\": \"events\", \"state\": false}, "
		"{\"capability\": \"dirty-limit\", \"state\": true}]}}",
		"GenericError", no_ring);
	check_dirty_limit_cap(f, c, false);
	check_caps(c, true);
	fake_machine_fail_next(f->m, "machine_set_params", -ENOTSUP, "");
	set_dirty_limit_cap(c, true, g_strerror(ENOTSUP));
	check_dirty_limit_cap(f, c, false);

	/* not while a migration runs */
	memset(&mi, 0, sizeof(mi));
	mi.status = MIGRATION_STATUS_ACTIVE;
	fake_machine_set_migration(f->m, &mi);
	set_dirty_limit_cap(c, true, "There's a migration process in progress");
	check_dirty_limit_cap(f, c, false);
	tc_close(c);
}

static void check_limit_params(struct tclient *c, int64_t period, int64_t limit)
{
	JsonNode *r = cmd(c, "{\"execute\": \"query-migrate-parameters\"}");
	JsonObject *o = ret_obj(r);

	assert_int_equal(json_object_get_int_member(o, "x-vcpu-dirty-limit-period"), period);
	assert_int_equal(json_object_get_int_member(o, "vcpu-dirty-limit"), limit);
	json_node_unref(r);
}

static void set_param_err(struct tclient *c, const char *json_args, const char *desc)
{
	char *t = g_strdup_printf("{\"execute\": \"migrate-set-parameters\", \"arguments\": %s}", json_args);

	cmd_err(c, t, "GenericError", desc);
	g_free(t);
}

static void test_dirty_limit_parameters(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	const char *period = "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and 1000";
	const char *limit = "Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s";
	struct migration_params p;

	/* the machine's defaults */
	check_limit_params(c, 1000, 1);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		  "{\"x-vcpu-dirty-limit-period\": 500, \"vcpu-dirty-limit\": 200}}");
	check_limit_params(c, 500, 200);
	machine_get_params(f->m, &p);
	assert_int_equal(p.vcpu_dirty_limit_period_ms, 500);
	assert_int_equal(p.vcpu_dirty_limit, 200);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"x-vcpu-dirty-limit-period\": 1}}");
	check_limit_params(c, 1, 200);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"x-vcpu-dirty-limit-period\": 1000}}");
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"vcpu-dirty-limit\": 1}}");
	check_limit_params(c, 1000, 1);
	cmd_ok(c, "{\"execute\": \"migrate-set-parameters\", \"arguments\": "
		  "{\"vcpu-dirty-limit\": 9223372036854775807}}");
	check_limit_params(c, 1000, G_MAXINT64);

	/* ranges, in QEMU's words (and QEMU's order: the period first) */
	set_param_err(c, "{\"x-vcpu-dirty-limit-period\": 0}", period);
	set_param_err(c, "{\"x-vcpu-dirty-limit-period\": 1001}", period);
	set_param_err(c, "{\"vcpu-dirty-limit\": 0}", limit);
	set_param_err(c, "{\"vcpu-dirty-limit\": 0, \"x-vcpu-dirty-limit-period\": 0}", period);
	/* types */
	set_param_err(c, "{\"x-vcpu-dirty-limit-period\": -1}", "Parameter 'x-vcpu-dirty-limit-period' expects uint64");
	set_param_err(c, "{\"vcpu-dirty-limit\": -1}", "Parameter 'vcpu-dirty-limit' expects uint64");
	set_param_err(c, "{\"vcpu-dirty-limit\": \"1\"}", "Parameter 'vcpu-dirty-limit' expects uint64");
	set_param_err(c, "{\"vcpu-dirty-limit\": 184467440737095516150}", "Parameter 'vcpu-dirty-limit' expects uint64");
	set_param_err(c, "{\"vcpu_dirty_limit\": 5}", "Parameter 'vcpu_dirty_limit' is unexpected");
	/* all or nothing */
	set_param_err(c, "{\"downtime-limit\": 100, \"vcpu-dirty-limit\": 0}", limit);
	set_param_err(c, "{\"vcpu-dirty-limit\": 50, \"x-vcpu-dirty-limit-period\": 2000}", period);
	check_limit_params(c, 1000, G_MAXINT64);
	check_params(c, 300, 0);
	/* the machine has the last word */
	fake_machine_fail_next(f->m, "machine_set_params", -EBUSY, "cannot change the limit now");
	set_param_err(c, "{\"vcpu-dirty-limit\": 5}", "cannot change the limit now");
	check_limit_params(c, 1000, G_MAXINT64);
	tc_close(c);
}

static void test_query_migrate_dirty_limit(void **state)
{
	struct fx *f = *state;
	struct tclient *c = tc_connect_negotiated(f->path);
	static const char *const active_m[] = { "status", "setup-time", "total-time", "expected-downtime", "ram",
						"dirty-limit-throttle-time-per-round", "dirty-limit-ring-full-time",
						"x-kmig", NULL };
	struct migration_info mi;
	JsonObject *o, *k;
	JsonNode *r;

	memset(&mi, 0, sizeof(mi));
	fill_stats(&mi);
	mi.status = MIGRATION_STATUS_ACTIVE;
	mi.has_dirty_limit = true;
	mi.dirty_limit_throttle_time_per_round_us = 250000;
	mi.dirty_limit_ring_full_time_us = 4000;
	mi.kmig.dirty_telemetry = "ring";
	snprintf(mi.kmig.telemetry_why, sizeof(mi.kmig.telemetry_why), "bpf: CAP_BPF missing");
	mi.kmig.dirty_ring_lost_pages = 3;
	r = query_migrate(c, f, &mi);
	o = ret_obj(r);
	assert_members(o, active_m);
	assert_int_equal(json_object_get_int_member(o, "dirty-limit-throttle-time-per-round"), 250000);
	assert_int_equal(json_object_get_int_member(o, "dirty-limit-ring-full-time"), 4000);
	k = json_object_get_object_member(o, "x-kmig");
	assert_string_equal(json_object_get_string_member(k, "dirty-telemetry"), "ring");
	assert_string_equal(json_object_get_string_member(k, "telemetry-why"), "bpf: CAP_BPF missing");
	assert_int_equal(json_object_get_int_member(k, "ring-lost-pages"), 3);
	json_node_unref(r);
	/* no ram, no dirty-limit figures */
	mi.status = MIGRATION_STATUS_SETUP;
	r = query_migrate(c, f, &mi);
	assert_false(json_object_has_member(ret_obj(r), "dirty-limit-ring-full-time"));
	json_node_unref(r);
	tc_close(c);
}

/* ------------------------------------------------------ start and stop */

static void test_start_stop(void **state)
{
	struct fx *f = *state;
	struct qmp_server *s2 = NULL;
	struct tclient *c;
	struct stat st;
	char err[256];
	char *path2, *longp;
	int fd, r;

	/* the socket: a socket, 0600 */
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(fake_machine_has_handler(f->m));

	/* a live server's socket is not "stale" */
	r = qmp_server_start(f->m, f->path, &s2, err, sizeof(err));
	assert_int_equal(r, -EADDRINUSE);
	assert_null(s2);
	assert_int_equal(lstat(f->path, &st), 0);

	/* not a socket: refused, left alone */
	path2 = g_build_filename(f->dir, "file", NULL);
	assert_true(g_file_set_contents(path2, "keep me", -1, NULL));
	r = qmp_server_start(f->m, path2, &s2, err, sizeof(err));
	assert_int_equal(r, -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(lstat(path2, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	g_remove(path2);
	g_free(path2);

	/* too long */
	longp = g_strnfill(200, 'x');
	r = qmp_server_start(f->m, longp, &s2, err, sizeof(err));
	assert_int_equal(r, -ENAMETOOLONG);
	g_free(longp);

	/* a stale socket is replaced */
	path2 = g_build_filename(f->dir, "stale.sock", NULL);
	{
		struct sockaddr_un sa;

		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path2);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd); /* the file stays, nobody listens */
	}
	assert_int_equal(qmp_server_start(f->m, path2, &s2, err, sizeof(err)), 0);
	c = tc_connect_negotiated(path2);
	cmd_ok(c, "{\"execute\": \"query-status\"}");

	/* stop: queued events still go out, clients see EOF, socket gone */
	fake_machine_emit(f->m, MACHINE_EVENT_SHUTDOWN, 0, true);
	fake_machine_join_threads(f->m);
	qmp_server_stop(s2);
	assert_false(fake_machine_has_handler(f->m));
	assert_int_equal(lstat(path2, &st), -1);
	{
		JsonNode *e = read_event(c, "SHUTDOWN");

		json_node_unref(e);
		assert_null(tc_read_line(c, 1000));
		assert_true(c->eof);
	}
	tc_close(c);
	/* events after stop go nowhere, harmlessly */
	fake_machine_emit(f->m, MACHINE_EVENT_STOP, 0, true);
	fake_machine_join_threads(f->m);
	tc_spin(10);

	/* stop takes its handler back before it frees what the handler
	 * uses: machine_set_event_handler() returns only once no call to the
	 * old handler runs (machine.h), so no call can arrive late */
	{
		machine_event_fn fn;
		void *opaque;

		assert_int_equal(qmp_server_start(f->m, path2, &s2, err, sizeof(err)), 0);
		fake_machine_get_handler(f->m, &fn, &opaque);
		assert_non_null(fn);
		qmp_server_stop(s2);
		fake_machine_get_handler(f->m, &fn, &opaque);
		assert_null(fn);
		assert_false(g_main_context_pending(NULL));
	}

	/* stop leaves alone a file that is no longer its socket */
	assert_int_equal(qmp_server_start(f->m, path2, &s2, err, sizeof(err)), 0);
	g_remove(path2);
	assert_true(g_file_set_contents(path2, "someone else's", -1, NULL));
	qmp_server_stop(s2);
	assert_int_equal(lstat(path2, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	g_remove(path2);
	g_free(path2);
	qmp_server_stop(NULL);

	/* the fixture's server got its handler replaced by the second one:
	 * put it back for teardown's sake (stop clears it anyway) */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_greeting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negotiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_id_echo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_classes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_objects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_then_valid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_200_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_descriptors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lazy_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_mid_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_migrate_shapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test(test_shutdown_reasons),
		cmocka_unit_test_setup_teardown(test_param_table_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parameters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capabilities, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_incoming_defer, setup_defer, teardown),
		cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_calc_dirty_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_calc_dirty_rate_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_dirty_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_cancel_vcpu_dirty_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vcpu_dirty_limit_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_vcpu_dirty_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dirty_limit_capability, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dirty_limit_parameters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_migrate_dirty_limit, setup, teardown),
	};

	/* a write to a client that is gone must not kill the process */
	signal(SIGPIPE, SIG_DFL);
	return cmocka_run_group_tests_name("qmp-server", tests, NULL, NULL);
}
