/* qapi/qmp-commands.c — the QMP commands kmig implements: a table of
 * name, argument spec and handler.  Arguments are checked generically
 * against the spec before a handler runs (qmp_check_args), with QEMU's
 * error messages, so handlers only look at well-typed members.
 */
#include "qapi/qmp-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* QEMU's MAX_MIGRATE_DOWNTIME, in ms */
/* ------------------------------------------------------------- helpers */

static JsonNode *empty_object(void)
{
	JsonNode *n = json_node_new(JSON_NODE_OBJECT);

	json_node_take_object(n, json_object_new());
	return n;
}

static JsonNode *builder_finish(JsonBuilder *b)
{
	JsonNode *n = json_builder_get_root(b);

	g_object_unref(b);
	return n;
}

/* Result of a machine_*() call that returns 0 or -errno with err. */
static JsonNode *machine_result(int ret, const char *err, GError **errp)
{
	if (ret >= 0)
		return empty_object();
	g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "%s", err[0] ? err : g_strerror(-ret));
	return NULL;
}

static bool arg_bool(JsonObject *args, const char *name)
{
	JsonNode *n = json_object_get_member(args, name);

	return n && json_node_get_boolean(n);
}

/* An optional enum member (its spec says string): *out is its index in
 * names (NULL-terminated), dflt when absent.  Any other string gets the
 * error QEMU's input visitor gives. */
static bool arg_enum(JsonObject *args, const char *name, const char *const *names, int dflt, int *out,
		     GError **err)
{
	JsonNode *n = json_object_get_member(args, name);
	const char *v;

	*out = dflt;
	if (!n)
		return true;
	v = json_node_get_string(n);
	for (int i = 0; names[i]; i++) {
		if (!strcmp(v, names[i])) {
			*out = i;
			return true;
		}
	}
	g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' does not accept value '%s'", name, v);
	return false;
}

/* ------------------------------------------------------ argument checks */

static const char *type_word(enum qmp_arg_type t)
{
	switch (t) {
	case QMP_ARG_STR:
	case QMP_ARG_STR_OR_NULL:
		return "string";
	case QMP_ARG_BOOL:
		return "boolean";
	case QMP_ARG_INT:
		return "integer";
	case QMP_ARG_UINT64:
		return "uint64";
	case QMP_ARG_NUMBER:
		return "number";
	case QMP_ARG_OBJECT:
		return "object";
	case QMP_ARG_ARRAY:
		return "array";
	case QMP_ARG_ANY:
		break;
	}
	return "value";
}

static bool has_type(JsonNode *n, enum qmp_arg_type t)
{
	GType vt = JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n) : G_TYPE_INVALID;

	switch (t) {
	case QMP_ARG_STR:
		return vt == G_TYPE_STRING;
	case QMP_ARG_STR_OR_NULL:
		return vt == G_TYPE_STRING || JSON_NODE_HOLDS_NULL(n);
	case QMP_ARG_BOOL:
		return vt == G_TYPE_BOOLEAN;
	case QMP_ARG_INT:
		return vt == G_TYPE_INT64;
	case QMP_ARG_UINT64: {
		uint64_t v;

		return qmp_json_get_uint64(n, &v);
	}
	case QMP_ARG_NUMBER:
		return vt == G_TYPE_INT64 || vt == G_TYPE_DOUBLE;
	case QMP_ARG_OBJECT:
		return JSON_NODE_HOLDS_OBJECT(n);
	case QMP_ARG_ARRAY:
		return JSON_NODE_HOLDS_ARRAY(n);
	case QMP_ARG_ANY:
		return true;
	}
	return false;
}

/* A QMP_ARG_UINT64 argument that check_args() has let through. */
static uint64_t node_uint64(JsonNode *n)
{
	uint64_t v = 0;

	qmp_json_get_uint64(n, &v);
	return v;
}

static bool check_args_prefixed(const struct qmp_arg_spec *spec, JsonObject *args, const char *prefix,
				GError **err)
{
	const struct qmp_arg_spec *a;
	GList *members, *l;
	bool ok = true;

	for (a = spec; a && a->name; a++) {
		JsonNode *n = json_object_get_member(args, a->name);

		if (!n) {
			if (a->required) {
				g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s%s' is missing",
					    prefix, a->name);
				return false;
			}
			continue;
		}
		if (!has_type(n, a->type)) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s%s' expects %s", prefix,
				    a->name, type_word(a->type));
			return false;
		}
	}

	members = json_object_get_members(args);
	for (l = members; l; l = l->next) {
		const char *name = l->data;

		for (a = spec; a && a->name; a++)
			if (!strcmp(a->name, name))
				break;
		if (!a || !a->name) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s%s' is unexpected", prefix,
				    name);
			ok = false;
			break;
		}
	}
	g_list_free(members);
	return ok;
}

bool qmp_check_args(const struct qmp_arg_spec *spec, JsonObject *args, GError **err)
{
	return check_args_prefixed(spec, args, "", err);
}

/* ---------------------------------------------------- migration tables */

const struct qmp_migration_cap_info qmp_migration_caps[QMP_MIGCAP__MAX] = {
#define QMP_CAP_INFO(id, name, supported) [QMP_MIGCAP_##id] = { name, supported },
	QMP_MIGRATION_CAPABILITIES(QMP_CAP_INFO)
#undef QMP_CAP_INFO
};

int qmp_migration_cap_lookup(const char *name)
{
	int i;

	for (i = 0; i < QMP_MIGCAP__MAX; i++)
		if (!strcmp(qmp_migration_caps[i].name, name))
			return i;
	return -1;
}

/* QEMU's MigrationParameters members kmig does not take (the reference
 * schema's, plus those QEMU 7.2 still had): refused as not supported yet.
 * Those kmig takes are rows of savevm/params.h's table. */
static const char *const unsupported_params[] = {
	"announce-initial", "announce-max", "announce-rounds", "announce-step",
	"throttle-trigger-threshold", "cpu-throttle-initial", "cpu-throttle-increment", "cpu-throttle-tailslow",
	"x-checkpoint-delay", "xbzrle-cache-size",
	"max-postcopy-bandwidth", "max-cpu-throttle", "multifd-compression", "multifd-zlib-level",
	"multifd-qatzip-level", "multifd-zstd-level", "block-bitmap-mapping", "mode", "zero-page-detection",
	"direct-io", "cpr-exec-command",
	/* QEMU 7.2 only */
	"compress-level", "compress-threads", "compress-wait-thread", "decompress-threads", "block-incremental",
};

/* ------------------------------------------------------------ commands */

static JsonNode *cmd_qmp_capabilities(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				      GError **err)
{
	JsonNode *en = json_object_get_member(args, "enable");
	bool want_oob = false;

	if (en) {
		JsonArray *a = json_node_get_array(en);
		guint i, n = json_array_get_length(a);

		for (i = 0; i < n; i++) {
			JsonNode *e = json_array_get_element(a, i);
			const char *name;

			if (!has_type(e, QMP_ARG_STR)) {
				g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'enable[%u]' expects string",
					    i);
				return NULL;
			}
			name = json_node_get_string(e);
			if (strcmp(name, "oob")) {
				g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC,
					    "Parameter 'enable[%u]' does not accept value '%s'", i, name);
				return NULL;
			}
			want_oob = true;
		}
	}
	if (qmp_conn_negotiated(c)) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
			    "Capabilities negotiation is already complete, command ignored");
		return NULL;
	}
	if (want_oob) {
		/* QMPCapability has only "oob", and kmig does not offer it */
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Capability 'oob' not available");
		return NULL;
	}
	qmp_conn_set_negotiated(c);
	return empty_object();
}

static JsonNode *cmd_query_commands(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				    GError **err)
{
	JsonBuilder *b = json_builder_new();
	size_t i;

	json_builder_begin_array(b);
	for (i = 0; i < qmp_n_commands; i++) {
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "name");
		json_builder_add_string_value(b, qmp_commands[i].name);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	return builder_finish(b);
}

JsonNode *qmp_version_json(void)
{
	JsonBuilder *b = json_builder_new();

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "qemu");
	json_builder_begin_object(b);
	qmp_builder_add_int(b, "micro", QMP_QEMU_MICRO);
	qmp_builder_add_int(b, "minor", QMP_QEMU_MINOR);
	qmp_builder_add_int(b, "major", QMP_QEMU_MAJOR);
	json_builder_end_object(b);
	json_builder_set_member_name(b, "package");
	json_builder_add_string_value(b, QMP_PACKAGE);
	json_builder_end_object(b);
	return builder_finish(b);
}

static JsonNode *cmd_query_version(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				   GError **err)
{
	return qmp_version_json();
}

static JsonNode *cmd_query_status(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				  GError **err)
{
	enum machine_runstate rs = machine_runstate(qmp_server_state(s)->machine);
	const char *name = machine_runstate_name(rs);
	JsonBuilder *b = json_builder_new();

	json_builder_begin_object(b);
	/* QEMU: running iff the run state is "running"; one snapshot keeps
	 * the two members consistent */
	json_builder_set_member_name(b, "running");
	json_builder_add_boolean_value(b, rs == RUNSTATE_RUNNING);
	json_builder_set_member_name(b, "singlestep");
	json_builder_add_boolean_value(b, FALSE);
	json_builder_set_member_name(b, "status");
	json_builder_add_string_value(b, name ? name : "internal-error");
	json_builder_end_object(b);
	return builder_finish(b);
}

static JsonNode *cmd_stop(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	char e[256] = "";

	return machine_result(machine_stop(qmp_server_state(s)->machine, e, sizeof(e)), e, err);
}

static JsonNode *cmd_cont(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	char e[256] = "";

	return machine_result(machine_cont(qmp_server_state(s)->machine, e, sizeof(e)), e, err);
}

static JsonNode *cmd_quit(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	/* the server requests the quit once this answer is on its way */
	qmp_server_state(s)->quit_pending = true;
	return empty_object();
}

static const struct qmp_arg_spec migrate_args[] = {
	{ "uri", QMP_ARG_STR, true },
	{ "blk", QMP_ARG_BOOL, false },
	{ "inc", QMP_ARG_BOOL, false },
	{ "detach", QMP_ARG_BOOL, false },
	{ "resume", QMP_ARG_BOOL, false },
	{ NULL, 0, false },
};

static JsonNode *cmd_migrate(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	const char *uri = json_object_get_string_member(args, "uri");
	char e[512] = "";

	if (arg_bool(args, "blk") || arg_bool(args, "inc")) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC,
			    "Block migration (blk/inc) is not supported by kmig");
		return NULL;
	}
	if (arg_bool(args, "resume")) {
		/* kmig has no postcopy, so never a paused one */
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Cannot resume if there is no paused migration");
		return NULL;
	}
	/* "detach" is ignored, as in QEMU: migrate always returns at once */
	return machine_result(machine_migrate(qmp_server_state(s)->machine, uri, e, sizeof(e)), e, err);
}

/* object-add: QEMU's flat form, the members of the two types kmig has */
static const struct qmp_arg_spec object_add_args[] = {
	{ "qom-type", QMP_ARG_STR, true },
	{ "id", QMP_ARG_STR, true },
	{ "endpoint", QMP_ARG_STR, false },
	{ "dir", QMP_ARG_STR, false },
	{ "verify-peer", QMP_ARG_BOOL, false },
	{ "identity", QMP_ARG_STR, false },
	{ NULL, 0, false },
};

static JsonNode *cmd_object_add(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	static const char *const props[] = { "id", "endpoint", "dir", "verify-peer", "identity" };
	struct migration_object_spec o;
	char e[512] = "";
	int r = migration_object_init(&o, json_object_get_string_member(args, "qom-type"), e, sizeof(e));

	for (size_t i = 0; !r && i < G_N_ELEMENTS(props); i++) {
		JsonNode *n = json_object_get_member(args, props[i]);

		if (!n)
			continue;
		const char *v = JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN
			? (json_node_get_boolean(n) ? "on" : "off") : json_node_get_string(n);

		r = migration_object_set(&o, props[i], v, e, sizeof(e));
	}
	if (!r)
		r = machine_object_add(qmp_server_state(s)->machine, &o, e, sizeof(e));
	return machine_result(r, e, err);
}

static const struct qmp_arg_spec object_del_args[] = {
	{ "id", QMP_ARG_STR, true },
	{ NULL, 0, false },
};

static JsonNode *cmd_object_del(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	char e[512] = "";

	return machine_result(machine_object_del(qmp_server_state(s)->machine,
						 json_object_get_string_member(args, "id"), e, sizeof(e)), e, err);
}

static const struct qmp_arg_spec migrate_incoming_args[] = {
	{ "uri", QMP_ARG_STR, true },
	{ NULL, 0, false },
};

static JsonNode *cmd_migrate_incoming(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				      GError **err)
{
	const char *uri = json_object_get_string_member(args, "uri");
	char e[512] = "";

	return machine_result(machine_migrate_incoming(qmp_server_state(s)->machine, uri, e, sizeof(e)), e,
			      err);
}

static JsonNode *cmd_migrate_cancel(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				    GError **err)
{
	char e[512] = "";

	return machine_result(machine_migrate_cancel(qmp_server_state(s)->machine, e, sizeof(e)), e, err);
}

static JsonNode *cmd_query_migrate(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				   GError **err)
{
	struct migration_info info;

	memset(&info, 0, sizeof(info));
	machine_query_migrate(qmp_server_state(s)->machine, &info);
	return qapi_migration_info_to_json(&info);
}

/* migrate-set-parameters' argument types: the table's rows (a uint64 or a
 * string), then QEMU's other members (any type: refused by name).  Filled
 * from the table before main() runs. */
static struct qmp_arg_spec set_params_args[64];

static void __attribute__((constructor)) fill_set_params_args(void)
{
	size_t n = 0;

	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];

		if (!d->capability)
			set_params_args[n++] = (struct qmp_arg_spec){
				d->name, d->type == MIGRATION_PARAM_UINT64   ? QMP_ARG_UINT64
					 : d->type == MIGRATION_PARAM_STRING ? QMP_ARG_STR_OR_NULL
									     : QMP_ARG_STR, false };
	}
	for (size_t i = 0; i < G_N_ELEMENTS(unsupported_params); i++)
		set_params_args[n++] = (struct qmp_arg_spec){ unsupported_params[i], QMP_ARG_ANY, false };
	g_assert(n < G_N_ELEMENTS(set_params_args));	/* the last stays the terminator */
}

/* One member's value: the table's check, in QEMU's words. */
static bool parse_param(const struct migration_param *d, JsonNode *n, uint64_t *v, GError **err)
{
	char e[256];

	if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM) {
		if (migration_param_parse_enum(d, json_node_get_string(n), v))
			return true;
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' does not accept value '%s' "
			    "(auto, copy or zero-copy)", d->name, json_node_get_string(n));
		return false;
	}
	*v = node_uint64(n);
	if (!migration_param_check(d, *v, e, sizeof(e)))
		return true;
	g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "%s", e);
	return false;
}

static JsonNode *cmd_migrate_set_parameters(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
					    GError **err)
{
	struct migration_params p;
	unsigned int mask = 0;
	char e[512] = "";

	memset(&p, 0, sizeof(p));
	for (size_t i = 0; i < G_N_ELEMENTS(unsupported_params); i++) {
		if (json_object_has_member(args, unsupported_params[i])) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is not supported by kmig yet",
				    unsupported_params[i]);
			return NULL;
		}
	}
	/* everything checked before anything changes, in the table's order
	 * (QEMU's), so that the first wrong member named is QEMU's */
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];
		JsonNode *n = d->capability ? NULL : json_object_get_member(args, d->name);
		uint64_t v;

		if (!n)
			continue;
		if (d->type == MIGRATION_PARAM_STRING) {
			const char *str = JSON_NODE_HOLDS_NULL(n) ? "" : json_node_get_string(n);

			if (migration_param_put_str(&p, d, str, e, sizeof(e))) {
				g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "%s", e);
				return NULL;
			}
		} else if (!parse_param(d, n, &v, err)) {
			return NULL;
		} else {
			migration_param_put(&p, d, v);
		}
		mask |= d->mask;
	}
	if (!mask)
		return empty_object();
	return machine_result(machine_set_params(qmp_server_state(s)->machine, &p, mask, e, sizeof(e)), e,
			      err);
}

static JsonNode *cmd_query_migrate_parameters(struct qmp_server *s, struct qmp_conn *c,
					      JsonObject *args, GError **err)
{
	struct migration_params p;
	JsonBuilder *b = json_builder_new();

	memset(&p, 0, sizeof(p));
	machine_get_params(qmp_server_state(s)->machine, &p);
	json_builder_begin_object(b);
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];

		if (d->capability)
			continue;
		if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM) {
			json_builder_set_member_name(b, d->name);
			json_builder_add_string_value(b, migration_param_enum_name(d, migration_param_get(&p, d)));
		} else if (d->type == MIGRATION_PARAM_STRING) {
			json_builder_set_member_name(b, d->name);
			json_builder_add_string_value(b, migration_param_get_str(&p, d));
		} else {
			qmp_builder_add_uint(b, d->name, migration_param_get(&p, d));
		}
	}
	json_builder_end_object(b);
	return builder_finish(b);
}

static const struct qmp_arg_spec set_caps_args[] = {
	{ "capabilities", QMP_ARG_ARRAY, true },
	{ NULL, 0, false },
};

static const struct qmp_arg_spec cap_status_spec[] = {
	{ "capability", QMP_ARG_STR, true },
	{ "state", QMP_ARG_BOOL, true },
	{ NULL, 0, false },
};

static bool migration_running(struct machine *m)
{
	struct migration_info info;

	memset(&info, 0, sizeof(info));
	machine_query_migrate(m, &info);
	if (info.is_incoming)
		return false;
	switch (info.status) {
	case MIGRATION_STATUS_SETUP:
	case MIGRATION_STATUS_ACTIVE:
	case MIGRATION_STATUS_DEVICE:
	case MIGRATION_STATUS_CANCELLING:
		return true;
	default:
		return false;
	}
}

/* Every capability's state: the machine's for those that are rows of the
 * parameter table, the server's for the rest (events). */
static void current_caps(struct qmp_server_state *st, bool caps[QMP_MIGCAP__MAX])
{
	struct migration_params p;

	memset(&p, 0, sizeof(p));
	machine_get_params(st->machine, &p);
	for (int i = 0; i < QMP_MIGCAP__MAX; i++) {
		const struct migration_param *d = migration_param_find(qmp_migration_caps[i].name, true);

		caps[i] = d ? migration_param_get(&p, d) != 0 : st->caps[i];
	}
}

static JsonNode *cmd_migrate_set_capabilities(struct qmp_server *s, struct qmp_conn *c,
					      JsonObject *args, GError **err)
{
	struct qmp_server_state *st = qmp_server_state(s);
	JsonArray *a = json_object_get_array_member(args, "capabilities");
	guint i, n = json_array_get_length(a);
	bool caps[QMP_MIGCAP__MAX];

	current_caps(st, caps);
	for (i = 0; i < n; i++) {
		JsonNode *e = json_array_get_element(a, i);
		char prefix[48];
		JsonObject *o;
		int cap;

		if (!JSON_NODE_HOLDS_OBJECT(e)) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'capabilities[%u]' expects object",
				    i);
			return NULL;
		}
		o = json_node_get_object(e);
		snprintf(prefix, sizeof(prefix), "capabilities[%u].", i);
		if (!check_args_prefixed(cap_status_spec, o, prefix, err))
			return NULL;
		cap = qmp_migration_cap_lookup(json_object_get_string_member(o, "capability"));
		if (cap < 0) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC,
				    "Parameter 'capability' does not accept value '%s'",
				    json_object_get_string_member(o, "capability"));
			return NULL;
		}
		caps[cap] = json_object_get_boolean_member(o, "state");
	}

	if (migration_running(st->machine)) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "There's a migration process in progress");
		return NULL;
	}
	for (i = 0; i < QMP_MIGCAP__MAX; i++) {
		if (caps[i] && !qmp_migration_caps[i].supported) {
			g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Capability '%s' is not supported by kmig yet",
				    qmp_migration_caps[i].name);
			return NULL;
		}
	}
	/* the capabilities that are rows of the parameter table (those that
	 * shape the RAM path, and dirty-limit) live in the machine, which may
	 * refuse one (dirty-limit without a dirty ring); the rest here */
	struct migration_params p;
	unsigned int mask = 0;
	char e[256] = "";

	memset(&p, 0, sizeof(p));
	for (i = 0; i < QMP_MIGCAP__MAX; i++) {
		const struct migration_param *d = migration_param_find(qmp_migration_caps[i].name, true);

		if (d) {
			migration_param_put(&p, d, caps[i]);
			mask |= d->mask;
		}
	}

	int r = machine_set_params(st->machine, &p, mask, e, sizeof(e));

	if (r) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "%s", e[0] ? e : g_strerror(-r));
		return NULL;
	}
	memcpy(st->caps, caps, sizeof(caps));
	return empty_object();
}

static JsonNode *cmd_query_migrate_capabilities(struct qmp_server *s, struct qmp_conn *c,
						JsonObject *args, GError **err)
{
	struct qmp_server_state *st = qmp_server_state(s);
	JsonBuilder *b = json_builder_new();
	int i;

	bool caps[QMP_MIGCAP__MAX];

	current_caps(st, caps);
	json_builder_begin_array(b);
	for (i = 0; i < QMP_MIGCAP__MAX; i++) {
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "capability");
		json_builder_add_string_value(b, qmp_migration_caps[i].name);
		json_builder_set_member_name(b, "state");
		json_builder_add_boolean_value(b, caps[i]);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	return builder_finish(b);
}

static const struct qmp_arg_spec qmp_capabilities_args[] = {
	{ "enable", QMP_ARG_ARRAY, false },
	{ NULL, 0, false },
};

/* kmig's own: change a blob device's dirty rate while it runs */
static const struct qmp_arg_spec blob_set_args[] = {
	{ "id", QMP_ARG_STR, true },
	{ "dirty-rate", QMP_ARG_UINT64, true },
	{ NULL, 0, false },
};

static JsonNode *cmd_x_kmig_blob_set(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				     GError **err)
{
	char e[256] = "";
	int r = machine_blob_set_dirty_rate(qmp_server_state(s)->machine,
					    json_object_get_string_member(args, "id"),
					    node_uint64(json_object_get_member(args, "dirty-rate")), e, sizeof(e));

	(void)c;
	if (r == -ENOENT) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND, "%s", e);
		return NULL;
	}
	return machine_result(r, e, err);
}

/* QEMU's pmemsave (qapi/misc.json): guest physical memory to a file */
static const struct qmp_arg_spec pmemsave_args[] = {
	{ "val", QMP_ARG_INT, true },
	{ "size", QMP_ARG_INT, true },
	{ "filename", QMP_ARG_STR, true },
	{ NULL, 0, false },
};

static JsonNode *cmd_pmemsave(struct qmp_server *s, struct qmp_conn *c, JsonObject *args, GError **err)
{
	int64_t val = json_object_get_int_member(args, "val");
	int64_t size = json_object_get_int_member(args, "size");
	char e[512] = "";

	(void)c;
	/* QEMU's 'int' takes negative numbers; no address or size is one */
	if (val < 0 || size < 0) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC,
			    "Parameter '%s' expects a non-negative integer", val < 0 ? "val" : "size");
		return NULL;
	}
	return machine_result(machine_pmemsave(qmp_server_state(s)->machine, (uint64_t)val, (uint64_t)size,
					       json_object_get_string_member(args, "filename"), e, sizeof(e)),
			      e, err);
}

/* -------------------------------------- dirty page rate and dirty limit */

/* QEMU's TimeUnit, DirtyRateMeasureMode and DirtyRateStatus */
enum { TIME_UNIT_SECOND, TIME_UNIT_MILLISECOND };
static const char *const time_unit_names[] = { "second", "millisecond", NULL };
static const char *const dirtyrate_mode_names[] = {
	[DIRTYRATE_PAGE_SAMPLING] = "page-sampling",
	[DIRTYRATE_DIRTY_RING] = "dirty-ring",
	[DIRTYRATE_DIRTY_BITMAP] = "dirty-bitmap",
	[DIRTYRATE_DIRTY_BITMAP + 1] = NULL,
};
static const char *const dirtyrate_status_names[] = {
	[DIRTYRATE_UNSTARTED] = "unstarted",
	[DIRTYRATE_MEASURING] = "measuring",
	[DIRTYRATE_MEASURED] = "measured",
};

static const char *enum_name(const char *const *names, size_t n, unsigned int v)
{
	return v < n && names[v] ? names[v] : names[0];
}

static const struct qmp_arg_spec calc_dirty_rate_args[] = {
	{ "calc-time", QMP_ARG_INT, true },
	{ "calc-time-unit", QMP_ARG_STR, false },
	{ "sample-pages", QMP_ARG_INT, false },
	{ "mode", QMP_ARG_STR, false },
	{ NULL, 0, false },
};

static bool dirty_rate_measuring(struct machine *m)
{
	struct dirtyrate_info info;

	memset(&info, 0, sizeof(info));
	machine_query_dirty_rate(m, &info);
	return info.status == DIRTYRATE_MEASURING;
}

/* calc-time in unit, in ms, if it is in QEMU's range (no overflow) */
static bool calc_time_ms(int64_t t, int unit, int64_t *ms)
{
	if (unit == TIME_UNIT_SECOND) {
		if (t > DIRTYRATE_MAX_CALC_MS / 1000 || t < 0)
			return false;
		t *= 1000;
	}
	*ms = t;
	return t >= DIRTYRATE_MIN_CALC_MS && t <= DIRTYRATE_MAX_CALC_MS;
}

/* QEMU's qmp_calc_dirty_rate() checks, in its order, its words */
static bool check_calc_dirty_rate(struct machine *m, JsonObject *args, int unit, int mode, int64_t *ms,
				  uint64_t *pages, GError **err)
{
	JsonNode *sp = json_object_get_member(args, "sample-pages");
	int64_t n;

	if (dirty_rate_measuring(m)) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "the dirty rate is already being measured.");
		return false;
	}
	if (!calc_time_ms(json_object_get_int_member(args, "calc-time"), unit, ms)) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "Calculation time is out of range [%dms, %dms].",
			    DIRTYRATE_MIN_CALC_MS, DIRTYRATE_MAX_CALC_MS);
		return false;
	}
	*pages = mode == DIRTYRATE_PAGE_SAMPLING ? DIRTYRATE_DEFAULT_SAMPLE_PAGES : 0;
	if (!sp)
		return true;
	if (mode != DIRTYRATE_PAGE_SAMPLING) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "sample-pages is used only in page-sampling mode");
		return false;
	}
	n = json_node_get_int(sp);
	if (n < DIRTYRATE_MIN_SAMPLE_PAGES || n > DIRTYRATE_MAX_SAMPLE_PAGES) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "sample-pages is out of range[%d, %d].",
			    DIRTYRATE_MIN_SAMPLE_PAGES, DIRTYRATE_MAX_SAMPLE_PAGES);
		return false;
	}
	*pages = (uint64_t)n;
	return true;
}

static JsonNode *cmd_calc_dirty_rate(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				     GError **err)
{
	struct machine *m = qmp_server_state(s)->machine;
	uint64_t pages;
	int unit, mode;
	char e[256] = "";
	int64_t ms;

	if (!arg_enum(args, "calc-time-unit", time_unit_names, TIME_UNIT_SECOND, &unit, err) ||
	    !arg_enum(args, "mode", dirtyrate_mode_names, DIRTYRATE_PAGE_SAMPLING, &mode, err) ||
	    !check_calc_dirty_rate(m, args, unit, mode, &ms, &pages, err))
		return NULL;
	return machine_result(machine_calc_dirty_rate(m, ms, (enum dirtyrate_mode)mode, pages, e, sizeof(e)),
			      e, err);
}

static const struct qmp_arg_spec query_dirty_rate_args[] = {
	{ "calc-time-unit", QMP_ARG_STR, false },
	{ NULL, 0, false },
};

static void add_vcpu_dirty_rates(JsonBuilder *b, const struct dirtyrate_info *info)
{
	unsigned int i, n = MIN(info->nr_vcpus, KMIG_MAX_VCPUS);

	json_builder_set_member_name(b, "vcpu-dirty-rate");
	json_builder_begin_array(b);
	for (i = 0; i < n; i++) {
		json_builder_begin_object(b);
		qmp_builder_add_int(b, "id", i);
		qmp_builder_add_int(b, "dirty-rate", info->vcpu_dirty_rate[i]);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
}

/* QEMU's DirtyRateInfo, calc-time in unit (rounded down, as QEMU) */
static JsonNode *dirtyrate_info_json(const struct dirtyrate_info *info, int unit)
{
	JsonBuilder *b = json_builder_new();
	int64_t t = unit == TIME_UNIT_SECOND ? info->calc_time_ms / 1000 : info->calc_time_ms;

	json_builder_begin_object(b);
	if (info->has_dirty_rate)
		qmp_builder_add_int(b, "dirty-rate", info->dirty_rate);
	json_builder_set_member_name(b, "status");
	json_builder_add_string_value(
		b, enum_name(dirtyrate_status_names, G_N_ELEMENTS(dirtyrate_status_names), info->status));
	qmp_builder_add_int(b, "start-time", info->start_time_s);
	qmp_builder_add_int(b, "calc-time", t);
	json_builder_set_member_name(b, "calc-time-unit");
	json_builder_add_string_value(b, time_unit_names[unit]);
	qmp_builder_add_uint(b, "sample-pages", info->sample_pages);
	json_builder_set_member_name(b, "mode");
	json_builder_add_string_value(
		b, enum_name(dirtyrate_mode_names, G_N_ELEMENTS(dirtyrate_mode_names) - 1, info->mode));
	if (info->mode == DIRTYRATE_DIRTY_RING && info->status == DIRTYRATE_MEASURED)
		add_vcpu_dirty_rates(b, info);
	if (info->counted_by) {
		json_builder_set_member_name(b, "x-kmig-counted-by");
		json_builder_add_string_value(b, info->counted_by);
	}
	if (info->has_dirty_ring_push_rate) {
		qmp_builder_add_int(b, "x-kmig-ring-push-rate", info->dirty_ring_push_rate);
		if (info->telemetry_by) {
			json_builder_set_member_name(b, "x-kmig-ring-pushes-counted-by");
			json_builder_add_string_value(b, info->telemetry_by);
		}
	}
	json_builder_end_object(b);
	return builder_finish(b);
}

static JsonNode *cmd_query_dirty_rate(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				      GError **err)
{
	struct dirtyrate_info *info;
	JsonNode *ret;
	int unit;

	if (!arg_enum(args, "calc-time-unit", time_unit_names, TIME_UNIT_SECOND, &unit, err))
		return NULL;
	info = g_new0(struct dirtyrate_info, 1);
	machine_query_dirty_rate(qmp_server_state(s)->machine, info);
	ret = dirtyrate_info_json(info, unit);
	g_free(info);
	return ret;
}

/* cpu-index: absent = -1 (every vCPU); QEMU's error for one that cannot be
 * a vCPU's (the machine checks the upper bound) */
static bool arg_cpu_index(JsonObject *args, int *cpu, GError **err)
{
	JsonNode *n = json_object_get_member(args, "cpu-index");
	int64_t v;

	*cpu = -1;
	if (!n)
		return true;
	v = json_node_get_int(n);
	if (v < 0 || v > INT_MAX) {
		g_set_error(err, QMP_ERROR, QMP_ERROR_GENERIC, "incorrect cpu index specified");
		return false;
	}
	*cpu = (int)v;
	return true;
}

static const struct qmp_arg_spec set_vcpu_dirty_limit_args[] = {
	{ "cpu-index", QMP_ARG_INT, false },
	{ "dirty-rate", QMP_ARG_UINT64, true },
	{ NULL, 0, false },
};

static JsonNode *cmd_set_vcpu_dirty_limit(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
					  GError **err)
{
	struct machine *m = qmp_server_state(s)->machine;
	uint64_t rate = node_uint64(json_object_get_member(args, "dirty-rate"));
	char e[256] = "";
	int cpu;

	if (!arg_cpu_index(args, &cpu, err))
		return NULL;
	/* as QEMU: a limit of 0 cancels it */
	if (!rate)
		return machine_result(machine_cancel_vcpu_dirty_limit(m, cpu, e, sizeof(e)), e, err);
	return machine_result(machine_set_vcpu_dirty_limit(m, cpu, rate, e, sizeof(e)), e, err);
}

static const struct qmp_arg_spec cancel_vcpu_dirty_limit_args[] = {
	{ "cpu-index", QMP_ARG_INT, false },
	{ NULL, 0, false },
};

static JsonNode *cmd_cancel_vcpu_dirty_limit(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
					     GError **err)
{
	char e[256] = "";
	int cpu;

	if (!arg_cpu_index(args, &cpu, err))
		return NULL;
	return machine_result(machine_cancel_vcpu_dirty_limit(qmp_server_state(s)->machine, cpu, e, sizeof(e)),
			      e, err);
}

static JsonNode *cmd_query_vcpu_dirty_limit(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
					    GError **err)
{
	struct dirtylimit_vcpu *v = g_new0(struct dirtylimit_vcpu, KMIG_MAX_VCPUS);
	unsigned int i, n = machine_query_vcpu_dirty_limit(qmp_server_state(s)->machine, v, KMIG_MAX_VCPUS);
	JsonBuilder *b = json_builder_new();

	json_builder_begin_array(b);
	for (i = 0; i < MIN(n, KMIG_MAX_VCPUS); i++) {
		json_builder_begin_object(b);
		qmp_builder_add_int(b, "cpu-index", v[i].cpu_index);
		qmp_builder_add_uint(b, "limit-rate", v[i].limit_rate);
		qmp_builder_add_uint(b, "current-rate", v[i].current_rate);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	g_free(v);
	return builder_finish(b);
}

const struct qmp_command qmp_commands[] = {
	{ "qmp_capabilities", qmp_capabilities_args, cmd_qmp_capabilities, QMP_CMD_NEGOTIATION },
	{ "query-commands", NULL, cmd_query_commands, 0 },
	{ "query-version", NULL, cmd_query_version, 0 },
	{ "query-status", NULL, cmd_query_status, 0 },
	{ "stop", NULL, cmd_stop, 0 },
	{ "cont", NULL, cmd_cont, 0 },
	{ "quit", NULL, cmd_quit, 0 },
	{ "migrate", migrate_args, cmd_migrate, 0 },
	{ "migrate-incoming", migrate_incoming_args, cmd_migrate_incoming, 0 },
	{ "object-add", object_add_args, cmd_object_add, 0 },
	{ "object-del", object_del_args, cmd_object_del, 0 },
	{ "migrate_cancel", NULL, cmd_migrate_cancel, 0 },
	{ "query-migrate", NULL, cmd_query_migrate, 0 },
	{ "migrate-set-parameters", set_params_args, cmd_migrate_set_parameters, 0 },
	{ "query-migrate-parameters", NULL, cmd_query_migrate_parameters, 0 },
	{ "migrate-set-capabilities", set_caps_args, cmd_migrate_set_capabilities, 0 },
	{ "query-migrate-capabilities", NULL, cmd_query_migrate_capabilities, 0 },
	{ "x-kmig-blob-set", blob_set_args, cmd_x_kmig_blob_set, 0 },
	{ "pmemsave", pmemsave_args, cmd_pmemsave, 0 },
	{ "calc-dirty-rate", calc_dirty_rate_args, cmd_calc_dirty_rate, 0 },
	{ "query-dirty-rate", query_dirty_rate_args, cmd_query_dirty_rate, 0 },
	{ "set-vcpu-dirty-limit", set_vcpu_dirty_limit_args, cmd_set_vcpu_dirty_limit, 0 },
	{ "cancel-vcpu-dirty-limit", cancel_vcpu_dirty_limit_args, cmd_cancel_vcpu_dirty_limit, 0 },
	{ "query-vcpu-dirty-limit", NULL, cmd_query_vcpu_dirty_limit, 0 },
};

const size_t qmp_n_commands = G_N_ELEMENTS(qmp_commands);

const struct qmp_command *qmp_command_lookup(const char *name)
{
	size_t i;

	for (i = 0; i < qmp_n_commands; i++)
		if (!strcmp(qmp_commands[i].name, name))
			return &qmp_commands[i];
	return NULL;
}
