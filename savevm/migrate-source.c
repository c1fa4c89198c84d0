/* The migration engine, source side: bulk pass, dirty passes until the
 * system-wide pending bytes fit in bandwidth × downtime-limit, then
 * stop-and-copy (vCPUs stopped by the host, final harvest, the rest of
 * RAM, every device timed, EOF) and wait for the destination's ACK.  Any
 * failure or cancel before the ACK has the host resume the guest. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/util.h"
#include "kvm/kvm.h"
#include "savevm/migration-int.h"
#include "savevm/switchover.h"

#define CONNECT_TIMEOUT_MS 5000

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
		r = multifd_send_start(out, uri, nr, sc.cookie, mode, g->tls.on ? &g->tls.peer : NULL, &mf, err,
				       sizeof(err));
	pthread_mutex_lock(&g->lock);
	g->mf_send = mf;
	pthread_mutex_unlock(&g->lock);
	out->mf = mf;
	if (r)
		mig_set_error(g, "%s", err);
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

	mig_ram_stats(g, &rs);
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

		mig_ram_stats(g, &rs);
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
			mig_set_error(g, "cannot save device state: %s", e->name);
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

/* A destination with tls-creds drops a plaintext source at its first
 * bytes, without a word: say what that may be.  By the time the source
 * hears of it, it has sent at most what the two sockets' buffers hold
 * (a few MiB); a hang-up later than this is something else. */
#define PLAINTEXT_HINT_MAX_SENT (32ull << 20)

static const char *plaintext_hint(struct migration *g, int r, uint64_t sent)
{
	bool hang_up = r == -EPIPE || r == -ECONNRESET;

	return hang_up && !g->tls_mode && sent <= PLAINTEXT_HINT_MAX_SENT
		       ? " (the destination closed the connection: if it has tls-creds, set tls-creds here too)"
		       : "";
}

static int wait_ack(struct migration *g, struct ring_channel *ch)
{
	struct savevm_in in;
	char msg[STREAM_MAX_ACK_MSG + 1], err[256];
	int32_t status;
	int timeout = ring_channel_timeout(ch);
	int r = ring_poll_readable(ch, timeout ? timeout : -1);

	if (r == 0) {
		mig_set_error(g, "no acknowledgement from the destination within %d ms (x-kmig-io-timeout)", timeout);
		return -ETIMEDOUT;
	}
	savevm_in_init(&in, ch);
	r = stream_read_ack(&in.src, &status, msg, err, sizeof(err));
	if (r) {
		mig_set_error(g, "destination did not acknowledge: %s%s", err,
			      plaintext_hint(g, r, ring_channel_bytes_sent(ch)));
		return r;
	}
	if (status) {
		mig_set_error(g, "destination refused the stream: %s", msg);
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

		mig_ram_stats(g, &rs);
		struct stream_eof eof = { .nr_sections = (uint32_t)savevm_registry_count(g->env.reg),
					  .nr_pages = rs.headers };
		stream_encode_eof(buf, &eof);
		r = savevm_out_send(out, buf, sizeof(buf));
		pthread_mutex_lock(&g->lock);
		g->eof_sent = !r;
		pthread_mutex_unlock(&g->lock);
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

/* io_timeout: the connection's, for the message of a timeout; sent: the
 * bytes the main connection carried */
static void source_fail(struct migration *g, int r, int io_timeout, uint64_t sent)
{
	bool cancelled = g->cancel;

	if (!cancelled && r == -ETIMEDOUT)
		mig_set_error(g, "the destination took nothing and said nothing for %d ms "
			  "(x-kmig-io-timeout)", io_timeout);
	else if (!cancelled)
		mig_set_error(g, "sending the stream failed: %s%s", strerror(-r), plaintext_hint(g, r, sent));
	pthread_mutex_lock(&g->lock);
	bool paused = g->paused, resume = g->resume_on_fail;

	g->paused = false;
	pthread_mutex_unlock(&g->lock);
	if (paused)
		g->env.host->resume(g->env.opaque, resume);
	mig_set_status(g, cancelled ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
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

/* The TLS this migration's connections use (tls-creds), and QEMU's
 * refusal of zero-copy-send with it.  g->lock held. */
static int source_tls_locked(struct migration *g, const struct ring_uri *uri, char *err, size_t errlen)
{
	char host[256] = "";

	if (uri->kind == RING_URI_TCP)
		ring_uri_host(uri, host, sizeof(host));
	int r = mig_tls_resolve_locked(g, false, host, &g->tls, err, errlen);

	if (!r && g->tls.on && g->params.zero_copy_send) {
		/* the pages are encrypted in user space: nothing to send
		 * from guest memory (docs/transport.md) */
		kmig_set_err(err, errlen, "Zero copy only available for non-compressed non-TLS multifd migration");
		r = -EINVAL;
	}
	return r;
}

/* The handshake on the main connection; *ch becomes the TLS channel.  The
 * plain channel stays published meanwhile, so a cancel aborts it. */
static int secure_main(struct migration *g, struct ring_channel **ch, int io_timeout)
{
	struct ring_channel *w;
	char err[400];
	int r = ring_tls_wrap(*ch, &g->tls.peer, io_timeout > 0 ? io_timeout : CONNECT_TIMEOUT_MS, &w, err,
			      sizeof(err));

	if (r) {
		mig_set_error(g, "cannot secure the connection to the destination: %s", err);
		return r;
	}
	pthread_mutex_lock(&g->lock);
	g->ch = w;
	g->tls_mode = ring_tls_mode(w);
	pthread_mutex_unlock(&g->lock);
	*ch = w;
	return 0;
}

/* The point of no return: the destination acknowledged the whole stream
 * loaded.  From here the guest is the destination's: this side never
 * resumes it on its own (postmigrate), and tells the destination to run
 * it.  If that go is lost, the destination keeps the guest stopped until
 * an operator runs cont there (docs/stream-format.md). */
static int send_commit(struct ring_channel *ch, enum stream_commit decision)
{
	uint8_t buf[STREAM_COMMIT_SIZE];

	stream_encode_commit(buf, decision);
	return ring_send(ch, buf, sizeof(buf));
}

static void commit(struct migration *g, struct ring_channel *ch)
{
	pthread_mutex_lock(&g->lock);
	g->paused = false;
	pthread_mutex_unlock(&g->lock);
	g->env.host->migrated(g->env.opaque);
	int r = send_commit(ch, STREAM_COMMIT_GO);

	if (r)
		fprintf(stderr, "kmig: the go to the destination may not have arrived (%s): if its query-migrate "
			"says failed with no decision, run cont there\n", strerror(-r));
}

/* A failure after the end of the stream (the failure path never runs
 * past the point of no return): this side runs the guest again, and says
 * so, so that the destination drops what it loaded instead of keeping it
 * for an operator.  Best effort: the connection may be gone, and then the
 * destination waits. */
static void abort_commit(struct migration *g, struct ring_channel *ch)
{
	pthread_mutex_lock(&g->lock);
	bool tell = g->eof_sent;

	pthread_mutex_unlock(&g->lock);
	if (!tell || !ch)
		return;
	ring_channel_set_timeout(ch, 200);
	send_commit(ch, STREAM_COMMIT_ABORT);
}

static void *source_main(void *arg)
{
	struct migration *g = arg;
	struct ring_uri uri;
	struct ring_channel *ch = NULL;
	char err[512] = "";
	struct savevm_rate rate;
	struct savevm_out out = { .cancel = &g->cancel, .progress = &g->sent, .rate = &rate };
	bool setup_done = false;
	int r = ring_uri_parse(g->uri, &uri, err, sizeof(err));

	savevm_rate_init(&rate);
	pthread_mutex_lock(&g->lock);
	unsigned int nr_channels = g->params.multifd ? (unsigned int)g->params.multifd_channels : 0;
	enum savevm_send_mode mode = g->params.zero_copy_send ? SAVEVM_SEND_ZC : g->params.send_mode;
	int io_timeout = (int)g->params.io_timeout_ms;

	if (!r)
		r = source_tls_locked(g, &uri, err, sizeof(err));
	pthread_mutex_unlock(&g->lock);
	if (r) {
		mig_set_error(g, "%s", err);
		goto fail;
	}
	r = ring_uri_resolve(&uri, false, err, sizeof(err));
	if (!r)
		r = ring_connect(&uri, CONNECT_TIMEOUT_MS, &ch);
	if (r) {
		mig_set_error(g, "cannot connect to the destination: %s", err[0] ? err : strerror(-r));
		goto fail;
	}
	/* the RAM channels inherit it (multifd.c) */
	ring_channel_set_timeout(ch, io_timeout);
	pthread_mutex_lock(&g->lock);
	g->ch = ch;
	pthread_mutex_unlock(&g->lock);
	if (!g->cancel && g->tls.on && (r = secure_main(g, &ch, io_timeout)))
		goto fail;
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
			mig_set_error(g, "%s", err);
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
	mig_set_status(g, MIGRATION_STATUS_ACTIVE);
	if ((r = precopy(g, &out)) || (r = stop_and_copy(g, &out))) {
		if (r != -ECANCELED && !g->cancel)
			fetch_refusal(g, ch);
		goto fail;
	}
	commit(g, ch);
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
	g->ch = NULL;
	pthread_mutex_unlock(&g->lock);
	ring_channel_close(ch);
	savevm_rate_destroy(&rate);
	mig_tls_release(&g->tls);
	mig_set_status(g, MIGRATION_STATUS_COMPLETED);
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
	abort_commit(g, ch);
	uint64_t sent = ch ? ring_channel_bytes_sent(ch) : 0;

	mig_end_connection(g, ch);
	savevm_rate_destroy(&rate);
	mig_tls_release(&g->tls);
	source_fail(g, r, io_timeout, sent);
	return NULL;
}

int mig_source_start(struct migration *g, const char *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	int r = ring_uri_parse(uri, &u, err, errlen);

	if (r)
		return r;
	mig_join(g);
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
	mig_set_status(g, MIGRATION_STATUS_SETUP);
	r = -pthread_create(&g->thread, NULL, source_main, g);
	if (r) {
		snprintf(err, errlen, "cannot start the migration thread");
		mig_set_status(g, MIGRATION_STATUS_FAILED);
		return r;
	}
	g->thread_running = true;
	return 0;
}
