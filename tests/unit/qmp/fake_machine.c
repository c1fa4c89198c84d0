/* tests/unit/qmp/fake_machine.c — machine/machine.h without a VM, for the
 * QMP tests.  See fake_machine.h.
 */
#include "fake_machine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

struct fail_rule {
	char *fn;
	int ret;
	char *err;
};

struct machine {
	GMutex lock;
	GCond cond;
	/* held while the event handler runs, and to change it: once
	 * machine_set_event_handler() returns, the old one is not running */
	GMutex handler_lock;
	machine_event_fn handler;
	void *handler_opaque;

	char *incoming;		/* NULL, "defer" or a URI */
	bool incoming_started;
	enum machine_runstate runstate;
	struct migration_info info;
	struct migration_params params;
	GHashTable *calls;	/* fn name -> count */
	GList *fails;		/* struct fail_rule * */
	char last_uri[256];
	char last_object[64];		/* the id object-add last created */
	bool quit;
	GPtrArray *threads;
	/* dirty rate and dirty limit: scripted answers, last arguments */
	struct dirtyrate_info dirtyrate;
	struct dirtylimit_vcpu limits[KMIG_MAX_VCPUS];
	unsigned int nr_limits;
	struct fake_dirty_args dirty_args;
};

static const char *const runstate_names[] = {
	[RUNSTATE_PRELAUNCH] = "prelaunch",
	[RUNSTATE_RUNNING] = "running",
	[RUNSTATE_PAUSED] = "paused",
	[RUNSTATE_INMIGRATE] = "inmigrate",
	[RUNSTATE_FINISH_MIGRATE] = "finish-migrate",
	[RUNSTATE_POSTMIGRATE] = "postmigrate",
	[RUNSTATE_SHUTDOWN] = "shutdown",
	[RUNSTATE_INTERNAL_ERROR] = "internal-error",
	[RUNSTATE_RESTORE_VM] = "restore-vm",
};

static const char *const status_names[] = {
	[MIGRATION_STATUS_NONE] = "none",
	[MIGRATION_STATUS_SETUP] = "setup",
	[MIGRATION_STATUS_CANCELLING] = "cancelling",
	[MIGRATION_STATUS_CANCELLED] = "cancelled",
	[MIGRATION_STATUS_ACTIVE] = "active",
	[MIGRATION_STATUS_DEVICE] = "device",
	[MIGRATION_STATUS_COMPLETED] = "completed",
	[MIGRATION_STATUS_FAILED] = "failed",
};

const char *machine_runstate_name(enum machine_runstate s)
{
	if ((unsigned int)s >= G_N_ELEMENTS(runstate_names))
		return NULL;
	return runstate_names[s];
}

const char *migration_status_name(enum migration_status s)
{
	if ((unsigned int)s >= G_N_ELEMENTS(status_names))
		return NULL;
	return status_names[s];
}

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

/* With m->lock held: count the call; a failure rule for it? */
static bool record(struct machine *m, const char *fn, int *ret, char *err, size_t errlen)
{
	GList *l;
	gpointer n = g_hash_table_lookup(m->calls, fn);

	g_hash_table_insert(m->calls, g_strdup(fn), GUINT_TO_POINTER(GPOINTER_TO_UINT(n) + 1));
	for (l = m->fails; l; l = l->next) {
		struct fail_rule *r = l->data;

		if (!strcmp(r->fn, fn)) {
			*ret = r->ret;
			set_err(err, errlen, r->err);
			m->fails = g_list_delete_link(m->fails, l);
			g_free(r->fn);
			g_free(r->err);
			g_free(r);
			return true;
		}
	}
	return false;
}

static void emit_now(struct machine *m, enum machine_event ev, int64_t arg)
{
	g_mutex_lock(&m->handler_lock);
	if (m->handler)
		m->handler(m->handler_opaque, ev, arg);
	g_mutex_unlock(&m->handler_lock);
}

struct emit_job {
	struct machine *m;
	enum machine_event ev;
	int64_t arg;
};

static gpointer emit_thread(gpointer data)
{
	struct emit_job *job = data;

	emit_now(job->m, job->ev, job->arg);
	g_free(job);
	return NULL;
}

static void emit_from_thread(struct machine *m, enum machine_event ev, int64_t arg)
{
	struct emit_job *job = g_new(struct emit_job, 1);
	GThread *t;

	job->m = m;
	job->ev = ev;
	job->arg = arg;
	t = g_thread_new("fake-machine-event", emit_thread, job);
	g_mutex_lock(&m->lock);
	g_ptr_array_add(m->threads, t);
	g_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------ test API */

struct machine *fake_machine_new(const char *incoming)
{
	struct machine_config cfg;
	struct machine *m = NULL;
	char err[128];

	memset(&cfg, 0, sizeof(cfg));
	cfg.guest_name = "fake";
	cfg.mem_mib = 64;
	cfg.vcpus = 1;
	cfg.incoming = incoming;
	if (machine_create(&cfg, &m, err, sizeof(err)) < 0)
		abort();
	return m;
}

void fake_machine_set_runstate(struct machine *m, enum machine_runstate s)
{
	g_mutex_lock(&m->lock);
	m->runstate = s;
	g_mutex_unlock(&m->lock);
}

void fake_machine_set_migration(struct machine *m, const struct migration_info *info)
{
	g_mutex_lock(&m->lock);
	m->info = *info;
	g_mutex_unlock(&m->lock);
}

void fake_machine_fail_next(struct machine *m, const char *fn, int ret, const char *err)
{
	struct fail_rule *r = g_new(struct fail_rule, 1);

	r->fn = g_strdup(fn);
	r->ret = ret;
	r->err = g_strdup(err ? err : "");
	g_mutex_lock(&m->lock);
	m->fails = g_list_append(m->fails, r);
	g_mutex_unlock(&m->lock);
}

void fake_machine_emit(struct machine *m, enum machine_event ev, int64_t arg, bool from_thread)
{
	if (from_thread)
		emit_from_thread(m, ev, arg);
	else
		emit_now(m, ev, arg);
}

unsigned int fake_machine_calls(struct machine *m, const char *fn)
{
	unsigned int n;

	g_mutex_lock(&m->lock);
	n = GPOINTER_TO_UINT(g_hash_table_lookup(m->calls, fn));
	g_mutex_unlock(&m->lock);
	return n;
}

const char *fake_machine_last_uri(struct machine *m)
{
	return m->last_uri;
}

bool fake_machine_quit_requested(struct machine *m)
{
	bool q;

	g_mutex_lock(&m->lock);
	q = m->quit;
	g_mutex_unlock(&m->lock);
	return q;
}

bool fake_machine_has_handler(struct machine *m)
{
	bool h;

	g_mutex_lock(&m->handler_lock);
	h = m->handler != NULL;
	g_mutex_unlock(&m->handler_lock);
	return h;
}

void fake_machine_get_handler(struct machine *m, machine_event_fn *fn, void **opaque)
{
	g_mutex_lock(&m->handler_lock);
	*fn = m->handler;
	*opaque = m->handler_opaque;
	g_mutex_unlock(&m->handler_lock);
}

void fake_machine_join_threads(struct machine *m)
{
	for (;;) {
		GThread *t = NULL;

		g_mutex_lock(&m->lock);
		if (m->threads->len)
			t = g_ptr_array_steal_index(m->threads, 0);
		g_mutex_unlock(&m->lock);
		if (!t)
			break;
		g_thread_join(t);
	}
}

void fake_machine_set_dirty_rate(struct machine *m, const struct dirtyrate_info *info)
{
	g_mutex_lock(&m->lock);
	m->dirtyrate = *info;
	g_mutex_unlock(&m->lock);
}

void fake_machine_set_dirty_limits(struct machine *m, const struct dirtylimit_vcpu *v, unsigned int n)
{
	g_assert(n <= KMIG_MAX_VCPUS);
	g_mutex_lock(&m->lock);
	memcpy(m->limits, v, n * sizeof(*v));
	m->nr_limits = n;
	g_mutex_unlock(&m->lock);
}

void fake_machine_dirty_args(struct machine *m, struct fake_dirty_args *out)
{
	g_mutex_lock(&m->lock);
	*out = m->dirty_args;
	g_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------------- machine.h */

int machine_create(const struct machine_config *cfg, struct machine **out, char *err, size_t errlen)
{
	struct machine *m = g_new0(struct machine, 1);

	g_mutex_init(&m->lock);
	g_cond_init(&m->cond);
	g_mutex_init(&m->handler_lock);
	m->incoming = g_strdup(cfg->incoming);
	m->runstate = cfg->incoming ? RUNSTATE_INMIGRATE : RUNSTATE_PRELAUNCH;
	migration_params_default(&m->params);
	m->dirty_args.limit_cpu = m->dirty_args.cancel_cpu = -2;	/* never called */
	m->calls = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	m->threads = g_ptr_array_new();
	*out = m;
	return 0;
}

int machine_start(struct machine *m, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (!record(m, "machine_start", &ret, err, errlen) && !m->incoming)
		m->runstate = RUNSTATE_RUNNING;
	g_mutex_unlock(&m->lock);
	return ret;
}

void machine_set_event_handler(struct machine *m, machine_event_fn fn, void *opaque)
{
	g_mutex_lock(&m->handler_lock);
	m->handler = fn;
	m->handler_opaque = opaque;
	g_mutex_unlock(&m->handler_lock);
}

int machine_wait(struct machine *m)
{
	g_mutex_lock(&m->lock);
	while (!m->quit)
		g_cond_wait(&m->cond, &m->lock);
	g_mutex_unlock(&m->lock);
	return 0;
}

void machine_request_quit(struct machine *m)
{
	int dummy;

	g_mutex_lock(&m->lock);
	record(m, "machine_request_quit", &dummy, NULL, 0);
	m->quit = true;
	m->runstate = RUNSTATE_SHUTDOWN;
	g_cond_broadcast(&m->cond);
	g_mutex_unlock(&m->lock);
	emit_from_thread(m, MACHINE_EVENT_SHUTDOWN, -1);
}

void machine_destroy(struct machine *m)
{
	if (!m)
		return;
	fake_machine_join_threads(m);
	g_ptr_array_free(m->threads, TRUE);
	while (m->fails) {
		struct fail_rule *r = m->fails->data;

		g_free(r->fn);
		g_free(r->err);
		g_free(r);
		m->fails = g_list_delete_link(m->fails, m->fails);
	}
	g_hash_table_destroy(m->calls);
	g_free(m->incoming);
	g_mutex_clear(&m->handler_lock);
	g_cond_clear(&m->cond);
	g_mutex_clear(&m->lock);
	g_free(m);
}

enum machine_runstate machine_runstate(struct machine *m)
{
	enum machine_runstate s;

	g_mutex_lock(&m->lock);
	s = m->runstate;
	g_mutex_unlock(&m->lock);
	return s;
}

bool machine_running(struct machine *m)
{
	return machine_runstate(m) == RUNSTATE_RUNNING;
}

int machine_stop(struct machine *m, char *err, size_t errlen)
{
	int ret = 0;
	bool failed;

	g_mutex_lock(&m->lock);
	failed = record(m, "machine_stop", &ret, err, errlen);
	if (!failed)
		m->runstate = RUNSTATE_PAUSED;
	g_mutex_unlock(&m->lock);
	if (!failed)
		emit_now(m, MACHINE_EVENT_STOP, 0);
	return ret;
}

int machine_cont(struct machine *m, char *err, size_t errlen)
{
	int ret = 0;
	bool failed;

	g_mutex_lock(&m->lock);
	failed = record(m, "machine_cont", &ret, err, errlen);
	if (!failed)
		m->runstate = RUNSTATE_RUNNING;
	g_mutex_unlock(&m->lock);
	if (!failed)
		emit_now(m, MACHINE_EVENT_RESUME, 0);
	return ret;
}

static bool status_running(enum migration_status s)
{
	return s == MIGRATION_STATUS_SETUP || s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_DEVICE ||
	       s == MIGRATION_STATUS_CANCELLING;
}

int machine_migrate(struct machine *m, const char *uri, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (record(m, "machine_migrate", &ret, err, errlen))
		goto out;
	snprintf(m->last_uri, sizeof(m->last_uri), "%s", uri);
	if (m->incoming) {
		set_err(err, errlen, "this machine is the destination of a migration");
		ret = -EPERM;
	} else if (status_running(m->info.status)) {
		set_err(err, errlen, "There's a migration process in progress");
		ret = -EBUSY;
	} else if (!g_str_has_prefix(uri, "tcp:") && !g_str_has_prefix(uri, "unix:")) {
		set_err(err, errlen, "invalid migration URI (expected tcp: or unix:)");
		ret = -EINVAL;
	} else {
		memset(&m->info, 0, sizeof(m->info));
		m->info.status = MIGRATION_STATUS_SETUP;
	}
out:
	g_mutex_unlock(&m->lock);
	if (ret == 0)
		emit_from_thread(m, MACHINE_EVENT_MIGRATION, MIGRATION_STATUS_SETUP);
	return ret;
}

int machine_migrate_incoming(struct machine *m, const char *uri, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (record(m, "machine_migrate_incoming", &ret, err, errlen))
		goto out;
	if (!m->incoming || strcmp(m->incoming, "defer")) {
		set_err(err, errlen, "'--incoming defer' was not given: migrate-incoming is not allowed");
		ret = -EPERM;
	} else if (m->incoming_started) {
		set_err(err, errlen, "The incoming migration has already been started");
		ret = -EPERM;
	} else {
		m->incoming_started = true;
		snprintf(m->last_uri, sizeof(m->last_uri), "%s", uri);
	}
out:
	g_mutex_unlock(&m->lock);
	return ret;
}

int machine_migrate_cancel(struct machine *m, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (!record(m, "machine_migrate_cancel", &ret, err, errlen) && status_running(m->info.status))
		m->info.status = MIGRATION_STATUS_CANCELLED;
	g_mutex_unlock(&m->lock);
	return ret;
}

int machine_blob_set_dirty_rate(struct machine *m, const char *id, uint64_t rate, char *err, size_t errlen)
{
	(void)m, (void)rate;
	snprintf(err, errlen, "Device '%s' not found", id);
	return -ENOENT;
}

int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path, char *err,
		     size_t errlen)
{
	int ret = 0;

	(void)gpa, (void)size, (void)path;
	g_mutex_lock(&m->lock);
	record(m, "machine_pmemsave", &ret, err, errlen);
	g_mutex_unlock(&m->lock);
	return ret;
}

void machine_query_migrate(struct machine *m, struct migration_info *info)
{
	int dummy;

	g_mutex_lock(&m->lock);
	record(m, "machine_query_migrate", &dummy, NULL, 0);
	*info = m->info;
	g_mutex_unlock(&m->lock);
}

void machine_get_params(struct machine *m, struct migration_params *p)
{
	g_mutex_lock(&m->lock);
	*p = m->params;
	g_mutex_unlock(&m->lock);
}

int machine_set_params(struct machine *m, const struct migration_params *p, unsigned int mask, char *err,
		       size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (record(m, "machine_set_params", &ret, err, errlen))
		goto out;
	/* the same one check as the real machine */
	ret = migration_params_check(p, mask, err, errlen);
	if (!ret)
		migration_params_copy(&m->params, p, mask);
out:
	g_mutex_unlock(&m->lock);
	return ret;
}

int machine_object_add(struct machine *m, const struct migration_object_spec *o, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (!record(m, "machine_object_add", &ret, err, errlen))
		snprintf(m->last_object, sizeof(m->last_object), "%s", o->id);
	g_mutex_unlock(&m->lock);
	return ret;
}

int machine_object_del(struct machine *m, const char *id, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	if (!record(m, "machine_object_del", &ret, err, errlen) && strcmp(id, m->last_object)) {
		snprintf(err, errlen, "object '%s' not found", id);
		ret = -ENOENT;
	}
	if (!ret)
		m->last_object[0] = 0;
	g_mutex_unlock(&m->lock);
	return ret;
}

void machine_incoming_uri(struct machine *m, char *buf, size_t len)
{
	g_mutex_lock(&m->lock);
	snprintf(buf, len, "%s", m->incoming_started ? m->last_uri : "");
	g_mutex_unlock(&m->lock);
}

int machine_calc_dirty_rate(struct machine *m, int64_t calc_time_ms, enum dirtyrate_mode mode,
			    uint64_t sample_pages, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	m->dirty_args.calc_time_ms = calc_time_ms;
	m->dirty_args.calc_mode = mode;
	m->dirty_args.calc_sample_pages = sample_pages;
	record(m, "machine_calc_dirty_rate", &ret, err, errlen);
	g_mutex_unlock(&m->lock);
	return ret;
}

void machine_query_dirty_rate(struct machine *m, struct dirtyrate_info *out)
{
	int dummy;

	g_mutex_lock(&m->lock);
	record(m, "machine_query_dirty_rate", &dummy, NULL, 0);
	*out = m->dirtyrate;
	g_mutex_unlock(&m->lock);
}

int machine_set_vcpu_dirty_limit(struct machine *m, int cpu_index, uint64_t mb_per_s, char *err,
				 size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	m->dirty_args.limit_cpu = cpu_index;
	m->dirty_args.limit_rate = mb_per_s;
	record(m, "machine_set_vcpu_dirty_limit", &ret, err, errlen);
	g_mutex_unlock(&m->lock);
	return ret;
}

int machine_cancel_vcpu_dirty_limit(struct machine *m, int cpu_index, char *err, size_t errlen)
{
	int ret = 0;

	g_mutex_lock(&m->lock);
	m->dirty_args.cancel_cpu = cpu_index;
	record(m, "machine_cancel_vcpu_dirty_limit", &ret, err, errlen);
	g_mutex_unlock(&m->lock);
	return ret;
}

unsigned int machine_query_vcpu_dirty_limit(struct machine *m, struct dirtylimit_vcpu *out, unsigned int max)
{
	unsigned int n;
	int dummy;

	g_mutex_lock(&m->lock);
	record(m, "machine_query_vcpu_dirty_limit", &dummy, NULL, 0);
	m->dirty_args.query_limit_max = max;
	n = MIN(m->nr_limits, max);
	memcpy(out, m->limits, n * sizeof(*out));
	g_mutex_unlock(&m->lock);
	return n;
}
