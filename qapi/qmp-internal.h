/* qapi/qmp-internal.h — pieces of the QMP server shared between its files
 * (and its unit tests).  Not an interface for the rest of kmig: that is
 * qapi/qmp.h.
 */
#ifndef KMIG_QAPI_QMP_INTERNAL_H
#define KMIG_QAPI_QMP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "qapi/qmp-json.h"
#include "qapi/qmp.h"

#ifndef KMIG_VERSION
#define KMIG_VERSION "0.1.0"
#endif
#define QMP_PACKAGE "kmig-" KMIG_VERSION
/* The QEMU release whose QMP interface kmig follows (query-version). */
#define QMP_QEMU_MAJOR 7
#define QMP_QEMU_MINOR 2
#define QMP_QEMU_MICRO 0

/* A client that leaves this much output unread is not read from until it
 * catches up; one that leaves QMP_MAX_PENDING_OUTPUT is disconnected. */
#define QMP_OUTPUT_HIGH_WATER (1u << 20)
#define QMP_MAX_PENDING_OUTPUT (16u << 20)

/* ----------------------------------------------------------- error classes */

/* QEMU's QapiErrorClass, in QEMU's order. */
enum qmp_error_class {
	QMP_ERROR_GENERIC,
	QMP_ERROR_COMMAND_NOT_FOUND,
	QMP_ERROR_DEVICE_NOT_ACTIVE,
	QMP_ERROR_DEVICE_NOT_FOUND,
	QMP_ERROR_KVM_MISSING_CAP,
	QMP_ERROR__MAX,
};
const char *qmp_error_class_name(enum qmp_error_class c);
/* GError domain whose codes are enum qmp_error_class. */
#define QMP_ERROR (qmp_error_quark())
GQuark qmp_error_quark(void);

/* ------------------------------------------------------------ JSON output */

/* JSON integers are int64 in json-glib: clamp. */
void qmp_builder_add_uint(JsonBuilder *b, const char *name, uint64_t v);
void qmp_builder_add_int(JsonBuilder *b, const char *name, int64_t v);
/* Non-finite numbers become 0 (JSON has no NaN or infinity). */
void qmp_builder_add_double(JsonBuilder *b, const char *name, double v);
/* A copy of node where any non-finite number is replaced by null. */
JsonNode *qmp_json_sanitized_copy(JsonNode *node);

/* ------------------------------------------------------ migration tables */

/* QEMU's MigrationCapability, in its schema order, and whether kmig
 * implements it.  One the machine acts on is also a row of the parameter
 * table (savevm/params.h), where its state lives. */
#define QMP_MIGRATION_CAPABILITIES(X)                                \
	X(XBZRLE, "xbzrle", false)                                   \
	X(RDMA_PIN_ALL, "rdma-pin-all", false)                       \
	X(AUTO_CONVERGE, "auto-converge", false)                     \
	X(EVENTS, "events", true)                                    \
	X(POSTCOPY_RAM, "postcopy-ram", false)                       \
	X(X_COLO, "x-colo", false)                                   \
	X(RELEASE_RAM, "release-ram", false)                         \
	X(RETURN_PATH, "return-path", false)                         \
	X(PAUSE_BEFORE_SWITCHOVER, "pause-before-switchover", false) \
	X(MULTIFD, "multifd", true)                                  \
	X(DIRTY_BITMAPS, "dirty-bitmaps", false)                     \
	X(POSTCOPY_BLOCKTIME, "postcopy-blocktime", false)           \
	X(LATE_BLOCK_ACTIVATE, "late-block-activate", false)         \
	X(X_IGNORE_SHARED, "x-ignore-shared", false)                 \
	X(VALIDATE_UUID, "validate-uuid", false)                     \
	X(BACKGROUND_SNAPSHOT, "background-snapshot", false)         \
	X(ZERO_COPY_SEND, "zero-copy-send", true)                    \
	X(POSTCOPY_PREEMPT, "postcopy-preempt", false)               \
	X(SWITCHOVER_ACK, "switchover-ack", false)                   \
	X(DIRTY_LIMIT, "dirty-limit", true)                          \
	X(MAPPED_RAM, "mapped-ram", false)

enum qmp_migration_cap {
#define QMP_CAP_ENUM(id, name, supported) QMP_MIGCAP_##id,
	QMP_MIGRATION_CAPABILITIES(QMP_CAP_ENUM)
#undef QMP_CAP_ENUM
	QMP_MIGCAP__MAX,
};

struct qmp_migration_cap_info {
	const char *name;
	bool supported;
};
extern const struct qmp_migration_cap_info qmp_migration_caps[QMP_MIGCAP__MAX];
/* -1 if name is not a MigrationCapability */
int qmp_migration_cap_lookup(const char *name);

/* -------------------------------------------------------------- commands */

enum qmp_arg_type {
	QMP_ARG_STR,
	QMP_ARG_BOOL,
	QMP_ARG_INT,	/* int64 */
	QMP_ARG_UINT64, /* also QAPI 'size'; negative numbers are refused */
	QMP_ARG_NUMBER,
	QMP_ARG_OBJECT,
	QMP_ARG_ARRAY,
	QMP_ARG_ANY,
	QMP_ARG_STR_OR_NULL,	/* QAPI's StrOrNull */
};

struct qmp_arg_spec {
	const char *name;
	enum qmp_arg_type type;
	bool required;
};

struct qmp_server;
struct qmp_conn;

/* Returns the "return" value (a new node) or NULL with *err set.  args has
 * been checked against the command's spec: every required member is there
 * and every member present has its type. */
typedef JsonNode *(*qmp_handler_fn)(struct qmp_server *s, struct qmp_conn *c, JsonObject *args,
				    GError **err);

#define QMP_CMD_NEGOTIATION (1u << 0) /* usable in capabilities negotiation */

struct qmp_command {
	const char *name;
	const struct qmp_arg_spec *args; /* terminated by a NULL name; NULL = none */
	qmp_handler_fn fn;
	unsigned int flags;
};

extern const struct qmp_command qmp_commands[];
extern const size_t qmp_n_commands;
const struct qmp_command *qmp_command_lookup(const char *name);

/* query-version's answer, also in the greeting */
JsonNode *qmp_version_json(void);

/* Check args (never NULL) against spec the way QEMU's input visitor does:
 * members in spec order (missing, then type), then unexpected members. */
bool qmp_check_args(const struct qmp_arg_spec *spec, JsonObject *args, GError **err);

/* --------------------------------------------- server state for commands */

struct qmp_server_state {
	struct machine *machine;
	/* migration capabilities the machine does not hold (events); those
	 * it holds (rows of savevm/params.h's table) are read from it */
	bool caps[QMP_MIGCAP__MAX];
	bool quit_pending;		/* quit answered; request it once sent */
	bool quit_requested;		/* machine_request_quit() done by QMP */
};
struct qmp_server_state *qmp_server_state(struct qmp_server *s);
/* client side of negotiation */
bool qmp_conn_negotiated(struct qmp_conn *c);
void qmp_conn_set_negotiated(struct qmp_conn *c);

/* A connected socket (taken) as a new client, greeted as if accepted: for
 * the fuzzer and tests that bring their own socket. */
void qmp_server_adopt(struct qmp_server *s, int fd);

/* An event message; data (not taken, may be NULL: no "data" member). */
JsonNode *qmp_event_build(const char *name, JsonNode *data, int64_t when_us);

#endif
