/* The migration engine's life and control: status, errors, start,
 * cancel, abort, parameters and query-migrate's figures.  The source and
 * destination threads are in migrate-source.c and migrate-incoming.c. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "kvm/kvm.h"
#include "savevm/migration-int.h"

const char *migration_status_name(enum migration_status s)
{
	static const char *const names[] = {
		[MIGRATION_STATUS_NONE] = "none", [MIGRATION_STATUS_SETUP] = "setup",
		[MIGRATION_STATUS_CANCELLING] = "cancelling", [MIGRATION_STATUS_CANCELLED] = "cancelled",
		[MIGRATION_STATUS_ACTIVE] = "active", [MIGRATION_STATUS_DEVICE] = "device",
		[MIGRATION_STATUS_COMPLETED] = "completed", [MIGRATION_STATUS_FAILED] = "failed",
	};

	return (unsigned int)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

void mig_set_status(struct migration *g, enum migration_status s)
{
	pthread_mutex_lock(&g->lock);
	bool changed = g->status != s;

	g->status = s;
	pthread_mutex_unlock(&g->lock);
	if (changed)
		g->env.host->event(g->env.opaque, MIGRATION_EVENT_STATUS, s);
}

void mig_ram_stats(struct migration *g, struct ram_stats *rs)
{
	memset(rs, 0, sizeof(*rs));
	if (g->env.ram)
		ram_handler_stats(g->env.ram, rs);
}

void mig_set_error(struct migration *g, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->lock);
	if (!g->error[0]) {
		va_start(ap, fmt);
		kmig_vset_err(g->error, sizeof(g->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g->lock);
}

void mig_abort_channels_locked(struct migration *g)
{
	if (g->ch)
		ring_channel_abort(g->ch);
	multifd_send_abort(g->mf_send);
	multifd_recv_abort(g->mf_recv);
}

void mig_end_connection(struct migration *g, struct ring_channel *ch)
{
	pthread_mutex_lock(&g->lock);
	g->end_ns = kmig_now_ns();
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	ring_channel_close(ch);
}

void mig_join(struct migration *g)
{
	if (g->thread_running) {
		pthread_join(g->thread, NULL);
		g->thread_running = false;
	}
	if (g->listener) {
		ring_listener_close(g->listener);
		g->listener = NULL;
	}
}

static void add_time(struct migration_device_time *t, unsigned int *n, unsigned int max,
		     const struct savevm_entry *e, uint64_t us)
{
	if (*n == max)
		return;
	snprintf(t[*n].name, sizeof(t[*n].name), "%s", e->name);
	t[*n].instance_id = e->instance_id;
	t[*n].time_us = us;
	(*n)++;
}

/* The savevm-level figures: system-wide remaining and its breakdown while
 * active, per-entry times once completed.  Called with g->lock held;
 * pending() is cheap and thread-safe. */
static void fill_savevm_info(struct migration *g, struct migration_info *info, enum migration_status s)
{
	bool active = s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_CANCELLING;

	for (size_t i = 0; i < savevm_registry_count(g->env.reg); i++) {
		struct savevm_entry *e = savevm_registry_at(g->env.reg, i);

		if (!g->incoming && active && e->iterable) {
			uint64_t b = e->ops->pending(e->opaque, false);

			info->remaining += b;
			if (!strcmp(e->name, "ram"))
				info->ram.remaining = b;
			if (info->nr_pending < sizeof(info->pending) / sizeof(info->pending[0])) {
				snprintf(info->pending[info->nr_pending].name, 65, "%s", e->name);
				info->pending[info->nr_pending].instance_id = e->instance_id;
				info->pending[info->nr_pending++].bytes = b;
			}
		}
		if (s != MIGRATION_STATUS_COMPLETED)
			continue;
		if (g->incoming && !e->iterable)
			add_time(info->load_times, &info->nr_load_times, MIGRATION_MAX_DEVICES, e,
				 e->load_time_us);
		else if (e->iterable)
			add_time(info->iterable_times, &info->nr_iterable_times,
				 sizeof(info->iterable_times) / sizeof(info->iterable_times[0]), e, e->save_time_us);
		else
			add_time(info->device_times, &info->nr_device_times, MIGRATION_MAX_DEVICES, e,
				 e->save_time_us);
	}
	info->has_remaining = !g->incoming && active;
	if (s == MIGRATION_STATUS_COMPLETED)
		info->phases = g->phases;
	if (!g->incoming && s != MIGRATION_STATUS_NONE && s != MIGRATION_STATUS_SETUP) {
		info->has_stall = true;
		info->stall = g->stall;
	}
}

static void fill_socket_address(struct migration_info *info, const struct ring_uri *u)
{
	info->has_socket_address = true;
	info->socket_address.is_unix = u->kind == RING_URI_UNIX;
	if (u->kind == RING_URI_TCP)	/* QEMU's inet host has no brackets */
		ring_uri_host(u, info->socket_address.host, sizeof(info->socket_address.host));
	snprintf(info->socket_address.port, sizeof(info->socket_address.port), "%s", u->port);
	snprintf(info->socket_address.path, sizeof(info->socket_address.path), "%s", u->path);
}

void migration_query(struct migration *g, struct migration_info *info)
{
	struct ram_stats rs;

	memset(info, 0, sizeof(*info));
	mig_ram_stats(g, &rs);
	pthread_mutex_lock(&g->lock);
	enum migration_status s = g->status;
	uint64_t now = kmig_now_ns();
	bool done = s == MIGRATION_STATUS_COMPLETED || s == MIGRATION_STATUS_FAILED ||
		    s == MIGRATION_STATUS_CANCELLED;

	info->status = s;
	info->is_incoming = g->incoming;
	if (g->incoming && g->listener)
		fill_socket_address(info, &g->listen_addr);
	if (s != MIGRATION_STATUS_NONE && s != MIGRATION_STATUS_SETUP && g->start_ns) {
		info->has_times = true;
		info->total_time_ms = ((done && g->end_ns ? g->end_ns : now) - g->start_ns) / 1000000;
		info->setup_time_ms = g->setup_ns / 1000000;
	}
	if (!g->incoming && (s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_CANCELLING ||
			     s == MIGRATION_STATUS_COMPLETED)) {
		struct migration_ram_stats *r = &info->ram;

		info->has_ram = true;
		/* RAM's share of the stream, as QEMU's ram.transferred; live,
		 * since a pass may take seconds between statistics updates */
		r->transferred = rs.bytes;
		/* r->remaining: fill_savevm_info(), live, while active */
		r->total = g->env.ram_size;
		r->duplicate = rs.duplicate;
		r->normal = rs.normal;
		r->normal_bytes = rs.normal * KVM_PAGE_SIZE;
		r->dirty_sync_count = g->dirty_sync_count;
		r->page_size = KVM_PAGE_SIZE;
		r->pages_per_second = g->pages_per_second;
		r->dirty_pages_rate = g->dirty_pages_rate;
		r->precopy_bytes = s == MIGRATION_STATUS_COMPLETED ? g->precopy_bytes
			: atomic_load_explicit(&g->sent, memory_order_relaxed);
		r->downtime_bytes = g->downtime_bytes;
		r->multifd_bytes = g->mf_send ? multifd_send_bytes(g->mf_send) : g->multifd_bytes;
		r->mbps = g->mbps;
		/* until a pass has been measured, the rate so far */
		if (!g->bandwidth && now > g->start_ns)
			r->mbps = (double)atomic_load_explicit(&g->sent, memory_order_relaxed) * 8 / 1e6 /
				  ((double)(now - g->start_ns) / 1e9);
		if (s == MIGRATION_STATUS_COMPLETED && g->end_ns > g->start_ns)
			r->mbps = (double)atomic_load_explicit(&g->sent, memory_order_relaxed) * 8 / 1e6 /
				  ((double)(g->end_ns - g->start_ns) / 1e9);
	}
	if (!g->incoming && s == MIGRATION_STATUS_ACTIVE) {
		info->has_expected_downtime = true;
		info->expected_downtime_ms = g->expected_downtime_ms ? g->expected_downtime_ms
								     : g->params.downtime_limit_ms;
	}
	if (!g->incoming && s == MIGRATION_STATUS_COMPLETED) {
		info->has_downtime = true;
		info->downtime_ms = g->downtime_ms;
	}
	if (s == MIGRATION_STATUS_FAILED && g->error[0]) {
		info->has_error = true;
		snprintf(info->error_desc, sizeof(info->error_desc), "%s", g->error);
	}
	fill_savevm_info(g, info, s);
	info->kmig.passes = g->passes;
	info->kmig.shrink_passes = g->shrink_passes;
	info->kmig.channels = g->channels;
	info->kmig.send_mode = savevm_send_mode_name(g->send_mode);
	info->kmig.tls = g->tls_mode ? g->tls_mode : "none";
	info->kmig.unresolved = g->unresolved;
	info->kmig.zc_notifications = g->zc_sends;
	info->kmig.zc_copied = g->zc_copied;
	info->kmig.has_switchover_expected_downtime = g->switchover_decided;
	info->kmig.switchover_expected_downtime = g->switchover_expected_ms;
	pthread_mutex_unlock(&g->lock);
}

bool migration_unresolved(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool u = g->unresolved;

	pthread_mutex_unlock(&g->lock);
	return u;
}

int migration_resolve(struct migration *g, char *err, size_t errlen)
{
	pthread_mutex_lock(&g->lock);
	bool u = g->unresolved;

	g->unresolved = false;
	pthread_mutex_unlock(&g->lock);
	if (!u) {
		snprintf(err, errlen, "no incoming migration waits for a decision");
		return -EINVAL;
	}
	int r = g->env.host->start(g->env.opaque);

	if (r) {
		snprintf(err, errlen, "cannot start the vCPUs: %s", strerror(-r));
		return r;
	}
	mig_set_status(g, MIGRATION_STATUS_COMPLETED);
	return 0;
}

bool migration_throttling(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool on = g->dirty_limit_engaged && g->status == MIGRATION_STATUS_ACTIVE;

	pthread_mutex_unlock(&g->lock);
	return on;
}

int migration_new(const struct migration_env *env, struct migration **out)
{
	struct migration *g = calloc(1, sizeof(*g));

	if (!g)
		return -ENOMEM;
	g->env = *env;
	pthread_mutex_init(&g->lock, NULL);
	migration_params_default(&g->params);
	*out = g;
	return 0;
}

void migration_free(struct migration *g)
{
	if (!g)
		return;
	migration_abort(g);
	mig_tls_release(&g->tls);
	mig_objects_free(g);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static bool status_in_progress(enum migration_status s)
{
	return s == MIGRATION_STATUS_SETUP || s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_DEVICE ||
	       s == MIGRATION_STATUS_CANCELLING;
}

int migration_start(struct migration *g, const char *uri, char *err, size_t errlen)
{
	pthread_mutex_lock(&g->lock);
	bool busy = status_in_progress(g->status), incoming = g->incoming;

	pthread_mutex_unlock(&g->lock);
	if (busy || incoming) {
		snprintf(err, errlen, busy ? "There's a migration process in progress"
					   : "Guest is waiting for an incoming migration");
		return busy ? -EBUSY : -EPERM;
	}
	return mig_source_start(g, uri, err, errlen);
}

void migration_cancel(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool active = status_in_progress(g->status) && !g->incoming;

	if (active) {
		g->cancel = true;
		mig_abort_channels_locked(g);
	}
	pthread_mutex_unlock(&g->lock);
	if (active)
		mig_set_status(g, MIGRATION_STATUS_CANCELLING);
}

void migration_abort(struct migration *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->cancel = true;
	mig_abort_channels_locked(g);
	if (g->listener)
		ring_listener_abort(g->listener);
	pthread_mutex_unlock(&g->lock);
	mig_join(g);
}

enum migration_status migration_status(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	enum migration_status s = g->status;

	pthread_mutex_unlock(&g->lock);
	return s;
}

bool migration_in_progress(struct migration *g)
{
	return status_in_progress(migration_status(g));
}

bool migration_is_incoming(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool incoming = g->incoming;

	pthread_mutex_unlock(&g->lock);
	return incoming;
}

void migration_incoming_uri(struct migration *g, char *buf, size_t len)
{
	pthread_mutex_lock(&g->lock);
	snprintf(buf, len, "%s", g->incoming ? g->uri : "");
	pthread_mutex_unlock(&g->lock);
}

void migration_get_params(struct migration *g, struct migration_params *p)
{
	pthread_mutex_lock(&g->lock);
	*p = g->params;
	pthread_mutex_unlock(&g->lock);
}

int migration_set_params(struct migration *g, const struct migration_params *p, unsigned int mask, char *err,
			 size_t errlen)
{
	int r = migration_params_check(p, mask, err, errlen);

	if (r)
		return r;
	pthread_mutex_lock(&g->lock);
	migration_params_copy(&g->params, p, mask);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

int migration_uri_check(const char *uri, bool listen, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	return r ? r : ring_uri_resolve(&u, listen, err, errlen);
}
