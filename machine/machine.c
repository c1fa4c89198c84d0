/* The machine: a VM with a loaded guest, its savevm registry, its run
 * state and its migration — what qapi/ and tools/ drive. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvm/guests/builtin.h"
#include "machine/machine-int.h"

#define MAX_KERNEL_SIZE (64u << 20)

static const char *const runstate_names[] = {
	[RUNSTATE_PRELAUNCH] = "prelaunch", [RUNSTATE_RUNNING] = "running",
	[RUNSTATE_PAUSED] = "paused", [RUNSTATE_INMIGRATE] = "inmigrate",
	[RUNSTATE_FINISH_MIGRATE] = "finish-migrate", [RUNSTATE_POSTMIGRATE] = "postmigrate",
	[RUNSTATE_SHUTDOWN] = "shutdown", [RUNSTATE_INTERNAL_ERROR] = "internal-error",
	[RUNSTATE_RESTORE_VM] = "restore-vm",
};

const char *machine_runstate_name(enum machine_runstate s)
{
	return (unsigned int)s < sizeof(runstate_names) / sizeof(runstate_names[0]) ? runstate_names[s] : "?";
}

/* Handlers run under ev_lock, which machine_set_event_handler() takes
 * too: once it returns, the old handler is not running and never will. */
void machine_emit(struct machine *m, enum machine_event ev, int64_t arg)
{
	pthread_mutex_lock(&m->ev_lock);
	if (m->ev)
		m->ev(m->ev_opaque, ev, arg);
	pthread_mutex_unlock(&m->ev_lock);
}

void machine_set_runstate_locked(struct machine *m, enum machine_runstate s)
{
	m->runstate = s;
	pthread_cond_broadcast(&m->cond);
}

/* ---- the migration engine's host (savevm/migration.h) ---- */

/* One step under the lock: a 'stop' racing with the switchover either
 * happened before (the guest stays paused if the migration fails) or
 * finds finish-migrate and does nothing. */
static bool host_pause(void *opaque)
{
	struct machine *m = opaque;

	pthread_mutex_lock(&m->lock);
	bool was_running = m->runstate == RUNSTATE_RUNNING;

	machine_set_runstate_locked(m, RUNSTATE_FINISH_MIGRATE);
	pthread_mutex_unlock(&m->lock);
	/* idempotent; also waits out a concurrent stop still pausing */
	kvm_vm_pause(m->vm);
	if (was_running)
		machine_emit(m, MACHINE_EVENT_STOP, 0);
	return was_running;
}

static void host_resume(void *opaque, bool was_running)
{
	struct machine *m = opaque;

	pthread_mutex_lock(&m->lock);
	bool resume = m->runstate == RUNSTATE_FINISH_MIGRATE && was_running;

	if (m->runstate == RUNSTATE_FINISH_MIGRATE)
		machine_set_runstate_locked(m, resume ? RUNSTATE_RUNNING : RUNSTATE_PAUSED);
	pthread_mutex_unlock(&m->lock);
	if (resume) {
		kvm_vm_resume(m->vm);
		machine_emit(m, MACHINE_EVENT_RESUME, 0);
	}
}

static void host_migrated(void *opaque)
{
	struct machine *m = opaque;

	pthread_mutex_lock(&m->lock);
	machine_set_runstate_locked(m, RUNSTATE_POSTMIGRATE);
	pthread_mutex_unlock(&m->lock);
}

static int host_start(void *opaque)
{
	struct machine *m = opaque;
	int r = kvm_vm_start(m->vm);

	if (r)
		return r;
	pthread_mutex_lock(&m->lock);
	machine_set_runstate_locked(m, RUNSTATE_RUNNING);
	pthread_mutex_unlock(&m->lock);
	machine_emit(m, MACHINE_EVENT_RESUME, 0);
	return 0;
}

/* Like QEMU: a destination whose incoming migration failed exits, its
 * guest never started. */
static void host_incoming_failed(void *opaque)
{
	struct machine *m = opaque;

	pthread_mutex_lock(&m->lock);
	m->quit = true;
	m->exit_code = 1;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

static void host_event(void *opaque, enum migration_event ev, int64_t arg)
{
	static const enum machine_event map[] = {
		[MIGRATION_EVENT_STATUS] = MACHINE_EVENT_MIGRATION,
		[MIGRATION_EVENT_PASS] = MACHINE_EVENT_MIGRATION_PASS,
		[MIGRATION_EVENT_STALL] = MACHINE_EVENT_STALL,
	};

	machine_emit(opaque, map[ev], arg);
}

static void host_throttle(void *opaque, uint64_t mib_per_s)
{
	if (mib_per_s)
		dirtylimit_migration_engage(opaque, mib_per_s);
	else
		dirtylimit_migration_release(opaque);
}

static const struct migration_host machine_host = {
	.pause = host_pause, .resume = host_resume, .migrated = host_migrated, .start = host_start,
	.incoming_failed = host_incoming_failed, .event = host_event, .throttle = host_throttle,
};

/* ---- guest callbacks (vCPU threads) ---- */

/* The guest's serial output, written through as the guest writes it (one
 * write per character, as QEMU's file chardev does): a progress dot shows
 * at once, and a killed kmig loses nothing the guest wrote.  A character
 * already costs the vCPU an exit to user space; the write adds about a
 * microsecond to it.  A file that fails (a full disk, a reader gone) loses
 * output, never the guest: it is said once, and again only after writes
 * worked in between. */
static void on_serial(void *opaque, const char *buf, size_t len)
{
	struct machine *m = opaque;
	bool failed = fwrite(buf, 1, len, m->serial) != len;

	failed |= fflush(m->serial) != 0;
	if (failed) {
		if (!m->serial_failed)
			fprintf(stderr, "kmig: serial output '%s': %s; the guest's output is being lost\n",
				m->cfg.serial_path ? m->cfg.serial_path : "stdout", strerror(errno));
		clearerr(m->serial);
		m->serial_failed = true;
	} else {
		m->serial_failed = false;
	}
}

static void on_stopped(void *opaque, enum kvm_stop_reason why, int code, const char *detail)
{
	struct machine *m = opaque;

	if (why != KVM_STOP_GUEST_EXIT || code != 0)
		fprintf(stderr, "kmig: %s\n", detail);
	fflush(m->serial);
	pthread_mutex_lock(&m->lock);
	machine_set_runstate_locked(m, why == KVM_STOP_GUEST_EXIT ? RUNSTATE_SHUTDOWN : RUNSTATE_INTERNAL_ERROR);
	m->quit = true;
	m->exit_code = why == KVM_STOP_GUEST_EXIT ? code : 2;
	pthread_mutex_unlock(&m->lock);
	machine_emit(m, MACHINE_EVENT_SHUTDOWN, why == KVM_STOP_GUEST_EXIT ? code : -1);
}

/* ---- creation ---- */

static int read_file(const char *path, uint8_t **data, size_t *size, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open kernel '%s': %s", path, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0 ||
	    (uint64_t)st.st_size > MAX_KERNEL_SIZE) {
		snprintf(err, errlen, "kernel '%s' is not a regular file of 1 byte to %u MiB", path,
			 MAX_KERNEL_SIZE >> 20);
		close(fd);
		return -EINVAL;
	}
	*data = malloc((size_t)st.st_size);
	ssize_t n = *data ? read(fd, *data, (size_t)st.st_size) : -1;

	close(fd);
	if (n != st.st_size) {
		free(*data);
		snprintf(err, errlen, "cannot read kernel '%s'", path);
		return -EIO;
	}
	*size = (size_t)st.st_size;
	return 0;
}

static int load_guest(struct machine *m, char *err, size_t errlen)
{
	const struct machine_config *c = &m->cfg;
	uint8_t *data = NULL;
	size_t size = 0;
	int r;

	if (c->guest_name) {
		const struct kvm_builtin_guest *g = kvm_builtin_guest_find(c->guest_name);

		if (!g) {
			snprintf(err, errlen, "unknown built-in guest '%s' (kmig run --help lists them)",
				 c->guest_name);
			return -ENOENT;
		}
		return kvm_load_multiboot(m->vm, g->elf, g->elf_size, m->cmdline, err, errlen);
	}
	if ((r = read_file(c->kernel_path, &data, &size, err, errlen)))
		return r;
	r = c->flat ? kvm_load_flat(m->vm, data, size, c->flat_load_addr, err, errlen)
		    : kvm_load_multiboot(m->vm, data, size, m->cmdline, err, errlen);
	free(data);
	return r;
}

static int open_serial(struct machine *m, char *err, size_t errlen)
{
	if (!m->cfg.serial_path || !strcmp(m->cfg.serial_path, "stdio") ||
	    !strcmp(m->cfg.serial_path, "-")) {
		m->serial = stdout;
		return 0;
	}
	m->serial = fopen(m->cfg.serial_path, "w");
	if (!m->serial) {
		int e = errno;
		snprintf(err, errlen, "cannot open serial output '%s': %s", m->cfg.serial_path, strerror(e));
		return -e;
	}
	m->serial_owned = true;
	return 0;
}

/* The --device list: iterable devices, registered after RAM. */
static int add_devices(struct machine *m, char *err, size_t errlen)
{
	/* machine_config_check() has refused bad, too many and duplicate ones */
	for (unsigned int i = 0; i < m->cfg.nr_devices; i++) {
		struct blob_config c;
		int r = blob_parse(m->cfg.devices[i], &c, err, errlen);

		if (!r && (r = blob_register(m->reg, m->vm, &c, &m->blobs[m->nr_blobs])))
			snprintf(err, errlen, "cannot create blob '%s': %s", c.id, strerror(-r));
		if (r)
			return r;
		m->nr_blobs++;
	}
	return 0;
}

int machine_blob_set_dirty_rate(struct machine *m, const char *id, uint64_t rate, char *err, size_t errlen)
{
	for (unsigned int i = 0; i < m->nr_blobs; i++) {
		if (!strcmp(blob_id(m->blobs[i]), id)) {
			int r = blob_set_dirty_rate(m->blobs[i], rate);

			if (r)
				snprintf(err, errlen, "cannot start the rewriting of '%s': %s", id, strerror(-r));
			return r;
		}
	}
	snprintf(err, errlen, "Device '%s' not found", id);
	return -ENOENT;
}

/* The host's RAM in MiB (MemTotal), 0 if unknown. */
static uint64_t host_ram_mib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	unsigned long long kib = 0;
	char line[128];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib >> 10;
}

static int check_guest(const struct machine_config *c, char *err, size_t errlen)
{
	struct stat st;

	if (!c->guest_name) {
		if (!c->kernel_path || stat(c->kernel_path, &st) < 0) {
			snprintf(err, errlen, "cannot open kernel '%s': %s", c->kernel_path ? c->kernel_path : "",
				 strerror(c->kernel_path ? errno : EINVAL));
			return -ENOENT;
		}
		return 0;
	}
	const struct kvm_builtin_guest *g = kvm_builtin_guest_find(c->guest_name);

	if (!g) {
		snprintf(err, errlen, "unknown built-in guest '%s' (kmig run --help lists them)", c->guest_name);
		return -ENOENT;
	}
	return kvm_builtin_guest_check_params(g, c->cmdline, err, errlen);
}

static int check_devices(const struct machine_config *c, char *err, size_t errlen)
{
	struct blob_config b[MACHINE_MAX_DEVICES];

	if (c->nr_devices > MACHINE_MAX_DEVICES) {
		snprintf(err, errlen, "at most %d devices", MACHINE_MAX_DEVICES);
		return -E2BIG;
	}
	for (unsigned int i = 0; i < c->nr_devices; i++) {
		int r = blob_parse(c->devices[i], &b[i], err, errlen);

		if (r)
			return r;
		for (unsigned int j = 0; j < i; j++) {
			if (!strcmp(b[j].id, b[i].id)) {
				snprintf(err, errlen, "two devices with id '%s'", b[i].id);
				return -EEXIST;
			}
		}
	}
	return 0;
}

/* --object: each parses (the credentials are read at creation) */
static int check_objects(const struct machine_config *c, char *err, size_t errlen)
{
	for (unsigned int i = 0; i < c->nr_objects; i++) {
		struct migration_object_spec o;
		char why[512];
		int r = migration_object_parse(c->objects[i], &o, why, sizeof(why));

		if (!r)
			r = migration_object_check(&o, why, sizeof(why));
		if (r) {
			snprintf(err, errlen, "--object %s: %s", c->objects[i], why);
			return r;
		}
	}
	return 0;
}

/* --object, once the engine exists */
static int add_objects(struct machine *m, char *err, size_t errlen)
{
	for (unsigned int i = 0; i < m->cfg.nr_objects; i++) {
		struct migration_object_spec o;
		char why[512];
		int r = migration_object_parse(m->cfg.objects[i], &o, why, sizeof(why));

		if (!r)
			r = migration_object_add(m->mig, &o, why, sizeof(why));
		if (r) {
			snprintf(err, errlen, "--object %s: %s", m->cfg.objects[i], why);
			return r;
		}
	}
	return 0;
}

static int check_incoming(const char *incoming, char *err, size_t errlen)
{
	if (!incoming || !strcmp(incoming, "defer"))
		return 0;
	return migration_uri_check(incoming, true, err, errlen);
}

/* Whether a and b are one regular file (or one path not there yet): two
 * writers of a device such as /dev/null or /dev/full empty nothing. */
static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!a || !b)
		return false;
	if (stat(a, &sa) || stat(b, &sb))
		return !strcmp(a, b);
	return S_ISREG(sa.st_mode) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Whether the run could open path for writing, asked without opening it:
 * opening a FIFO and closing it again would hand its reader an end of
 * file before the run has written anything. */
static int check_writable(const char *what, const char *path, char *err, size_t errlen)
{
	struct stat st;
	int e = 0;

	if (!stat(path, &st)) {
		if (S_ISDIR(st.st_mode))
			e = EISDIR;
		else if (access(path, W_OK))
			e = errno;
	} else if (errno == ENOENT) {
		char *copy = strdup(path);

		if (!copy)
			e = ENOMEM;
		else if (access(dirname(copy), W_OK | X_OK))
			e = errno;
		free(copy);
	} else {
		e = errno;
	}
	if (e)
		snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(e));
	return -e;
}

int machine_output_check(const struct machine_config *c, const char *option, const char *what, const char *path,
			 char *err, size_t errlen)
{
	/* the files a run writes are truncated at start: never one it reads,
	 * nor the serial file (unless path is the serial file itself) */
	if (same_file(path, c->kernel_path)) {
		snprintf(err, errlen, "--%s '%s' is the kernel file: it would be emptied", option, path);
		return -EINVAL;
	}
	if (path != c->serial_path && c->serial_path && same_file(path, c->serial_path)) {
		snprintf(err, errlen, "--%s '%s' is the serial file too", option, path);
		return -EINVAL;
	}
	return check_writable(what, path, err, errlen);
}

static int check_outputs(const struct machine_config *c, char *err, size_t errlen)
{
	if (!c->serial_path || !strcmp(c->serial_path, "-") || !strcmp(c->serial_path, "stdio"))
		return 0;
	return machine_output_check(c, "serial", "serial output", c->serial_path, err, errlen);
}

size_t machine_builtin_guests(struct machine_guest_info *out, size_t max)
{
	size_t n;
	const struct kvm_builtin_guest *g = kvm_builtin_guests(&n);

	for (size_t i = 0; i < n && i < max; i++)
		out[i] = (struct machine_guest_info){ g[i].name, g[i].summary, g[i].params_help };
	return n;
}

int machine_config_check(const struct machine_config *c, char *err, size_t errlen)
{
	uint64_t host_mib = host_ram_mib();
	int r;

	if (c->mem_mib < MACHINE_MIN_MEM_MIB || c->mem_mib % 2) {
		snprintf(err, errlen, "guest memory must be at least %d MiB and a multiple of 2 MiB",
			 MACHINE_MIN_MEM_MIB);
		return -EINVAL;
	}
	if (host_mib && c->mem_mib > host_mib) {
		snprintf(err, errlen, "--mem: %llu MiB is more than this host's RAM (%llu MiB)",
			 (unsigned long long)c->mem_mib, (unsigned long long)host_mib);
		return -E2BIG;
	}
	if (c->vcpus < 1 || c->vcpus > KMIG_MAX_VCPUS) {
		snprintf(err, errlen, "--vcpus: 1 to %d", KMIG_MAX_VCPUS);
		return -EINVAL;
	}
	if ((r = check_guest(c, err, errlen)) || (r = check_devices(c, err, errlen)) || (r = check_objects(c, err, errlen)) ||
	    (r = check_incoming(c->incoming, err, errlen)) || (r = check_outputs(c, err, errlen)))
		return r;
	return 0;
}

int machine_create(const struct machine_config *cfg, struct machine **out, char *err, size_t errlen)
{
	int r = machine_config_check(cfg, err, errlen);
	struct machine *m = r ? NULL : calloc(1, sizeof(*m));

	if (r)
		return r;
	if (!m)
		return -ENOMEM;
	m->cfg = *cfg;
	m->cmdline = strdup(cfg->cmdline ? cfg->cmdline : "");
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->ev_lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	dirtylimit_init(m);
	m->runstate = RUNSTATE_PRELAUNCH;

	struct kvm_vm_config vc = {
		.mem_bytes = cfg->mem_mib << 20, .nr_vcpus = cfg->vcpus,
		.dirty_backend = cfg->dirty_mode,
		.dirty_ring_entries = cfg->dirty_ring_entries ? cfg->dirty_ring_entries : 4096,
		.prealloc = cfg->mem_prealloc,
	};
	struct kvm_vm_callbacks cb = { .serial_out = on_serial, .stopped = on_stopped, .opaque = m };
	r = kvm_vm_create(&vc, &cb, &m->vm, err, errlen);
	if (!r) {
		telemetry_open(m);
		if (kvm_dirty_backend(m->vm) == KMIG_DIRTY_RING)
			fprintf(stderr, "kmig: dirty telemetry: %s%s%s%s\n", m->telemetry,
				m->telemetry_why[0] ? " (" : "", m->telemetry_why, m->telemetry_why[0] ? ")" : "");
		r = load_guest(m, err, errlen);
	}
	if (!r && !(m->reg = savevm_registry_new()))
		r = -ENOMEM;
	if (!r) {
		struct ram_tracker t;

		ram_tracker_for_vm(&t, m->vm);
		r = ram_handler_register(m->reg, kvm_vm_mem(m->vm), &t, &m->ram);
	}
	if (!r)
		r = add_devices(m, err, errlen);
	if (!r)
		r = devices_register(m->reg, m->vm);
	if (!r) {
		const struct migration_env env = {
			.reg = m->reg, .ram = m->ram, .ram_size = kvm_vm_ram_size(m->vm),
			.nr_vcpus = kvm_vm_nr_vcpus(m->vm), .host = &machine_host, .opaque = m,
		};
		r = migration_new(&env, &m->mig);
	}
	if (!r)
		r = add_objects(m, err, errlen);
	/* last: a run refused above has truncated nothing */
	if (!r)
		r = open_serial(m, err, errlen);
	if (r) {
		if (!err[0])
			snprintf(err, errlen, "cannot create the machine: %s", strerror(-r));
		machine_destroy(m);
		return r;
	}
	*out = m;
	return 0;
}

int machine_start(struct machine *m, char *err, size_t errlen)
{
	const char *inc = m->cfg.incoming;

	if (inc) {
		pthread_mutex_lock(&m->lock);
		machine_set_runstate_locked(m, RUNSTATE_INMIGRATE);
		pthread_mutex_unlock(&m->lock);
		if (!strcmp(inc, "defer")) {
			m->incoming_defer = true;
			return 0;
		}
		return migration_listen(m->mig, inc, err, errlen);
	}
	int r = kvm_vm_start(m->vm);

	if (r) {
		snprintf(err, errlen, "cannot start the vCPUs: %s", strerror(-r));
		return r;
	}
	pthread_mutex_lock(&m->lock);
	machine_set_runstate_locked(m, RUNSTATE_RUNNING);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void machine_set_event_handler(struct machine *m, machine_event_fn fn, void *opaque)
{
	pthread_mutex_lock(&m->ev_lock);
	m->ev = fn;
	m->ev_opaque = opaque;
	pthread_mutex_unlock(&m->ev_lock);
}

int machine_wait(struct machine *m)
{
	pthread_mutex_lock(&m->lock);
	while (!m->quit)
		pthread_cond_wait(&m->cond, &m->lock);
	int code = m->exit_code;
	pthread_mutex_unlock(&m->lock);
	return code;
}

void machine_request_quit(struct machine *m)
{
	pthread_mutex_lock(&m->lock);
	m->quit = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

/* Stop everything that could still touch the machine, then free it. */
void machine_destroy(struct machine *m)
{
	if (!m)
		return;
	/* first: the engine's threads call back into the machine (it is
	 * freed last: the dirty-limit controller reads its parameters) */
	migration_abort(m->mig);
	dirtyrate_fini(m);
	dirtylimit_fini(m);
	if (m->vm)
		kvm_vm_shutdown(m->vm);
	telemetry_close(m);
	for (unsigned int i = 0; i < m->nr_blobs; i++)
		blob_free(m->blobs[i]);
	if (m->reg) {
		devices_free(m->reg);
		savevm_registry_free(m->reg);
	}
	ram_handler_free(m->ram);
	kvm_vm_destroy(m->vm);
	migration_free(m->mig);
	if (m->serial) {
		fflush(m->serial);
		if (m->serial_owned)
			fclose(m->serial);
	}
	free(m->cmdline);
	free(m);
}

/* ---- run state ---- */

enum machine_runstate machine_runstate(struct machine *m)
{
	pthread_mutex_lock(&m->lock);
	enum machine_runstate s = m->runstate;
	pthread_mutex_unlock(&m->lock);
	return s;
}

bool machine_running(struct machine *m)
{
	return machine_runstate(m) == RUNSTATE_RUNNING;
}

int machine_stop(struct machine *m, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	enum machine_runstate s = m->runstate;

	if (s != RUNSTATE_RUNNING) {
		pthread_mutex_unlock(&m->lock);
		return 0;	/* QEMU: stop on a stopped guest is not an error */
	}
	machine_set_runstate_locked(m, RUNSTATE_PAUSED);
	pthread_mutex_unlock(&m->lock);
	kvm_vm_pause(m->vm);
	machine_emit(m, MACHINE_EVENT_STOP, 0);
	(void)err;
	(void)errlen;
	return 0;
}

int machine_cont(struct machine *m, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	enum machine_runstate s = m->runstate;

	if (s == RUNSTATE_FINISH_MIGRATE || s == RUNSTATE_SHUTDOWN || s == RUNSTATE_INTERNAL_ERROR) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "Cannot continue a guest in state '%s'", machine_runstate_name(s));
		return -EPERM;
	}
	/* As QEMU: on a destination, cont means "run once the migration
	 * has arrived", which is what kmig does anyway; but a loaded guest
	 * whose source never decided runs only on this cont (the operator's
	 * word that the source says completed). */
	if (s == RUNSTATE_RUNNING || s == RUNSTATE_INMIGRATE) {
		pthread_mutex_unlock(&m->lock);
		return s == RUNSTATE_INMIGRATE && migration_unresolved(m->mig) ? migration_resolve(m->mig, err, errlen)
										: 0;
	}
	machine_set_runstate_locked(m, RUNSTATE_RUNNING);
	pthread_mutex_unlock(&m->lock);
	kvm_vm_resume(m->vm);
	machine_emit(m, MACHINE_EVENT_RESUME, 0);
	return 0;
}

/* ---- migration control ---- */

int machine_migrate(struct machine *m, const char *uri, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	enum machine_runstate rs = m->runstate;
	bool incoming = m->incoming_defer;

	pthread_mutex_unlock(&m->lock);
	incoming |= migration_is_incoming(m->mig);
	if (migration_in_progress(m->mig)) {
		snprintf(err, errlen, "There's a migration process in progress");
		return -EBUSY;
	}
	if (incoming || rs == RUNSTATE_INMIGRATE) {
		snprintf(err, errlen, "Guest is waiting for an incoming migration");
		return -EPERM;
	}
	if (rs != RUNSTATE_RUNNING && rs != RUNSTATE_PAUSED && rs != RUNSTATE_POSTMIGRATE) {
		snprintf(err, errlen, "Cannot migrate a guest in state '%s'", machine_runstate_name(rs));
		return -EPERM;
	}
	return migration_start(m->mig, uri, err, errlen);
}

int machine_migrate_incoming(struct machine *m, const char *uri, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	bool allowed = m->incoming_defer;

	pthread_mutex_unlock(&m->lock);
	allowed &= !migration_is_incoming(m->mig);
	if (!allowed) {
		snprintf(err, errlen, m->incoming_defer ? "The incoming migration has already been started"
							: "'-incoming' was not specified on the command line");
		return -EPERM;
	}
	return migration_listen(m->mig, uri, err, errlen);
}

int machine_migrate_cancel(struct machine *m, char *err, size_t errlen)
{
	migration_cancel(m->mig);
	(void)err;
	(void)errlen;
	return 0;	/* QEMU: cancelling nothing is not an error */
}

void machine_query_migrate(struct machine *m, struct migration_info *info)
{
	struct kvm_dirty_stats ds;

	migration_query(m->mig, info);
	kvm_dirty_get_stats(m->vm, &ds);
	info->kmig.dirty_mode = kvm_dirty_backend_name(m->vm);
	info->kmig.dirty_ring_overflows = ds.overflows;
	info->kmig.dirty_ring_full_exits = ds.dirty_ring_full_exits;
	info->kmig.dirty_ring_resyncs = ds.resyncs;
	info->kmig.pages_harvested = ds.harvested;
	info->kmig.dirty_ring_lost_pages = ds.lost_pages;
	info->kmig.dirty_telemetry = m->telemetry;
	snprintf(info->kmig.telemetry_why, sizeof(info->kmig.telemetry_why), "%s", m->telemetry_why);
	/* QEMU: only while a dirty-limit migration throttles */
	if (migration_throttling(m->mig))
		info->has_dirty_limit = dirtylimit_migration_stats(m, &info->dirty_limit_throttle_time_per_round_us,
								   &info->dirty_limit_ring_full_time_us);
}

int machine_object_add(struct machine *m, const struct migration_object_spec *o, char *err, size_t errlen)
{
	return migration_object_add(m->mig, o, err, errlen);
}

int machine_object_del(struct machine *m, const char *id, char *err, size_t errlen)
{
	return migration_object_del(m->mig, id, err, errlen);
}

void machine_get_params(struct machine *m, struct migration_params *p)
{
	migration_get_params(m->mig, p);
}

int machine_set_params(struct machine *m, const struct migration_params *p, unsigned int mask,
		       char *err, size_t errlen)
{
	int r = migration_params_check(p, mask, err, errlen);

	if (r)
		return r;
	if ((mask & MIGRATION_PARAM_DIRTY_LIMIT) && p->dirty_limit && kvm_dirty_backend(m->vm) != KMIG_DIRTY_RING) {
		snprintf(err, errlen, "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set "
			 "(kmig run --dirty-tracking ring)");
		return -ENOTSUP;
	}
	return migration_set_params(m->mig, p, mask, err, errlen);
}

void machine_incoming_uri(struct machine *m, char *buf, size_t len)
{
	migration_incoming_uri(m->mig, buf, len);
}
