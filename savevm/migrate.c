/* The migration engine.
 *
 * Source: bulk pass, dirty passes until the system-wide pending bytes fit
 * in bandwidth × downtime-limit, then stop-and-copy (vCPUs stopped, final
 * harvest, the rest of RAM, every device timed, EOF) and wait for the
 * destination's ACK.  Any failure or cancel before the ACK resumes the
 * guest on the source.
 *
 * Destination: checks every record before acting on it, keeps device
 * blobs until EOF, loads them only once the stream is complete and valid,
 * acknowledges, then starts the vCPUs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/util.h"
#include "kvm/kvm.h"
#include "ring/ring.h"
#include "savevm/load.h"
#include "savevm/migration.h"
#include "savevm/multifd.h"
#include "savevm/ram.h"
#include "savevm/switchover.h"

#define CONNECT_TIMEOUT_MS 5000

struct migration {
	struct migration_env env;
	/* everything below; never held across a call to the host */
	pthread_mutex_t lock;
	struct migration_params params;
	/* from here on, per migration: zeroed as the next one starts */
	enum migration_status status;
	bool incoming;
	bool thread_running;
	pthread_t thread;
	atomic_bool cancel;
	struct ring_channel *ch;	/* for abort from cancel/quit */
	struct multifd_send *mf_send;	/* RAM channels, same purpose */
	struct multifd_recv *mf_recv;
	/* what the RAM path used (x-kmig): channels, copy or zero-copy, and
	 * zero-copy notifications of which the kernel copied anyway */
	unsigned int channels;
	enum savevm_send_mode send_mode;
	uint64_t zc_sends, zc_copied;
	uint64_t multifd_bytes;		/* final, once the channels closed */
	/* expected-downtime when the switchover was decided */
	bool switchover_decided;
	uint64_t switchover_expected_ms;
	/* passes run because the rest still shrank fast (switchover_decide) */
	uint64_t shrink_passes;
	/* the destination's listener, open from --incoming until its
	 * incoming migration ends (a later source is then refused), and the
	 * address it listens on */
	struct ring_listener *listener;
	struct ring_uri listen_addr;
	char uri[256];

	uint64_t start_ns, setup_ns, end_ns;
	uint64_t downtime_start_ns;
	uint64_t downtime_ms, expected_downtime_ms;
	uint64_t precopy_bytes, downtime_bytes;
	_Atomic uint64_t sent;		/* bytes of the stream so far (live) */
	uint64_t dirty_sync_count, passes;
	uint64_t bandwidth;		/* bytes/s measured over the last pass */
	uint64_t pages_per_second, dirty_pages_rate;
	double mbps;
	char error[512];
	bool paused;			/* the switchover paused the guest */
	bool resume_on_fail;		/* the guest ran before switchover */
	struct migration_phases phases;
	struct migration_stall stall;
	uint64_t stall_since_ns;	/* when remaining last fell */
	bool stall_valid;		/* at least one pass measured */
	/* dirty-limit capability: passes in a row whose dirtying outran
	 * half of what they sent; the limit engaged */
	unsigned int dirty_high_passes;
	bool dirty_limit_engaged;
};

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

static void set_status(struct migration *g, enum migration_status s)
{
	pthread_mutex_lock(&g->lock);
	bool changed = g->status != s;

	g->status = s;
	pthread_mutex_unlock(&g->lock);
	if (changed)
		g->env.host->event(g->env.opaque, MIGRATION_EVENT_STATUS, s);
}

/* The RAM entry's counters; zero without one. */
static void ram_stats(struct migration *g, struct ram_stats *rs)
{
	memset(rs, 0, sizeof(*rs));
	if (g->env.ram)
		ram_handler_stats(g->env.ram, rs);
}

/* The first error of a migration is the one reported. */
static void __attribute__((format(printf, 2, 3))) set_error(struct migration *g, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->lock);
	if (!g->error[0]) {
		va_start(ap, fmt);
		vsnprintf(g->error, sizeof(g->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g->lock);
}

/* Abort every connection of the migration (cancel, abort); g->lock held. */
static void abort_channels_locked(struct migration *g)
{
	if (g->ch)
		ring_channel_abort(g->ch);
	multifd_send_abort(g->mf_send);
	multifd_recv_abort(g->mf_recv);
}

/* ---------------------------------------------------------------- source */

static int send_sections(struct migration *g, struct savevm_out *out)
{
	uint8_t buf[STREAM_SECTION_MAX_SIZE];

	for (size_t i = 0; i < savevm_registry_count(g->env.reg); i++) {
		struct savevm_entry *e = savevm_registry_at(g->env.reg, i);
		struct stream_section s = {
			.section_id = (uint32_t)i + 1, .instance_id = e->instance_id, .version = e->version,
			.kind = e->iterable ? STREAM_SECTION_ITERABLE : STREAM_SECTION_DEVICE,
		};
		strcpy(s.name, e->name);
		int n = stream_encode_section(buf, sizeof(buf), &s);

		if (n < 0)
			return n;
		int r = savevm_out_send(out, buf, (size_t)n);
		if (r)
			return r;
	}
	return 0;
}

static int send_header(struct migration *g, struct savevm_out *out)
{
	uint8_t buf[STREAM_HEADER_SIZE];
	struct stream_header h = {
		.version = STREAM_VERSION, .page_size = KVM_PAGE_SIZE,
		.ram_size = g->env.ram_size, .nr_vcpus = g->env.nr_vcpus,
	};
	stream_encode_header(buf, &h);
	int r = savevm_out_send(out, buf, sizeof(buf));

	return r ? r : send_sections(g, out);
}

/* Runs fn on every iterable entry; stops at the first error. */
#define FOR_EACH_ENTRY(g, e, iter)                                              \
	for (size_t _i = 0; _i < savevm_registry_count((g)->env.reg); _i++)        \
		if (((e) = savevm_registry_at((g)->env.reg, _i))->iterable == (iter))

/* The system-wide figure: every iterable entry, RAM and devices. */
static uint64_t total_pending(struct migration *g, bool exact)
{
	struct savevm_entry *e;
	uint64_t sum = 0;

	FOR_EACH_ENTRY(g, e, true)
		sum += e->ops->pending(e->opaque, exact);
	return sum;
}

static int sync_all(struct migration *g, bool final)
{
	struct savevm_entry *e;

	FOR_EACH_ENTRY(g, e, true) {
		int r = e->ops->sync(e->opaque, final);
		if (r)
			return r;
	}
	return 0;
}

/* Between chunks: pick up a max-bandwidth changed by
 * migrate-set-parameters (it applies at once, as in QEMU).  Progress needs
 * no publishing: query-migrate reads the live counters. */
static void pick_up_params(struct migration *g, struct savevm_out *out)
{
	pthread_mutex_lock(&g->lock);
	atomic_store(&out->rate->bandwidth, g->params.max_bandwidth);
	pthread_mutex_unlock(&g->lock);
}

/* multifd: the CHANNELS record (after the sections), then the channels. */
static int open_channels(struct migration *g, struct savevm_out *out, const struct ring_uri *uri,
			 unsigned int nr, enum savevm_send_mode mode)
{
	struct stream_channels sc = { .nr = nr };
	uint8_t buf[STREAM_CHANNELS_SIZE];
	struct multifd_send *mf = NULL;
	char err[256];

	/* the cookie only binds connections to this stream; not a secret */
	if (getrandom(&sc.cookie, sizeof(sc.cookie), 0) != sizeof(sc.cookie))
		sc.cookie = kmig_now_ns();
	stream_encode_channels(buf, &sc);
	int r = savevm_out_send(out, buf, sizeof(buf));

	if (!r)
		r = multifd_send_start(out, uri, nr, sc.cookie, mode, &mf, err, sizeof(err));
	pthread_mutex_lock(&g->lock);
	g->mf_send = mf;
	pthread_mutex_unlock(&g->lock);
	out->mf = mf;
	if (r)
		set_error(g, "%s", err);
	else if (g->cancel)
		r = -ECANCELED;
	return r;
}

/* One pass over every iterable entry's dirty state. */
static int run_pass(struct migration *g, struct savevm_out *out)
{
	struct savevm_entry *e;

	FOR_EACH_ENTRY(g, e, true) {
		int r;

		do {
			r = e->ops->save_iterate(e->opaque, out);
			pick_up_params(g, out);
			if (g->cancel)
				return -ECANCELED;
		} while (r == 0);
		if (r < 0)
			return r;
	}
	/* the pass is over when its pages are on the wire, not in a queue */
	if (out->mf) {
		int r = multifd_send_drain(out->mf);

		if (r)
			return r;
	}
	uint8_t buf[STREAM_PASS_END_SIZE];

	stream_encode_pass_end(buf, (uint32_t)g->passes);
	return savevm_out_send(out, buf, sizeof(buf));
}

/* The stall signal: remaining (system-wide, exact after the sync) is
 * compared with its lowest value so far; if it has not fallen a sixteenth
 * below it for stall_iterations passes and stall_ms, the migration is
 * stalled until it does.  Called with g->lock held; returns +1/-1 when the signal turned
 * on/off, 0 otherwise. */
static int update_stall(struct migration *g, uint64_t pending, uint64_t now)
{
	bool was = g->stall.stalled;

	/* progress is remaining falling by a sixteenth below its lowest
	 * value: a migration that only wobbles around a level (how much of
	 * the working set a pass finds dirty varies with where the guest
	 * was) would otherwise set a new low now and then and never stall */
	if (!g->stall_valid || pending < g->stall.min_remaining - g->stall.min_remaining / 16) {
		g->stall_valid = true;
		g->stall.min_remaining = pending;
		g->stall.iterations = 0;
		g->stall_since_ns = now;
	} else {
		if (pending < g->stall.min_remaining)
			g->stall.min_remaining = pending;
		g->stall.iterations++;
	}
	g->stall.since_ms = (now - g->stall_since_ns) / 1000000;
	g->stall.stalled = g->stall.iterations >= g->params.stall_iterations &&
			   g->stall.since_ms >= g->params.stall_ms;
	return g->stall.stalled == was ? 0 : g->stall.stalled ? 1 : -1;
}

/* The dirty-limit capability's trigger, QEMU's: in two passes in a row
 * (the bulk first pass aside) the guest dirtied more than half of what
 * the pass sent.  Then every vCPU gets vcpu-dirty-limit, once.  Called
 * with g->lock held. */
static bool dirty_limit_trigger(struct migration *g, uint64_t dirtied, uint64_t sent)
{

	if (!g->params.dirty_limit || g->dirty_limit_engaged || g->dirty_sync_count < 2)
		return false;
	g->dirty_high_passes = dirtied * 2 > sent ? g->dirty_high_passes + 1 : 0;
	if (g->dirty_high_passes < 2)
		return false;
	g->dirty_limit_engaged = true;
	return true;
}

/* After a pass: harvest, measure, decide.  *prev_pending: what was pending
 * before this pass, updated to what is pending now.  Returns 1 to switch
 * over. */
static int end_of_pass(struct migration *g, struct savevm_out *out, uint64_t pass_start,
		       uint64_t pass_bytes, uint64_t pages_before, uint64_t *prev_pending)
{
	uint64_t pending = total_pending(g, true);
	uint64_t now = kmig_now_ns();
	uint64_t dt = now - pass_start ? now - pass_start : 1;
	uint64_t bw = pass_bytes * 1000000000ull / dt;
	struct ram_stats rs;

	ram_stats(g, &rs);
	pthread_mutex_lock(&g->lock);
	if (bw)
		g->bandwidth = bw;
	g->dirty_sync_count++;
	g->mbps = (double)g->bandwidth * 8 / 1e6;
	g->pages_per_second = (rs.normal + rs.duplicate - pages_before) * 1000000000ull / dt;
	g->dirty_pages_rate = pending / KVM_PAGE_SIZE * 1000000000ull / dt;
	/* as QEMU: a bandwidth the operator vouches for replaces the
	 * measured one in the switchover decision */
	uint64_t sw_bw = g->params.avail_switchover_bandwidth ? g->params.avail_switchover_bandwidth
							       : g->bandwidth;
	g->expected_downtime_ms = sw_bw ? pending * 1000 / sw_bw : 0;
	uint64_t limit = g->params.downtime_limit_ms;
	enum switchover_verdict v = switchover_decide(pending, *prev_pending, sw_bw, limit,
						      g->shrink_passes);
	bool converge = v == SWITCHOVER_NOW;

	g->shrink_passes += v == SWITCHOVER_ONE_MORE;
	*prev_pending = pending;
	int stall = update_stall(g, pending, now);
	uint64_t engage = dirty_limit_trigger(g, pending, pass_bytes) ? g->params.vcpu_dirty_limit : 0;

	if (converge) {
		g->switchover_decided = true;
		g->switchover_expected_ms = g->expected_downtime_ms;
	}
	pthread_mutex_unlock(&g->lock);
	if (stall)
		g->env.host->event(g->env.opaque, MIGRATION_EVENT_STALL, stall > 0);
	if (engage)
		g->env.host->throttle(g->env.opaque, engage);
	return converge;
}

static int precopy(struct migration *g, struct savevm_out *out)
{
	uint64_t prev_pending = total_pending(g, false);

	for (;;) {
		struct ram_stats rs;
		uint64_t start = kmig_now_ns(), bytes0 = out->bytes;

		ram_stats(g, &rs);
		pthread_mutex_lock(&g->lock);
		g->passes++;
		pthread_mutex_unlock(&g->lock);
		g->env.host->event(g->env.opaque, MIGRATION_EVENT_PASS, (int64_t)g->passes);
		int r = run_pass(g, out);

		if (!r)
			r = end_of_pass(g, out, start, out->bytes - bytes0, rs.normal + rs.duplicate,
					&prev_pending);
		if (r)
			return r < 0 ? r : 0;
		if (g->cancel)
			return -ECANCELED;
	}
}

static int save_devices(struct migration *g, struct savevm_out *out)
{
	uint8_t buf[STREAM_PAYLOAD_HDR_SIZE + KVM_STATE_MAX_SIZE];
	struct savevm_entry *e;

	FOR_EACH_ENTRY(g, e, false) {
		uint64_t t0 = kmig_now_ns();
		int n = e->ops->save_state(e->opaque, buf + STREAM_PAYLOAD_HDR_SIZE, KVM_STATE_MAX_SIZE);

		if (n < 0) {
			set_error(g, "cannot save device state: %s", e->name);
			return n;
		}
		stream_encode_payload_hdr(buf, STREAM_REC_DEVICE, (uint32_t)_i + 1, (uint32_t)n);
		int r = savevm_out_send(out, buf, STREAM_PAYLOAD_HDR_SIZE + (size_t)n);

		e->save_time_us = (kmig_now_ns() - t0) / 1000;
		if (r)
			return r;
	}
	return 0;
}

static int wait_ack(struct migration *g, struct ring_channel *ch)
{
	struct savevm_in in;
	char msg[STREAM_MAX_ACK_MSG + 1], err[256];
	int32_t status;
	int timeout = ring_channel_timeout(ch);
	int r = ring_poll_readable(ch, timeout ? timeout : -1);

	if (r == 0) {
		set_error(g, "no acknowledgement from the destination within %d ms (x-kmig-io-timeout)", timeout);
		return -ETIMEDOUT;
	}
	savevm_in_init(&in, ch);
	r = stream_read_ack(&in.src, &status, msg, err, sizeof(err));
	if (r) {
		set_error(g, "destination did not acknowledge: %s", err);
		return r;
	}
	if (status) {
		set_error(g, "destination refused the stream: %s", msg);
		return status < 0 ? status : -EPROTO;
	}
	return 0;
}

/* After a send failure the destination may have said why before closing. */
static void fetch_refusal(struct migration *g, struct ring_channel *ch)
{
	if (ring_poll_readable(ch, 200) == 1)
		wait_ack(g, ch);
}

static int stop_and_copy(struct migration *g, struct savevm_out *out)
{
	uint64_t t0 = kmig_now_ns();

	/* a 'stop' racing with this is the host's to order (migration.h) */
	bool was_running = g->env.host->pause(g->env.opaque);

	pthread_mutex_lock(&g->lock);
	g->downtime_start_ns = t0;
	g->paused = true;
	g->resume_on_fail = was_running;
	pthread_mutex_unlock(&g->lock);
	struct migration_phases ph = { .valid = true };

	ph.vcpus_stopped_us = (kmig_now_ns() - t0) / 1000;
	uint64_t bytes0 = out->bytes;
	struct savevm_entry *e;
	int r = sync_all(g, true);

	FOR_EACH_ENTRY(g, e, true) {
		uint64_t t1 = kmig_now_ns();

		if (!r)
			r = e->ops->save_complete(e->opaque, out);
		e->save_time_us = (kmig_now_ns() - t1) / 1000;
	}
	ph.iterable_saved_us = (kmig_now_ns() - t0) / 1000;
	if (!r)
		r = save_devices(g, out);
	/* RAM channels drained (sent while the devices were saved) */
	if (!r && out->mf)
		r = multifd_send_finish(out->mf);
	ph.devices_saved_us = (kmig_now_ns() - t0) / 1000;
	if (!r) {
		struct ram_stats rs;
		uint8_t buf[STREAM_EOF_SIZE];

		ram_stats(g, &rs);
		struct stream_eof eof = { .nr_sections = (uint32_t)savevm_registry_count(g->env.reg),
					  .nr_pages = rs.headers };
		stream_encode_eof(buf, &eof);
		r = savevm_out_send(out, buf, sizeof(buf));
	}
	ph.eof_us = (kmig_now_ns() - t0) / 1000;
	pthread_mutex_lock(&g->lock);
	g->downtime_bytes = out->bytes - bytes0;
	pthread_mutex_unlock(&g->lock);
	if (r) {
		fetch_refusal(g, out->ch);
		return r;
	}
	r = wait_ack(g, out->ch);
	/* the downtime, measured by the caller, ends here too */
	ph.end_us = (kmig_now_ns() - t0) / 1000;
	pthread_mutex_lock(&g->lock);
	g->phases = ph;
	pthread_mutex_unlock(&g->lock);
	return r;
}

/* io_timeout: the connection's, for the message of a timeout */
static void source_fail(struct migration *g, int r, int io_timeout)
{
	bool cancelled = g->cancel;

	if (!cancelled && r == -ETIMEDOUT)
		set_error(g, "migration failed: the destination took nothing and said nothing for %d ms "
			  "(x-kmig-io-timeout)", io_timeout);
	else if (!cancelled)
		set_error(g, "migration failed: %s", strerror(-r));
	pthread_mutex_lock(&g->lock);
	bool paused = g->paused, resume = g->resume_on_fail;

	g->paused = false;
	pthread_mutex_unlock(&g->lock);
	if (paused)
		g->env.host->resume(g->env.opaque, resume);
	set_status(g, cancelled ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
}

/* Record what the RAM path used, then close the RAM channels. */
static void end_channels(struct migration *g, struct savevm_out *out, unsigned int nr)
{
	uint64_t sends, copied;

	if (out->mf)
		multifd_send_zc_stats(out->mf, &sends, &copied);
	else
		ring_zc_stats(out->ch, &sends, &copied);
	pthread_mutex_lock(&g->lock);
	g->channels = nr;
	g->send_mode = out->mf ? multifd_send_mode(out->mf) : out->path.chosen;
	g->zc_sends = sends;
	g->zc_copied = copied;
	g->multifd_bytes = multifd_send_bytes(out->mf);
	g->mf_send = NULL;
	pthread_mutex_unlock(&g->lock);
	multifd_send_free(out->mf);
	out->mf = NULL;
}

/* The limits the dirty-limit capability set end with the migration. */
static void release_dirty_limit(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool engaged = g->dirty_limit_engaged;

	g->dirty_limit_engaged = false;
	g->dirty_high_passes = 0;
	pthread_mutex_unlock(&g->lock);
	if (engaged)
		g->env.host->throttle(g->env.opaque, 0);
}

static void *source_main(void *arg)
{
	struct migration *g = arg;
	struct ring_uri uri;
	struct ring_channel *ch = NULL;
	char err[256] = "";
	struct savevm_rate rate;
	struct savevm_out out = { .cancel = &g->cancel, .progress = &g->sent, .rate = &rate };
	bool setup_done = false;
	int r = ring_uri_parse(g->uri, &uri, err, sizeof(err));

	savevm_rate_init(&rate);
	pthread_mutex_lock(&g->lock);
	unsigned int nr_channels = g->params.multifd ? (unsigned int)g->params.multifd_channels : 0;
	enum savevm_send_mode mode = g->params.zero_copy_send ? SAVEVM_SEND_ZC : g->params.send_mode;
	int io_timeout = (int)g->params.io_timeout_ms;
	pthread_mutex_unlock(&g->lock);

	if (!r)
		r = ring_uri_resolve(&uri, false, err, sizeof(err));
	if (!r)
		r = ring_connect(&uri, CONNECT_TIMEOUT_MS, &ch);
	if (r) {
		set_error(g, "cannot connect to the destination: %s", err[0] ? err : strerror(-r));
		goto fail;
	}
	/* the RAM channels inherit it (multifd.c) */
	ring_channel_set_timeout(ch, io_timeout);
	pthread_mutex_lock(&g->lock);
	g->ch = ch;
	pthread_mutex_unlock(&g->lock);
	if (g->cancel) {
		r = -ECANCELED;
		goto fail;
	}
	out.ch = ch;
	savevm_sendpath_init(&out.path, ch, mode);
	pick_up_params(g, &out);
	struct savevm_entry *e;

	FOR_EACH_ENTRY(g, e, true) {
		if ((r = e->ops->save_setup(e->opaque, &out, err, sizeof(err)))) {
			set_error(g, "%s", err);
			goto fail;
		}
	}
	setup_done = true;
	if ((r = send_header(g, &out)))
		goto fail;
	if (nr_channels && (r = open_channels(g, &out, &uri, nr_channels, mode)))
		goto fail;
	pthread_mutex_lock(&g->lock);
	g->setup_ns = kmig_now_ns() - g->start_ns;
	pthread_mutex_unlock(&g->lock);
	set_status(g, MIGRATION_STATUS_ACTIVE);
	if ((r = precopy(g, &out)) || (r = stop_and_copy(g, &out))) {
		if (r != -ECANCELED && !g->cancel)
			fetch_refusal(g, ch);
		goto fail;
	}
	/* no guest page may stay in flight once migration says completed */
	savevm_sendpath_flush(&out.path);
	/* channel threads joined before the handlers free what they walk */
	end_channels(g, &out, nr_channels);
	FOR_EACH_ENTRY(g, e, true)
		e->ops->save_cleanup(e->opaque);
	release_dirty_limit(g);
	pthread_mutex_lock(&g->lock);
	g->end_ns = g->downtime_start_ns + g->phases.end_us * 1000;
	g->downtime_ms = g->phases.end_us / 1000;
	g->precopy_bytes = out.bytes - g->downtime_bytes;
	g->paused = false;
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	g->env.host->migrated(g->env.opaque);
	ring_channel_close(ch);
	savevm_rate_destroy(&rate);
	set_status(g, MIGRATION_STATUS_COMPLETED);
	return NULL;
fail:
	/* A failed channel may leave the others mid-walk over the RAM
	 * handler's batches: join them all first (found by the connection
	 * cuts of tests/unit/savevm/test_ram_path.c under ASan). */
	end_channels(g, &out, nr_channels);
	if (setup_done)
		FOR_EACH_ENTRY(g, e, true)
			e->ops->save_cleanup(e->opaque);
	release_dirty_limit(g);
	pthread_mutex_lock(&g->lock);
	g->end_ns = kmig_now_ns();
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	source_fail(g, r, ring_channel_timeout(ch));
	if (ch)
		ring_channel_close(ch);
	savevm_rate_destroy(&rate);
	return NULL;
}

/* The thread of the last migration, and a listener it left. */
static void join(struct migration *g)
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

static int source_start(struct migration *g, const char *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	if (r)
		return r;
	join(g);
	if (g->env.ram)
		ram_handler_reset_stats(g->env.ram);
	pthread_mutex_lock(&g->lock);
	memset(&g->status, 0, sizeof(*g) - offsetof(struct migration, status));
	snprintf(g->uri, sizeof(g->uri), "%s", uri);
	g->start_ns = kmig_now_ns();
	g->status = MIGRATION_STATUS_NONE;
	for (size_t i = 0; i < savevm_registry_count(g->env.reg); i++) {
		savevm_registry_at(g->env.reg, i)->save_time_us = 0;
		savevm_registry_at(g->env.reg, i)->load_time_us = 0;
	}
	pthread_mutex_unlock(&g->lock);
	set_status(g, MIGRATION_STATUS_SETUP);
	r = -pthread_create(&g->thread, NULL, source_main, g);
	if (r) {
		snprintf(err, errlen, "cannot start the migration thread");
		set_status(g, MIGRATION_STATUS_FAILED);
		return r;
	}
	g->thread_running = true;
	return 0;
}

/* ----------------------------------------------------------- destination */

/* The loader's window on this machine: RAM channels are accepted on the
 * migration's listener and published for cancel and query-migrate. */
static int open_recv_channels(void *opaque, const struct stream_channels *sc, struct savevm_in *main,
			      multifd_ram_fn fn, void *fn_opaque, struct multifd_recv **mr, char *err,
			      size_t errlen)
{
	struct migration *g = opaque;

	return multifd_recv_start(g->listener, sc, main->ch, fn, fn_opaque, mr, err, errlen);
}

static void publish_recv_channels(void *opaque, struct multifd_recv *mr, unsigned int nr)
{
	struct migration *g = opaque;

	pthread_mutex_lock(&g->lock);
	g->mf_recv = mr;
	if (mr)
		g->channels = nr;
	pthread_mutex_unlock(&g->lock);
}

static int load_incoming(struct migration *g, struct ring_channel *ch, char *err, size_t errlen)
{
	const struct savevm_load_env env = {
		.reg = g->env.reg,
		.ram_size = g->env.ram_size,
		.nr_vcpus = g->env.nr_vcpus,
		.open_channels = open_recv_channels,
		.publish_channels = publish_recv_channels,
		.opaque = g,
	};
	struct savevm_in in;

	savevm_in_init(&in, ch);
	int r = savevm_load_stream(&env, &in, err, errlen);

	savevm_in_fini(&in);
	return r;
}

static void send_ack(struct ring_channel *ch, int status, const char *msg)
{
	uint8_t buf[STREAM_ACK_MAX_SIZE];
	size_t n = stream_encode_ack(buf, sizeof(buf), status, msg);

	ring_send(ch, buf, n);
}

/* An incoming migration is over, loaded or failed: like QEMU, stop
 * listening, so that a second source is refused at once instead of
 * waiting on a connection nobody will read. */
static void close_listener(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	struct ring_listener *l = g->listener;

	/* machine_destroy aborts the listener under this lock: once NULL
	 * here, nobody else touches it */
	g->listener = NULL;
	pthread_mutex_unlock(&g->lock);
	ring_listener_close(l);
}

static void on_stray_dropped(void *opaque, const char *peer, const char *why)
{
	(void)opaque;
	fprintf(stderr, "kmig: dropped an incoming connection from %s: %s; still waiting for the source\n", peer,
		why);
}

_Static_assert(STREAM_HEADER_SIZE + 4 <= RING_OPENING_MAX, "the source's opening fits ring_accept_opening");

/* The source: the first connection that opens with a whole stream header
 * and the type of its first record.  One that sends nothing, something
 * else, or stops inside the header is not a migration: it is dropped, and
 * neither ends the incoming migration nor holds the real source back (the
 * stream loader checks everything after the magic). */
static int accept_source(struct migration *g, struct ring_channel **ch)
{
	pthread_mutex_lock(&g->lock);
	const struct ring_opening opening = {
		.bytes = STREAM_MAGIC, .match = sizeof(STREAM_MAGIC) - 1, .len = STREAM_HEADER_SIZE + 4,
		.what = "a kmig stream header", .idle_ms = (int)g->params.io_timeout_ms,
		.dropped = on_stray_dropped,
	};
	pthread_mutex_unlock(&g->lock);
	return ring_accept_opening(g->listener, &opening, ch, -1);
}

static void *incoming_main(void *arg)
{
	struct migration *g = arg;
	struct ring_channel *ch = NULL;
	char err[512] = "";
	int r = accept_source(g, &ch);

	if (r) {
		set_error(g, "no incoming connection: %s", strerror(-r));
		if (r != -ECANCELED)
			fprintf(stderr, "kmig: no incoming connection: %s\n", strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&g->lock);
	g->ch = ch;
	g->start_ns = kmig_now_ns();
	/* a source gone silent must not keep this side waiting for ever; the
	 * RAM channels inherit it (multifd.c) */
	ring_channel_set_timeout(ch, (int)g->params.io_timeout_ms);
	pthread_mutex_unlock(&g->lock);
	set_status(g, MIGRATION_STATUS_ACTIVE);
	r = load_incoming(g, ch, err, sizeof(err));
	uint64_t eof_ns = kmig_now_ns();

	if (!r)
		r = savevm_load_apply_devices(g->env.reg, err, sizeof(err));
	if (r == -ETIMEDOUT)	/* what the reader saw says less than this */
		snprintf(err, sizeof(err), "the source sent nothing for %d ms (x-kmig-io-timeout)",
			 ring_channel_timeout(ch));
	if (r) {
		if (!err[0])
			snprintf(err, sizeof(err), "%s", strerror(-r));
		set_error(g, "incoming migration failed: %s", err);
		/* like QEMU's "load of migration failed": the process exits */
		fprintf(stderr, "kmig: incoming migration failed: %s\n", err);
		send_ack(ch, r, err);
		goto fail;
	}
	uint64_t loaded_ns = kmig_now_ns();

	close_listener(g);
	send_ack(ch, 0, "loaded");
	/* Only a complete, valid, loaded stream starts the guest. */
	r = g->env.host->start(g->env.opaque);
	if (r) {
		set_error(g, "cannot start the vCPUs: %s", strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&g->lock);
	g->end_ns = kmig_now_ns();
	g->phases = (struct migration_phases){ .valid = true, .loaded_us = (loaded_ns - eof_ns) / 1000,
						   .started_us = (g->end_ns - eof_ns) / 1000 };
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	ring_channel_close(ch);
	savevm_load_reset(g->env.reg);
	set_status(g, MIGRATION_STATUS_COMPLETED);
	return NULL;
fail:
	close_listener(g);
	pthread_mutex_lock(&g->lock);
	g->end_ns = kmig_now_ns();
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	if (ch)
		ring_channel_close(ch);
	savevm_load_reset(g->env.reg);
	set_status(g, g->cancel ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
	g->env.host->incoming_failed(g->env.opaque);
	return NULL;
}

int migration_listen(struct migration *g, const char *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	if (!r)
		r = ring_uri_resolve(&u, true, err, errlen);
	if (r)
		return r;
	pthread_mutex_lock(&g->lock);
	bool busy = g->incoming;

	pthread_mutex_unlock(&g->lock);
	if (busy) {
		snprintf(err, errlen, "The incoming migration has already been started");
		return -EBUSY;
	}
	r = ring_listen(&u, &g->listener);
	if (r) {
		snprintf(err, errlen, "cannot listen on %s: %s", uri, strerror(-r));
		return r;
	}
	ring_listener_uri(g->listener, &u);
	g->listen_addr = u;
	ring_uri_format(&u, g->uri, sizeof(g->uri));
	/* like QEMU: no status until a source connects */
	pthread_mutex_lock(&g->lock);
	g->incoming = true;
	pthread_mutex_unlock(&g->lock);
	r = -pthread_create(&g->thread, NULL, incoming_main, g);
	if (r) {
		snprintf(err, errlen, "cannot start the incoming migration thread");
		return r;
	}
	g->thread_running = true;
	return 0;
}

/* ------------------------------------------------------------ the control */

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
	ram_stats(g, &rs);
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
	info->kmig.zc_notifications = g->zc_sends;
	info->kmig.zc_copied = g->zc_copied;
	info->kmig.has_switchover_expected_downtime = g->switchover_decided;
	info->kmig.switchover_expected_downtime = g->switchover_expected_ms;
	pthread_mutex_unlock(&g->lock);
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
	return source_start(g, uri, err, errlen);
}

void migration_cancel(struct migration *g)
{
	pthread_mutex_lock(&g->lock);
	bool active = status_in_progress(g->status) && !g->incoming;

	if (active) {
		g->cancel = true;
		abort_channels_locked(g);
	}
	pthread_mutex_unlock(&g->lock);
	if (active)
		set_status(g, MIGRATION_STATUS_CANCELLING);
}

void migration_abort(struct migration *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->cancel = true;
	abort_channels_locked(g);
	if (g->listener)
		ring_listener_abort(g->listener);
	pthread_mutex_unlock(&g->lock);
	join(g);
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
