/* The registry: entries in registration order, which is also the order
 * devices are saved and loaded in (apic/N before cpu/N, as KVM needs). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "savevm/savevm.h"

struct savevm_registry {
	struct savevm_entry *entries;
	size_t count, cap;
};

struct savevm_registry *savevm_registry_new(void)
{
	return calloc(1, sizeof(struct savevm_registry));
}

void savevm_registry_free(struct savevm_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->count; i++)
		free(r->entries[i].pending_state);
	free(r->entries);
	free(r);
}

static bool valid_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > STREAM_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int savevm_register(struct savevm_registry *r, const char *name, uint32_t instance_id, uint32_t version,
		    bool iterable, const struct savevm_ops *ops, void *opaque)
{
	if (!valid_name(name) || !ops)
		return -EINVAL;
	if (savevm_registry_find(r, name, instance_id))
		return -EEXIST;
	if (r->count == STREAM_MAX_SECTIONS - 1)	/* ids are index + 1 */
		return -ENOSPC;
	if (r->count == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		struct savevm_entry *e = realloc(r->entries, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		r->entries = e;
		r->cap = cap;
	}
	struct savevm_entry *e = &r->entries[r->count++];

	memset(e, 0, sizeof(*e));
	strcpy(e->name, name);
	e->instance_id = instance_id;
	e->version = version;
	e->iterable = iterable;
	e->ops = ops;
	e->opaque = opaque;
	return 0;
}

size_t savevm_registry_count(const struct savevm_registry *r)
{
	return r->count;
}

struct savevm_entry *savevm_registry_at(struct savevm_registry *r, size_t i)
{
	return i < r->count ? &r->entries[i] : NULL;
}

struct savevm_entry *savevm_registry_find(struct savevm_registry *r, const char *name, uint32_t instance_id)
{
	for (size_t i = 0; i < r->count; i++)
		if (r->entries[i].instance_id == instance_id && !strcmp(r->entries[i].name, name))
			return &r->entries[i];
	return NULL;
}
