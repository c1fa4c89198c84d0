/* savevm/params.c — the table of migration parameters (see params.h). */
#include "savevm/params.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "common/util.h"

/* max-bandwidth and avail-switchover-bandwidth: QEMU bounds them by
 * SIZE_MAX; half of it keeps the pacing arithmetic from overflowing. */
#define BANDWIDTH_MAX ((uint64_t)SIZE_MAX / 2)

#define U64(field, bit) MIGRATION_PARAM_UINT64, MIGRATION_PARAM_##bit, offsetof(struct migration_params, field)
#define STR(field, bit) MIGRATION_PARAM_STRING, MIGRATION_PARAM_##bit, offsetof(struct migration_params, field)
#define CAP(field, bit) MIGRATION_PARAM_BOOL, MIGRATION_PARAM_##bit, offsetof(struct migration_params, field)

const struct migration_param migration_param_table[] = {
	{ "max-bandwidth", false, U64(max_bandwidth, MAX_BANDWIDTH), 0, BANDWIDTH_MAX, 0, RANGE_INTEGER,
	  "max_bandwidth", "bytes/second", "bytes/s the migration may send, applied at once; 0 = no limit" },
	{ "avail-switchover-bandwidth", false, U64(avail_switchover_bandwidth, AVAIL_SWITCHOVER_BANDWIDTH), 0,
	  BANDWIDTH_MAX, 0, RANGE_INTEGER, "avail_switchover_bandwidth", "bytes/second",
	  "bytes/s the switchover decision and expected-downtime assume; 0 = the measured bandwidth" },
	{ "downtime-limit", false, U64(downtime_limit_ms, DOWNTIME_LIMIT), 0, 2000000, 300, RANGE_INTEGER,
	  "downtime_limit", "ms", "the longest the guest may stay stopped at the switchover" },
	{ "multifd-channels", false, U64(multifd_channels, MULTIFD_CHANNELS), 1, 255, 2, RANGE_BETWEEN,
	  "multifd_channels", "", "RAM channels when the multifd capability is on" },
	{ "x-vcpu-dirty-limit-period", false, U64(vcpu_dirty_limit_period_ms, VCPU_DIRTY_LIMIT_PERIOD), 1, 1000,
	  1000, RANGE_BETWEEN, "x-vcpu-dirty-limit-period", "ms", "the dirty-limit controller's period" },
	{ "vcpu-dirty-limit", false, U64(vcpu_dirty_limit, VCPU_DIRTY_LIMIT), 1, UINT64_MAX, 1, RANGE_GREATER,
	  "vcpu_dirty_limit", "MB/s",
	  "what the dirty-limit capability holds each vCPU to when a migration does not converge" },
	{ "x-kmig-stall-iterations", false, U64(stall_iterations, STALL_ITERATIONS), 1, 1000000, 5, RANGE_INTEGER,
	  "x-kmig-stall-iterations", "", "passes without progress before x-kmig-stall says stalled" },
	{ "x-kmig-stall-ms", false, U64(stall_ms, STALL_MS), 0, 3600000, 5000, RANGE_INTEGER, "x-kmig-stall-ms", "ms",
	  "milliseconds without progress (as well as the passes) before x-kmig-stall says stalled" },
	{ "x-kmig-io-timeout", false, U64(io_timeout_ms, IO_TIMEOUT), 0, 3600000, 30000, RANGE_INTEGER,
	  "x-kmig-io-timeout", "ms", "a migration connection with no send or receive for this long fails; 0 = wait for ever" },
	{ "x-kmig-send-mode", false, MIGRATION_PARAM_SEND_MODE_ENUM, MIGRATION_PARAM_SEND_MODE,
	  offsetof(struct migration_params, send_mode), SAVEVM_SEND_AUTO, SAVEVM_SEND_ZC, SAVEVM_SEND_AUTO,
	  RANGE_BETWEEN, "x-kmig-send-mode", "", "how guest pages are sent: auto (measure, keep the faster), copy, zero-copy" },
	{ "tls-creds", false, STR(tls_creds, TLS_CREDS), 0, MIGRATION_OBJECT_ID_MAX, 0, RANGE_BETWEEN, "tls-creds", "",
	  "id of the tls-creds-x509 object that encrypts and authenticates every migration connection; \"\" = plaintext" },
	{ "tls-hostname", false, STR(tls_hostname, TLS_HOSTNAME), 0, 255, 0, RANGE_BETWEEN, "tls-hostname", "",
	  "the name the destination's certificate must carry; \"\" = the host of the migration URI" },
	{ "tls-authz", false, STR(tls_authz, TLS_AUTHZ), 0, MIGRATION_OBJECT_ID_MAX, 0, RANGE_BETWEEN, "tls-authz", "",
	  "destination: id of the authz-simple object naming the source identity allowed; \"\" = any the CA signed" },
	{ "multifd", true, CAP(multifd, MULTIFD), 0, 1, 0, RANGE_BETWEEN, "multifd", "",
	  "send RAM over multifd-channels extra connections" },
	{ "zero-copy-send", true, CAP(zero_copy_send, ZERO_COPY_SEND), 0, 1, 0, RANGE_BETWEEN, "zero-copy-send", "",
	  "send guest pages zero-copy, on every connection" },
	{ "dirty-limit", true, CAP(dirty_limit, DIRTY_LIMIT), 0, 1, 0, RANGE_BETWEEN, "dirty-limit", "",
	  "throttle vCPUs to vcpu-dirty-limit when a migration does not converge (needs the dirty ring)" },
};

#undef U64
#undef STR
#undef CAP

const size_t migration_param_count = sizeof(migration_param_table) / sizeof(migration_param_table[0]);

const struct migration_param *migration_param_find(const char *name, bool capability)
{
	for (size_t i = 0; name && i < migration_param_count; i++)
		if (migration_param_table[i].capability == capability && !strcmp(migration_param_table[i].name, name))
			return &migration_param_table[i];
	return NULL;
}

uint64_t migration_param_get(const struct migration_params *p, const struct migration_param *d)
{
	const char *at = (const char *)p + d->offset;

	switch (d->type) {
	case MIGRATION_PARAM_SEND_MODE_ENUM:
		return (uint64_t)*(const enum savevm_send_mode *)at;
	case MIGRATION_PARAM_BOOL:
		return *(const bool *)at;
	case MIGRATION_PARAM_STRING:
		return 0;
	default:
		return *(const uint64_t *)at;
	}
}

void migration_param_put(struct migration_params *p, const struct migration_param *d, uint64_t v)
{
	char *at = (char *)p + d->offset;

	switch (d->type) {
	case MIGRATION_PARAM_SEND_MODE_ENUM:
		*(enum savevm_send_mode *)at = (enum savevm_send_mode)v;
		break;
	case MIGRATION_PARAM_BOOL:
		*(bool *)at = v != 0;
		break;
	case MIGRATION_PARAM_STRING:
		break;
	default:
		*(uint64_t *)at = v;
		break;
	}
}

const char *migration_param_get_str(const struct migration_params *p, const struct migration_param *d)
{
	return d->type == MIGRATION_PARAM_STRING ? (const char *)p + d->offset : "";
}

int migration_param_put_str(struct migration_params *p, const struct migration_param *d, const char *v, char *err,
			    size_t errlen)
{
	size_t len = v ? strlen(v) : 0;

	if (d->type != MIGRATION_PARAM_STRING)
		return -EINVAL;
	if (len > d->max) {
		kmig_set_err(err, errlen, "Parameter '%s' expects a string of at most %" PRIu64 " bytes", d->error_name,
			     d->max);
		return -EINVAL;
	}
	memcpy((char *)p + d->offset, v ? v : "", len + 1);
	return 0;
}

int migration_param_check(const struct migration_param *d, uint64_t v, char *err, size_t errlen)
{
	const char *sp = d->unit[0] ? " " : "";

	if (v >= d->min && v <= d->max)
		return 0;
	if (d->type == MIGRATION_PARAM_SEND_MODE_ENUM)
		kmig_set_err(err, errlen, "Parameter '%s' expects auto, copy or zero-copy", d->error_name);
	else if (d->range == RANGE_INTEGER)
		kmig_set_err(err, errlen, "Parameter '%s' expects an integer in the range of %" PRIu64 " to %" PRIu64 "%s%s",
			     d->error_name, d->min, d->max, sp, d->unit);
	else if (d->range == RANGE_GREATER)
		kmig_set_err(err, errlen, "Parameter '%s' must be greater than %" PRIu64 "%s%s", d->error_name, d->min, sp,
			     d->unit);
	else
		kmig_set_err(err, errlen, "Parameter '%s' expects a value between %" PRIu64 " and %" PRIu64,
			     d->error_name, d->min, d->max);
	return -EINVAL;
}

int migration_params_check(const struct migration_params *p, unsigned int mask, char *err, size_t errlen)
{
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];
		int r = (mask & d->mask) ? migration_param_check(d, migration_param_get(p, d), err, errlen) : 0;

		if (r)
			return r;
	}
	return 0;
}

void migration_params_default(struct migration_params *p)
{
	memset(p, 0, sizeof(*p));
	for (size_t i = 0; i < migration_param_count; i++)
		migration_param_put(p, &migration_param_table[i], migration_param_table[i].dflt);
}

void migration_params_copy(struct migration_params *dst, const struct migration_params *src, unsigned int mask)
{
	for (size_t i = 0; i < migration_param_count; i++) {
		const struct migration_param *d = &migration_param_table[i];

		if (!(mask & d->mask))
			continue;
		if (d->type == MIGRATION_PARAM_STRING)
			migration_param_put_str(dst, d, migration_param_get_str(src, d), NULL, 0);
		else
			migration_param_put(dst, d, migration_param_get(src, d));
	}
}

bool migration_param_parse_enum(const struct migration_param *d, const char *s, uint64_t *v)
{
	for (uint64_t i = d->min; s && i <= d->max; i++) {
		if (!strcmp(s, migration_param_enum_name(d, i))) {
			*v = i;
			return true;
		}
	}
	return false;
}

const char *migration_param_enum_name(const struct migration_param *d, uint64_t v)
{
	(void)d;	/* the one enum parameter there is */
	return savevm_send_mode_name((enum savevm_send_mode)v);
}
