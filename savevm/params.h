/* savevm/params.h — every migration parameter and machine-held capability,
 * once.  A row holds the QMP name, type, range, default, where struct
 * migration_params keeps it, the refusal in QEMU's words and a one-line
 * doc.  QMP set and query (qapi/), the one check (machine and fake machine
 * alike), kmig info and the table in docs/qmp.md all come from it: adding a
 * parameter is adding a row (and the code where it acts).
 */
#ifndef KMIG_SAVEVM_PARAMS_H
#define KMIG_SAVEVM_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "savevm/savevm.h"

/* the longest id of a user-created object (--object, object-add) */
#define MIGRATION_OBJECT_ID_MAX 63

struct migration_params {
	uint64_t downtime_limit_ms;
	uint64_t max_bandwidth;			/* bytes/s; 0 = unlimited */
	uint64_t avail_switchover_bandwidth;	/* bytes/s; 0 = measured */
	uint64_t multifd_channels;
	uint64_t vcpu_dirty_limit_period_ms;
	uint64_t vcpu_dirty_limit;		/* MB/s */
	uint64_t stall_iterations;
	uint64_t stall_ms;
	uint64_t io_timeout_ms;
	enum savevm_send_mode send_mode;
	/* TLS (QEMU's names): the tls-creds-x509 object's id ("" =
	 * plaintext), the name the destination's certificate must carry
	 * ("" = the URI's host), the authz-simple object's id ("" = any
	 * client the CA signed) */
	char tls_creds[MIGRATION_OBJECT_ID_MAX + 1];
	char tls_hostname[256];
	char tls_authz[MIGRATION_OBJECT_ID_MAX + 1];
	/* capabilities the machine acts on */
	bool multifd;
	bool zero_copy_send;
	bool dirty_limit;
};

/* which members a set touches */
#define MIGRATION_PARAM_DOWNTIME_LIMIT (1u << 0)
#define MIGRATION_PARAM_MAX_BANDWIDTH (1u << 1)
#define MIGRATION_PARAM_STALL_ITERATIONS (1u << 2)
#define MIGRATION_PARAM_STALL_MS (1u << 3)
#define MIGRATION_PARAM_AVAIL_SWITCHOVER_BANDWIDTH (1u << 4)
#define MIGRATION_PARAM_MULTIFD_CHANNELS (1u << 5)
#define MIGRATION_PARAM_MULTIFD (1u << 6)
#define MIGRATION_PARAM_ZERO_COPY_SEND (1u << 7)
#define MIGRATION_PARAM_SEND_MODE (1u << 8)
#define MIGRATION_PARAM_DIRTY_LIMIT (1u << 9)
#define MIGRATION_PARAM_VCPU_DIRTY_LIMIT (1u << 10)
#define MIGRATION_PARAM_VCPU_DIRTY_LIMIT_PERIOD (1u << 11)
#define MIGRATION_PARAM_IO_TIMEOUT (1u << 12)
#define MIGRATION_PARAM_TLS_CREDS (1u << 13)
#define MIGRATION_PARAM_TLS_HOSTNAME (1u << 14)
#define MIGRATION_PARAM_TLS_AUTHZ (1u << 15)

enum migration_param_type {
	MIGRATION_PARAM_UINT64,
	MIGRATION_PARAM_SEND_MODE_ENUM,	/* a string: savevm_send_mode_name() */
	MIGRATION_PARAM_BOOL,		/* a capability */
	MIGRATION_PARAM_STRING,		/* at most max bytes; QEMU's StrOrNull (null = "") */
};

/* How a value out of range is refused, in QEMU's shapes:
 * "Parameter 'N' expects an integer in the range of MIN to MAX UNIT",
 * "Parameter 'N' expects a value between MIN and MAX",
 * "Parameter 'N' must be greater than MIN UNIT". */
enum migration_param_range { RANGE_INTEGER, RANGE_BETWEEN, RANGE_GREATER };

struct migration_param {
	const char *name;		/* QMP member or capability name */
	bool capability;		/* migrate-set-capabilities, not -parameters */
	enum migration_param_type type;
	unsigned int mask;
	size_t offset;			/* in struct migration_params */
	uint64_t min, max, dflt;
	enum migration_param_range range;
	const char *error_name;		/* as QEMU's refusal writes it */
	const char *unit;		/* "ms", "bytes/second", "MB/s" or "" */
	const char *doc;
};

/* The rows, in the order QEMU checks them (its migrate_params_check):
 * when several values are wrong, the first row's refusal is the one. */
extern const struct migration_param migration_param_table[];
extern const size_t migration_param_count;

/* The row called name (a parameter or, with capability, a capability), or
 * NULL. */
const struct migration_param *migration_param_find(const char *name, bool capability);
/* Numbers, enums and booleans (a string row reads 0 and ignores a put). */
uint64_t migration_param_get(const struct migration_params *p, const struct migration_param *d);
void migration_param_put(struct migration_params *p, const struct migration_param *d, uint64_t v);
/* String rows: the value, and setting it (-EINVAL, QEMU-like words in err,
 * when too long). */
const char *migration_param_get_str(const struct migration_params *p, const struct migration_param *d);
int migration_param_put_str(struct migration_params *p, const struct migration_param *d, const char *v, char *err,
			    size_t errlen);
/* 0, or -EINVAL with the row's refusal in err */
int migration_param_check(const struct migration_param *d, uint64_t v, char *err, size_t errlen);
/* Every member in mask, in table order; the first refusal wins. */
int migration_params_check(const struct migration_params *p, unsigned int mask, char *err, size_t errlen);
void migration_params_default(struct migration_params *p);
/* The members in mask, from src into dst. */
void migration_params_copy(struct migration_params *dst, const struct migration_params *src, unsigned int mask);
/* x-kmig-send-mode's words: true with *v for "auto", "copy", "zero-copy" */
bool migration_param_parse_enum(const struct migration_param *d, const char *s, uint64_t *v);
const char *migration_param_enum_name(const struct migration_param *d, uint64_t v);

#endif
