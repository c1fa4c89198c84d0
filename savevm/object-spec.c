/* savevm/object-spec.c — the specs of the objects of objects.c, QEMU's
 * type and property names and refusals, and --object's syntax.  Apart
 * from the engine, so that qapi/'s tests and fuzzers, which run against a
 * fake machine, build the same specs as kmig does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "savevm/migration.h"

static const char *type_name(enum migration_object_type t)
{
	return t == MIGRATION_OBJECT_TLS_CREDS_X509 ? "tls-creds-x509" : "authz-simple";
}

/* "on"/"off" and QEMU's other spellings of a bool property */
static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

static int set_string(char *dst, size_t len, const char *key, const char *v, char *err, size_t errlen)
{
	if (strlen(v) >= len) {
		kmig_set_err(err, errlen, "Property '%s' is too long (at most %zu bytes)", key, len - 1);
		return -EINVAL;
	}
	snprintf(dst, len, "%s", v);
	return 0;
}

int migration_object_set(struct migration_object_spec *o, const char *key, const char *v, char *err, size_t errlen)
{
	bool tls = o->type == MIGRATION_OBJECT_TLS_CREDS_X509;

	if (!strcmp(key, "id"))
		return set_string(o->id, sizeof(o->id), key, v, err, errlen);
	if (tls && !strcmp(key, "dir"))
		return set_string(o->dir, sizeof(o->dir), key, v, err, errlen);
	if (tls && !strcmp(key, "endpoint")) {
		if (strcmp(v, "server") && strcmp(v, "client")) {
			kmig_set_err(err, errlen, "Parameter 'endpoint' does not accept value '%s'", v);
			return -EINVAL;
		}
		o->server = !strcmp(v, "server");
		return 0;
	}
	if (tls && !strcmp(key, "verify-peer")) {
		if (parse_bool(v, &o->verify_peer)) {
			kmig_set_err(err, errlen, "Parameter 'verify-peer' expects 'on' or 'off'");
			return -EINVAL;
		}
		return 0;
	}
	if (!tls && !strcmp(key, "identity"))
		return set_string(o->identity, sizeof(o->identity), key, v, err, errlen);
	kmig_set_err(err, errlen, "Property '%s.%s' not found", type_name(o->type), key);
	return -EINVAL;
}

int migration_object_init(struct migration_object_spec *o, const char *type, char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	if (!strcmp(type, "tls-creds-x509")) {
		o->type = MIGRATION_OBJECT_TLS_CREDS_X509;
		o->verify_peer = true;	/* QEMU's default */
		return 0;
	}
	if (!strcmp(type, "authz-simple")) {
		o->type = MIGRATION_OBJECT_AUTHZ_SIMPLE;
		return 0;
	}
	kmig_set_err(err, errlen, "invalid object type: %s (kmig has tls-creds-x509 and authz-simple)", type);
	return -EINVAL;
}

/* The next comma-separated item of *pos into buf, QEMU's way: ",," is a
 * comma inside the item (a DN's "O=kmig,,CN=src").  false at the end. */
static bool next_item(const char **pos, char *buf, size_t len)
{
	const char *p = *pos;
	size_t n = 0;

	if (!*p)
		return false;
	for (; *p; p++) {
		if (*p == ',' && p[1] == ',')
			p++;
		else if (*p == ',')
			break;
		if (n + 1 < len)
			buf[n++] = *p;
	}
	buf[n] = 0;
	*pos = *p ? p + 1 : p;
	return true;
}

int migration_object_parse(const char *text, struct migration_object_spec *o, char *err, size_t errlen)
{
	const char *pos = text ? text : "";
	char item[2048];
	int r;

	if (!next_item(&pos, item, sizeof(item)) || !item[0]) {
		kmig_set_err(err, errlen, "--object needs a type: tls-creds-x509,id=ID,... or authz-simple,id=ID,...");
		return -EINVAL;
	}
	r = migration_object_init(o, item, err, errlen);
	while (!r && next_item(&pos, item, sizeof(item))) {
		char *eq = strchr(item, '=');

		if (!eq) {
			kmig_set_err(err, errlen, "Property '%s' needs a value (key=value)", item);
			return -EINVAL;
		}
		*eq = 0;
		r = migration_object_set(o, item, eq + 1, err, errlen);
	}
	return r;
}
