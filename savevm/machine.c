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
#include "savevm/machine-int.h"

#define MAX_KERNEL_SIZE (64u << 20)

static const char *const runstate_names[] = {
	[RUNSTATE_PRELAUNCH] = "prelaunch", [RUNSTATE_RUNNING] = "running",
	[RUNSTATE_PAUSED] = "paused", [RUNSTATE_INMIGRATE] = "inmigrate",
	[RUNSTATE_FINISH_MIGRATE] = "finish-migrate", [RUNSTATE_POSTMIGRATE] = "postmigrate",
	[RUNSTATE_SHUTDOWN] = "shutdown", [RUNSTATE_INTERNAL_ERROR] = "internal-error",
	[RUNSTATE_RESTORE_VM] = "restore-vm",
};

static const char *const status_names[] = {
	[MIGRATION_STATUS_NONE] = "none", [MIGRATION_STATUS_SETUP] = "setup",
	[MIGRATION_STATUS_CANCELLING] = "cancelling", [MIGRATION_STATUS_CANCELLED] = "cancelled",
	[MIGRATION_STATUS_ACTIVE] = "active", [MIGRATION_STATUS_DEVICE] = "device",
	[MIGRATION_STATUS_COMPLETED] = "completed", [MIGRATION_STATUS_FAILED] = "failed",
};

const char *machine_runstate_name(enum machine_runstate s)
{
	return (unsigned int)s < sizeof(runstate_names) / sizeof(runstate_names[0]) ? runstate_names[s] : "?";
}

const char *migration_status_name(enum migration_status s)
{
	return (unsigned int)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "?";
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

void migration_set_status(struct machine *m, enum migration_status s)
{
	pthread_mutex_lock(&m->lock);
	bool changed = m->mig.status != s;

	m->mig.status = s;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	if (changed)
		machine_emit(m, MACHINE_EVENT_MIGRATION, s);
}

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

static int check_incoming(const char *incoming, char *err, size_t errlen)
{
	struct ring_uri u;
	int r;

	if (!incoming || !strcmp(incoming, "defer"))
		return 0;
	r = ring_uri_parse(incoming, &u, err, errlen);
	if (!r)
		r = ring_uri_resolve(&u, true, err, errlen);
	return r;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return a && b && !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
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
	if (path != c->serial_path && c->serial_path &&
	    (!strcmp(path, c->serial_path) || same_file(path, c->serial_path))) {
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
	if ((r = check_guest(c, err, errlen)) || (r = check_devices(c, err, errlen)) ||
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
	migration_params_default(&m->params);
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
		return migration_incoming_listen(m, inc, err, errlen);
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
	pthread_mutex_lock(&m->lock);
	m->mig.cancel = true;
	migration_abort_channels_locked(m);
	if (m->mig.listener)
		ring_listener_abort(m->mig.listener);
	pthread_mutex_unlock(&m->lock);
	migration_join(m);
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
	 * has arrived", which is what kmig does anyway. */
	if (s == RUNSTATE_RUNNING || s == RUNSTATE_INMIGRATE) {
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	machine_set_runstate_locked(m, RUNSTATE_RUNNING);
	pthread_mutex_unlock(&m->lock);
	kvm_vm_resume(m->vm);
	machine_emit(m, MACHINE_EVENT_RESUME, 0);
	return 0;
}

/* ---- migration control ---- */

static bool migration_active(enum migration_status s)
{
	return s == MIGRATION_STATUS_SETUP || s == MIGRATION_STATUS_ACTIVE ||
	       s == MIGRATION_STATUS_DEVICE || s == MIGRATION_STATUS_CANCELLING;
}

int machine_migrate(struct machine *m, const char *uri, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	enum machine_runstate rs = m->runstate;
	enum migration_status st = m->mig.status;
	bool incoming = m->mig.incoming || m->incoming_defer;

	pthread_mutex_unlock(&m->lock);
	if (migration_active(st)) {
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
	return migration_source_start(m, uri, err, errlen);
}

int machine_migrate_incoming(struct machine *m, const char *uri, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	bool allowed = m->incoming_defer && !m->mig.incoming;

	pthread_mutex_unlock(&m->lock);
	if (!allowed) {
		snprintf(err, errlen, m->incoming_defer ? "The incoming migration has already been started"
							: "'-incoming' was not specified on the command line");
		return -EPERM;
	}
	return migration_incoming_listen(m, uri, err, errlen);
}

int machine_migrate_cancel(struct machine *m, char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	bool active = migration_active(m->mig.status) && !m->mig.incoming;

	if (active) {
		m->mig.cancel = true;
		migration_abort_channels_locked(m);
	}
	pthread_mutex_unlock(&m->lock);
	if (active)
		migration_set_status(m, MIGRATION_STATUS_CANCELLING);
	(void)err;
	(void)errlen;
	return 0;	/* QEMU: cancelling nothing is not an error */
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
 * active, per-entry times once completed.  Called with m->lock held;
 * pending() is cheap and thread-safe. */
static void fill_savevm_info(struct machine *m, struct migration_info *info, enum migration_status s)
{
	const struct migration *g = &m->mig;
	bool active = s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_CANCELLING;

	for (size_t i = 0; i < savevm_registry_count(m->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(m->reg, i);

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

void machine_query_migrate(struct machine *m, struct migration_info *info)
{
	struct ram_stats rs;
	struct kvm_dirty_stats ds;

	memset(info, 0, sizeof(*info));
	ram_handler_stats(m->ram, &rs);
	kvm_dirty_get_stats(m->vm, &ds);
	pthread_mutex_lock(&m->lock);
	const struct migration *g = &m->mig;
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
		r->total = kvm_vm_ram_size(m->vm);
		r->duplicate = rs.duplicate;
		r->normal = rs.normal;
		r->normal_bytes = rs.normal * KVM_PAGE_SIZE;
		r->dirty_sync_count = g->dirty_sync_count;
		r->page_size = KVM_PAGE_SIZE;
		r->pages_per_second = g->pages_per_second;
		r->dirty_pages_rate = g->dirty_pages_rate;
		r->precopy_bytes = s == MIGRATION_STATUS_COMPLETED ? g->precopy_bytes
			: atomic_load_explicit(&m->mig.sent, memory_order_relaxed);
		r->downtime_bytes = g->downtime_bytes;
		r->multifd_bytes = g->mf_send ? multifd_send_bytes(g->mf_send) : g->multifd_bytes;
		r->mbps = g->mbps;
		/* until a pass has been measured, the rate so far */
		if (!g->bandwidth && now > g->start_ns)
			r->mbps = (double)atomic_load_explicit(&m->mig.sent, memory_order_relaxed) * 8 / 1e6 /
				  ((double)(now - g->start_ns) / 1e9);
		if (s == MIGRATION_STATUS_COMPLETED && g->end_ns > g->start_ns)
			r->mbps = (double)atomic_load_explicit(&m->mig.sent, memory_order_relaxed) * 8 / 1e6 /
				  ((double)(g->end_ns - g->start_ns) / 1e9);
	}
	if (!g->incoming && s == MIGRATION_STATUS_ACTIVE) {
		info->has_expected_downtime = true;
		info->expected_downtime_ms = g->expected_downtime_ms ? g->expected_downtime_ms
								     : m->params.downtime_limit_ms;
	}
	if (!g->incoming && s == MIGRATION_STATUS_COMPLETED) {
		info->has_downtime = true;
		info->downtime_ms = g->downtime_ms;
	}
	if (s == MIGRATION_STATUS_FAILED && g->error[0]) {
		info->has_error = true;
		snprintf(info->error_desc, sizeof(info->error_desc), "%s", g->error);
	}
	fill_savevm_info(m, info, s);
	info->kmig.dirty_mode = kvm_dirty_backend_name(m->vm);
	info->kmig.dirty_ring_overflows = ds.overflows;
	info->kmig.dirty_ring_full_exits = ds.dirty_ring_full_exits;
	info->kmig.dirty_ring_resyncs = ds.resyncs;
	info->kmig.pages_harvested = ds.harvested;
	info->kmig.passes = g->passes;
	info->kmig.shrink_passes = g->shrink_passes;
	info->kmig.channels = g->channels;
	info->kmig.send_mode = savevm_send_mode_name(g->send_mode);
	info->kmig.zc_notifications = g->zc_sends;
	info->kmig.zc_copied = g->zc_copied;
	info->kmig.has_switchover_expected_downtime = g->switchover_decided;
	info->kmig.switchover_expected_downtime = g->switchover_expected_ms;
	info->kmig.dirty_telemetry = m->telemetry;
	snprintf(info->kmig.telemetry_why, sizeof(info->kmig.telemetry_why), "%s", m->telemetry_why);
	info->kmig.dirty_ring_lost_pages = ds.lost_pages;
	bool engaged = g->dirty_limit_engaged && s == MIGRATION_STATUS_ACTIVE;
	pthread_mutex_unlock(&m->lock);
	/* QEMU: only while a dirty-limit migration throttles */
	if (engaged)
		info->has_dirty_limit = dirtylimit_migration_stats(m, &info->dirty_limit_throttle_time_per_round_us,
								   &info->dirty_limit_ring_full_time_us);
}

void machine_get_params(struct machine *m, struct migration_params *p)
{
	pthread_mutex_lock(&m->lock);
	*p = m->params;
	pthread_mutex_unlock(&m->lock);
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
	pthread_mutex_lock(&m->lock);
	migration_params_copy(&m->params, p, mask);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void machine_incoming_uri(struct machine *m, char *buf, size_t len)
{
	pthread_mutex_lock(&m->lock);
	snprintf(buf, len, "%s", m->mig.incoming ? m->mig.uri : "");
	pthread_mutex_unlock(&m->lock);
}
