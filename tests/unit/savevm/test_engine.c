/* The migration engine (savevm/migration.h) against a fake host, as qapi/
 * is tested against a fake machine: two engines in one process, a source
 * and a destination, over a real unix socket and the real stream, with no
 * VM.  The host records what the engine asked of it (pause, resume,
 * start, events, throttle), so each case checks the engine's side of the
 * contract: when the guest stops, when it runs again and where, what the
 * operator is told.
 *
 * The state moved is a fake iterable device (units of data, some of which
 * the "guest" rewrites at every sync) and a fake non-iterable device.
 * Every unit carries its index and version, and the destination checks
 * each one: a lost, stale or torn unit fails the case. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "savevm/migration.h"
#include "tests/tls/tls_certs.h"

#define UNITS 256
#define UNIT_SIZE (16u << 10)
#define UNIT_HDR 8u			/* u32 index, u32 version */
#define DEV_STATE 48u
#define WAIT_MS 10000

/* ------------------------------------------------------------ fake host */

#define MAX_EVENTS 4096

struct fake_host {
	const char *name;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool running;			/* what pause reports */
	int start_result;		/* what start returns */
	unsigned int pauses, resumes, migrated, starts, incoming_failed;
	bool resumed_running;		/* resume's was_running */
	unsigned int nr_events;
	struct { enum migration_event ev; int64_t arg; } events[MAX_EVENTS];
	unsigned int nr_throttles;
	uint64_t throttles[16];
};

/* Guests running now, over every fake host; two_ran latches the moment
 * two ran at once (the fault-injection case checks it). */
static atomic_int running_guests;
static atomic_bool two_ran;

static void guest_runs(bool runs)
{
	int n = atomic_fetch_add(&running_guests, runs ? 1 : -1) + (runs ? 1 : -1);

	if (n > 1)
		atomic_store(&two_ran, true);
}

static struct fake_host *host_of(void *opaque)
{
	return opaque;
}

static bool fake_pause(void *opaque)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	bool was = h->running;

	h->running = false;
	h->pauses++;
	if (was)
		guest_runs(false);
	pthread_mutex_unlock(&h->lock);
	return was;
}

static void fake_resume(void *opaque, bool was_running)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	h->resumes++;
	h->resumed_running = was_running;
	h->running = was_running;
	if (was_running)
		guest_runs(true);
	pthread_mutex_unlock(&h->lock);
}

static void fake_migrated(void *opaque)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	h->migrated++;
	pthread_mutex_unlock(&h->lock);
}

static int fake_start(void *opaque)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	h->starts++;
	h->running = !h->start_result;
	if (h->running)
		guest_runs(true);
	int r = h->start_result;
	pthread_mutex_unlock(&h->lock);
	return r;
}

static void fake_incoming_failed(void *opaque)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	h->incoming_failed++;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static void fake_event(void *opaque, enum migration_event ev, int64_t arg)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	if (h->nr_events < MAX_EVENTS) {
		h->events[h->nr_events].ev = ev;
		h->events[h->nr_events++].arg = arg;
	}
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static void fake_throttle(void *opaque, uint64_t mib_per_s)
{
	struct fake_host *h = host_of(opaque);

	pthread_mutex_lock(&h->lock);
	if (h->nr_throttles < 16)
		h->throttles[h->nr_throttles++] = mib_per_s;
	pthread_mutex_unlock(&h->lock);
}

static const struct migration_host fake_host_ops = {
	.pause = fake_pause, .resume = fake_resume, .migrated = fake_migrated, .start = fake_start,
	.incoming_failed = fake_incoming_failed, .event = fake_event, .throttle = fake_throttle,
};

static unsigned int count_events(struct fake_host *h, enum migration_event ev, int64_t arg)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < h->nr_events; i++)
		n += h->events[i].ev == ev && h->events[i].arg == arg;
	return n;
}

/* Wait until the host saw event ev with arg; false after WAIT_MS. */
static bool wait_event(struct fake_host *h, enum migration_event ev, int64_t arg)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&h->lock);
	int r = 0;

	while (!count_events(h, ev, arg) && r != ETIMEDOUT)
		r = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
	bool seen = count_events(h, ev, arg) > 0;
	pthread_mutex_unlock(&h->lock);
	return seen;
}

/* The status events in order, "setup active completed", for messages. */
static const char *status_trail(struct fake_host *h, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = 0;
	for (unsigned int i = 0; i < h->nr_events && n < len; i++)
		if (h->events[i].ev == MIGRATION_EVENT_STATUS)
			n += (size_t)snprintf(buf + n, len - n, "%s ",
					      migration_status_name((enum migration_status)h->events[i].arg));
	return buf;
}

/* ----------------------------------------------------- fake iterable device */

struct fake_iter {
	bool source;
	uint32_t version[UNITS];	/* source: current; destination: received */
	bool dirty[UNITS];
	bool arrived[UNITS];
	unsigned int cursor;
	unsigned int dirty_per_sync;	/* units the "guest" rewrites per sync */
	unsigned int rewrite_at;	/* where it rewrites next */
	uint8_t buf[UNIT_HDR + UNIT_SIZE];
	uint32_t section_id;
};

static uint8_t unit_byte(uint32_t idx, uint32_t version, uint32_t i)
{
	return (uint8_t)(idx * 31u + version * 7u + i);
}

static int send_unit(struct fake_iter *f, struct savevm_out *out, uint32_t idx)
{
	uint8_t hdr[STREAM_PAYLOAD_HDR_SIZE];

	memcpy(f->buf, &idx, 4);
	memcpy(f->buf + 4, &f->version[idx], 4);
	for (uint32_t i = 0; i < UNIT_SIZE; i++)
		f->buf[UNIT_HDR + i] = unit_byte(idx, f->version[idx], i);
	stream_encode_payload_hdr(hdr, STREAM_REC_PART, f->section_id, UNIT_HDR + UNIT_SIZE);
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { f->buf, sizeof(f->buf) } };

	f->dirty[idx] = false;
	return savevm_out_sendv(out, iov, 2);
}

/* Dirty units from the cursor: 0 = budget spent, 1 = walk over. */
static int send_dirty(struct fake_iter *f, struct savevm_out *out, unsigned int budget)
{
	for (; f->cursor < UNITS; f->cursor++) {
		if (!f->dirty[f->cursor])
			continue;
		if (!budget--)
			return 0;
		int r = send_unit(f, out, f->cursor);

		if (r)
			return r;
	}
	f->cursor = 0;
	return 1;
}

static int iter_save_setup(void *opaque, struct savevm_out *out, char *err, size_t errlen)
{
	struct fake_iter *f = opaque;

	(void)out, (void)err, (void)errlen;
	for (unsigned int i = 0; i < UNITS; i++)
		f->dirty[i] = true;
	f->cursor = 0;
	return 0;
}

static int iter_save_iterate(void *opaque, struct savevm_out *out)
{
	return send_dirty(opaque, out, 8);
}

static int iter_save_complete(void *opaque, struct savevm_out *out)
{
	struct fake_iter *f = opaque;
	int r;

	f->cursor = 0;
	while ((r = send_dirty(f, out, UNITS)) == 0)
		;
	return r < 0 ? r : 0;
}

static void iter_save_cleanup(void *opaque)
{
	(void)opaque;
}

/* The exact figure collects what the guest did while the pass went out
 * (as RAM's dirty sync does): it rewrote some units. */
static uint64_t iter_pending(void *opaque, bool exact)
{
	struct fake_iter *f = opaque;
	uint64_t n = 0;

	for (unsigned int i = 0; exact && i < f->dirty_per_sync; i++) {
		unsigned int u = f->rewrite_at++ % UNITS;

		f->version[u]++;
		f->dirty[u] = true;
	}
	for (unsigned int i = 0; i < UNITS; i++)
		n += f->dirty[i];
	return n * (STREAM_PAYLOAD_HDR_SIZE + UNIT_HDR + UNIT_SIZE);
}

/* The final sync: the guest is stopped, nothing more to collect. */
static int iter_sync(void *opaque, bool final)
{
	(void)opaque, (void)final;
	return 0;
}

static void iter_load_setup(void *opaque)
{
	struct fake_iter *f = opaque;

	memset(f->arrived, 0, sizeof(f->arrived));
	memset(f->version, 0, sizeof(f->version));
}

static int iter_load_part(void *opaque, struct savevm_in *in, uint32_t len, char *err, size_t errlen)
{
	struct fake_iter *f = opaque;
	uint32_t idx, version;

	if (len != UNIT_HDR + UNIT_SIZE) {
		snprintf(err, errlen, "fake-iter: part of %u bytes", len);
		return -EPROTO;
	}
	int r = in->src.read(in->src.opaque, f->buf, len);

	if (r)
		return r;
	memcpy(&idx, f->buf, 4);
	memcpy(&version, f->buf + 4, 4);
	if (idx >= UNITS) {
		snprintf(err, errlen, "fake-iter: unit %u out of range", idx);
		return -EPROTO;
	}
	for (uint32_t i = 0; i < UNIT_SIZE; i++) {
		if (f->buf[UNIT_HDR + i] != unit_byte(idx, version, i)) {
			snprintf(err, errlen, "fake-iter: unit %u version %u torn at byte %u", idx, version, i);
			return -EPROTO;
		}
	}
	f->version[idx] = version;
	f->arrived[idx] = true;
	return 0;
}

static int iter_load_complete(void *opaque, char *err, size_t errlen)
{
	struct fake_iter *f = opaque;

	for (unsigned int i = 0; i < UNITS; i++) {
		if (!f->arrived[i]) {
			snprintf(err, errlen, "fake-iter: unit %u never arrived", i);
			return -EPROTO;
		}
	}
	return 0;
}

static const struct savevm_ops iter_ops = {
	.save_setup = iter_save_setup, .save_iterate = iter_save_iterate, .save_complete = iter_save_complete,
	.save_cleanup = iter_save_cleanup, .pending = iter_pending, .sync = iter_sync,
	.load_setup = iter_load_setup, .load_part = iter_load_part, .load_complete = iter_load_complete,
};

/* ------------------------------------------------- fake non-iterable device */

struct fake_dev {
	uint8_t state[DEV_STATE];
	bool loaded;
	bool refuse;			/* check_state says no (destination) */
};

static int dev_save_state(void *opaque, uint8_t *buf, size_t len)
{
	struct fake_dev *d = opaque;

	if (len < DEV_STATE)
		return -ENOSPC;
	memcpy(buf, d->state, DEV_STATE);
	return DEV_STATE;
}

static int dev_check_state(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct fake_dev *d = opaque;

	(void)buf;
	if (d->refuse) {
		snprintf(err, errlen, "fake-dev: refused by the test");
		return -EINVAL;
	}
	if (len != DEV_STATE) {
		snprintf(err, errlen, "fake-dev: %zu bytes of state", len);
		return -EPROTO;
	}
	return 0;
}

static int dev_load_state(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct fake_dev *d = opaque;

	(void)err, (void)errlen;
	memcpy(d->state, buf, len);
	d->loaded = true;
	return 0;
}

static const struct savevm_ops dev_ops = {
	.save_state = dev_save_state, .check_state = dev_check_state, .load_state = dev_load_state,
};

/* ------------------------------------------------------------ one side */

struct side {
	struct fake_host host;
	struct fake_iter iter;
	struct fake_dev dev;
	struct savevm_registry *reg;
	struct migration *g;
};

static void side_init(struct side *s, const char *name, bool source)
{
	memset(s, 0, sizeof(*s));
	s->host.name = name;
	s->host.running = source;
	pthread_mutex_init(&s->host.lock, NULL);
	pthread_cond_init(&s->host.cond, NULL);
	s->iter.source = source;
	for (unsigned int i = 0; source && i < DEV_STATE; i++)
		s->dev.state[i] = (uint8_t)(0xa5 ^ i);
	s->reg = savevm_registry_new();
	assert_non_null(s->reg);
	assert_int_equal(savevm_register(s->reg, "fake-iter", 0, 1, true, &iter_ops, &s->iter), 0);
	s->iter.section_id = 1;
	assert_int_equal(savevm_register(s->reg, "fake-dev", 0, 1, false, &dev_ops, &s->dev), 0);
	const struct migration_env env = {
		.reg = s->reg, .ram_size = 64ull << 20, .nr_vcpus = 1, .host = &fake_host_ops, .opaque = &s->host,
	};
	assert_int_equal(migration_new(&env, &s->g), 0);
}

static void side_fini(struct side *s)
{
	migration_free(s->g);
	savevm_registry_free(s->reg);
	pthread_cond_destroy(&s->host.cond);
	pthread_mutex_destroy(&s->host.lock);
}

struct pair {
	char dir[64], uri[128];
	struct side src, dst;
};

static void set_param(struct side *s, unsigned int mask, void (*set)(struct migration_params *p, void *v),
		      void *v)
{
	struct migration_params p;
	char err[256];

	migration_get_params(s->g, &p);
	set(&p, v);
	int r = migration_set_params(s->g, &p, mask, err, sizeof(err));

	if (r)
		fail_msg("set params: %s", err);
}

static void pair_init(struct pair *p)
{
	snprintf(p->dir, sizeof(p->dir), "/tmp/kmig-engine-XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	snprintf(p->uri, sizeof(p->uri), "unix:%s/sock", p->dir);
	side_init(&p->src, "source", true);
	side_init(&p->dst, "destination", false);
}

static void pair_listen_and_start(struct pair *p)
{
	char err[256];

	if (migration_listen(p->dst.g, p->uri, err, sizeof(err)))
		fail_msg("listen: %s", err);
	if (migration_start(p->src.g, p->uri, err, sizeof(err)))
		fail_msg("start: %s", err);
}

static void pair_fini(struct pair *p)
{
	char path[160];

	side_fini(&p->src);
	side_fini(&p->dst);
	snprintf(path, sizeof(path), "%s/sock", p->dir);
	unlink(path);
	rmdir(p->dir);
}

/* Wait for a side's final status; on a timeout, say what each side saw. */
static void expect_status(struct pair *p, struct side *s, enum migration_status want)
{
	char a[512], b[512];
	struct migration_info info;

	if (wait_event(&s->host, MIGRATION_EVENT_STATUS, want))
		return;
	migration_query(p->src.g, &info);
	fail_msg("%s never reached '%s'. source: %s(error: %s); destination: %s", s->host.name,
		 migration_status_name(want), status_trail(&p->src.host, a, sizeof(a)), info.error_desc,
		 status_trail(&p->dst.host, b, sizeof(b)));
}

/* Wait for an event of the source's; on a timeout, say what it saw. */
static void expect_event(struct pair *p, enum migration_event ev, int64_t arg)
{
	char a[512], b[512];
	struct migration_info info;

	if (wait_event(&p->src.host, ev, arg))
		return;
	migration_query(p->src.g, &info);
	fail_msg("the source never saw event %d (%lld): passes %llu, status: %s(error: %s); destination: %s", ev,
		 (long long)arg, (unsigned long long)info.kmig.passes, status_trail(&p->src.host, a, sizeof(a)),
		 info.error_desc, status_trail(&p->dst.host, b, sizeof(b)));
}

/* Both sides' threads are over: what the hosts recorded is final. */
static void settle(struct pair *p)
{
	migration_abort(p->src.g);
	migration_abort(p->dst.g);
}

static void set_downtime_limit(struct migration_params *p, void *v)
{
	p->downtime_limit_ms = *(uint64_t *)v;
}

static void set_bandwidth(struct migration_params *p, void *v)
{
	p->max_bandwidth = *(uint64_t *)v;
}

/* A migration that cannot converge: the guest rewrites every unit at each
 * sync, 4 MiB against a downtime limit of 1 ms at 32 MiB/s. */
static void never_converge(struct pair *p)
{
	uint64_t limit = 1, bw = 32ull << 20;

	p->src.iter.dirty_per_sync = UNITS;
	set_param(&p->src, MIGRATION_PARAM_DOWNTIME_LIMIT, set_downtime_limit, &limit);
	set_param(&p->src, MIGRATION_PARAM_MAX_BANDWIDTH, set_bandwidth, &bw);
}

/* A pair whose migration runs and cannot end: in its second pass. */
static void start_never_converging(struct pair *p)
{
	pair_init(p);
	never_converge(p);
	pair_listen_and_start(p);
	expect_event(p, MIGRATION_EVENT_PASS, 2);
}

/* ------------------------------------------------------------------ cases */

/* The whole contract of a good migration: the source guest is paused
 * once, never resumed, and handed over; the destination's guest starts
 * once, after the state arrived whole. */
static void test_completes(void **state)
{
	struct pair p;
	struct migration_info info;

	(void)state;
	pair_init(&p);
	p.src.iter.dirty_per_sync = 16;		/* shrinks: converges */
	pair_listen_and_start(&p);
	expect_status(&p, &p.src, MIGRATION_STATUS_COMPLETED);
	expect_status(&p, &p.dst, MIGRATION_STATUS_COMPLETED);
	settle(&p);

	assert_int_equal(p.src.host.pauses, 1);
	assert_int_equal(p.src.host.resumes, 0);
	assert_int_equal(p.src.host.migrated, 1);
	assert_int_equal(p.src.host.starts, 0);
	assert_true(count_events(&p.src.host, MIGRATION_EVENT_PASS, 1) == 1);
	assert_int_equal(count_events(&p.src.host, MIGRATION_EVENT_STATUS, MIGRATION_STATUS_SETUP), 1);
	assert_int_equal(count_events(&p.src.host, MIGRATION_EVENT_STATUS, MIGRATION_STATUS_ACTIVE), 1);
	assert_int_equal(p.dst.host.starts, 1);
	assert_int_equal(p.dst.host.incoming_failed, 0);
	assert_true(p.dst.host.running);

	/* every unit arrived in its last version, the device state whole */
	for (unsigned int i = 0; i < UNITS; i++)
		if (p.dst.iter.version[i] != p.src.iter.version[i])
			fail_msg("unit %u: version %u arrived, %u was sent last", i, p.dst.iter.version[i],
				 p.src.iter.version[i]);
	assert_true(p.dst.dev.loaded);
	assert_memory_equal(p.dst.dev.state, p.src.dev.state, DEV_STATE);

	migration_query(p.src.g, &info);
	assert_int_equal(info.status, MIGRATION_STATUS_COMPLETED);
	assert_true(info.has_downtime);
	assert_int_equal(info.nr_device_times, 1);
	assert_string_equal(info.device_times[0].name, "fake-dev");
	assert_int_equal(info.nr_iterable_times, 1);
	assert_string_equal(info.iterable_times[0].name, "fake-iter");
	assert_true(info.phases.valid);
	assert_false(info.is_incoming);
	migration_query(p.dst.g, &info);
	assert_int_equal(info.status, MIGRATION_STATUS_COMPLETED);
	assert_true(info.is_incoming);
	assert_int_equal(info.nr_load_times, 1);
	assert_false(info.has_socket_address);	/* the listener closed */
	pair_fini(&p);
}

/* A destination that refuses the state: its guest never starts, and the
 * source's guest runs again, told why. */
static void refused(bool running)
{
	struct pair p;
	struct migration_info info;

	pair_init(&p);
	p.src.host.running = running;
	p.dst.dev.refuse = true;
	pair_listen_and_start(&p);
	expect_status(&p, &p.src, MIGRATION_STATUS_FAILED);
	expect_status(&p, &p.dst, MIGRATION_STATUS_FAILED);
	settle(&p);

	assert_int_equal(p.src.host.pauses, 1);
	assert_int_equal(p.src.host.resumes, 1);
	assert_int_equal(p.src.host.resumed_running, running);
	assert_int_equal(p.src.host.running, running);
	assert_int_equal(p.src.host.migrated, 0);
	assert_int_equal(p.dst.host.starts, 0);
	assert_int_equal(p.dst.host.incoming_failed, 1);
	migration_query(p.src.g, &info);
	assert_true(info.has_error);
	if (!strstr(info.error_desc, "fake-dev: refused by the test"))
		fail_msg("source error: %s", info.error_desc);
	migration_query(p.dst.g, &info);
	if (!strstr(info.error_desc, "fake-dev: refused by the test"))
		fail_msg("destination error: %s", info.error_desc);
	pair_fini(&p);
}

static void test_refused_running(void **state)
{
	(void)state;
	refused(true);
}

/* A guest the operator stopped before the switchover stays stopped. */
static void test_refused_paused(void **state)
{
	(void)state;
	refused(false);
}

/* Cancelled before the switchover: the guest was never paused, so it is
 * not resumed either; the destination gives up, its guest never ran. */
static void test_cancel(void **state)
{
	struct pair p;

	(void)state;
	start_never_converging(&p);
	migration_cancel(p.src.g);
	expect_status(&p, &p.src, MIGRATION_STATUS_CANCELLING);
	expect_status(&p, &p.src, MIGRATION_STATUS_CANCELLED);
	expect_status(&p, &p.dst, MIGRATION_STATUS_FAILED);
	settle(&p);
	assert_int_equal(p.src.host.pauses, 0);
	assert_int_equal(p.src.host.resumes, 0);
	assert_true(p.src.host.running);
	assert_int_equal(p.dst.host.starts, 0);
	assert_int_equal(p.dst.host.incoming_failed, 1);
	pair_fini(&p);
}

static void set_dirty_limit(struct migration_params *p, void *v)
{
	p->dirty_limit = true;
	p->vcpu_dirty_limit = *(uint64_t *)v;
}

static void set_stall(struct migration_params *p, void *v)
{
	(void)v;
	p->stall_iterations = 2;
	p->stall_ms = 0;
}

/* A migration that does not converge says so (the stall signal) and,
 * with the dirty-limit capability, throttles the vCPUs once; the limits
 * are lifted when it ends. */
static void test_stall_and_throttle(void **state)
{
	struct pair p;
	uint64_t limit = 7;

	(void)state;
	pair_init(&p);
	never_converge(&p);
	set_param(&p.src, MIGRATION_PARAM_DIRTY_LIMIT | MIGRATION_PARAM_VCPU_DIRTY_LIMIT, set_dirty_limit, &limit);
	set_param(&p.src, MIGRATION_PARAM_STALL_ITERATIONS | MIGRATION_PARAM_STALL_MS, set_stall, NULL);
	pair_listen_and_start(&p);
	expect_event(&p, MIGRATION_EVENT_STALL, 1);
	expect_event(&p, MIGRATION_EVENT_PASS, 5);
	assert_true(migration_throttling(p.src.g));
	migration_cancel(p.src.g);
	expect_status(&p, &p.src, MIGRATION_STATUS_CANCELLED);
	settle(&p);
	pthread_mutex_lock(&p.src.host.lock);
	assert_int_equal(p.src.host.nr_throttles, 2);
	assert_int_equal(p.src.host.throttles[0], 7);
	assert_int_equal(p.src.host.throttles[1], 0);
	pthread_mutex_unlock(&p.src.host.lock);
	assert_false(migration_throttling(p.src.g));
	pair_fini(&p);
}

/* Two migrations at once, or a source that is a destination, are refused
 * in QEMU's words. */
static void test_refusals(void **state)
{
	struct pair p;
	char err[256];

	(void)state;
	pair_init(&p);
	never_converge(&p);
	pair_listen_and_start(&p);
	assert_int_equal(migration_start(p.src.g, p.uri, err, sizeof(err)), -EBUSY);
	assert_string_equal(err, "There's a migration process in progress");
	assert_int_equal(migration_start(p.dst.g, p.uri, err, sizeof(err)), -EPERM);
	assert_string_equal(err, "Guest is waiting for an incoming migration");
	assert_int_equal(migration_listen(p.dst.g, p.uri, err, sizeof(err)), -EBUSY);
	assert_int_equal(migration_uri_check("tcp:", false, err, sizeof(err)) < 0, 1);
	assert_true(migration_in_progress(p.src.g));
	migration_cancel(p.src.g);
	expect_status(&p, &p.src, MIGRATION_STATUS_CANCELLED);
	assert_false(migration_in_progress(p.src.g));
	pair_fini(&p);
}

/* The destination's guest fails to start after the stream loaded: it
 * says so and exits, guest never run. */
static void test_start_fails(void **state)
{
	struct pair p;
	struct migration_info info;

	(void)state;
	pair_init(&p);
	p.dst.host.start_result = -EIO;
	pair_listen_and_start(&p);
	expect_status(&p, &p.dst, MIGRATION_STATUS_FAILED);
	expect_status(&p, &p.src, MIGRATION_STATUS_COMPLETED);
	settle(&p);
	assert_int_equal(p.dst.host.starts, 1);
	assert_int_equal(p.dst.host.incoming_failed, 1);
	assert_false(p.dst.host.running);
	migration_query(p.dst.g, &info);
	if (!strstr(info.error_desc, "cannot start the vCPUs"))
		fail_msg("destination error: %s", info.error_desc);
	pair_fini(&p);
}

/* An engine freed mid-migration stops its threads first (machine_destroy
 * and quit rely on it). */
static void test_free_while_active(void **state)
{
	struct pair p;

	(void)state;
	start_never_converging(&p);
	migration_abort(p.src.g);
	assert_int_equal(migration_status(p.src.g), MIGRATION_STATUS_CANCELLED);
	migration_abort(p.dst.g);
	assert_int_not_equal(migration_status(p.dst.g), MIGRATION_STATUS_ACTIVE);
	pair_fini(&p);
}

/* ------------------------------------------------------------------- TLS */

static char tls_root[64];

static void add_object(struct side *s, const char *fmt, ...)
{
	struct migration_object_spec o;
	char text[512], err[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (migration_object_parse(text, &o, err, sizeof(err)) || migration_object_add(s->g, &o, err, sizeof(err)))
		fail_msg("%s: --object %s: %s", s->host.name, text, err);
}

static void set_tls(struct migration_params *p, void *v)
{
	const char *const *kv = v;

	snprintf(p->tls_creds, sizeof(p->tls_creds), "%s", kv[0]);
	snprintf(p->tls_hostname, sizeof(p->tls_hostname), "%s", kv[1] ? kv[1] : "");
	snprintf(p->tls_authz, sizeof(p->tls_authz), "%s", kv[2] ? kv[2] : "");
}

/* A source with the credentials of client_dir (under tls_root). */
static void tls_source(struct side *s, const char *client_dir)
{
	const char *kv[3] = { "tls0", "localhost", NULL };

	add_object(s, "tls-creds-x509,id=tls0,endpoint=client,dir=%s/%s", tls_root, client_dir);
	set_param(s, MIGRATION_PARAM_TLS_CREDS | MIGRATION_PARAM_TLS_HOSTNAME, set_tls, kv);
}

/* A destination that lets only the test client in. */
static void tls_destination(struct side *s)
{
	const char *kv[3] = { "tls0", NULL, "auth0" };

	add_object(s, "tls-creds-x509,id=tls0,endpoint=server,dir=%s/server,verify-peer=on", tls_root);
	/* QEMU's --object syntax: a comma inside a value is doubled */
	add_object(s, "authz-simple,id=auth0,identity=O=kmig,,CN=%s", TLS_CLIENT_CN);
	set_param(s, MIGRATION_PARAM_TLS_CREDS | MIGRATION_PARAM_TLS_AUTHZ, set_tls, kv);
}

static void set_multifd(struct migration_params *p, void *v)
{
	(void)v;
	p->multifd = true;
	p->multifd_channels = 3;
}

/* The whole migration in TLS, main connection and RAM channels, the
 * state checked unit by unit as without it. */
static void test_tls_completes(void **state)
{
	struct pair p;
	struct migration_info info;

	(void)state;
	pair_init(&p);
	p.src.iter.dirty_per_sync = 16;
	tls_source(&p.src, "client");
	tls_destination(&p.dst);
	set_param(&p.src, MIGRATION_PARAM_MULTIFD | MIGRATION_PARAM_MULTIFD_CHANNELS, set_multifd, NULL);
	pair_listen_and_start(&p);
	expect_status(&p, &p.src, MIGRATION_STATUS_COMPLETED);
	expect_status(&p, &p.dst, MIGRATION_STATUS_COMPLETED);
	settle(&p);
	for (unsigned int i = 0; i < UNITS; i++)
		assert_int_equal(p.dst.iter.version[i], p.src.iter.version[i]);
	assert_memory_equal(p.dst.dev.state, p.src.dev.state, DEV_STATE);
	migration_query(p.src.g, &info);
	assert_string_equal(info.kmig.tls, "gnutls");
	assert_int_equal(info.kmig.channels, 3);
	assert_string_equal(info.kmig.send_mode, "copy");	/* nothing to send zero-copy from */
	migration_query(p.dst.g, &info);
	assert_string_equal(info.kmig.tls, "gnutls");
	pair_fini(&p);
}

/* A source the destination refuses fails, told why; the destination
 * goes on waiting, and the real source then migrates. */
static void refused_then_real(void (*setup_bad)(struct side *s), const char *bad_says)
{
	struct pair p;
	struct side bad;
	struct migration_info info;
	char err[256];

	pair_init(&p);
	tls_destination(&p.dst);
	side_init(&bad, "refused source", true);
	setup_bad(&bad);
	if (migration_listen(p.dst.g, p.uri, err, sizeof(err)))
		fail_msg("listen: %s", err);
	if (migration_start(bad.g, p.uri, err, sizeof(err)))
		fail_msg("start: %s", err);
	if (!wait_event(&bad.host, MIGRATION_EVENT_STATUS, MIGRATION_STATUS_FAILED))
		fail_msg("the refused source did not fail");
	migration_query(bad.g, &info);
	printf("  refused source: %s\n", info.error_desc);
	if (!strstr(info.error_desc, bad_says))
		fail_msg("the refused source said '%s', expected '%s'", info.error_desc, bad_says);
	assert_int_equal(bad.host.resumes, 0);	/* never paused: it ran throughout */
	assert_true(bad.host.running);
	/* the destination still waits */
	assert_int_equal(migration_status(p.dst.g), MIGRATION_STATUS_NONE);
	migration_query(p.dst.g, &info);
	assert_true(info.has_socket_address);
	tls_source(&p.src, "client");
	if (migration_start(p.src.g, p.uri, err, sizeof(err)))
		fail_msg("start: %s", err);
	expect_status(&p, &p.src, MIGRATION_STATUS_COMPLETED);
	expect_status(&p, &p.dst, MIGRATION_STATUS_COMPLETED);
	settle(&p);
	assert_int_equal(p.dst.host.starts, 1);
	side_fini(&bad);
	pair_fini(&p);
}

static void bad_nocert(struct side *s)
{
	tls_source(s, "client-nocert");
}

static void bad_other_ca(struct side *s)
{
	tls_source(s, "client-other-ca");
}

static void bad_plaintext(struct side *s)
{
	(void)s;
}

static void test_tls_refuses_no_certificate(void **state)
{
	(void)state;
	refused_then_real(bad_nocert, "Certificate is required");
}

static void test_tls_refuses_other_ca(void **state)
{
	(void)state;
	refused_then_real(bad_other_ca, "the destination refused the session");
}

static void test_tls_refuses_plaintext_source(void **state)
{
	(void)state;
	refused_then_real(bad_plaintext, "if it has tls-creds, set tls-creds here too");
}

/* A TLS source to a plaintext destination: refused on both sides. */
static void test_tls_source_plain_destination(void **state)
{
	struct pair p;
	struct migration_info info;

	(void)state;
	pair_init(&p);
	tls_source(&p.src, "client");
	pair_listen_and_start(&p);
	expect_status(&p, &p.src, MIGRATION_STATUS_FAILED);
	migration_query(p.src.g, &info);
	printf("  source: %s\n", info.error_desc);
	if (!strstr(info.error_desc, "is tls-creds set on both sides?"))
		fail_msg("source said '%s'", info.error_desc);
	assert_int_equal(migration_status(p.dst.g), MIGRATION_STATUS_NONE);
	pair_fini(&p);
}

/* QEMU's refusals of what tls-creds names, and of zero-copy with TLS. */
static void test_tls_refusals(void **state)
{
	struct pair p;
	struct migration_info info;
	struct migration_object_spec o;
	char err[512];
	const char *nope[3] = { "nope", "localhost", NULL };
	const char *authz[3] = { "auth0", "localhost", NULL };
	const char *server[3] = { "srv", "localhost", NULL };
	const struct { const char *const *kv; const char *says; } cases[] = {
		{ nope, "No TLS credentials with id 'nope'" },
		{ authz, "Object with id 'auth0' is not TLS credentials" },
		{ server, "Expected TLS credentials for a client endpoint" },
	};

	(void)state;
	pair_init(&p);
	add_object(&p.src, "authz-simple,id=auth0,identity=CN=x");
	add_object(&p.src, "tls-creds-x509,id=srv,endpoint=server,dir=%s/server", tls_root);
	assert_int_equal(migration_object_parse("tls-creds-x509,id=srv,endpoint=server,dir=/nonexistent", &o, err,
						sizeof(err)), 0);
	assert_int_equal(migration_object_add(p.src.g, &o, err, sizeof(err)), -ENOENT);
	assert_int_equal(migration_object_parse("tls-creds-x509,id=x,bogus=1", &o, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "Property 'tls-creds-x509.bogus' not found");
	assert_int_equal(migration_object_parse("secret,id=x", &o, err, sizeof(err)), -EINVAL);
	assert_int_equal(migration_object_parse("tls-creds-x509,id=srv,endpoint=server,dir=x", &o, err, sizeof(err)), 0);
	snprintf(o.dir, sizeof(o.dir), "%s/server", tls_root);
	assert_int_equal(migration_object_add(p.src.g, &o, err, sizeof(err)), -EEXIST);
	assert_int_equal(migration_object_del(p.src.g, "nope", err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "object 'nope' not found");
	if (migration_listen(p.dst.g, p.uri, err, sizeof(err)))
		fail_msg("listen: %s", err);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&p.src.host.events, 0, sizeof(p.src.host.events));
		p.src.host.nr_events = 0;
		set_param(&p.src, MIGRATION_PARAM_TLS_CREDS | MIGRATION_PARAM_TLS_HOSTNAME, set_tls,
			  (void *)cases[i].kv);
		assert_int_equal(migration_start(p.src.g, p.uri, err, sizeof(err)), 0);
		expect_status(&p, &p.src, MIGRATION_STATUS_FAILED);
		migration_query(p.src.g, &info);
		assert_string_equal(info.error_desc, cases[i].says);
	}
	/* zero-copy-send with TLS, as QEMU */
	tls_source(&p.src, "client");
	struct migration_params mp;

	migration_get_params(p.src.g, &mp);
	mp.zero_copy_send = true;
	assert_int_equal(migration_set_params(p.src.g, &mp, MIGRATION_PARAM_ZERO_COPY_SEND, err, sizeof(err)), 0);
	p.src.host.nr_events = 0;
	assert_int_equal(migration_start(p.src.g, p.uri, err, sizeof(err)), 0);
	expect_status(&p, &p.src, MIGRATION_STATUS_FAILED);
	migration_query(p.src.g, &info);
	assert_string_equal(info.error_desc, "Zero copy only available for non-compressed non-TLS multifd migration");
	assert_int_equal(migration_object_del(p.src.g, "srv", err, sizeof(err)), 0);
	pair_fini(&p);
}

/* ------------------------------------ faults in every phase, and the end */

/* The end of a migration is three messages on the main connection: the
 * source's EOF, the destination's ACK, the source's COMMIT.  A proxy
 * between the two engines meets one of them and then loses it for good
 * (a link gone silent), holds it back shortly or past the timeouts, or
 * cuts the connection.  Whatever happens, at most one guest may ever run,
 * the right one must be reachable with one documented command (the
 * destination's cont when the source says completed), and the guest that
 * runs holds every unit in its last version.  The same four faults meet
 * the earlier phases too: setup (the stream's first byte), precopy (1 MiB
 * into the stream) and stop-and-copy (the device state, sent with the
 * source paused). */
enum fault_at { AT_SETUP, AT_PRECOPY, AT_STOPCOPY, AT_EOF, AT_ACK, AT_COMMIT, NR_AT };
enum fault_kind { F_BLACKHOLE, F_DELAY_SHORT, F_DELAY_LONG, F_CUT, NR_KIND };
static const char *const at_names[] = { "setup", "precopy", "stop-and-copy", "EOF", "ACK", "COMMIT" };
#define PRECOPY_FAULT_AT (1u << 20)
static const char *const kind_names[] = { "lost", "delayed 100 ms", "delayed 800 ms", "cut" };

#define FAULT_IO_TIMEOUT_MS 250

struct proxy {
	int lfd, a, b;			/* listener; the source's and the destination's side */
	char path[100];
	struct sockaddr_un target;
	enum fault_at at;
	enum fault_kind kind;
	pthread_t acceptor, up, down;
	bool started;
	/* a link gone silent (F_BLACKHOLE fired): nothing moves either way
	 * any more, not even a FIN; the pumps stop reading, so the senders'
	 * buffers fill as they would on a dead link */
	atomic_bool dead, stopping;
};

struct pump {
	struct proxy *p;
	int from, to;
	bool up;			/* source to destination */
};

static int write_all_fd(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Where in buf (after tail_len bytes of earlier reads, kept in tail) the
 * message this pump watches for begins; -1 if not there. */
static ssize_t find_trigger(const struct pump *u, uint64_t seen, const uint8_t *tail, size_t tail_len,
			    const uint8_t *buf, size_t n)
{
	static uint8_t win[64 + 65536];
	uint8_t dev[DEV_STATE];
	const void *pat;
	size_t plen;

	if (!u->up)	/* the destination says nothing before its ACK */
		return u->p->at == AT_ACK ? 0 : -1;
	if (u->p->at == AT_ACK)
		return -1;
	if (u->p->at == AT_SETUP)
		return 0;
	if (u->p->at == AT_PRECOPY)
		return seen + n > PRECOPY_FAULT_AT ? (ssize_t)(PRECOPY_FAULT_AT - seen) : -1;
	if (u->p->at == AT_COMMIT) {
		pat = STREAM_COMMIT_MAGIC;
		plen = 8;
	} else {		/* the device's state; EOF follows it */
		for (unsigned int i = 0; i < DEV_STATE; i++)
			dev[i] = (uint8_t)(0xa5 ^ i);
		pat = dev;
		plen = DEV_STATE;
	}
	memcpy(win, tail, tail_len);
	memcpy(win + tail_len, buf, n);
	const uint8_t *hit = memmem(win, tail_len + n, pat, plen);

	if (!hit)
		return -1;
	ssize_t at = (hit - win) - (ssize_t)tail_len + (u->p->at == AT_EOF ? (ssize_t)plen : 0);

	/* (the device state may begin in the previous read: then at once) */

	return at < 0 ? 0 : at;
}

static void *pump_main(void *arg)
{
	struct pump *u = arg;
	uint8_t buf[65536], tail[64];
	size_t tail_len = 0;
	uint64_t seen = 0;
	bool fired = false, lost = false;
	ssize_t n;

	while ((n = recv(u->from, buf, sizeof(buf), 0)) > 0) {
		if (atomic_load(&u->p->dead))
			break;
		ssize_t k = fired ? -1 : find_trigger(u, seen, tail, tail_len, buf, (size_t)n);

		seen += (uint64_t)n;
		if (k > n)
			k = -1;
		if (k >= 0) {
			fired = true;
			if (write_all_fd(u->to, buf, (size_t)k))
				break;
			switch (u->p->kind) {
			case F_BLACKHOLE:
				lost = true;
				atomic_store(&u->p->dead, true);
				break;
			case F_DELAY_SHORT: usleep(100 * 1000); break;
			case F_DELAY_LONG: usleep(800 * 1000); break;
			case F_CUT:
				shutdown(u->p->a, SHUT_RDWR);
				shutdown(u->p->b, SHUT_RDWR);
				return NULL;
			default: break;
			}
			memmove(buf, buf + k, (size_t)(n - k));
			n -= k;
		}
		if (lost)
			break;
		if (write_all_fd(u->to, buf, (size_t)n))
			break;
		/* the last bytes, for a pattern split across two reads */
		size_t keep = (size_t)n < sizeof(tail) ? (size_t)n : sizeof(tail);

		if (tail_len + keep > sizeof(tail)) {
			size_t drop = tail_len + keep - sizeof(tail);

			memmove(tail, tail + drop, tail_len - drop);
			tail_len -= drop;
		}
		memcpy(tail + tail_len, buf + n - (ssize_t)keep, keep);
		tail_len += keep;
	}
	if (atomic_load(&u->p->dead)) {
		while (!atomic_load(&u->p->stopping))
			usleep(5000);
		return NULL;
	}
	shutdown(u->to, SHUT_WR);
	return NULL;
}

static void *acceptor_main(void *arg)
{
	struct proxy *p = arg;
	static struct pump up, down;

	p->a = accept(p->lfd, NULL, NULL);
	if (p->a < 0)
		return NULL;
	p->b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(p->b, (struct sockaddr *)&p->target, sizeof(p->target)) < 0) {
		shutdown(p->a, SHUT_RDWR);
		return NULL;
	}
	up = (struct pump){ p, p->a, p->b, true };
	down = (struct pump){ p, p->b, p->a, false };
	pthread_create(&p->up, NULL, pump_main, &up);
	pthread_create(&p->down, NULL, pump_main, &down);
	p->started = true;
	return NULL;
}

static void proxy_start(struct proxy *p, const char *dir, const char target_path[100], enum fault_at at,
			enum fault_kind kind)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(p, 0, sizeof(*p));
	p->a = p->b = -1;
	p->at = at;
	p->kind = kind;
	snprintf(p->path, sizeof(p->path), "%s/proxy", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
	p->target = (struct sockaddr_un){ .sun_family = AF_UNIX };
	snprintf(p->target.sun_path, sizeof(p->target.sun_path), "%s", target_path);
	p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(p->lfd, 4), 0);
	assert_int_equal(pthread_create(&p->acceptor, NULL, acceptor_main, p), 0);
}

static void proxy_stop(struct proxy *p)
{
	atomic_store(&p->stopping, true);
	shutdown(p->lfd, SHUT_RDWR);
	pthread_join(p->acceptor, NULL);
	if (p->started) {
		shutdown(p->a, SHUT_RDWR);
		shutdown(p->b, SHUT_RDWR);
		pthread_join(p->up, NULL);
		pthread_join(p->down, NULL);
	}
	if (p->a >= 0)
		close(p->a);
	if (p->b >= 0)
		close(p->b);
	close(p->lfd);
	unlink(p->path);
}

/* The first final status a host saw (completed, failed, cancelled). */
static enum migration_status wait_final(struct fake_host *h, int ms)
{
	struct timespec ts;
	enum migration_status st = MIGRATION_STATUS_NONE;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&h->lock);
	while (st == MIGRATION_STATUS_NONE && r != ETIMEDOUT) {
		for (unsigned int i = 0; i < h->nr_events; i++) {
			enum migration_status e = (enum migration_status)h->events[i].arg;

			if (h->events[i].ev == MIGRATION_EVENT_STATUS &&
			    (e == MIGRATION_STATUS_COMPLETED || e == MIGRATION_STATUS_FAILED ||
			     e == MIGRATION_STATUS_CANCELLED))
				st = e;
		}
		if (st == MIGRATION_STATUS_NONE)
			r = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
	}
	pthread_mutex_unlock(&h->lock);
	return st;
}

static void set_io_timeout(struct migration_params *p, void *v)
{
	(void)v;
	p->io_timeout_ms = FAULT_IO_TIMEOUT_MS;
}

/* Whether the guest that runs on the destination is whole. */
static bool destination_whole(struct pair *p)
{
	for (unsigned int i = 0; i < UNITS; i++)
		if (p->dst.iter.version[i] != p->src.iter.version[i])
			return false;
	return !memcmp(p->dst.dev.state, p->src.dev.state, DEV_STATE);
}

/* One fault; its outcome for the matrix: 0 the destination ran at once,
 * 1 it ran after cont (no decision came, the source said completed), 2
 * the source ran again (failed); -1 when a rule broke (why says what). */
static int one_fault(enum fault_at at, enum fault_kind kind, char *why, size_t whylen, char *src_err,
		     size_t errlen)
{
	struct pair p;
	struct proxy px;
	char err[256], proxy_uri[200], target[100];
	int outcome = -1;

	pair_init(&p);
	atomic_store(&running_guests, 1);
	atomic_store(&two_ran, false);
	p.src.iter.dirty_per_sync = 16;
	set_param(&p.src, MIGRATION_PARAM_IO_TIMEOUT, set_io_timeout, NULL);
	set_param(&p.dst, MIGRATION_PARAM_IO_TIMEOUT, set_io_timeout, NULL);
	snprintf(target, sizeof(target), "%s/sock", p.dir);
	if (migration_listen(p.dst.g, p.uri, err, sizeof(err)))
		fail_msg("listen: %s", err);
	proxy_start(&px, p.dir, target, at, kind);
	snprintf(proxy_uri, sizeof(proxy_uri), "unix:%s", px.path);
	if (migration_start(p.src.g, proxy_uri, err, sizeof(err)))
		fail_msg("start: %s", err);
	enum migration_status s = wait_final(&p.src.host, WAIT_MS);
	/* a destination that never heard the source (setup) waits on: it
	 * only has to be seen not to start */
	enum migration_status d = wait_final(&p.dst.host, s == MIGRATION_STATUS_FAILED ? 4 * FAULT_IO_TIMEOUT_MS : WAIT_MS);

	settle(&p);
	proxy_stop(&px);
	bool unresolved = migration_unresolved(p.dst.g);
	struct migration_info si;

	migration_query(p.src.g, &si);
	snprintf(src_err, errlen, "%s", si.error_desc);
	snprintf(why, whylen, "source %s (%s), destination %s%s, running: source %d destination %d",
		 migration_status_name(s), si.error_desc, migration_status_name(d), unresolved ? " unresolved" : "",
		 p.src.host.running, p.dst.host.running);
	if (atomic_load(&two_ran) || (p.src.host.running && p.dst.host.running)) {
		snprintf(why + strlen(why), whylen - strlen(why), "; TWO GUESTS RAN AT ONCE");
	} else if (s == MIGRATION_STATUS_COMPLETED) {
		/* the guest is the destination's: running, or kept for cont */
		if (!p.src.host.running && (p.dst.host.running || unresolved)) {
			outcome = unresolved;
			if (unresolved && migration_resolve(p.dst.g, err, sizeof(err)))
				outcome = -1;
			if (!p.dst.host.running || !destination_whole(&p))
				outcome = -1;
		}
	} else if (s == MIGRATION_STATUS_FAILED) {
		/* the source runs its own guest; the destination never did */
		outcome = p.src.host.running && !p.dst.host.running && !p.dst.host.starts ? 2 : -1;
	}
	pair_fini(&p);
	return outcome;
}

/* 9 x 12 = 108 faults in the final handshake, 3 x 12 = 36 before it */
#define FAULT_ROUNDS 9
#define EARLY_FAULT_ROUNDS 3

static void test_final_handshake_faults(void **state)
{
	static const char *const outcome_names[] = { "destination ran", "destination ran after cont",
						     "source ran again" };
	unsigned int matrix[NR_AT][NR_KIND][3] = { 0 }, n = 0;
	static char said[NR_AT][NR_KIND][512];
	char why[1024];

	(void)state;
	for (int round = 0; round < FAULT_ROUNDS; round++) {
		for (int at = round < EARLY_FAULT_ROUNDS ? 0 : AT_EOF; at < NR_AT; at++) {
			for (int kind = 0; kind < NR_KIND; kind++) {
				int o = one_fault((enum fault_at)at, (enum fault_kind)kind, why, sizeof(why), said[at][kind],
						  sizeof(said[at][kind]));

				if (o < 0)
					fail_msg("fault %u: %s %s: %s", n, at_names[at], kind_names[kind], why);
				/* a link gone silent is named: a timeout, or (in setup)
				 * the destination dropping a peer that said nothing */
				if (kind == F_BLACKHOLE && o == 2 && !strstr(said[at][kind], "time") &&
				    !strstr(said[at][kind], "within") &&
				    !(at == AT_SETUP && strstr(said[at][kind], "destination closed the connection")))
					fail_msg("fault %u: %s %s: the source did not name the timeout: %s", n,
						 at_names[at], kind_names[kind], why);
				matrix[at][kind][o]++;
				n++;
			}
		}
	}
	printf("  %u faults in every phase (%u in the final handshake); never two guests running; the guest whole "
	       "where it ran:\n", n, FAULT_ROUNDS * (NR_AT - AT_EOF) * NR_KIND);
	for (int at = 0; at < NR_AT; at++) {
		for (int kind = 0; kind < NR_KIND; kind++) {
			printf("  %-13s %-15s", at_names[at], kind_names[kind]);
			for (int o = 0; o < 3; o++)
				if (matrix[at][kind][o])
					printf("  %s: %u", outcome_names[o], matrix[at][kind][o]);
			printf("\n");
			if (said[at][kind][0] && (kind == F_BLACKHOLE || kind == F_CUT))
				printf("      source: %s\n", said[at][kind]);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_completes),
		cmocka_unit_test(test_refused_running),
		cmocka_unit_test(test_refused_paused),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_stall_and_throttle),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_start_fails),
		cmocka_unit_test(test_free_while_active),
		cmocka_unit_test(test_tls_completes),
		cmocka_unit_test(test_tls_refuses_no_certificate),
		cmocka_unit_test(test_tls_refuses_other_ca),
		cmocka_unit_test(test_tls_refuses_plaintext_source),
		cmocka_unit_test(test_tls_source_plain_destination),
		cmocka_unit_test(test_tls_refusals),
		cmocka_unit_test(test_final_handshake_faults),
	};

	snprintf(tls_root, sizeof(tls_root), "/tmp/kmig-engine-tls-XXXXXX");
	if (!mkdtemp(tls_root) || tls_make_set(tls_root)) {
		printf("cannot make the test certificates in %s\n", tls_root);
		return 1;
	}
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tls_root);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", tls_root);
	return r;
}
