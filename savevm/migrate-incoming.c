/* The migration engine, destination side: takes the first connection
 * that opens with a stream header, checks every record before acting on
 * it, keeps device states until EOF, loads them only once the stream is
 * complete and valid, acknowledges, then has the host start the guest. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "savevm/load.h"
#include "savevm/migration-int.h"

/* The loader's window on this migration: RAM channels are accepted on the
 * migration's listener and published for cancel and query-migrate. */
static int open_recv_channels(void *opaque, const struct stream_channels *sc, struct savevm_in *main,
			      multifd_ram_fn fn, void *fn_opaque, struct multifd_recv **mr, char *err,
			      size_t errlen)
{
	struct migration *g = opaque;

	return multifd_recv_start(g->listener, sc, main->ch, g->tls.on ? &g->tls.peer : NULL, fn, fn_opaque, mr, err,
				  errlen);
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

/* After a positive ACK: the source's decision, within the connection's
 * timeout (x-kmig-io-timeout; 0 = for ever). */
static int await_commit(struct ring_channel *ch, enum stream_commit *decision, char *err, size_t errlen)
{
	struct savevm_in in;
	int timeout = ring_channel_timeout(ch);
	int r = ring_poll_readable(ch, timeout > 0 ? timeout : -1);

	if (r == 0) {
		snprintf(err, errlen, "nothing within %d ms (x-kmig-io-timeout)", timeout);
		return -ETIMEDOUT;
	}
	if (r < 0) {
		snprintf(err, errlen, "%s", strerror(-r));
		return r;
	}
	savevm_in_init(&in, ch);
	r = stream_read_commit(&in.src, decision, err, errlen);
	savevm_in_fini(&in);
	return r;
}

/* An incoming migration that ends without running the guest: its
 * connection, what the loader held, the TLS it took, then its status. */
static void end_incoming(struct migration *g, struct ring_channel *ch, enum migration_status s)
{
	mig_end_connection(g, ch);
	savevm_load_reset(g->env.reg);
	mig_tls_release(&g->tls);
	mig_set_status(g, s);
}

/* No decision came: the source may have given up its guest or kept it,
 * and only it knows.  The loaded guest stays here, stopped, for the
 * operator: never started on a guess, never thrown away on one
 * (docs/stream-format.md, "The end of a migration"). */
static void keep_unresolved(struct migration *g, struct ring_channel *ch, const char *why)
{
	mig_set_error(g, "no decision from the source after the stream was loaded (%s): the guest is kept here, "
		      "stopped. If the source's query-migrate says completed, run cont here; if it says failed, the "
		      "source runs the guest: quit here", why);
	fprintf(stderr, "kmig: incoming migration unresolved: no decision from the source after the stream was "
		"loaded (%s); the guest is kept, stopped: cont here if the source says completed, quit if it says "
		"failed\n", why);
	pthread_mutex_lock(&g->lock);
	g->unresolved = true;
	pthread_mutex_unlock(&g->lock);
	end_incoming(g, ch, MIGRATION_STATUS_FAILED);
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

/* With tls-creds: a connection whose handshake fails (no certificate, an
 * untrusted one, an identity tls-authz refuses) is dropped like a stray,
 * and the wait goes on; *ch becomes the TLS channel. */
static int secure_source(struct migration *g, struct ring_channel **ch, int timeout_ms)
{
	struct ring_channel *w;
	char err[400];

	pthread_mutex_lock(&g->lock);
	g->ch = *ch;	/* a cancel aborts the handshake */
	pthread_mutex_unlock(&g->lock);
	int r = ring_tls_wrap(*ch, &g->tls.peer, timeout_ms, &w, err, sizeof(err));

	pthread_mutex_lock(&g->lock);
	g->ch = r ? NULL : w;
	if (!r)
		g->tls_mode = ring_tls_mode(w);
	pthread_mutex_unlock(&g->lock);
	if (r) {
		if (r != -ECANCELED)
			fprintf(stderr, "kmig: refused an incoming connection: %s; still waiting for the source\n", err);
		ring_channel_close(*ch);
		*ch = NULL;
		return r;
	}
	*ch = w;
	return 0;
}

/* The source: the first connection that opens with a whole stream header
 * and the type of its first record (with tls-creds: a TLS handshake, then
 * a source that passes it).  One that sends nothing, something else, or
 * stops inside the header is not a migration: it is dropped, and neither
 * ends the incoming migration nor holds the real source back (the stream
 * loader checks everything after the magic).  The TLS parameters are read
 * at each connection, so migrate-set-parameters after --incoming counts. */
static int accept_source(struct migration *g, struct ring_channel **ch)
{
	for (;;) {
		char err[512];

		pthread_mutex_lock(&g->lock);
		mig_tls_release(&g->tls);
		int r = mig_tls_resolve_locked(g, true, "", &g->tls, err, sizeof(err));
		bool tls = g->tls.on;
		const struct ring_opening opening = {
			.bytes = tls ? (const void *)ring_tls_opening : STREAM_MAGIC,
			.match = tls ? sizeof(ring_tls_opening) : sizeof(STREAM_MAGIC) - 1,
			.len = tls ? RING_TLS_OPENING_LEN : STREAM_HEADER_SIZE + 4,
			.what = tls ? "a TLS handshake (tls-creds is set here)" : "a kmig stream header",
			.idle_ms = (int)g->params.io_timeout_ms, .dropped = on_stray_dropped, .keep_others = tls,
			/* the source's RAM channels may connect before its main
			 * connection's opening has all arrived: kept for
			 * multifd_recv_start (in TLS the handshake's round trips
			 * order them) */
			.also = tls ? NULL : STREAM_CHAN_MAGIC, .also_match = tls ? 0 : sizeof(STREAM_CHAN_MAGIC) - 1,
		};
		int timeout = (int)g->params.io_timeout_ms;

		pthread_mutex_unlock(&g->lock);
		if (r) {
			mig_set_error(g, "%s", err);
			return r;
		}
		r = ring_accept_opening(g->listener, &opening, ch, -1);
		if (r || !tls)
			return r;
		r = secure_source(g, ch, timeout > 0 ? timeout : 5000);
		if (r != -EACCES && r != -EPIPE && r != -ECONNRESET && r != -ETIMEDOUT && r != -EPROTO)
			return r;
	}
}

static void *incoming_main(void *arg)
{
	struct migration *g = arg;
	struct ring_channel *ch = NULL;
	char err[512] = "";
	int r = accept_source(g, &ch);

	if (r) {
		mig_set_error(g, "no incoming connection: %s", strerror(-r));
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
	mig_set_status(g, MIGRATION_STATUS_ACTIVE);
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
		mig_set_error(g, "incoming migration failed: %s", err);
		/* like QEMU's "load of migration failed": the process exits */
		fprintf(stderr, "kmig: incoming migration failed: %s\n", err);
		send_ack(ch, r, err);
		goto fail;
	}
	uint64_t loaded_ns = kmig_now_ns();

	close_listener(g);
	send_ack(ch, 0, "loaded");
	/* Only a complete, valid, loaded stream, and then the source's go,
	 * starts the guest (the point of no return is the source's). */
	enum stream_commit decision;

	r = await_commit(ch, &decision, err, sizeof(err));
	if (r && g->cancel)	/* this kmig is shutting down */
		goto fail;
	if (r) {
		keep_unresolved(g, ch, err);
		return NULL;
	}
	if (decision != STREAM_COMMIT_GO) {
		mig_set_error(g, "incoming migration failed: the source kept its guest after the stream was loaded "
			      "(it sent abort)");
		goto fail;
	}
	r = g->env.host->start(g->env.opaque);
	if (r) {
		mig_set_error(g, "cannot start the vCPUs: %s", strerror(-r));
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
	mig_tls_release(&g->tls);
	mig_set_status(g, MIGRATION_STATUS_COMPLETED);
	return NULL;
fail:
	close_listener(g);
	end_incoming(g, ch, g->cancel ? MIGRATION_STATUS_CANCELLED : MIGRATION_STATUS_FAILED);
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
