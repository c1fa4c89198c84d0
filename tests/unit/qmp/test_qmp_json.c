/* tests/unit/qmp/test_qmp_json.c — the QMP server's pieces without a
 * socket: the JSON splitter, the MigrationInfo builder shared with tools/,
 * ASCII output, argument checking, the capability table.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "qapi/qmp-internal.h"
#include "qapi/qmp.h"

/* ---------------------------------------------------------- splitter */

struct collected {
	GPtrArray *items; /* "V:<json>" or "E:<error>" */
};

static void collect(void *opaque, const char *json, size_t len, const char *error)
{
	struct collected *c = opaque;

	if (json) {
		assert_int_equal(strlen(json), len);
		g_ptr_array_add(c->items, g_strdup_printf("V:%s", json));
	} else {
		g_ptr_array_add(c->items, g_strdup_printf("E:%s", error));
	}
}

static struct collected *split(const char *input, size_t max, unsigned int depth, size_t chunk)
{
	struct collected *c = g_new0(struct collected, 1);
	struct json_splitter *js;
	size_t len = strlen(input), i;

	c->items = g_ptr_array_new_with_free_func(g_free);
	js = json_splitter_new(max, depth, collect, c);
	for (i = 0; i < len; i += chunk)
		json_splitter_feed(js, input + i, MIN(chunk, len - i));
	json_splitter_free(js);
	return c;
}

static void expect(struct collected *c, const char *const *want)
{
	guint i;

	for (i = 0; want[i]; i++) {
		if (i >= c->items->len)
			fail_msg("missing item %u: %s", i, want[i]);
		assert_string_equal(g_ptr_array_index(c->items, i), want[i]);
	}
	assert_int_equal(c->items->len, i);
	g_ptr_array_free(c->items, TRUE);
	g_free(c);
}

static void check_split_limits(const char *input, size_t max, const char *const *want)
{
	size_t chunks[] = { 1, 2, 3, 7, 4096 };
	size_t i;

	/* the same values whatever the read sizes */
	for (i = 0; i < G_N_ELEMENTS(chunks); i++)
		expect(split(input, max, 8, chunks[i]), want);
}

static void check_split(const char *input, const char *const *want)
{
	check_split_limits(input, 1024, want);
}

static void test_splitter_basic(void **state)
{
	static const char *const w1[] = { "V:{\"a\":1}", "V:{\"b\":[1,{\"c\":2}]}", NULL };
	static const char *const w2[] = { "V:{\"a\":\"}{][\"}", "V:[\"\\\"]\"]", NULL };
	static const char *const w3[] = { "V:42", "V:true", "V:\"x\"", "V:null", NULL };
	static const char *const w4[] = { "V:{\"a\":\"it's \\\"q\\\"\"}", "V:{\"b\":\"'\"}", NULL };
	static const char *const w5[] = { "V:{ \"a\" :\n 1 }", NULL };
	static const char *const w6[] = { "V:{\"a\":\"\\u00e9\\n\"}", NULL };

	check_split("{\"a\":1}{\"b\":[1,{\"c\":2}]}", w1);
	check_split("\r\n {\"a\":1}\n\n{\"b\":[1,{\"c\":2}]}  \n", w1);
	/* braces and quotes inside strings, escaped quotes */
	check_split("{\"a\":\"}{][\"}[\"\\\"]\"]", w2);
	/* top-level scalars end at a delimiter */
	check_split("42 true\n\"x\"null\n", w3);
	/* single-quoted strings become double-quoted, \' becomes ' */
	check_split("{'a':'it\\'s \"q\"'}{\"b\":\"\\'\"}", w4);
	/* whitespace inside a value is kept */
	check_split("{ \"a\" :\n 1 }", w5);
	check_split("{\"a\":\"\\u00e9\\n\"}", w6);
}

static void test_splitter_errors(void **state)
{
	static const char *const stray[] = { "E:JSON parse error, stray '}'", "V:{\"a\":1}",
					     "E:JSON parse error, stray ']'", NULL };
	static const char *const ctl[] = { "E:JSON parse error, invalid byte 0x01", "V:{\"a\":2}", NULL };
	static const char *const nl_in_string[] = { "E:JSON parse error, invalid byte 0x0a", "V:[3]", NULL };
	static const char *const ff[] = { "E:JSON parse error, invalid byte 0xff", "V:[4]", NULL };
	static const char *const big[] = { "E:JSON parse error, message too large (limit 16)", "V:[5]", NULL };
	static const char *const big_scalar[] = { "E:JSON parse error, message too large (limit 16)", "V:6",
						  NULL };
	static const char *const deep[] = { "E:JSON parse error, nesting too deep (limit 8)", "V:[[7]]", NULL };
	static const char *const deep_str[] = { "E:JSON parse error, nesting too deep (limit 8)", "V:[8]", NULL };

	check_split("}{\"a\":1}]", stray);
	/* a control character drops the partial value: resynchronisation */
	check_split("{\"a\":\x01{\"a\":2}", ctl);
	check_split("{\"a\":\"x\n[3]", nl_in_string);
	check_split("{\"a\xff[4]", ff);
	/* too big: skipped to its end, reported once */
	check_split_limits("{\"a\":\"0123456789abcdef\",\"b\":[1,2,3]}[5]", 16, big);
	check_split_limits("12345678901234567890 6 ", 16, big_scalar);
	/* too deep: skipped to its end, reported once, strings still
	 * tracked while skipping */
	check_split("[[[[[[[[[[[[]]]]]]]]]]]][[7]]", deep);
	check_split("[[[[[[[[[[\"]]]]]]]]]]\"]]]]]]]]]][8]", deep_str);
}

static void test_splitter_reset(void **state)
{
	struct collected c = { g_ptr_array_new_with_free_func(g_free) };
	struct json_splitter *js = json_splitter_new(1024, 8, collect, &c);
	static const char *const want[] = { "V:{\"b\":2}", NULL };
	struct collected *pc = g_new0(struct collected, 1);

	json_splitter_feed(js, "{\"a\":\"", 6);
	json_splitter_reset(js);
	json_splitter_feed(js, "{\"b\":2}", 7);
	json_splitter_free(js);
	pc->items = c.items;
	expect(pc, want);
}

/* ----------------------------------------------------- migration JSON */

static void test_migration_json_none(void **state)
{
	struct migration_info mi;
	char *s;

	memset(&mi, 0, sizeof(mi));
	mi.kmig.passes = 9;
	mi.has_error = true; /* ignored without a status */
	snprintf(mi.error_desc, sizeof(mi.error_desc), "x");
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_string_equal(s, "{}");
	g_free(s);
}

/* QEMU's socket-address, on a destination that listens: also before any
 * source connected (status none), which is how a caller that listened on
 * port 0 learns the port; an unterminated array is cut at its size */
static void test_migration_json_socket_address(void **state)
{
	struct migration_info mi;
	char *s;

	memset(&mi, 0, sizeof(mi));
	mi.is_incoming = true;
	mi.has_socket_address = true;
	snprintf(mi.socket_address.host, sizeof(mi.socket_address.host), "127.0.0.1");
	snprintf(mi.socket_address.port, sizeof(mi.socket_address.port), "40123");
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_string_equal(s, "{\"socket-address\":[{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"40123\"}]}");
	g_free(s);

	mi.status = MIGRATION_STATUS_ACTIVE;
	mi.socket_address.is_unix = true;
	memset(mi.socket_address.path, 'p', sizeof(mi.socket_address.path));
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_non_null(strstr(s, "\"status\":\"active\""));
	char path[sizeof(mi.socket_address.path) + 1];

	memset(path, 'p', sizeof(mi.socket_address.path));
	path[sizeof(mi.socket_address.path)] = '\0';
	char *want = g_strdup_printf("\"socket-address\":[{\"type\":\"unix\",\"path\":\"%s\"}]", path);
	assert_non_null(strstr(s, want));
	g_free(want);
	g_free(s);

	/* not listening (any more): no member */
	mi.has_socket_address = false;
	mi.status = MIGRATION_STATUS_NONE;
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_string_equal(s, "{}");
	g_free(s);
}

static void test_migration_json_exact(void **state)
{
	struct migration_info mi;
	char *s;

	memset(&mi, 0, sizeof(mi));
	mi.status = MIGRATION_STATUS_FAILED;
	mi.has_error = true;
	snprintf(mi.error_desc, sizeof(mi.error_desc), "caf\xc3\xa9 \"closed\"");
	mi.kmig.dirty_mode = "dirty-bitmap";
	mi.kmig.passes = 2;
	mi.kmig.shrink_passes = 1;
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_string_equal(s, "{\"status\":\"failed\",\"error-desc\":\"caf\\u00e9 \\\"closed\\\"\","
			       "\"x-kmig\":{\"dirty-mode\":\"dirty-bitmap\",\"ring-overflows\":0,"
			       "\"ring-full-exits\":0,\"ring-resyncs\":0,\"pages-harvested\":0,\"passes\":2,"
			       "\"shrink-passes\":1,\"channels\":0,\"zero-copy-notifications\":0,\"zero-copy-copied\":0,"
			       "\"ring-lost-pages\":0}}");
	g_free(s);

	/* no dirty mode known: the member is left out */
	mi.kmig.dirty_mode = NULL;
	mi.has_error = false;
	mi.status = MIGRATION_STATUS_CANCELLED;
	s = qapi_migration_info_to_string(&mi, FALSE);
	assert_string_equal(s, "{\"status\":\"cancelled\",\"x-kmig\":{\"ring-overflows\":0,"
			       "\"ring-full-exits\":0,\"ring-resyncs\":0,\"pages-harvested\":0,\"passes\":2,"
			       "\"shrink-passes\":1,\"channels\":0,\"zero-copy-notifications\":0,\"zero-copy-copied\":0,"
			       "\"ring-lost-pages\":0}}");
	g_free(s);

	/* pretty: several lines, same content */
	s = qapi_migration_info_to_string(&mi, TRUE);
	assert_non_null(strchr(s, '\n'));
	assert_non_null(strstr(s, "\"status\" : \"cancelled\""));
	g_free(s);
}

static void test_migration_json_values(void **state)
{
	struct migration_info mi;
	JsonNode *n;
	JsonObject *o, *ram;

	memset(&mi, 0, sizeof(mi));
	mi.status = MIGRATION_STATUS_ACTIVE;
	mi.ram.transferred = UINT64_MAX; /* clamped: JSON ints are int64 here */
	mi.ram.mbps = NAN;		 /* JSON has no NaN */
	mi.expected_downtime_ms = 3;
	n = qapi_migration_info_to_json(&mi);
	o = json_node_get_object(n);
	ram = json_object_get_object_member(o, "ram");
	assert_true(json_object_get_int_member(ram, "transferred") == G_MAXINT64);
	assert_true(json_object_get_double_member(ram, "mbps") == 0.0);
	assert_int_equal(json_object_get_int_member(o, "expected-downtime"), 3);
	assert_false(json_object_has_member(o, "downtime"));
	assert_false(json_object_has_member(o, "error-desc"));
	json_node_unref(n);

	mi.ram.mbps = INFINITY;
	n = qapi_migration_info_to_json(&mi);
	ram = json_object_get_object_member(json_node_get_object(n), "ram");
	assert_true(json_object_get_double_member(ram, "mbps") == 0.0);
	json_node_unref(n);

	/* error_desc filled to the brim, without a NUL */
	mi.status = MIGRATION_STATUS_FAILED;
	mi.has_error = true;
	memset(mi.error_desc, 'e', sizeof(mi.error_desc));
	n = qapi_migration_info_to_json(&mi);
	assert_int_equal(strlen(json_object_get_string_member(json_node_get_object(n), "error-desc")),
			 sizeof(mi.error_desc));
	json_node_unref(n);

	/* an active migration with an error: QEMU shows both */
	mi.status = MIGRATION_STATUS_ACTIVE;
	snprintf(mi.error_desc, sizeof(mi.error_desc), "retrying");
	n = qapi_migration_info_to_json(&mi);
	assert_string_equal(json_object_get_string_member(json_node_get_object(n), "error-desc"), "retrying");
	assert_true(json_object_has_member(json_node_get_object(n), "ram"));
	json_node_unref(n);
}

/* dirty-limit figures: with ram only (QEMU's populate_ram_info), and only
 * while the throttle works; the telemetry members of x-kmig */
static void test_migration_json_dirty_limit(void **state)
{
	static const enum migration_status with_ram[] = { MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_DEVICE,
							  MIGRATION_STATUS_CANCELLING, MIGRATION_STATUS_COMPLETED };
	static const enum migration_status without[] = { MIGRATION_STATUS_SETUP, MIGRATION_STATUS_FAILED,
							 MIGRATION_STATUS_CANCELLED };
	struct migration_info mi;
	JsonObject *o, *k;
	JsonNode *n;
	size_t i;

	memset(&mi, 0, sizeof(mi));
	mi.has_dirty_limit = true;
	mi.dirty_limit_throttle_time_per_round_us = 12345;
	mi.dirty_limit_ring_full_time_us = 678;
	for (i = 0; i < G_N_ELEMENTS(with_ram); i++) {
		mi.status = with_ram[i];
		n = qapi_migration_info_to_json(&mi);
		o = json_node_get_object(n);
		assert_int_equal(json_object_get_int_member(o, "dirty-limit-throttle-time-per-round"), 12345);
		assert_int_equal(json_object_get_int_member(o, "dirty-limit-ring-full-time"), 678);
		json_node_unref(n);
	}
	for (i = 0; i < G_N_ELEMENTS(without); i++) {
		mi.status = without[i];
		n = qapi_migration_info_to_json(&mi);
		o = json_node_get_object(n);
		assert_false(json_object_has_member(o, "dirty-limit-throttle-time-per-round"));
		assert_false(json_object_has_member(o, "dirty-limit-ring-full-time"));
		json_node_unref(n);
	}
	/* destination: status only */
	mi.status = MIGRATION_STATUS_ACTIVE;
	mi.is_incoming = true;
	n = qapi_migration_info_to_json(&mi);
	assert_false(json_object_has_member(json_node_get_object(n), "dirty-limit-ring-full-time"));
	json_node_unref(n);
	/* not throttling: absent; 0 (a guest that does not dirty) is shown */
	mi.is_incoming = false;
	mi.has_dirty_limit = false;
	n = qapi_migration_info_to_json(&mi);
	assert_false(json_object_has_member(json_node_get_object(n), "dirty-limit-throttle-time-per-round"));
	json_node_unref(n);
	mi.has_dirty_limit = true;
	mi.dirty_limit_ring_full_time_us = 0;
	n = qapi_migration_info_to_json(&mi);
	o = json_node_get_object(n);
	assert_int_equal(json_object_get_int_member(o, "dirty-limit-ring-full-time"), 0);
	/* x-kmig: dirty-telemetry when known, telemetry-why when not empty
	 * (a full array without its NUL), ring-lost-pages always */
	k = json_object_get_object_member(o, "x-kmig");
	assert_false(json_object_has_member(k, "dirty-telemetry"));
	assert_false(json_object_has_member(k, "telemetry-why"));
	assert_int_equal(json_object_get_int_member(k, "ring-lost-pages"), 0);
	json_node_unref(n);
	mi.kmig.dirty_telemetry = "ring";
	memset(mi.kmig.telemetry_why, 'w', sizeof(mi.kmig.telemetry_why));
	mi.kmig.dirty_ring_lost_pages = 77;
	n = qapi_migration_info_to_json(&mi);
	k = json_object_get_object_member(json_node_get_object(n), "x-kmig");
	assert_string_equal(json_object_get_string_member(k, "dirty-telemetry"), "ring");
	assert_int_equal(strlen(json_object_get_string_member(k, "telemetry-why")), sizeof(mi.kmig.telemetry_why));
	assert_int_equal(json_object_get_int_member(k, "ring-lost-pages"), 77);
	json_node_unref(n);
	mi.kmig.dirty_telemetry = "bpf";
	mi.kmig.telemetry_why[0] = '\0';
	n = qapi_migration_info_to_json(&mi);
	k = json_object_get_object_member(json_node_get_object(n), "x-kmig");
	assert_string_equal(json_object_get_string_member(k, "dirty-telemetry"), "bpf");
	assert_false(json_object_has_member(k, "telemetry-why"));
	json_node_unref(n);
}

/* ------------------------------------------------------- output, args */

static void test_ascii_output(void **state)
{
	JsonNode *n = json_node_new(JSON_NODE_VALUE);
	char *s;

	json_node_set_string(n, "caf\xc3\xa9 \xf0\x9f\x98\x80 \x01");
	s = qmp_json_to_string(n, FALSE);
	assert_string_equal(s, "\"caf\\u00e9 \\ud83d\\ude00 \\u0001\"");
	g_free(s);
	/* invalid UTF-8 cannot reach the wire as such */
	json_node_set_string(n, "a\xc3(b");
	s = qmp_json_to_string(n, FALSE);
	assert_string_equal(s, "\"a\\ufffd(b\"");
	g_free(s);
	json_node_unref(n);
}

/* Every double reaches the wire as JSON a parser takes back, the same
 * value: json-glib alone writes 2e100 as "2e+100.0". */
static void test_double_output_parses(void **state)
{
	static const double values[] = { 2e100, 1e16, -3e-300, 1.5, 0.0, 1e308, 123456789012345678.0 };
	JsonParser *p = json_parser_new();

	for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
		JsonBuilder *b = json_builder_new();
		JsonNode *n;
		char *s;

		json_builder_begin_object(b);
		json_builder_set_member_name(b, "v");
		json_builder_add_double_value(b, values[i]);
		json_builder_set_member_name(b, "s");
		json_builder_add_string_value(b, "1e5.0 \" e7.0");
		json_builder_end_object(b);
		n = json_builder_get_root(b);
		g_object_unref(b);
		for (int pretty = 0; pretty < 2; pretty++) {
			JsonObject *o;

			s = qmp_json_to_string(n, pretty);
			if (!json_parser_load_from_data(p, s, -1, NULL))
				fail_msg("not JSON: %s", s);
			o = json_node_get_object(json_parser_get_root(p));
			assert_true(json_object_get_double_member(o, "v") == values[i]);
			assert_string_equal(json_object_get_string_member(o, "s"), "1e5.0 \" e7.0");
			g_free(s);
		}
		json_node_unref(n);
	}
	g_object_unref(p);
}

/* Integers beyond int64 keep their sign and size (json-glib alone wraps
 * or saturates them), and a uint64 reads back whole. */
static void test_parse_big_integers(void **state)
{
	static const char text[] = "[9223372036854775808, -9223372036854775809, 18446744073709551615, "
				   "9223372036854775807, -1, 1.5e3, \"99999999999999999999\", 000012]";
	char *error = NULL;
	JsonNode *root = qmp_json_parse(text, strlen(text), &error);
	JsonArray *a;
	uint64_t v;

	assert_null(error);
	a = json_node_get_array(root);
	assert_true(qmp_json_get_uint64(json_array_get_element(a, 0), &v));
	assert_true(v == 9223372036854775808ull);
	assert_true(json_array_get_double_element(a, 1) < -9.2e18);
	assert_false(qmp_json_get_uint64(json_array_get_element(a, 1), &v));
	assert_true(qmp_json_get_uint64(json_array_get_element(a, 2), &v));
	assert_true(v == UINT64_MAX);
	assert_true(qmp_json_get_uint64(json_array_get_element(a, 3), &v));
	assert_true(v == 9223372036854775807ull);
	assert_false(qmp_json_get_uint64(json_array_get_element(a, 4), &v));
	assert_false(qmp_json_get_uint64(json_array_get_element(a, 5), &v));
	assert_string_equal(json_array_get_string_element(a, 6), "99999999999999999999");
	json_node_unref(root);
}

static void test_sanitized_copy(void **state)
{
	JsonBuilder *b = json_builder_new();
	JsonNode *n, *copy;
	char *s;

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "a");
	json_builder_begin_array(b);
	json_builder_add_double_value(b, INFINITY);
	json_builder_add_double_value(b, 1.5);
	json_builder_add_int_value(b, 7);
	json_builder_end_array(b);
	json_builder_set_member_name(b, "b");
	json_builder_add_double_value(b, NAN);
	json_builder_end_object(b);
	n = json_builder_get_root(b);
	g_object_unref(b);
	copy = qmp_json_sanitized_copy(n);
	s = qmp_json_to_string(copy, FALSE);
	assert_string_equal(s, "{\"a\":[null,1.5,7],\"b\":null}");
	g_free(s);
	json_node_unref(copy);
	json_node_unref(n);
}

static JsonObject *parse_object(const char *text)
{
	JsonParser *p = json_parser_new();
	JsonObject *o;

	assert_true(json_parser_load_from_data(p, text, -1, NULL));
	o = json_object_ref(json_node_get_object(json_parser_get_root(p)));
	g_object_unref(p);
	return o;
}

static void check_args(const struct qmp_arg_spec *spec, const char *text, const char *want_err)
{
	JsonObject *o = parse_object(text);
	GError *err = NULL;
	bool ok = qmp_check_args(spec, o, &err);

	if (want_err) {
		assert_false(ok);
		assert_non_null(err);
		assert_true(err->domain == QMP_ERROR);
		assert_int_equal(err->code, QMP_ERROR_GENERIC);
		assert_string_equal(err->message, want_err);
		g_error_free(err);
	} else {
		if (!ok)
			fail_msg("%s: %s", text, err->message);
	}
	json_object_unref(o);
}

static void test_check_args(void **state)
{
	static const struct qmp_arg_spec spec[] = {
		{ "s", QMP_ARG_STR, true },   { "b", QMP_ARG_BOOL, false },	  { "i", QMP_ARG_INT, false },
		{ "u", QMP_ARG_UINT64, false }, { "n", QMP_ARG_NUMBER, false }, { "o", QMP_ARG_OBJECT, false },
		{ "a", QMP_ARG_ARRAY, false },	{ "x", QMP_ARG_ANY, false },	  { NULL, 0, false },
	};

	check_args(spec, "{\"s\": \"v\"}", NULL);
	check_args(spec,
		   "{\"s\": \"\", \"b\": false, \"i\": -3, \"u\": 0, \"n\": 1.5, \"o\": {}, \"a\": [], \"x\": null}",
		   NULL);
	check_args(spec, "{\"s\": \"\", \"n\": 2}", NULL);
	check_args(spec, "{}", "Parameter 's' is missing");
	check_args(spec, "{\"s\": 1}", "Parameter 's' expects string");
	check_args(spec, "{\"s\": \"\", \"b\": 0}", "Parameter 'b' expects boolean");
	check_args(spec, "{\"s\": \"\", \"i\": 1.0}", "Parameter 'i' expects integer");
	check_args(spec, "{\"s\": \"\", \"u\": -1}", "Parameter 'u' expects uint64");
	check_args(spec, "{\"s\": \"\", \"n\": \"1\"}", "Parameter 'n' expects number");
	check_args(spec, "{\"s\": \"\", \"o\": []}", "Parameter 'o' expects object");
	check_args(spec, "{\"s\": \"\", \"a\": {}}", "Parameter 'a' expects array");
	check_args(spec, "{\"s\": \"\", \"zz\": 1}", "Parameter 'zz' is unexpected");
	/* QEMU's order: declared members first, unexpected ones last */
	check_args(spec, "{\"zz\": 1}", "Parameter 's' is missing");
	check_args(spec, "{\"zz\": 1, \"s\": 2}", "Parameter 's' expects string");
	/* no spec: no arguments */
	check_args(NULL, "{}", NULL);
	check_args(NULL, "{\"q\": 1}", "Parameter 'q' is unexpected");
}

static void test_tables(void **state)
{
	static const char *const schema_caps[] = {
		"xbzrle", "rdma-pin-all", "auto-converge", "events", "postcopy-ram", "x-colo", "release-ram",
		"return-path", "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
		"late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
		"zero-copy-send", "postcopy-preempt", "switchover-ack", "dirty-limit", "mapped-ram",
	};
	size_t i;

	assert_int_equal(QMP_MIGCAP__MAX, G_N_ELEMENTS(schema_caps));
	for (i = 0; i < G_N_ELEMENTS(schema_caps); i++) {
		assert_string_equal(qmp_migration_caps[i].name, schema_caps[i]);
		assert_int_equal(qmp_migration_cap_lookup(schema_caps[i]), (int)i);
		assert_int_equal(qmp_migration_caps[i].supported,
				 i == QMP_MIGCAP_EVENTS || i == QMP_MIGCAP_MULTIFD || i == QMP_MIGCAP_ZERO_COPY_SEND ||
					 i == QMP_MIGCAP_DIRTY_LIMIT);
	}
	assert_int_equal(qmp_migration_cap_lookup("nope"), -1);

	assert_string_equal(qmp_error_class_name(QMP_ERROR__MAX), "GenericError");
	for (i = 0; i < qmp_n_commands; i++) {
		assert_ptr_equal(qmp_command_lookup(qmp_commands[i].name), &qmp_commands[i]);
		/* only qmp_capabilities works before negotiation */
		assert_int_equal(!!(qmp_commands[i].flags & QMP_CMD_NEGOTIATION),
				 !strcmp(qmp_commands[i].name, "qmp_capabilities"));
	}
	assert_null(qmp_command_lookup("query-kvm"));
}

static void test_event_build(void **state)
{
	JsonNode *data = json_node_new(JSON_NODE_OBJECT);
	JsonNode *e;
	char *s;

	json_node_take_object(data, json_object_new());
	json_object_set_int_member(json_node_get_object(data), "pass", 2);
	e = qmp_event_build("MIGRATION_PASS", data, 1449669631239225);
	s = qmp_json_to_string(e, FALSE);
	assert_string_equal(s, "{\"event\":\"MIGRATION_PASS\",\"data\":{\"pass\":2},"
			       "\"timestamp\":{\"seconds\":1449669631,\"microseconds\":239225}}");
	g_free(s);
	json_node_unref(e);
	json_node_unref(data);
	/* no data, and the "no clock" timestamp of the spec */
	e = qmp_event_build("STOP", NULL, -1);
	s = qmp_json_to_string(e, FALSE);
	assert_string_equal(s, "{\"event\":\"STOP\",\"timestamp\":{\"seconds\":-1,\"microseconds\":-1}}");
	g_free(s);
	json_node_unref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_splitter_basic),
		cmocka_unit_test(test_splitter_errors),
		cmocka_unit_test(test_splitter_reset),
		cmocka_unit_test(test_migration_json_none),
		cmocka_unit_test(test_migration_json_socket_address),
		cmocka_unit_test(test_migration_json_exact),
		cmocka_unit_test(test_migration_json_values),
		cmocka_unit_test(test_migration_json_dirty_limit),
		cmocka_unit_test(test_ascii_output),
		cmocka_unit_test(test_double_output_parses),
		cmocka_unit_test(test_parse_big_integers),
		cmocka_unit_test(test_sanitized_copy),
		cmocka_unit_test(test_check_args),
		cmocka_unit_test(test_tables),
		cmocka_unit_test(test_event_build),
	};

	return cmocka_run_group_tests_name("qmp-json", tests, NULL, NULL);
}
