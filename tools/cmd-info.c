/* kmig info: a human view of a running instance's migration, like QEMU's
 * HMP "info migrate" (QEMU 7.2's lines), over QMP, so it works against
 * QEMU too.  And the --stats-file export of kmig run: query-migrate's
 * MigrationInfo as JSON lines while a migration runs.
 *
 * Everything read from the server is optional: a member that is absent or
 * of an unexpected type is simply not shown. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib-unix.h>

#include "qapi/qmp-json.h"
#include "qapi/qmp.h"
#include "machine/machine.h"
#include "tools/kmig.h"

/* ------------------------------------------------------ JSON helpers */

JsonObject *kmig_json_object(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static JsonArray *json_array_member(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

static bool node_is_number(JsonNode *n)
{
	if (!n || !JSON_NODE_HOLDS_VALUE(n))
		return false;
	GType t = json_node_get_value_type(n);

	return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

bool kmig_json_u64(JsonObject *o, const char *member, uint64_t *out)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	if (!node_is_number(n))
		return false;
	if (json_node_get_value_type(n) == G_TYPE_INT64) {
		/* QEMU's uint64 members above INT64_MAX come back wrapped */
		*out = (uint64_t)json_node_get_int(n);
		return true;
	}
	double d = json_node_get_double(n);

	if (!(d >= 0 && d < 18446744073709551616.0))
		return false;
	*out = (uint64_t)d;
	return true;
}

bool kmig_json_double(JsonObject *o, const char *member, double *out)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	if (!node_is_number(n))
		return false;
	*out = json_node_get_double(n);
	return true;
}

static const char *json_str_member(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
		       ? json_node_get_string(n) : NULL;
}

bool kmig_json_truthy(JsonObject *o, const char *member)
{
	JsonNode *n = o ? json_object_get_member(o, member) : NULL;

	if (!n || JSON_NODE_HOLDS_NULL(n))
		return false;
	if (JSON_NODE_HOLDS_OBJECT(n)) {
		JsonObject *obj = json_node_get_object(n);

		/* kmig's x-kmig-stall is {"stalled": bool, ...} */
		if (json_object_has_member(obj, "stalled"))
			return kmig_json_truthy(obj, "stalled");
		return json_object_get_size(obj) > 0;
	}
	if (JSON_NODE_HOLDS_ARRAY(n))
		return json_array_get_length(json_node_get_array(n)) > 0;
	switch (json_node_get_value_type(n)) {
	case G_TYPE_BOOLEAN:
		return json_node_get_boolean(n);
	case G_TYPE_INT64:
		return json_node_get_int(n) != 0;
	case G_TYPE_DOUBLE:
		return json_node_get_double(n) != 0;
	case G_TYPE_STRING: {
		const char *s = json_node_get_string(n);
		static const char *const no[] = { "", "0", "false", "no", "off", "none" };

		for (size_t i = 0; i < G_N_ELEMENTS(no); i++)
			if (!g_ascii_strcasecmp(s, no[i]))
				return false;
		return true;
	}
	default:
		return false;
	}
}

/* A scalar or a small structure, for "name: value" lines. */
static char *value_to_text(JsonNode *n)
{
	if (!n || JSON_NODE_HOLDS_NULL(n))
		return g_strdup("null");
	if (!JSON_NODE_HOLDS_VALUE(n))
		return qmp_json_to_string(n, FALSE);
	switch (json_node_get_value_type(n)) {
	case G_TYPE_BOOLEAN:
		return g_strdup(json_node_get_boolean(n) ? "true" : "false");
	case G_TYPE_INT64:
		return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
	case G_TYPE_DOUBLE:
		return g_strdup_printf("%g", json_node_get_double(n));
	case G_TYPE_STRING:
		return g_strdup(json_node_get_string(n));
	default:
		return qmp_json_to_string(n, FALSE);
	}
}

/* ------------------------------------------------------------- info */

enum unit { U_NONE, U_MS, U_KB, U_PAGES, U_TIMES };

struct field {
	const char *member;
	const char *label;
	enum unit unit;
	bool only_nonzero;	/* as HMP: shown only when not 0 */
};

static void print_fields(JsonObject *o, const struct field *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v;

		if (!kmig_json_u64(o, f[i].member, &v) || (f[i].only_nonzero && !v))
			continue;
		switch (f[i].unit) {
		case U_MS: printf("%s: %" PRIu64 " ms\n", f[i].label, v); break;
		case U_KB: printf("%s: %" PRIu64 " kbytes\n", f[i].label, v >> 10); break;
		case U_PAGES: printf("%s: %" PRIu64 " pages\n", f[i].label, v); break;
		case U_TIMES: printf("%s: %" PRIu64 " times\n", f[i].label, v); break;
		default: printf("%s: %" PRIu64 "\n", f[i].label, v); break;
		}
	}
}

static const struct field time_fields[] = {
	{ "total-time", "total time", U_MS, false },
	{ "expected-downtime", "expected downtime", U_MS, false },
	{ "downtime", "downtime", U_MS, false },
	{ "setup-time", "setup", U_MS, false },
};

static const struct field ram_fields_head[] = {
	{ "transferred", "transferred ram", U_KB, false },
};

static const struct field ram_fields[] = {
	{ "remaining", "remaining ram", U_KB, false },
	{ "total", "total ram", U_KB, false },
	{ "duplicate", "duplicate", U_PAGES, false },
	{ "skipped", "skipped", U_PAGES, false },
	{ "normal", "normal", U_PAGES, false },
	{ "normal-bytes", "normal bytes", U_KB, false },
	{ "dirty-sync-count", "dirty sync count", U_NONE, false },
	{ "page-size", "page size", U_KB, false },
	{ "multifd-bytes", "multifd bytes", U_KB, false },
	{ "pages-per-second", "pages-per-second", U_NONE, false },
	{ "dirty-pages-rate", "dirty pages rate", U_PAGES, true },
	{ "postcopy-requests", "postcopy request count", U_NONE, true },
	{ "precopy-bytes", "precopy ram", U_KB, true },
	{ "downtime-bytes", "downtime ram", U_KB, true },
	{ "postcopy-bytes", "postcopy ram", U_KB, true },
	{ "dirty-sync-missed-zero-copy", "Zero-copy-send fallbacks happened", U_TIMES, true },
};

static const struct field xbzrle_fields[] = {
	{ "cache-size", "cache size", U_NONE, false },	/* bytes, as HMP */
	{ "bytes", "xbzrle transferred", U_KB, false },
	{ "pages", "xbzrle pages", U_PAGES, false },
	{ "cache-miss", "xbzrle cache miss", U_PAGES, false },
	{ "overflow", "xbzrle overflow", U_NONE, false },
};

/* "parameters:" with every member the server reports, named and in the
 * order of the parameter table (savevm/params.h), with its unit. */
static void print_parameters(JsonObject *p)
{
	GString *line = g_string_new(NULL);

	for (size_t i = 0; p && i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];
		uint64_t v;

		if (d->capability)
			continue;
		if (d->type == MIGRATION_PARAM_STRING) {
			const char *str = json_str_member(p, d->name);
			char *shown = str && str[0] ? qmp_printable(str) : NULL;

			if (shown)	/* unset TLS members say nothing */
				g_string_append_printf(line, " %s: %s", d->name, shown);
			g_free(shown);
		} else if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM) {
			const char *mode = json_str_member(p, d->name);
			char *shown = mode ? qmp_printable(mode) : NULL;

			if (shown)
				g_string_append_printf(line, " %s: %s", d->name, shown);
			g_free(shown);
		} else if (kmig_json_u64(p, d->name, &v)) {
			g_string_append_printf(line, " %s: %" PRIu64 "%s%s", d->name, v, d->unit[0] ? " " : "", d->unit);
		}
	}
	if (line->len)
		printf("parameters:%s\n", line->str);
	g_string_free(line, TRUE);
}

/* Capabilities that are on, and the parameters kmig has, on two lines;
 * nothing if the server refuses the commands. */
static void print_caps_params(struct qmp_client *c)
{
	char err[512];
	JsonNode *ret = NULL;

	if (!qmp_client_exec(c, "query-migrate-capabilities", NULL, &ret, err, sizeof(err))) {
		if (JSON_NODE_HOLDS_ARRAY(ret)) {
			JsonArray *a = json_node_get_array(ret);
			GString *on = g_string_new(NULL);

			for (guint i = 0; i < json_array_get_length(a); i++) {
				JsonNode *e = json_array_get_element(a, i);
				JsonObject *cap = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
				const char *name = json_str_member(cap, "capability");

				if (name && kmig_json_truthy(cap, "state")) {
					char *p = qmp_printable(name);

					g_string_append_printf(on, "%s%s: on", on->len ? " " : "", p);
					g_free(p);
				}
			}
			printf("capabilities: %s\n", on->len ? on->str : "(all off)");
			g_string_free(on, TRUE);
		}
		json_node_unref(ret);
	}
	ret = NULL;
	if (!qmp_client_exec(c, "query-migrate-parameters", NULL, &ret, err, sizeof(err)))
		print_parameters(JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret) : NULL);
	json_node_unref(ret);
}

struct dev_time {
	char *name;		/* "name/instance-id" */
	uint64_t us;
};

static int dev_time_cmp(const void *a, const void *b)
{
	const struct dev_time *x = a, *y = b;

	if (x->us != y->us)
		return x->us < y->us ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* device-state-times (a list of {name, instance-id, save-time (us)}): the
 * most expensive first, with each device's share of the sum. */
static void print_device_times(JsonArray *a)
{
	guint n = json_array_get_length(a), k = 0;
	struct dev_time *d = g_new0(struct dev_time, n ? n : 1);
	uint64_t total = 0;
	int w = (int)strlen("device");

	for (guint i = 0; i < n; i++) {
		JsonNode *e = json_array_get_element(a, i);
		JsonObject *o = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
		uint64_t us, id;

		if (!o || !kmig_json_u64(o, "save-time", &us))
			continue;
		char *name = qmp_printable(json_str_member(o, "name"));

		d[k].name = kmig_json_u64(o, "instance-id", &id)
				    ? g_strdup_printf("%s/%" PRIu64, name, id) : g_strdup(name);
		g_free(name);
		d[k].us = us;
		total += us;
		if ((int)strlen(d[k].name) > w)
			w = (int)strlen(d[k].name);
		k++;
	}
	if (w > 48)
		w = 48;
	qsort(d, k, sizeof(*d), dev_time_cmp);
	printf("device state save times: %u device%s, %" PRIu64 " us in all\n", k, k == 1 ? "" : "s",
	       total);
	if (k) {
		/* "µs" is two bytes for one column */
		printf("  %-*s  %15s  %9s\n", w, "device", "save time (µs)", "share (%)");
		for (guint i = 0; i < k; i++)
			printf("  %-*s  %14" PRIu64 "  %9.1f\n", w, d[i].name, d[i].us,
			       total ? 100.0 * (double)d[i].us / (double)total : 0.0);
	}
	for (guint i = 0; i < k; i++)
		g_free(d[i].name);
	g_free(d);
}

/* One line's worth of a member: a scalar as is; an object as k=v ...; a
 * list of {name, instance-id, figure} as name/id=figure ..., the first
 * few only. */
#define BRIEF_MAX_ITEMS 6

static char *brief_text(JsonNode *n)
{
	if (!n || !(JSON_NODE_HOLDS_OBJECT(n) || JSON_NODE_HOLDS_ARRAY(n)))
		return value_to_text(n);
	GString *out = g_string_new(NULL);

	if (JSON_NODE_HOLDS_OBJECT(n)) {
		JsonObject *o = json_node_get_object(n);
		GList *members = json_object_get_members(o);

		for (GList *l = members; l; l = l->next) {
			char *v = value_to_text(json_object_get_member(o, l->data));

			g_string_append_printf(out, "%s%s=%s", out->len ? " " : "", (char *)l->data, v);
			g_free(v);
		}
		g_list_free(members);
		return g_string_free(out, FALSE);
	}
	JsonArray *a = json_node_get_array(n);
	guint len = json_array_get_length(a);

	for (guint i = 0; i < len && i < BRIEF_MAX_ITEMS; i++) {
		JsonNode *e = json_array_get_element(a, i);
		JsonObject *o = JSON_NODE_HOLDS_OBJECT(e) ? json_node_get_object(e) : NULL;
		const char *name = json_str_member(o, "name");
		char *item = NULL;

		if (name) {
			GList *members = json_object_get_members(o);
			uint64_t id, fig;
			const char *figure = NULL;

			for (GList *l = members; l && !figure; l = l->next)
				if (strcmp(l->data, "name") && strcmp(l->data, "instance-id") &&
				    kmig_json_u64(o, l->data, &fig))
					figure = l->data;
			g_list_free(members);
			GString *it = g_string_new(name);

			if (kmig_json_u64(o, "instance-id", &id))
				g_string_append_printf(it, "/%" PRIu64, id);
			if (figure)
				g_string_append_printf(it, "=%" PRIu64, fig);
			item = g_string_free(it, FALSE);
		} else {
			item = value_to_text(e);
		}
		g_string_append_printf(out, "%s%s", out->len ? " " : "", item);
		g_free(item);
	}
	if (len > BRIEF_MAX_ITEMS)
		g_string_append_printf(out, " (+%u more)", len - BRIEF_MAX_ITEMS);
	if (!len)
		g_string_append(out, "(none)");
	return g_string_free(out, FALSE);
}

static void print_member_line(const char *name, JsonNode *n)
{
	char *v = brief_text(n);
	char *pn = qmp_printable(name), *pv = qmp_printable(v);

	printf("  %s: %s\n", pn, pv);
	g_free(pn);
	g_free(pv);
	g_free(v);
}

/* kmig's counters ("x-kmig") and the other top-level "x-kmig-*" members
 * (x-kmig-stall, x-kmig-pending, ...), one short line each. */
static void print_kmig(JsonObject *info)
{
	JsonObject *k = kmig_json_object(info, "x-kmig");
	GList *top = json_object_get_members(info);
	bool header = false;

	if (k) {
		GList *members = json_object_get_members(k);

		printf("kmig:\n");
		header = true;
		for (GList *l = members; l; l = l->next)
			print_member_line(l->data, json_object_get_member(k, l->data));
		g_list_free(members);
	}
	for (GList *l = top; l; l = l->next) {
		const char *m = l->data;

		if (strncmp(m, "x-kmig-", 7))
			continue;
		if (!header) {
			printf("kmig:\n");
			header = true;
		}
		print_member_line(m + 7, json_object_get_member(info, m));
	}
	g_list_free(top);
}

static void print_info(JsonObject *info)
{
	const char *status = json_str_member(info, "status");
	const char *error = json_str_member(info, "error-desc");
	JsonArray *blocked = json_array_member(info, "blocked-reasons");
	uint64_t v;
	double d;

	if (blocked && json_array_get_length(blocked)) {
		printf("Outgoing migration blocked:\n");
		for (guint i = 0; i < json_array_get_length(blocked); i++) {
			JsonNode *e = json_array_get_element(blocked, i);
			char *t = value_to_text(e), *p = qmp_printable(t);

			printf("  %s\n", p);
			g_free(p);
			g_free(t);
		}
	}
	if (status) {
		char *ps = qmp_printable(status), *pe = error ? qmp_printable(error) : NULL;

		if (pe && !strcmp(status, "failed"))
			printf("Migration status: %s (%s)\n", ps, pe);
		else
			printf("Migration status: %s\n", ps);
		if (pe && strcmp(status, "failed"))
			printf("error: %s\n", pe);
		g_free(ps);
		g_free(pe);
	} else {
		printf("Migration status: none (no migration yet)\n");
	}
	print_fields(info, time_fields, G_N_ELEMENTS(time_fields));
	if (kmig_json_u64(info, "remaining", &v))
		printf("Remaining (bytes): %" PRIu64 "\n", v);

	JsonObject *ram = kmig_json_object(info, "ram");

	if (ram) {
		print_fields(ram, ram_fields_head, G_N_ELEMENTS(ram_fields_head));
		if (kmig_json_double(ram, "mbps", &d))
			printf("throughput: %0.2f mbps\n", d);
		print_fields(ram, ram_fields, G_N_ELEMENTS(ram_fields));
	}
	JsonObject *xb = kmig_json_object(info, "xbzrle-cache");

	if (xb) {
		print_fields(xb, xbzrle_fields, G_N_ELEMENTS(xbzrle_fields));
		if (kmig_json_double(xb, "cache-miss-rate", &d))
			printf("xbzrle cache miss rate: %0.2f\n", d);
		if (kmig_json_double(xb, "encoding-rate", &d))
			printf("xbzrle encoding rate: %0.2f\n", d);
	}
	if (kmig_json_u64(info, "cpu-throttle-percentage", &v))
		printf("cpu throttle percentage: %" PRIu64 "\n", v);
	if (kmig_json_u64(kmig_json_object(info, "vfio"), "transferred", &v))
		printf("vfio device transferred: %" PRIu64 " kbytes\n", v >> 10);

	JsonArray *dev = json_array_member(info, "device-state-times");

	if (dev)
		print_device_times(dev);
	print_kmig(info);
}

static void info_usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig info --qmp PATH\n"
		"\n"
		"Show the migration state of a running 'kmig run --qmp PATH' (or QEMU -qmp), as\n"
		"QEMU's HMP 'info migrate' does: the capabilities that are on and the parameters,\n"
		"status, times and RAM counters (query-migrate); 'Remaining (bytes)' (RAM and\n"
		"devices) when the server reports it; per-device save times (device-state-times)\n"
		"sorted by cost with each one's share; kmig's own counters (x-kmig).  What the\n"
		"server does not report is not shown.\n"
		"\n"
		"  --qmp PATH   the instance's QMP socket\n"
		"  -h, --help   this help\n"
		"\n"
		"Exit status: 0, or 1 if the QMP socket cannot be reached or does not answer.\n");
}

int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	const char *qmp = NULL;
	int o;

	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'q': qmp = optarg; break;
		case 'h': info_usage(stdout); return 0;
		default: info_usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kmig info: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!qmp) {
		fprintf(stderr, "kmig info: --qmp PATH is required (see kmig info --help)\n");
		return 2;
	}
	char err[512];
	struct qmp_client *c;
	JsonNode *ret = NULL;

	if (qmp_client_open(qmp, 0, &c, err, sizeof(err))) {
		fprintf(stderr, "kmig info: %s\n", err);
		return 1;
	}
	if (qmp_client_exec(c, "query-migrate", NULL, &ret, err, sizeof(err))) {
		fprintf(stderr, "kmig info: query-migrate: %s\n", err);
		qmp_client_close(c);
		return 1;
	}
	if (!JSON_NODE_HOLDS_OBJECT(ret)) {
		fprintf(stderr, "kmig info: query-migrate did not return an object\n");
		json_node_unref(ret);
		qmp_client_close(c);
		return 1;
	}
	print_caps_params(c);
	print_info(json_node_get_object(ret));
	json_node_unref(ret);
	qmp_client_close(c);
	return fflush(stdout) ? 1 : 0;
}

/* ------------------------------------------------ kmig run --stats-file */

/* How often the status is looked at between samples: a migration that
 * starts or ends is noticed within this, whatever the period. */
#define STATS_CHECK_MS 50
/* Lines waiting for a slow pipe reader, at most; more are dropped whole. */
#define STATS_PENDING_MAX (4u << 20)

struct stats_file {
	char *path;
	int fd;
	bool regular;
	unsigned int period_ms;
	struct machine *m;
	guint timer;
	bool in_progress;	/* the last check saw a migration running */
	gint64 next_due_us;	/* monotonic time of the next periodic line */
	char *last_final;	/* what identifies the last final state written */
	GString *pending;	/* non-regular files: what the reader has not taken yet */
	guint out_watch;
	bool write_failed;	/* reported; quiet until a write succeeds again */
	uint64_t dropped;
	struct migration_info *info;
};

static void stats_error(struct stats_file *s, const char *what, int e)
{
	if (!s->write_failed)
		fprintf(stderr, "kmig run: stats file '%s': %s: %s\n", s->path, what, strerror(e));
	s->write_failed = true;
}

static gboolean stats_flush_pending(gint fd, GIOCondition cond, gpointer data);

/* Write what is pending; returns false on a hard error. */
static bool stats_drain(struct stats_file *s)
{
	while (s->pending->len) {
		ssize_t n = write(s->fd, s->pending->str, s->pending->len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			stats_error(s, "write failed", errno);
			g_string_truncate(s->pending, 0);
			return false;
		}
		g_string_erase(s->pending, 0, n);
	}
	if (s->pending->len && !s->out_watch)
		s->out_watch = g_unix_fd_add(s->fd, G_IO_OUT | G_IO_ERR, stats_flush_pending, s);
	return true;
}

static gboolean stats_flush_pending(gint fd, GIOCondition cond, gpointer data)
{
	struct stats_file *s = data;

	(void)fd;
	(void)cond;
	s->out_watch = 0;
	stats_drain(s);
	/* stats_drain added a new watch if it is still not done */
	return G_SOURCE_REMOVE;
}

/* One whole line, in one write(2) on a regular file (O_APPEND): a reader,
 * or the file after a crash, never sees half of it; if the disk fills up
 * half-way, the half is cut off again.  On a pipe or a terminal nothing
 * blocks: what the reader does not take waits for it in memory. */
static void stats_write_line(struct stats_file *s, const char *line, size_t len)
{
	if (!s->regular) {
		if (s->pending->len + len > STATS_PENDING_MAX) {
			if (!s->dropped++)
				fprintf(stderr, "kmig run: stats file '%s': reader too slow, dropping lines\n",
					s->path);
			return;
		}
		g_string_append_len(s->pending, line, (gssize)len);
		if (!s->out_watch && stats_drain(s))
			s->write_failed = false;
		return;
	}
	off_t before = lseek(s->fd, 0, SEEK_END);
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(s->fd, line + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : ENOSPC;

			if (done && before >= 0 && ftruncate(s->fd, before))
				e = errno;
			stats_error(s, "write failed", e);
			return;
		}
		done += (size_t)n;
	}
	s->write_failed = false;
}

static void stats_write_info(struct stats_file *s, const struct migration_info *info)
{
	/* query-migrate's own text, one member added at its end */
	char *json = qapi_migration_info_to_string(info, FALSE);
	size_t n = strlen(json);

	while (n && g_ascii_isspace(json[n - 1]))
		n--;
	if (!n || json[n - 1] != '}') {
		g_free(json);
		return;
	}
	size_t body = --n;	/* what precedes the closing brace */

	while (body && g_ascii_isspace(json[body - 1]))
		body--;
	GString *line = g_string_new_len(json, (gssize)n);

	g_string_append_printf(line, "%s\"x-kmig-timestamp-ms\":%" G_GINT64_FORMAT "}\n",
			       body && json[body - 1] == '{' ? "" : ",", g_get_real_time() / 1000);
	stats_write_line(s, line->str, line->len);
	g_string_free(line, TRUE);
	g_free(json);
}

static bool status_final(enum migration_status st)
{
	return st == MIGRATION_STATUS_COMPLETED || st == MIGRATION_STATUS_FAILED ||
	       st == MIGRATION_STATUS_CANCELLED;
}

/* Look at the migration; write a line if one is due. */
static void stats_check(struct stats_file *s)
{
	gint64 now = g_get_monotonic_time();
	struct migration_info *info = s->info;	/* tens of KiB: not on the stack */

	machine_query_migrate(s->m, info);
	if (info->status == MIGRATION_STATUS_NONE)
		return;
	if (!status_final(info->status)) {
		if (!s->in_progress || now >= s->next_due_us) {
			stats_write_info(s, info);
			if (!s->in_progress || now - s->next_due_us >= (gint64)s->period_ms * 1000)
				s->next_due_us = now + (gint64)s->period_ms * 1000;
			else
				s->next_due_us += (gint64)s->period_ms * 1000;
			s->in_progress = true;
		}
		return;
	}
	/* A final state: once per migration.  One that started and ended
	 * between two looks is told from the last one by its figures (not the
	 * x-kmig counters: they may move while no migration runs). */
	char *id = g_strdup_printf("%d %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %.*s",
				   (int)info->status, (int)info->is_incoming, info->total_time_ms,
				   info->setup_time_ms, info->downtime_ms, info->ram.transferred,
				   (int)sizeof(info->error_desc), info->has_error ? info->error_desc : "");

	if (s->in_progress || !s->last_final || strcmp(id, s->last_final))
		stats_write_info(s, info);
	g_free(s->last_final);
	s->last_final = id;
	s->in_progress = false;
}

static gboolean stats_tick(gpointer data)
{
	stats_check(data);
	return G_SOURCE_CONTINUE;
}

int stats_file_open(const char *path, unsigned int period_ms, struct stats_file **out, char *err,
		    size_t errlen)
{
	/* O_NONBLOCK: a FIFO without a reader is an error now rather than a
	 * hang, and a full pipe never blocks the main loop */
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644);
	struct stat st;

	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot open stats file '%s': %s%s", path, strerror(e),
			 e == ENXIO ? " (a FIFO needs its reader first)" : "");
		return -e;
	}
	if (fstat(fd, &st)) {
		int e = errno;

		snprintf(err, errlen, "cannot open stats file '%s': %s", path, strerror(e));
		close(fd);
		return -e;
	}
	struct stats_file *s = g_new0(struct stats_file, 1);

	s->path = g_strdup(path);
	s->fd = fd;
	s->regular = S_ISREG(st.st_mode);
	s->period_ms = period_ms;
	s->pending = g_string_new(NULL);
	s->info = g_new0(struct migration_info, 1);
	*out = s;
	return 0;
}

void stats_file_start(struct stats_file *s, struct machine *m)
{
	if (!s)
		return;
	s->m = m;
	s->timer = g_timeout_add(MIN(s->period_ms, STATS_CHECK_MS), stats_tick, s);
}

void stats_file_close(struct stats_file *s)
{
	if (!s)
		return;
	if (s->timer) {
		g_source_remove(s->timer);
		/* an end reached since the last check still gets its line */
		stats_check(s);
	}
	if (s->out_watch)
		g_source_remove(s->out_watch);
	s->out_watch = 0;
	if (s->pending->len) {
		/* one last try, without waiting for a reader that is not there */
		for (;;) {
			ssize_t n = write(s->fd, s->pending->str, s->pending->len);

			if (n < 0 && errno == EINTR)
				continue;
			if (n > 0 && (size_t)n < s->pending->len) {
				g_string_erase(s->pending, 0, n);
				continue;
			}
			break;
		}
	}
	close(s->fd);
	g_string_free(s->pending, TRUE);
	g_free(s->last_final);
	g_free(s->info);
	g_free(s->path);
	g_free(s);
}
