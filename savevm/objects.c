/* savevm/objects.c — the user-created objects a migration refers to by id,
 * in QEMU's names: tls-creds-x509 (the credentials of tls-creds) and
 * authz-simple (the identity tls-authz allows).  Created by --object or
 * object-add, deleted by object-del; a migration resolves its parameters
 * against them when it starts and holds what it took (credentials are
 * shared by reference), so a deletion meanwhile does not pull them away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "savevm/migration-int.h"

struct migration_object {
	struct migration_object_spec spec;
	struct ring_tls_creds *creds;	/* tls-creds-x509 */
	struct migration_object *next;
};

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

static struct migration_object **find(struct migration *g, const char *id)
{
	struct migration_object **p = &g->objects;

	while (*p && strcmp((*p)->spec.id, id))
		p = &(*p)->next;
	return p;
}

int migration_object_add(struct migration *g, const struct migration_object_spec *spec, char *err, size_t errlen)
{
	struct migration_object *o;
	int r = 0;

	if (!spec->id[0]) {
		kmig_set_err(err, errlen, "Parameter 'id' is missing");
		return -EINVAL;
	}
	if (spec->type == MIGRATION_OBJECT_AUTHZ_SIMPLE && !spec->identity[0]) {
		kmig_set_err(err, errlen, "Parameter 'identity' is missing");
		return -EINVAL;
	}
	if (!(o = calloc(1, sizeof(*o))))
		return -ENOMEM;
	o->spec = *spec;
	/* like QEMU: the files are read now, so a bad directory is an error
	 * of the command, not of a later migration */
	if (spec->type == MIGRATION_OBJECT_TLS_CREDS_X509)
		r = ring_tls_creds_load(spec->dir, spec->server, spec->verify_peer, &o->creds, err, errlen);
	pthread_mutex_lock(&g->lock);
	if (!r && *find(g, spec->id)) {
		kmig_set_err(err, errlen, "attempt to add duplicate property '%s' to object (type 'container')",
			     spec->id);
		r = -EEXIST;
	}
	if (!r) {
		o->next = g->objects;
		g->objects = o;
	}
	pthread_mutex_unlock(&g->lock);
	if (r) {
		ring_tls_creds_unref(o->creds);
		free(o);
	}
	return r;
}

int migration_object_del(struct migration *g, const char *id, char *err, size_t errlen)
{
	pthread_mutex_lock(&g->lock);
	struct migration_object **p = find(g, id ? id : ""), *o = *p;

	if (o)
		*p = o->next;
	pthread_mutex_unlock(&g->lock);
	if (!o) {
		kmig_set_err(err, errlen, "object '%s' not found", id ? id : "");
		return -ENOENT;
	}
	ring_tls_creds_unref(o->creds);
	free(o);
	return 0;
}

void mig_objects_free(struct migration *g)
{
	while (g->objects) {
		struct migration_object *o = g->objects;

		g->objects = o->next;
		ring_tls_creds_unref(o->creds);
		free(o);
	}
}

void mig_tls_release(struct mig_tls *t)
{
	ring_tls_creds_unref(t->peer.creds);
	memset(t, 0, sizeof(*t));
}

/* The TLS a migration uses, from its parameters, in QEMU's words when an
 * id names nothing usable.  g->lock held. */
int mig_tls_resolve_locked(struct migration *g, bool server, const char *uri_host, struct mig_tls *t, char *err,
			   size_t errlen)
{
	const struct migration_params *p = &g->params;

	memset(t, 0, sizeof(*t));
	if (!p->tls_creds[0])
		return 0;
	struct migration_object *o = *find(g, p->tls_creds);

	if (!o) {
		kmig_set_err(err, errlen, "No TLS credentials with id '%s'", p->tls_creds);
		return -ENOENT;
	}
	if (o->spec.type != MIGRATION_OBJECT_TLS_CREDS_X509) {
		kmig_set_err(err, errlen, "Object with id '%s' is not TLS credentials", p->tls_creds);
		return -EINVAL;
	}
	if (o->spec.server != server) {
		kmig_set_err(err, errlen, "Expected TLS credentials for a %s endpoint", server ? "server" : "client");
		return -EINVAL;
	}
	if (server && p->tls_authz[0]) {
		struct migration_object *a = *find(g, p->tls_authz);

		if (!a || a->spec.type != MIGRATION_OBJECT_AUTHZ_SIMPLE) {
			kmig_set_err(err, errlen, "Cannot find authorization object '%s'", p->tls_authz);
			return -ENOENT;
		}
		snprintf(t->identity, sizeof(t->identity), "%s", a->spec.identity);
		t->identities[0] = t->identity;
		t->peer.identities = t->identities;
		t->peer.nr_identities = 1;
	}
	if (!server) {
		snprintf(t->hostname, sizeof(t->hostname), "%s", p->tls_hostname[0] ? p->tls_hostname : uri_host);
		if (!t->hostname[0] && o->spec.verify_peer) {
			kmig_set_err(err, errlen, "No hostname available for TLS (set tls-hostname)");
			return -EINVAL;
		}
		t->peer.hostname = t->hostname;
	}
	t->on = true;
	t->peer.creds = ring_tls_creds_ref(o->creds);
	return 0;
}
