/* qapi/json-splitter.c — find complete top-level JSON values in a byte
 * stream (QMP input is a stream of JSON values, newline-delimited or not).
 * Values are handed over as text and parsed by json-glib; this only tracks
 * strings, escapes and nesting, like QEMU's json-streamer.
 *
 * Single-quoted strings (a QEMU extension) are rewritten as double-quoted
 * ones, and \' becomes ', because json-glib's scanner takes no escapes in
 * single-quoted strings.
 */
#include "qapi/qmp-internal.h"

#include <stdio.h>
#include <string.h>

struct json_splitter {
	json_splitter_fn fn;
	void *opaque;
	size_t max_size;
	unsigned int max_depth;

	GString *buf;		/* the value so far (unless skipping) */
	size_t raw;		/* input bytes of the value so far */
	unsigned int depth;	/* open '{' and '[' */
	char quote;		/* in a string: its quote character */
	bool escape;		/* in a string, after a backslash */
	bool scalar;		/* in a top-level number or keyword */
	bool active;		/* a value has started */
	bool skipping;		/* skipping this value, for skip_desc */
	char skip_desc[96];
};

struct json_splitter *json_splitter_new(size_t max_size, unsigned int max_depth, json_splitter_fn fn,
					void *opaque)
{
	struct json_splitter *js = g_new0(struct json_splitter, 1);

	js->fn = fn;
	js->opaque = opaque;
	js->max_size = max_size;
	js->max_depth = max_depth;
	js->buf = g_string_sized_new(256);
	return js;
}

void json_splitter_reset(struct json_splitter *js)
{
	g_string_truncate(js->buf, 0);
	/* don't keep a huge buffer around after a big message */
	if (js->buf->allocated_len > 65536) {
		g_string_free(js->buf, TRUE);
		js->buf = g_string_sized_new(256);
	}
	js->raw = 0;
	js->depth = 0;
	js->quote = 0;
	js->escape = false;
	js->scalar = false;
	js->active = false;
	js->skipping = false;
}

void json_splitter_free(struct json_splitter *js)
{
	if (!js)
		return;
	g_string_free(js->buf, TRUE);
	g_free(js);
}

static void put(struct json_splitter *js, char c)
{
	if (!js->skipping)
		g_string_append_c(js->buf, c);
}

static void emit(struct json_splitter *js)
{
	if (js->skipping) {
		char why[sizeof(js->skip_desc)];

		memcpy(why, js->skip_desc, sizeof(why));
		json_splitter_reset(js);
		js->fn(js->opaque, NULL, 0, why);
		return;
	}
	{
		/* the callback may feed nothing back, but keep it simple: hand
		 * over our buffer and start a fresh one */
		GString *msg = js->buf;

		js->buf = g_string_sized_new(256);
		json_splitter_reset(js);
		js->fn(js->opaque, msg->str, msg->len, NULL);
		g_string_free(msg, TRUE);
	}
}

static void lexical_error(struct json_splitter *js, unsigned char c)
{
	char desc[64];

	if (c >= 0x20 && c < 0x7f)
		snprintf(desc, sizeof(desc), "JSON parse error, stray '%c'", c);
	else
		snprintf(desc, sizeof(desc), "JSON parse error, invalid byte 0x%02x", c);
	json_splitter_reset(js);
	js->fn(js->opaque, NULL, 0, desc);
}

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_bad_byte(unsigned char c)
{
	return c == 0xfe || c == 0xff;
}

static void start_skipping(struct json_splitter *js, const char *what, size_t limit)
{
	if (js->skipping)
		return;
	js->skipping = true;
	snprintf(js->skip_desc, sizeof(js->skip_desc), "JSON parse error, %s (limit %zu)", what, limit);
	g_string_truncate(js->buf, 0);
}

/* Account one input byte of the current value. */
static void count(struct json_splitter *js)
{
	js->active = true;
	if (++js->raw > js->max_size)
		start_skipping(js, "message too large", js->max_size);
}

const char *json_splitter_skipping(const struct json_splitter *js)
{
	return js->skipping ? js->skip_desc : NULL;
}

void json_splitter_feed(struct json_splitter *js, const char *data, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];

		if (js->quote) {
			if (c < 0x20 || is_bad_byte(c)) {
				lexical_error(js, c);
				continue;
			}
			count(js);
			if (js->escape) {
				js->escape = false;
				if (c == '\'') {
					put(js, '\'');
				} else {
					put(js, '\\');
					put(js, (char)c);
				}
				continue;
			}
			if (c == '\\') {
				js->escape = true;
			} else if (c == (unsigned char)js->quote) {
				put(js, '"');
				js->quote = 0;
				if (js->depth == 0)
					emit(js);
			} else if (c == '"') {
				/* only possible in a single-quoted string */
				put(js, '\\');
				put(js, '"');
			} else {
				put(js, (char)c);
			}
			continue;
		}

		if (js->scalar) {
			if (is_space(c) || c == '{' || c == '}' || c == '[' || c == ']' || c == '"' ||
			    c == '\'' || c == ',' || c == ':') {
				emit(js);
				/* and look at c again at top level */
			} else if (c < 0x20 || is_bad_byte(c)) {
				lexical_error(js, c);
				continue;
			} else {
				count(js);
				put(js, (char)c);
				continue;
			}
		}

		if (is_space(c)) {
			if (js->depth > 0) {
				count(js);
				put(js, (char)c);
			}
			continue;
		}
		if (c < 0x20 || is_bad_byte(c)) {
			lexical_error(js, c);
			continue;
		}
		switch (c) {
		case '{':
		case '[':
			count(js);
			put(js, (char)c);
			if (++js->depth > js->max_depth)
				start_skipping(js, "nesting too deep", js->max_depth);
			break;
		case '}':
		case ']':
			if (js->depth == 0) {
				lexical_error(js, c);
				break;
			}
			count(js);
			put(js, (char)c);
			if (--js->depth == 0)
				emit(js);
			break;
		case '"':
		case '\'':
			count(js);
			put(js, '"');
			js->quote = (char)c;
			break;
		default:
			count(js);
			put(js, (char)c);
			if (js->depth == 0)
				js->scalar = true;
			break;
		}
	}
}
