/* machine/machine.h — one guest and its migration, as the control plane
 * (qapi/ and tools/) sees it.  Everything here is thread-safe: QMP runs on
 * the main thread, vCPUs and the migration on their own threads.
 *
 * Names and units follow QEMU's qapi/migration.json so that qapi/ can map
 * them one to one: times in milliseconds, sizes in bytes, bandwidth in
 * bytes per second, mbps in megabits per second.
 */
#ifndef KMIG_MACHINE_MACHINE_H
#define KMIG_MACHINE_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/vm-types.h"
#include "savevm/migration.h"
#include "savevm/params.h"

struct machine;

/* guest RAM: at least this, in multiples of 2 MiB (the KVM layer's rule) */
#define MACHINE_MIN_MEM_MIB 16
/* --device options of one machine */
#define MACHINE_MAX_DEVICES 8

struct machine_config {
	const char *kernel_path;	/* multiboot ELF or flat binary file */
	const char *guest_name;		/* built-in guest (instead of kernel_path) */
	const char *cmdline;		/* multiboot command line ("ws=64 rate=0") */
	uint64_t flat_load_addr;	/* flat binaries: load and entry address */
	bool flat;			/* kernel_path is a flat binary */
	uint64_t mem_mib;
	bool mem_prealloc;		/* fault all RAM in at start (-mem-prealloc) */
	unsigned int vcpus;
	const char *serial_path;	/* NULL = stdout */
	enum kmig_dirty_tracking dirty_mode;
	uint32_t dirty_ring_entries;	/* per vCPU; power of two */
	const char *incoming;		/* NULL, "defer" or a URI */
	/* devices: "blob,id=NAME,size=SIZE[,dirty-rate=B/S][,stop-copy=SIZE]"
	 * (a source and its destination need the same list) */
	const char *const *devices;
	unsigned int nr_devices;
	/* objects (QEMU's --object): "tls-creds-x509,id=ID,endpoint=...,dir=...
	 * [,verify-peer=on|off]" or "authz-simple,id=ID,identity=DN" */
	const char *const *objects;
	unsigned int nr_objects;
};

/* QEMU's RunState names (query-status) */
enum machine_runstate {
	RUNSTATE_PRELAUNCH,
	RUNSTATE_RUNNING,
	RUNSTATE_PAUSED,
	RUNSTATE_INMIGRATE,
	RUNSTATE_FINISH_MIGRATE,
	RUNSTATE_POSTMIGRATE,
	RUNSTATE_SHUTDOWN,
	RUNSTATE_INTERNAL_ERROR,
	RUNSTATE_RESTORE_VM,
};
const char *machine_runstate_name(enum machine_runstate s);

enum machine_event {
	MACHINE_EVENT_STOP,
	MACHINE_EVENT_RESUME,
	MACHINE_EVENT_SHUTDOWN,		/* arg: guest exit code or -1 */
	MACHINE_EVENT_MIGRATION,	/* arg: enum migration_status */
	MACHINE_EVENT_MIGRATION_PASS,	/* arg: pass number */
	MACHINE_EVENT_STALL,		/* arg: 1 stalled, 0 recovered */
};
/* Called from any thread, one call at a time; must not call back into the
 * machine.  After machine_set_event_handler() returns, the previous
 * handler is not running and will not run again. */
typedef void (*machine_event_fn)(void *opaque, enum machine_event ev, int64_t arg);

/* Check a configuration without side effects: no file is opened for
 * writing, /dev/kvm is not needed.  Guest and its parameters, RAM (not more
 * than the host has), vCPUs, devices, the incoming URI (parsed and its host
 * resolved), and the serial file (never the kernel file).  -errno with a
 * reason in err.  A run checks everything here before it touches anything. */
int machine_config_check(const struct machine_config *cfg, char *err, size_t errlen);

/* The built-in guests, for listings: fills up to max entries, returns how
 * many there are. */
struct machine_guest_info {
	const char *name;		/* "idle", "dirty", "verify" */
	const char *summary;		/* one line */
	const char *params_help;	/* "key=value" parameters with defaults */
};
size_t machine_builtin_guests(struct machine_guest_info *out, size_t max);

/* A file the run of c will write (--OPTION PATH), checked without opening,
 * creating or truncating it: never c's kernel file ("--OPTION 'PATH' is
 * the kernel file: it would be emptied"), never c's serial file unless it
 * is that file ("... is the serial file too"), and writable ("cannot open
 * WHAT 'PATH': reason").  -errno with the reason in err. */
int machine_output_check(const struct machine_config *c, const char *option, const char *what, const char *path,
			 char *err, size_t errlen);

/* Check cfg (machine_config_check), create the VM, load the guest, register
 * every savevm entry, and only then open the serial file.  Nothing runs
 * yet.  On failure returns -errno with a reason in err and leaves nothing
 * behind. */
int machine_create(const struct machine_config *cfg, struct machine **out, char *err, size_t errlen);
/* Start the vCPUs, or, with cfg->incoming set to a URI, start listening for
 * an incoming migration (vCPUs start after a complete, valid stream). */
int machine_start(struct machine *m, char *err, size_t errlen);
void machine_set_event_handler(struct machine *m, machine_event_fn fn, void *opaque);
/* Block until the machine shuts down (guest exit, quit, fatal error).
 * Returns the process exit code to use. */
int machine_wait(struct machine *m);
void machine_request_quit(struct machine *m);
void machine_destroy(struct machine *m);

enum machine_runstate machine_runstate(struct machine *m);
bool machine_running(struct machine *m);
int machine_stop(struct machine *m, char *err, size_t errlen);
int machine_cont(struct machine *m, char *err, size_t errlen);

/* Migration.  machine_migrate() and machine_migrate_incoming() return as
 * soon as the migration thread runs.  Errors: -EINVAL bad argument, -EBUSY already migrating, -EPERM
 * not allowed in this state; err says which, in words. */
int machine_migrate(struct machine *m, const char *uri, char *err, size_t errlen);
int machine_migrate_incoming(struct machine *m, const char *uri, char *err, size_t errlen);
int machine_migrate_cancel(struct machine *m, char *err, size_t errlen);
void machine_query_migrate(struct machine *m, struct migration_info *info);
void machine_get_params(struct machine *m, struct migration_params *p);
/* Only the members flagged in mask (MIGRATION_PARAM_*, savevm/params.h)
 * change; checked as a whole first (migration_params_check: one check,
 * QEMU's words), then what depends on this VM (dirty-limit needs the dirty
 * ring: -ENOTSUP). */
/* object-add, object-del: the objects tls-creds and tls-authz name */
int machine_object_add(struct machine *m, const struct migration_object_spec *o, char *err, size_t errlen);
int machine_object_del(struct machine *m, const char *id, char *err, size_t errlen);
int machine_set_params(struct machine *m, const struct migration_params *p, unsigned int mask,
		       char *err, size_t errlen);

/* The incoming URI actually bound (tcp port 0 resolved), "" if none. */
void machine_incoming_uri(struct machine *m, char *buf, size_t len);

/* Change a blob device's dirty rate (bytes/s) while it runs; -ENOENT if
 * there is no blob with that id. */
int machine_blob_set_dirty_rate(struct machine *m, const char *id, uint64_t rate, char *err, size_t errlen);

/* QEMU's pmemsave: write size bytes of guest physical memory from gpa to
 * the file at path (created or truncated).  Every byte must be RAM (the
 * gap between low and high RAM is not): otherwise -EINVAL and no file.
 * Reads guest memory without populating it (machine/pmem.c), so it may run
 * at any time, also on a migration's source or destination.  -errno with
 * the reason in err, in QEMU's words where QEMU has them. */
int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path, char *err,
		     size_t errlen);

/* ---- dirty page rate (QEMU's calc-dirty-rate, query-dirty-rate) ----
 * Works with or without a migration running.  page-sampling hashes
 * sample_pages pages per GiB at the start and the end; dirty-ring counts
 * each vCPU's dirty-ring pushes (eBPF counters, or the harvester's when
 * the programs are not attached) and needs --dirty-tracking ring;
 * dirty-bitmap counts the pages KVM's bitmap reports and needs the
 * bitmap backend.  Rates are MiB/s. */
enum dirtyrate_mode { DIRTYRATE_PAGE_SAMPLING, DIRTYRATE_DIRTY_RING, DIRTYRATE_DIRTY_BITMAP };
enum dirtyrate_status { DIRTYRATE_UNSTARTED, DIRTYRATE_MEASURING, DIRTYRATE_MEASURED };
#define DIRTYRATE_MIN_CALC_MS 50
#define DIRTYRATE_MAX_CALC_MS 60000
#define DIRTYRATE_MIN_SAMPLE_PAGES 128
#define DIRTYRATE_MAX_SAMPLE_PAGES 4096
#define DIRTYRATE_DEFAULT_SAMPLE_PAGES 512
struct dirtyrate_info {
	enum dirtyrate_status status;
	enum dirtyrate_mode mode;
	int64_t start_time_s;		/* wall clock, seconds since the epoch */
	int64_t calc_time_ms;
	uint64_t sample_pages;		/* per GiB; page-sampling only (else 0) */
	bool has_dirty_rate;		/* once measured */
	int64_t dirty_rate;
	/* dirty-ring mode, once measured: one rate per vCPU */
	unsigned int nr_vcpus;
	int64_t vcpu_dirty_rate[KMIG_MAX_VCPUS];
	/* extension: what counted ("ring", "bitmap", "sampling") */
	const char *counted_by;
	/* extension, dirty-ring mode once measured: MiB/s of dirty-ring
	 * entries (each write after a re-protection), counted by eBPF or the
	 * harvester (telemetry_by) */
	bool has_dirty_ring_push_rate;
	int64_t dirty_ring_push_rate;
	const char *telemetry_by;
};
/* Starts a measurement in the background.  Checked here: the mode is
 * available with this VM's dirty tracking (-ENOTSUP, QEMU's words "mode
 * %s is not enabled, use other method instead."), none is running
 * (-EBUSY, "the dirty rate is already being measured."); calc_time_ms and
 * sample_pages must already be in range (-EINVAL otherwise). */
int machine_calc_dirty_rate(struct machine *m, int64_t calc_time_ms, enum dirtyrate_mode mode,
			    uint64_t sample_pages, char *err, size_t errlen);
void machine_query_dirty_rate(struct machine *m, struct dirtyrate_info *out);

/* ---- dirty limit (QEMU's set/cancel/query-vcpu-dirty-limit) ----
 * A vCPU with a limit sleeps in its run loop whenever it has dirtied
 * more than limit MB/s allows (a token bucket refilled at the limit);
 * vCPUs that do not dirty memory are never slowed.  Needs the dirty ring
 * (-ENOTSUP otherwise).  cpu_index -1 = every vCPU; an index out of range
 * is -EINVAL ("incorrect cpu index specified"). */
struct dirtylimit_vcpu {
	int cpu_index;
	uint64_t limit_rate;		/* MB/s */
	uint64_t current_rate;		/* MB/s, over the last period */
};
int machine_set_vcpu_dirty_limit(struct machine *m, int cpu_index, uint64_t mb_per_s, char *err,
				 size_t errlen);
int machine_cancel_vcpu_dirty_limit(struct machine *m, int cpu_index, char *err, size_t errlen);
/* The vCPUs that have a limit, in index order; returns how many. */
unsigned int machine_query_vcpu_dirty_limit(struct machine *m, struct dirtylimit_vcpu *out, unsigned int max);

#endif
