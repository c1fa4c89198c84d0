/* qapi/qmp-json.c — JSON output helpers for QMP: serialisation the way
 * QMP sends it (one line, ASCII), integer clamping, error classes, events.
 */
#include "qapi/qmp-internal.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const char *const error_class_names[QMP_ERROR__MAX] = {
	[QMP_ERROR_GENERIC] = "GenericError",
	[QMP_ERROR_COMMAND_NOT_FOUND] = "CommandNotFound",
	[QMP_ERROR_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
	[QMP_ERROR_DEVICE_NOT_FOUND] = "DeviceNotFound",
	[QMP_ERROR_KVM_MISSING_CAP] = "KVMMissingCap",
};

const char *qmp_error_class_name(enum qmp_error_class c)
{
	if ((unsigned int)c >= QMP_ERROR__MAX)
		return error_class_names[QMP_ERROR_GENERIC];
	return error_class_names[c];
}

GQuark qmp_error_quark(void)
{
	return g_quark_from_static_string("kmig-qmp-error-quark");
}

/* Escape every non-ASCII character of a valid JSON text as \uXXXX.  Bytes
 * >= 0x80 can only occur inside strings, where an escape means the same. */
static char *ascii_escape(const char *s)
{
	GString *out;
	const char *p;

	for (p = s; *p; p++)
		if ((unsigned char)*p >= 0x80)
			break;
	if (!*p)
		return g_strdup(s);

	out = g_string_sized_new(strlen(s) + 16);
	g_string_append_len(out, s, p - s);
	while (*p) {
		unsigned char c = (unsigned char)*p;
		gunichar u;

		if (c < 0x80) {
			g_string_append_c(out, (char)c);
			p++;
			continue;
		}
		u = g_utf8_get_char_validated(p, -1);
		if (u == (gunichar)-1 || u == (gunichar)-2) {
			g_string_append(out, "\\ufffd");
			p++;
			continue;
		}
		if (u >= 0x10000) {
			gunichar v = u - 0x10000;

			g_string_append_printf(out, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
		} else {
			g_string_append_printf(out, "\\u%04x", u);
		}
		p = g_utf8_next_char(p);
	}
	return g_string_free(out, FALSE);
}

static size_t count_members(JsonNode *node);

static void add_member_count(JsonObject *o, const gchar *name, JsonNode *member, gpointer data)
{
	*(size_t *)data += 1 + count_members(member);
}

static void add_element_count(JsonArray *a, guint i, JsonNode *element, gpointer data)
{
	*(size_t *)data += count_members(element);
}

/* Members of every object in node, nested ones included. */
static size_t count_members(JsonNode *node)
{
	size_t n = 0;

	if (JSON_NODE_HOLDS_OBJECT(node))
		json_object_foreach_member(json_node_get_object(node), add_member_count, &n);
	else if (JSON_NODE_HOLDS_ARRAY(node))
		json_array_foreach_element(json_node_get_array(node), add_element_count, &n);
	return n;
}

/* json-glib 1.6 writes a double with no '.' in its text followed by
 * ".0", and "2e+100" becomes "2e+100.0": not JSON, and a client's parser
 * rejects the whole reply (found by fuzz-qmp echoing an "id").  Drop a
 * ".0" that follows an exponent, outside strings, in place. */
static void fix_exponent_fractions(char *s)
{
	bool in_string = false;
	char *w = s;
	const char *r = s;

	while (*r) {
		char c = *r++;

		*w++ = c;
		if (in_string) {
			if (c == '\\' && *r)
				*w++ = *r++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
			continue;
		}
		if (c != 'e' && c != 'E')
			continue;
		if (*r == '+' || *r == '-')
			*w++ = *r++;
		if (!g_ascii_isdigit(*r))
			continue;	/* the 'e' of true or false */
		while (g_ascii_isdigit(*r))
			*w++ = *r++;
		if (r[0] == '.' && r[1] == '0' && !g_ascii_isdigit(r[2]))
			r += 2;
	}
	*w = '\0';
}

/* What json-glib takes but QMP must not: a \u0000 escape (json-glib
 * decodes it, and a C string then ends early: "query-\u0000status" could
 * run something else than what was sent) and a key given twice in one
 * object (json-glib keeps the last one silently).  The text is one whole
 * value that json-glib parsed, with double-quoted strings only (the
 * splitter's output), so every ':' outside a string is one member. */
static const char *strict_check(const char *text, JsonNode *root)
{
	size_t colons = 0;
	bool in_string = false;

	for (const char *p = text; *p; p++) {
		if (!in_string) {
			colons += *p == ':';
			in_string = *p == '"';
		} else if (*p == '"') {
			in_string = false;
		} else if (*p == '\\') {
			if (p[1] == 'u' && !strncmp(p + 2, "0000", 4))
				return "JSON parse error, \\u0000 is not supported";
			if (p[1])
				p++;
		}
	}
	return colons != count_members(root) ? "JSON parse error, duplicate key in an object" : NULL;
}

/* Does the integer literal [p, p+n) (optional '-', digits) fit in int64? */
static bool int_literal_fits(const char *p, size_t n)
{
	bool neg = *p == '-';
	const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
	size_t digits = n - neg;

	p += neg;
	while (digits > 1 && *p == '0') {
		p++;
		digits--;
	}
	return digits < 19 || (digits == 19 && memcmp(p, lim, 19) <= 0);
}

/* json-glib saturates or wraps an integer beyond int64 (2^63 arrives as
 * -2^63, 2^64 as -1), so that a uint64 above INT64_MAX could not be told
 * from a negative number.  Like QEMU's parser, turn such a literal into a
 * number with a fraction (a double) first: qmp_json_get_uint64() then
 * takes a whole one below 2^64.  NULL when nothing needs it. */
static char *widen_big_integers(const char *text, size_t len)
{
	GString *out = NULL;
	bool in_string = false;
	size_t done = 0;

	for (size_t i = 0; i < len; i++) {
		char c = text[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"') {
			in_string = true;
			continue;
		}
		if (c != '-' && !g_ascii_isdigit(c))
			continue;
		size_t end = i + 1;

		while (end < len && (g_ascii_isdigit(text[end]) || strchr(".eE+-", text[end])))
			end++;
		size_t n = end - i;
		bool integer = strcspn(text + i, ".eE") >= n && n > (size_t)(c == '-');

		if (integer && !int_literal_fits(text + i, n)) {
			if (!out)
				out = g_string_sized_new(len + 16);
			g_string_append_len(out, text + done, (gssize)(end - done));
			g_string_append(out, ".0");
			done = end;
		}
		i = end - 1;
	}
	if (!out)
		return NULL;
	g_string_append_len(out, text + done, (gssize)(len - done));
	return g_string_free(out, FALSE);
}

bool qmp_json_get_uint64(JsonNode *n, uint64_t *out)
{
	GType t = n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n) : G_TYPE_INVALID;

	if (t == G_TYPE_INT64 && json_node_get_int(n) >= 0) {
		*out = (uint64_t)json_node_get_int(n);
		return true;
	}
	if (t == G_TYPE_DOUBLE) {
		double d = json_node_get_double(n);

		/* only what widen_big_integers() made: whole, 2^63 .. 2^64 - 1;
		 * a double has no 2^64 - 1, and the literals near it round up
		 * to 2^64: that is UINT64_MAX */
		if (d >= 9223372036854775808.0 && d <= 18446744073709551616.0 && d == floor(d)) {
			*out = d < 18446744073709551616.0 ? (uint64_t)d : UINT64_MAX;
			return true;
		}
	}
	return false;
}

JsonNode *qmp_json_parse(const char *raw, size_t len, char **error)
{
	char *widened = widen_big_integers(raw, len);
	const char *text = widened ? widened : raw;
	JsonParser *parser = json_parser_new();
	GError *gerr = NULL;
	JsonNode *root = NULL;
	const char *bad;

	*error = NULL;
	if (widened)
		len = strlen(widened);
	if (!json_parser_load_from_data(parser, text, (gssize)len, &gerr)) {
		const char *m = gerr->message;

		if (g_str_has_prefix(m, "<data>:"))
			m += strlen("<data>:");
		*error = g_strdup_printf("JSON parse error, %s", m);
		char *pe = strstr(*error, "Parse error: ");

		if (pe)
			memmove(pe, pe + strlen("Parse error: "), strlen(pe + strlen("Parse error: ")) + 1);
		g_error_free(gerr);
	} else if (!json_parser_get_root(parser)) {
		*error = g_strdup("JSON parse error, expecting value");
	} else if ((bad = strict_check(text, json_parser_get_root(parser)))) {
		*error = g_strdup(bad);
	} else {
		root = json_node_copy(json_parser_get_root(parser));
	}
	g_object_unref(parser);
	g_free(widened);
	return root;
}

/* A node as QMP sends it: valid JSON, ASCII only. */
char *qmp_json_to_string(JsonNode *node, gboolean pretty)
{
	JsonGenerator *gen = json_generator_new();
	char *raw, *out;

	json_generator_set_pretty(gen, pretty);
	if (pretty)
		json_generator_set_indent(gen, 2);
	json_generator_set_root(gen, node);
	raw = json_generator_to_data(gen, NULL);
	g_object_unref(gen);
	fix_exponent_fractions(raw);
	out = ascii_escape(raw);
	g_free(raw);
	return out;
}

void qmp_builder_add_uint(JsonBuilder *b, const char *name, uint64_t v)
{
	if (name)
		json_builder_set_member_name(b, name);
	json_builder_add_int_value(b, v > (uint64_t)G_MAXINT64 ? G_MAXINT64 : (gint64)v);
}

void qmp_builder_add_int(JsonBuilder *b, const char *name, int64_t v)
{
	if (name)
		json_builder_set_member_name(b, name);
	json_builder_add_int_value(b, v);
}

void qmp_builder_add_double(JsonBuilder *b, const char *name, double v)
{
	if (name)
		json_builder_set_member_name(b, name);
	json_builder_add_double_value(b, isfinite(v) ? v : 0.0);
}

static void sanitize_in_place(JsonNode *node);

static void sanitize_member(JsonObject *o, const gchar *name, JsonNode *member, gpointer data)
{
	sanitize_in_place(member);
}

static void sanitize_element(JsonArray *a, guint i, JsonNode *element, gpointer data)
{
	sanitize_in_place(element);
}

static void sanitize_in_place(JsonNode *node)
{
	switch (JSON_NODE_TYPE(node)) {
	case JSON_NODE_OBJECT:
		json_object_foreach_member(json_node_get_object(node), sanitize_member, NULL);
		break;
	case JSON_NODE_ARRAY:
		json_array_foreach_element(json_node_get_array(node), sanitize_element, NULL);
		break;
	case JSON_NODE_VALUE:
		if (json_node_get_value_type(node) == G_TYPE_DOUBLE && !isfinite(json_node_get_double(node)))
			json_node_init_null(node);
		break;
	case JSON_NODE_NULL:
		break;
	}
}

JsonNode *qmp_json_sanitized_copy(JsonNode *node)
{
	JsonNode *copy = json_node_copy(node);

	sanitize_in_place(copy);
	return copy;
}

JsonNode *qmp_event_build(const char *name, JsonNode *data, int64_t when_us)
{
	JsonBuilder *b = json_builder_new();
	JsonNode *root;

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "event");
	json_builder_add_string_value(b, name);
	if (data) {
		json_builder_set_member_name(b, "data");
		json_builder_add_value(b, json_node_copy(data)); /* takes it */
	}
	json_builder_set_member_name(b, "timestamp");
	json_builder_begin_object(b);
	if (when_us < 0) {
		qmp_builder_add_int(b, "seconds", -1);
		qmp_builder_add_int(b, "microseconds", -1);
	} else {
		qmp_builder_add_int(b, "seconds", when_us / G_USEC_PER_SEC);
		qmp_builder_add_int(b, "microseconds", when_us % G_USEC_PER_SEC);
	}
	json_builder_end_object(b);
	json_builder_end_object(b);
	root = json_builder_get_root(b);
	g_object_unref(b);
	return root;
}
