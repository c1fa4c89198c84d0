/* qapi/qapi-migration.c — QEMU's MigrationInfo (query-migrate) from
 * struct migration_info.
 *
 * Which members are present follows QEMU (migration/migration.c,
 * fill_source_migration_info, populate_time_info, populate_ram_info), not
 * the has_* flags of struct migration_info:
 *
 *   status none                 {}  (nothing at all)
 *   setup, failed, cancelled    status (+ error-desc)
 *   active, cancelling, device  status, setup-time, total-time,
 *                               expected-downtime, ram (+ error-desc)
 *   completed                   status, setup-time, total-time, downtime,
 *                               ram with remaining = dirty-pages-rate = 0
 *
 * and with ram, when the dirty-limit throttle is at work (has_dirty_limit),
 * dirty-limit-throttle-time-per-round and dirty-limit-ring-full-time
 * (populate_ram_info).
 *   destination side (incoming) status only (+ error-desc)
 *
 * kmig adds "x-kmig" (struct migration_kmig_stats) whenever status is
 * present; QMP clients ignore members they do not know.
 */
#include "qapi/qmp-internal.h"

#include <string.h>

/* A string member from a fixed array the machine filled: never trust its NUL */
static void add_fixed_string(JsonBuilder *b, const char *name, const char *v, size_t size)
{
	char *copy = g_strndup(v, size);

	json_builder_set_member_name(b, name);
	json_builder_add_string_value(b, copy);
	g_free(copy);
}

static void add_ram(JsonBuilder *b, const struct migration_info *info)
{
	const struct migration_ram_stats *r = &info->ram;
	bool completed = info->status == MIGRATION_STATUS_COMPLETED;

	json_builder_set_member_name(b, "ram");
	json_builder_begin_object(b);
	qmp_builder_add_uint(b, "transferred", r->transferred);
	qmp_builder_add_uint(b, "remaining", completed ? 0 : r->remaining);
	qmp_builder_add_uint(b, "total", r->total);
	qmp_builder_add_uint(b, "duplicate", r->duplicate);
	qmp_builder_add_uint(b, "normal", r->normal);
	qmp_builder_add_uint(b, "normal-bytes", r->normal_bytes);
	qmp_builder_add_uint(b, "dirty-pages-rate", completed ? 0 : r->dirty_pages_rate);
	qmp_builder_add_double(b, "mbps", r->mbps);
	qmp_builder_add_uint(b, "dirty-sync-count", r->dirty_sync_count);
	qmp_builder_add_uint(b, "postcopy-requests", 0);
	qmp_builder_add_uint(b, "page-size", r->page_size);
	qmp_builder_add_uint(b, "multifd-bytes", r->multifd_bytes);
	qmp_builder_add_uint(b, "pages-per-second", r->pages_per_second);
	qmp_builder_add_uint(b, "precopy-bytes", r->precopy_bytes);
	qmp_builder_add_uint(b, "downtime-bytes", r->downtime_bytes);
	qmp_builder_add_uint(b, "postcopy-bytes", 0);
	qmp_builder_add_uint(b, "dirty-sync-missed-zero-copy", 0);
	json_builder_end_object(b);
}

static void add_kmig(JsonBuilder *b, const struct migration_kmig_stats *k)
{
	json_builder_set_member_name(b, "x-kmig");
	json_builder_begin_object(b);
	if (k->dirty_mode) {
		json_builder_set_member_name(b, "dirty-mode");
		json_builder_add_string_value(b, k->dirty_mode);
	}
	qmp_builder_add_uint(b, "ring-overflows", k->dirty_ring_overflows);
	qmp_builder_add_uint(b, "ring-full-exits", k->dirty_ring_full_exits);
	qmp_builder_add_uint(b, "ring-resyncs", k->dirty_ring_resyncs);
	qmp_builder_add_uint(b, "pages-harvested", k->pages_harvested);
	qmp_builder_add_uint(b, "passes", k->passes);
	qmp_builder_add_uint(b, "shrink-passes", k->shrink_passes);
	qmp_builder_add_uint(b, "channels", k->channels);
	if (k->unresolved) {
		json_builder_set_member_name(b, "unresolved");
		json_builder_add_boolean_value(b, true);
	}
	if (k->tls) {
		json_builder_set_member_name(b, "tls");
		json_builder_add_string_value(b, k->tls);
	}
	if (k->send_mode) {
		json_builder_set_member_name(b, "send-mode");
		json_builder_add_string_value(b, k->send_mode);
	}
	qmp_builder_add_uint(b, "zero-copy-notifications", k->zc_notifications);
	qmp_builder_add_uint(b, "zero-copy-copied", k->zc_copied);
	if (k->dirty_telemetry) {
		json_builder_set_member_name(b, "dirty-telemetry");
		json_builder_add_string_value(b, k->dirty_telemetry);
	}
	if (k->telemetry_why[0])
		add_fixed_string(b, "telemetry-why", k->telemetry_why, sizeof(k->telemetry_why));
	qmp_builder_add_uint(b, "ring-lost-pages", k->dirty_ring_lost_pages);
	if (k->has_switchover_expected_downtime)
		qmp_builder_add_uint(b, "switchover-expected-downtime", k->switchover_expected_downtime);
	json_builder_end_object(b);
}

static void add_times(JsonBuilder *b, const char *member, const char *time_name,
		      const struct migration_device_time *t, unsigned int n)
{
	json_builder_set_member_name(b, member);
	json_builder_begin_array(b);
	for (unsigned int i = 0; i < n; i++) {
		json_builder_begin_object(b);
		add_fixed_string(b, "name", t[i].name, sizeof(t[i].name));
		qmp_builder_add_uint(b, "instance-id", t[i].instance_id);
		qmp_builder_add_uint(b, time_name, t[i].time_us);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
}

static void add_phases(JsonBuilder *b, const struct migration_info *info)
{
	const struct migration_phases *p = &info->phases;

	json_builder_set_member_name(b, "x-kmig-downtime-phases");
	json_builder_begin_object(b);
	if (info->is_incoming) {
		qmp_builder_add_uint(b, "loaded", p->loaded_us);
		qmp_builder_add_uint(b, "vcpus-started", p->started_us);
	} else {
		qmp_builder_add_uint(b, "vcpus-stopped", p->vcpus_stopped_us);
		qmp_builder_add_uint(b, "iterable-saved", p->iterable_saved_us);
		qmp_builder_add_uint(b, "non-iterable-saved", p->devices_saved_us);
		qmp_builder_add_uint(b, "end-of-stream", p->eof_us);
		qmp_builder_add_uint(b, "acknowledged", p->end_us);
	}
	json_builder_end_object(b);
}

/* The seeds' members (remaining, device-state-times) and kmig's savevm
 * extensions; see docs/qmp.md. */
static void add_savevm(JsonBuilder *b, const struct migration_info *info)
{
	if (info->has_remaining) {
		qmp_builder_add_uint(b, "remaining", info->remaining);
		json_builder_set_member_name(b, "x-kmig-pending");
		json_builder_begin_array(b);
		for (unsigned int i = 0; i < info->nr_pending; i++) {
			json_builder_begin_object(b);
			json_builder_set_member_name(b, "name");
			json_builder_add_string_value(b, info->pending[i].name);
			qmp_builder_add_uint(b, "instance-id", info->pending[i].instance_id);
			qmp_builder_add_uint(b, "bytes", info->pending[i].bytes);
			json_builder_end_object(b);
		}
		json_builder_end_array(b);
	}
	if (info->nr_device_times)
		add_times(b, "device-state-times", "save-time", info->device_times, info->nr_device_times);
	if (info->nr_iterable_times)
		add_times(b, "x-kmig-iterable-save-times", "save-time", info->iterable_times,
			  info->nr_iterable_times);
	if (info->nr_load_times)
		add_times(b, "x-kmig-device-load-times", "load-time", info->load_times, info->nr_load_times);
	if (info->phases.valid)
		add_phases(b, info);
	if (info->has_stall) {
		json_builder_set_member_name(b, "x-kmig-stall");
		json_builder_begin_object(b);
		json_builder_set_member_name(b, "stalled");
		json_builder_add_boolean_value(b, info->stall.stalled);
		qmp_builder_add_uint(b, "iterations", info->stall.iterations);
		qmp_builder_add_uint(b, "since-ms", info->stall.since_ms);
		qmp_builder_add_uint(b, "min-remaining", info->stall.min_remaining);
		json_builder_end_object(b);
	}
}

/* QEMU's socket-address: [SocketAddress], {"type": "inet", "host", "port"}
 * (the port a string, as in QEMU's InetSocketAddress) or {"type": "unix",
 * "path"} */
static void add_socket_address(JsonBuilder *b, const struct migration_info *info)
{
	if (!info->has_socket_address)
		return;
	json_builder_set_member_name(b, "socket-address");
	json_builder_begin_array(b);
	json_builder_begin_object(b);
	json_builder_set_member_name(b, "type");
	if (info->socket_address.is_unix) {
		json_builder_add_string_value(b, "unix");
		add_fixed_string(b, "path", info->socket_address.path, sizeof(info->socket_address.path));
	} else {
		json_builder_add_string_value(b, "inet");
		add_fixed_string(b, "host", info->socket_address.host, sizeof(info->socket_address.host));
		add_fixed_string(b, "port", info->socket_address.port, sizeof(info->socket_address.port));
	}
	json_builder_end_object(b);
	json_builder_end_array(b);
}

JsonNode *qapi_migration_info_to_json(const struct migration_info *info)
{
	JsonBuilder *b = json_builder_new();
	bool times = false, expected = false;
	const char *status;
	JsonNode *root;

	json_builder_begin_object(b);
	status = migration_status_name(info->status);
	if (info->status == MIGRATION_STATUS_NONE || !status)
		goto out;

	json_builder_set_member_name(b, "status");
	json_builder_add_string_value(b, status);

	if (!info->is_incoming) {
		switch (info->status) {
		case MIGRATION_STATUS_ACTIVE:
		case MIGRATION_STATUS_CANCELLING:
		case MIGRATION_STATUS_DEVICE:
			times = expected = true;
			break;
		case MIGRATION_STATUS_COMPLETED:
			times = true;
			break;
		default:
			break;
		}
	}
	if (times) {
		qmp_builder_add_uint(b, "setup-time", info->setup_time_ms);
		qmp_builder_add_uint(b, "total-time", info->total_time_ms);
		if (expected)
			qmp_builder_add_uint(b, "expected-downtime", info->expected_downtime_ms);
		else
			qmp_builder_add_uint(b, "downtime", info->downtime_ms);
		add_ram(b, info);
		if (info->has_dirty_limit) {
			qmp_builder_add_uint(b, "dirty-limit-throttle-time-per-round",
					     info->dirty_limit_throttle_time_per_round_us);
			qmp_builder_add_uint(b, "dirty-limit-ring-full-time", info->dirty_limit_ring_full_time_us);
		}
	}
	if (info->has_error && info->error_desc[0])
		add_fixed_string(b, "error-desc", info->error_desc, sizeof(info->error_desc));
	add_kmig(b, &info->kmig);
	add_savevm(b, info);
out:
	/* like QEMU, also before any source connected: how a caller that
	 * listened on port 0 learns the port */
	add_socket_address(b, info);
	json_builder_end_object(b);
	root = json_builder_get_root(b);
	g_object_unref(b);
	return root;
}

char *qapi_migration_info_to_string(const struct migration_info *info, gboolean pretty)
{
	JsonNode *node = qapi_migration_info_to_json(info);
	char *s = qmp_json_to_string(node, pretty);

	json_node_unref(node);
	return s;
}
