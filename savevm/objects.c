/* savevm/objects.c — the user-created objects a migration refers to by id
 * (their specs: object-spec.c),
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

/* A tls-creds-x509's credentials, read from its directory; nothing for
 * an authz-simple. */
static int load_creds(const struct migration_object_spec *spec, struct ring_tls_creds **creds, char *err,
		      size_t errlen)
{
	*creds = NULL;
	if (spec->type != MIGRATION_OBJECT_TLS_CREDS_X509)
		return 0;
	return ring_tls_creds_load(spec->dir, spec->server, spec->verify_peer, creds, err, errlen);
}

static void object_free(struct migration_object *o)
{
	ring_tls_creds_unref(o->creds);
	free(o);
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
	r = load_creds(spec, &o->creds, err, errlen);
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
	if (r)
		object_free(o);
	return r;
}

int migration_object_check(const struct migration_object_spec *spec, char *err, size_t errlen)
{
	struct ring_tls_creds *c;
	int r = load_creds(spec, &c, err, errlen);

	ring_tls_creds_unref(c);
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
	object_free(o);
	return 0;
}

void mig_objects_free(struct migration *g)
{
	while (g->objects) {
		struct migration_object *o = g->objects;

		g->objects = o->next;
		object_free(o);
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
