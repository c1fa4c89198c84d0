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

#include "savevm/load.h"
#include "savevm/machine-int.h"
#include "savevm/switchover.h"

#define CONNECT_TIMEOUT_MS 5000

/* The first error of a migration is the one reported. */
static void __attribute__((format(printf, 2, 3))) set_error(struct machine *m, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&m->lock);
	if (!m->mig.error[0]) {
		va_start(ap, fmt);
		vsnprintf(m->mig.error, sizeof(m->mig.error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&m->lock);
}

void migration_abort_channels_locked(struct machine *m)
{
	if (m->mig.ch)
		ring_channel_abort(m->mig.ch);
	multifd_send_abort(m->mig.mf_send);
	multifd_recv_abort(m->mig.mf_recv);
}

/* ---------------------------------------------------------------- source */

static int send_sections(struct machine *m, struct savevm_out *out)
{
	uint8_t buf[STREAM_SECTION_MAX_SIZE];

	for (size_t i = 0; i < savevm_registry_count(m->reg); i++) {
		struct savevm_entry *e = savevm_registry_at(m->reg, i);
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

static int send_header(struct machine *m, struct savevm_out *out)
{
	uint8_t buf[STREAM_HEADER_SIZE];
	struct stream_header h = {
		.version = STREAM_VERSION, .page_size = KVM_PAGE_SIZE,
		.ram_size = kvm_vm_ram_size(m->vm), .nr_vcpus = kvm_vm_nr_vcpus(m->vm),
	};
	stream_encode_header(buf, &h);
	int r = savevm_out_send(out, buf, sizeof(buf));

	return r ? r : send_sections(m, out);
}

/* Runs fn on every iterable entry; stops at the first error. */
#define FOR_EACH_ENTRY(m, e, iter)                                              \
	for (size_t _i = 0; _i < savevm_registry_count((m)->reg); _i++)        \
		if (((e) = savevm_registry_at((m)->reg, _i))->iterable == (iter))

/* The system-wide figure: every iterable entry, RAM and devices. */
static uint64_t total_pending(struct machine *m, bool exact)
{
	struct savevm_entry *e;
	uint64_t sum = 0;

	FOR_EACH_ENTRY(m, e, true)
		sum += e->ops->pending(e->opaque, exact);
	return sum;
}

static int sync_all(struct machine *m, bool final)
{
	struct savevm_entry *e;

	FOR_EACH_ENTRY(m, e, true) {
		int r = e->ops->sync(e->opaque, final);
		if (r)
			return r;
	}
	return 0;
}

/* Between chunks: pick up a max-bandwidth changed by
 * migrate-set-parameters (it applies at once, as in QEMU).  Progress needs
 * no publishing: query-migrate reads the live counters. */
static void pick_up_params(struct machine *m, struct savevm_out *out)
{
	pthread_mutex_lock(&m->lock);
	atomic_store(&out->rate->bandwidth, m->params.max_bandwidth);
	pthread_mutex_unlock(&m->lock);
}

/* multifd: the CHANNELS record (after the sections), then the channels. */
static int open_channels(struct machine *m, struct savevm_out *out, const struct ring_uri *uri,
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
	pthread_mutex_lock(&m->lock);
	m->mig.mf_send = mf;
	pthread_mutex_unlock(&m->lock);
	out->mf = mf;
	if (r)
		set_error(m, "%s", err);
	else if (m->mig.cancel)
		r = -ECANCELED;
	return r;
}

/* One pass over every iterable entry's dirty state. */
static int run_pass(struct machine *m, struct savevm_out *out)
{
	struct savevm_entry *e;

	FOR_EACH_ENTRY(m, e, true) {
		int r;

		do {
			r = e->ops->save_iterate(e->opaque, out);
			pick_up_params(m, out);
			if (m->mig.cancel)
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

	stream_encode_pass_end(buf, (uint32_t)m->mig.passes);
	return savevm_out_send(out, buf, sizeof(buf));
}

/* The stall signal: remaining (system-wide, exact after the sync) is
 * compared with its lowest value so far; if it has not fallen a sixteenth
 * below it for stall_iterations passes and stall_ms, the migration is
 * stalled until it does.  Called with m->lock held; returns +1/-1 when the signal turned
 * on/off, 0 otherwise. */
static int update_stall(struct machine *m, uint64_t pending, uint64_t now)
{
	struct migration *g = &m->mig;
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
	g->stall.stalled = g->stall.iterations >= m->params.stall_iterations &&
			   g->stall.since_ms >= m->params.stall_ms;
	return g->stall.stalled == was ? 0 : g->stall.stalled ? 1 : -1;
}

/* The dirty-limit capability's trigger, QEMU's: in two passes in a row
 * (the bulk first pass aside) the guest dirtied more than half of what
 * the pass sent.  Then every vCPU gets vcpu-dirty-limit, once.  Called
 * with m->lock held. */
static bool dirty_limit_trigger(struct machine *m, uint64_t dirtied, uint64_t sent)
{
	struct migration *g = &m->mig;

	if (!m->params.dirty_limit || g->dirty_limit_engaged || g->dirty_sync_count < 2)
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
static int end_of_pass(struct machine *m, struct savevm_out *out, uint64_t pass_start,
		       uint64_t pass_bytes, uint64_t pages_before, uint64_t *prev_pending)
{
	uint64_t pending = total_pending(m, true);
	uint64_t now = kmig_now_ns();
	uint64_t dt = now - pass_start ? now - pass_start : 1;
	uint64_t bw = pass_bytes * 1000000000ull / dt;
	struct ram_stats rs;

	ram_handler_stats(m->ram, &rs);
	pthread_mutex_lock(&m->lock);
	if (bw)
		m->mig.bandwidth = bw;
	m->mig.dirty_sync_count++;
	m->mig.mbps = (double)m->mig.bandwidth * 8 / 1e6;
	m->mig.pages_per_second = (rs.normal + rs.duplicate - pages_before) * 1000000000ull / dt;
	m->mig.dirty_pages_rate = pending / KVM_PAGE_SIZE * 1000000000ull / dt;
	/* as QEMU: a bandwidth the operator vouches for replaces the
	 * measured one in the switchover decision */
	uint64_t sw_bw = m->params.avail_switchover_bandwidth ? m->params.avail_switchover_bandwidth
							       : m->mig.bandwidth;
	m->mig.expected_downtime_ms = sw_bw ? pending * 1000 / sw_bw : 0;
	uint64_t limit = m->params.downtime_limit_ms;
	enum switchover_verdict v = switchover_decide(pending, *prev_pending, sw_bw, limit,
						      m->mig.shrink_passes);
	bool converge = v == SWITCHOVER_NOW;

	m->mig.shrink_passes += v == SWITCHOVER_ONE_MORE;
	*prev_pending = pending;
	int stall = update_stall(m, pending, now);
	uint64_t engage = dirty_limit_trigger(m, pending, pass_bytes) ? m->params.vcpu_dirty_limit : 0;

	if (converge) {
		m->mig.switchover_decided = true;
		m->mig.switchover_expected_ms = m->mig.expected_downtime_ms;
	}
	pthread_mutex_unlock(&m->lock);
	if (stall)
		machine_emit(m, MACHINE_EVENT_STALL, stall > 0);
	if (engage)
		dirtylimit_migration_engage(m, engage);
	return converge;
}

static int precopy(struct machine *m, struct savevm_out *out)
{
	uint64_t prev_pending = total_pending(m, false);

	for (;;) {
		struct ram_stats rs;
		uint64_t start = kmig_now_ns(), bytes0 = out->bytes;

		ram_handler_stats(m->ram, &rs);
		pthread_mutex_lock(&m->lock);
		m->mig.passes++;
		pthread_mutex_unlock(&m->lock);
		machine_emit(m, MACHINE_EVENT_MIGRATION_PASS, (int64_t)m->mig.passes);
		int r = run_pass(m, out);

		if (!r)
			r = end_of_pass(m, out, start, out->bytes - bytes0, rs.normal + rs.duplicate,
					&prev_pending);
		if (r)
			return r < 0 ? r : 0;
		if (m->mig.cancel)
			return -ECANCELED;
	}
}

static int save_devices(struct machine *m, struct savevm_out *out)
{
	uint8_t buf[STREAM_PAYLOAD_HDR_SIZE + KVM_STATE_MAX_SIZE];
	struct savevm_entry *e;

	FOR_EACH_ENTRY(m, e, false) {
		uint64_t t0 = kmig_now_ns();
		int n = e->ops->save_state(e->opaque, buf + STREAM_PAYLOAD_HDR_SIZE, KVM_STATE_MAX_SIZE);

		if (n < 0) {
			set_error(m, "cannot save device state: %s", e->name);
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

static int wait_ack(struct machine *m, struct ring_channel *ch)
{
	struct savevm_in in;
	char msg[STREAM_MAX_ACK_MSG + 1], err[256];
	int32_t status;
	int timeout = ring_channel_timeout(ch);
	int r = ring_poll_readable(ch, timeout ? timeout : -1);

	if (r == 0) {
		set_error(m, "no acknowledgement from the destination within %d ms (x-kmig-io-timeout)", timeout);
		return -ETIMEDOUT;
	}
	savevm_in_init(&in, ch);
	r = stream_read_ack(&in.src, &status, msg, err, sizeof(err));
	if (r) {
		set_error(m, "destination did not acknowledge: %s", err);
		return r;
	}
	if (status) {
		set_error(m, "destination refused the stream: %s", msg);
		return status < 0 ? status : -EPROTO;
	}
	return 0;
}

/* After a send failure the destination may have said why before closing. */
static void fetch_refusal(struct machine *m, struct ring_channel *ch)
{
	if (ring_poll_readable(ch, 200) == 1)
		wait_ack(m, ch);
}

static int stop_and_copy(struct machine *m, struct savevm_out *out)
{
	uint64_t t0 = kmig_now_ns();

	/* One step: a 'stop' racing with the switchover either happened
	 * before (the guest stays paused on failure) or finds finish-migrate
	 * and does nothing. */
	pthread_mutex_lock(&m->lock);
	m->mig.downtime_start_ns = t0;
	m->mig.resume_on_fail = m->runstate == RUNSTATE_RUNNING;
	machine_set_runstate_locked(m, RUNSTATE_FINISH_MIGRATE);
	pthread_mutex_unlock(&m->lock);
	/* idempotent; also waits out a concurrent stop still pausing */
	kvm_vm_pause(m->vm);
	if (m->mig.resume_on_fail)
		machine_emit(m, MACHINE_EVENT_STOP, 0);
	struct migration_phases ph = { .valid = true };

	ph.vcpus_stopped_us = (kmig_now_ns() - t0) / 1000;
	uint64_t bytes0 = out->bytes;
	struct savevm_entry *e;
	int r = sync_all(m, true);

	FOR_EACH_ENTRY(m, e, true) {
		uint64_t t1 = kmig_now_ns();

		if (!r)
			r = e->ops->save_complete(e->opaque, out);
		e->save_time_us = (kmig_now_ns() - t1) / 1000;
	}
	ph.iterable_saved_us = (kmig_now_ns() - t0) / 1000;
	if (!r)
		r = save_devices(m, out);
	/* RAM channels drained (sent while the devices were saved) */
	if (!r && out->mf)
		r = multifd_send_finish(out->mf);
	ph.devices_saved_us = (kmig_now_ns() - t0) / 1000;
	if (!r) {
		struct ram_stats rs;
		uint8_t buf[STREAM_EOF_SIZE];

		ram_handler_stats(m->ram, &rs);
		struct stream_eof eof = { .nr_sections = (uint32_t)savevm_registry_count(m->reg),
					  .nr_pages = rs.headers };
		stream_encode_eof(buf, &eof);
		r = savevm_out_send(out, buf, sizeof(buf));
	}
	ph.eof_us = (kmig_now_ns() - t0) / 1000;
	pthread_mutex_lock(&m->lock);
	m->mig.downtime_bytes = out->bytes - bytes0;
	pthread_mutex_unlock(&m->lock);
	if (r) {
		fetch_refusal(m, out->ch);
		return r;
	}
	r = wait_ack(m, out->ch);
	/* the downtime, measured by the caller, ends here too */
	ph.end_us = (kmig_now_ns() - t0) / 1000;
	pthread_mutex_lock(&m->lock);
	m->mig.phases = ph;
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* io_timeout: the connection's, for the message of a timeout */
static void source_fail(struct machine *m, int r, int io_timeout)
{
	bool cancelled = m->mig.cancel;

	if (!cancelled && r == -ETIMEDOUT)
		set_error(m, "migration failed: the destination took nothing and said nothing for %d ms "
			  "(x-kmig-io-timeout)", io_timeout);
	else if (!cancelled)
		set_error(m, "migration failed: %s", strerror(-r));
	pthread_mutex_lock(&m->lock);
	bool resume = m->runstate == RUNSTATE_FINISH_MIGRATE && m->mig.resume_on_fail;

	if (m->runstate == RUNSTATE_FINISH_MIGRATE)
		machine_set_runstate_locked(m, resume ? RUNSTATE_RUNNING : RUNSTATE_PAUSED);
	pthread_mutex_unlock(&m->lock);
	if (resume) {
		kvm_vm_resume(m->vm);
		machine_emit(m, MACHINE_EVENT_RESUME, 0);
	}
	migration_set_status(m, cancelled ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
}

/* Record what the RAM path used, then close the RAM channels. */
static void end_channels(struct machine *m, struct savevm_out *out, unsigned int nr)
{
	uint64_t sends, copied;

	if (out->mf)
		multifd_send_zc_stats(out->mf, &sends, &copied);
	else
		ring_zc_stats(out->ch, &sends, &copied);
	pthread_mutex_lock(&m->lock);
	m->mig.channels = nr;
	m->mig.send_mode = out->mf ? multifd_send_mode(out->mf) : out->path.chosen;
	m->mig.zc_sends = sends;
	m->mig.zc_copied = copied;
	m->mig.multifd_bytes = multifd_send_bytes(out->mf);
	m->mig.mf_send = NULL;
	pthread_mutex_unlock(&m->lock);
	multifd_send_free(out->mf);
	out->mf = NULL;
}

/* The limits the dirty-limit capability set end with the migration. */
static void release_dirty_limit(struct machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool engaged = m->mig.dirty_limit_engaged;

	m->mig.dirty_limit_engaged = false;
	m->mig.dirty_high_passes = 0;
	pthread_mutex_unlock(&m->lock);
	if (engaged)
		dirtylimit_migration_release(m);
}

static void *source_main(void *arg)
{
	struct machine *m = arg;
	struct ring_uri uri;
	struct ring_channel *ch = NULL;
	char err[256] = "";
	struct savevm_rate rate;
	struct savevm_out out = { .cancel = &m->mig.cancel, .progress = &m->mig.sent, .rate = &rate };
	bool setup_done = false;
	int r = ring_uri_parse(m->mig.uri, &uri, err, sizeof(err));

	savevm_rate_init(&rate);
	pthread_mutex_lock(&m->lock);
	unsigned int nr_channels = m->params.multifd ? (unsigned int)m->params.multifd_channels : 0;
	enum savevm_send_mode mode = m->params.zero_copy_send ? SAVEVM_SEND_ZC : m->params.send_mode;
	int io_timeout = (int)m->params.io_timeout_ms;
	pthread_mutex_unlock(&m->lock);

	if (!r)
		r = ring_uri_resolve(&uri, false, err, sizeof(err));
	if (!r)
		r = ring_connect(&uri, CONNECT_TIMEOUT_MS, &ch);
	if (r) {
		set_error(m, "cannot connect to the destination: %s", err[0] ? err : strerror(-r));
		goto fail;
	}
	/* the RAM channels inherit it (multifd.c) */
	ring_channel_set_timeout(ch, io_timeout);
	pthread_mutex_lock(&m->lock);
	m->mig.ch = ch;
	pthread_mutex_unlock(&m->lock);
	if (m->mig.cancel) {
		r = -ECANCELED;
		goto fail;
	}
	out.ch = ch;
	savevm_sendpath_init(&out.path, ch, mode);
	pick_up_params(m, &out);
	struct savevm_entry *e;

	FOR_EACH_ENTRY(m, e, true) {
		if ((r = e->ops->save_setup(e->opaque, &out, err, sizeof(err)))) {
			set_error(m, "%s", err);
			goto fail;
		}
	}
	setup_done = true;
	if ((r = send_header(m, &out)))
		goto fail;
	if (nr_channels && (r = open_channels(m, &out, &uri, nr_channels, mode)))
		goto fail;
	pthread_mutex_lock(&m->lock);
	m->mig.setup_ns = kmig_now_ns() - m->mig.start_ns;
	pthread_mutex_unlock(&m->lock);
	migration_set_status(m, MIGRATION_STATUS_ACTIVE);
	if ((r = precopy(m, &out)) || (r = stop_and_copy(m, &out))) {
		if (r != -ECANCELED && !m->mig.cancel)
			fetch_refusal(m, ch);
		goto fail;
	}
	/* no guest page may stay in flight once migration says completed */
	savevm_sendpath_flush(&out.path);
	/* channel threads joined before the handlers free what they walk */
	end_channels(m, &out, nr_channels);
	FOR_EACH_ENTRY(m, e, true)
		e->ops->save_cleanup(e->opaque);
	release_dirty_limit(m);
	pthread_mutex_lock(&m->lock);
	m->mig.end_ns = m->mig.downtime_start_ns + m->mig.phases.end_us * 1000;
	m->mig.downtime_ms = m->mig.phases.end_us / 1000;
	m->mig.precopy_bytes = out.bytes - m->mig.downtime_bytes;
	machine_set_runstate_locked(m, RUNSTATE_POSTMIGRATE);
	m->mig.ch = NULL;
	pthread_mutex_unlock(&m->lock);
	ring_channel_close(ch);
	savevm_rate_destroy(&rate);
	migration_set_status(m, MIGRATION_STATUS_COMPLETED);
	return NULL;
fail:
	/* A failed channel may leave the others mid-walk over the RAM
	 * handler's batches: join them all first (found by the connection
	 * cuts of tests/unit/savevm/test_ram_path.c under ASan). */
	end_channels(m, &out, nr_channels);
	if (setup_done)
		FOR_EACH_ENTRY(m, e, true)
			e->ops->save_cleanup(e->opaque);
	release_dirty_limit(m);
	pthread_mutex_lock(&m->lock);
	m->mig.end_ns = kmig_now_ns();
	m->mig.ch = NULL;
	pthread_mutex_unlock(&m->lock);
	source_fail(m, r, ring_channel_timeout(ch));
	if (ch)
		ring_channel_close(ch);
	savevm_rate_destroy(&rate);
	return NULL;
}

int migration_source_start(struct machine *m, const char *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	if (r)
		return r;
	migration_join(m);
	ram_handler_reset_stats(m->ram);
	memset(&m->mig, 0, sizeof(m->mig));
	snprintf(m->mig.uri, sizeof(m->mig.uri), "%s", uri);
	m->mig.start_ns = kmig_now_ns();
	m->mig.status = MIGRATION_STATUS_NONE;
	for (size_t i = 0; i < savevm_registry_count(m->reg); i++) {
		savevm_registry_at(m->reg, i)->save_time_us = 0;
		savevm_registry_at(m->reg, i)->load_time_us = 0;
	}
	migration_set_status(m, MIGRATION_STATUS_SETUP);
	r = -pthread_create(&m->mig.thread, NULL, source_main, m);
	if (r) {
		snprintf(err, errlen, "cannot start the migration thread");
		migration_set_status(m, MIGRATION_STATUS_FAILED);
		return r;
	}
	m->mig.thread_running = true;
	return 0;
}

/* ----------------------------------------------------------- destination */

/* The loader's window on this machine: RAM channels are accepted on the
 * migration's listener and published for cancel and query-migrate. */
static int open_recv_channels(void *opaque, const struct stream_channels *sc, struct savevm_in *main,
			      multifd_ram_fn fn, void *fn_opaque, struct multifd_recv **mr, char *err,
			      size_t errlen)
{
	struct machine *m = opaque;

	return multifd_recv_start(m->mig.listener, sc, main->ch, fn, fn_opaque, mr, err, errlen);
}

static void publish_recv_channels(void *opaque, struct multifd_recv *mr, unsigned int nr)
{
	struct machine *m = opaque;

	pthread_mutex_lock(&m->lock);
	m->mig.mf_recv = mr;
	if (mr)
		m->mig.channels = nr;
	pthread_mutex_unlock(&m->lock);
}

static int load_incoming(struct machine *m, struct ring_channel *ch, char *err, size_t errlen)
{
	const struct savevm_load_env env = {
		.reg = m->reg,
		.ram_size = kvm_vm_ram_size(m->vm),
		.nr_vcpus = kvm_vm_nr_vcpus(m->vm),
		.open_channels = open_recv_channels,
		.publish_channels = publish_recv_channels,
		.opaque = m,
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
static void close_listener(struct machine *m)
{
	pthread_mutex_lock(&m->lock);
	struct ring_listener *l = m->mig.listener;

	/* machine_destroy aborts the listener under this lock: once NULL
	 * here, nobody else touches it */
	m->mig.listener = NULL;
	pthread_mutex_unlock(&m->lock);
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
static int accept_source(struct machine *m, struct ring_channel **ch)
{
	pthread_mutex_lock(&m->lock);
	const struct ring_opening opening = {
		.bytes = STREAM_MAGIC, .match = sizeof(STREAM_MAGIC) - 1, .len = STREAM_HEADER_SIZE + 4,
		.what = "a kmig stream header", .idle_ms = (int)m->params.io_timeout_ms,
		.dropped = on_stray_dropped,
	};
	pthread_mutex_unlock(&m->lock);
	return ring_accept_opening(m->mig.listener, &opening, ch, -1);
}

static void *incoming_main(void *arg)
{
	struct machine *m = arg;
	struct ring_channel *ch = NULL;
	char err[512] = "";
	int r = accept_source(m, &ch);

	if (r) {
		set_error(m, "no incoming connection: %s", strerror(-r));
		if (r != -ECANCELED)
			fprintf(stderr, "kmig: no incoming connection: %s\n", strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&m->lock);
	m->mig.ch = ch;
	m->mig.start_ns = kmig_now_ns();
	/* a source gone silent must not keep this side waiting for ever; the
	 * RAM channels inherit it (multifd.c) */
	ring_channel_set_timeout(ch, (int)m->params.io_timeout_ms);
	pthread_mutex_unlock(&m->lock);
	migration_set_status(m, MIGRATION_STATUS_ACTIVE);
	r = load_incoming(m, ch, err, sizeof(err));
	uint64_t eof_ns = kmig_now_ns();

	if (!r)
		r = savevm_load_apply_devices(m->reg, err, sizeof(err));
	if (r == -ETIMEDOUT)	/* what the reader saw says less than this */
		snprintf(err, sizeof(err), "the source sent nothing for %d ms (x-kmig-io-timeout)",
			 ring_channel_timeout(ch));
	if (r) {
		if (!err[0])
			snprintf(err, sizeof(err), "%s", strerror(-r));
		set_error(m, "incoming migration failed: %s", err);
		/* like QEMU's "load of migration failed": the process exits */
		fprintf(stderr, "kmig: incoming migration failed: %s\n", err);
		send_ack(ch, r, err);
		goto fail;
	}
	uint64_t loaded_ns = kmig_now_ns();

	close_listener(m);
	send_ack(ch, 0, "loaded");
	/* Only a complete, valid, loaded stream starts the guest. */
	r = kvm_vm_start(m->vm);
	if (r) {
		set_error(m, "cannot start the vCPUs: %s", strerror(-r));
		goto fail;
	}
	pthread_mutex_lock(&m->lock);
	m->mig.end_ns = kmig_now_ns();
	m->mig.phases = (struct migration_phases){ .valid = true, .loaded_us = (loaded_ns - eof_ns) / 1000,
						   .started_us = (m->mig.end_ns - eof_ns) / 1000 };
	m->mig.ch = NULL;
	machine_set_runstate_locked(m, RUNSTATE_RUNNING);
	pthread_mutex_unlock(&m->lock);
	ring_channel_close(ch);
	savevm_load_reset(m->reg);
	migration_set_status(m, MIGRATION_STATUS_COMPLETED);
	machine_emit(m, MACHINE_EVENT_RESUME, 0);
	return NULL;
fail:
	close_listener(m);
	pthread_mutex_lock(&m->lock);
	m->mig.end_ns = kmig_now_ns();
	m->mig.ch = NULL;
	pthread_mutex_unlock(&m->lock);
	if (ch)
		ring_channel_close(ch);
	savevm_load_reset(m->reg);
	migration_set_status(m, m->mig.cancel ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
	/* Like QEMU: a destination whose incoming migration failed exits, its
	 * guest never started. */
	pthread_mutex_lock(&m->lock);
	m->quit = true;
	m->exit_code = 1;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

int migration_incoming_listen(struct machine *m, const char *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	if (!r)
		r = ring_uri_resolve(&u, true, err, errlen);
	if (r)
		return r;
	r = ring_listen(&u, &m->mig.listener);
	if (r) {
		snprintf(err, errlen, "cannot listen on %s: %s", uri, strerror(-r));
		return r;
	}
	ring_listener_uri(m->mig.listener, &u);
	m->mig.listen_addr = u;
	ring_uri_format(&u, m->mig.uri, sizeof(m->mig.uri));
	/* like QEMU: no status until a source connects */
	m->mig.incoming = true;
	r = -pthread_create(&m->mig.thread, NULL, incoming_main, m);
	if (r) {
		snprintf(err, errlen, "cannot start the incoming migration thread");
		return r;
	}
	m->mig.thread_running = true;
	return 0;
}

void migration_join(struct machine *m)
{
	if (m->mig.thread_running) {
		pthread_join(m->mig.thread, NULL);
		m->mig.thread_running = false;
	}
	if (m->mig.listener) {
		ring_listener_close(m->mig.listener);
		m->mig.listener = NULL;
	}
}
