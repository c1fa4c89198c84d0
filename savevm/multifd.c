/* RAM over several connections: on the source each channel's thread walks
 * its share of the dirty pages and sends them (the zero checks, headers
 * and copies run in parallel, one thread a channel); on the destination a
 * receiver thread per channel.  See multifd.h for the ordering rule
 * (epochs) that keeps one consistent memory image. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "savevm/multifd.h"

#define CONNECT_TIMEOUT_MS 5000
#define HELLO_TIMEOUT_MS 5000
/* How often a waiting migration thread looks at the main connection. */
#define WATCH_MAIN_MS 50

/* ------------------------------------------------------------ source */

/* What the channels are asked to do, one job at a time for all of them. */
enum job_kind { JOB_NONE, JOB_WALK, JOB_EOF };

struct multifd_chan {
	struct multifd_send *mf;
	unsigned int index;
	struct ring_channel *ch;
	struct savevm_sendpath path;
	pthread_t thread;
	bool started;
	uint64_t job_done;	/* the last job generation finished, under mf->lock */
	uint32_t epoch;
	uint64_t pages;
};

struct multifd_send {
	struct savevm_out *out;
	unsigned int nr;
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a new job, a job done, a failure */
	int error;		/* first channel error, sticky */
	/* the current job, under lock */
	uint64_t job;		/* generation: 0 = none yet */
	enum job_kind kind;
	multifd_walk_fn walk;
	void *opaque;
	struct multifd_chan *chans;
};

static void send_fail(struct multifd_send *mf, int r)
{
	pthread_mutex_lock(&mf->lock);
	if (!mf->error)
		mf->error = r;
	pthread_cond_broadcast(&mf->cond);
	pthread_mutex_unlock(&mf->lock);
	/* the other channels' peers must notice too */
	for (unsigned int i = 0; i < mf->nr; i++)
		ring_channel_abort(mf->chans[i].ch);
}

unsigned int multifd_send_nr(const struct multifd_send *mf)
{
	return mf->nr;
}

unsigned int multifd_chan_index(const struct multifd_chan *c)
{
	return c->index;
}

int multifd_chan_send(struct multifd_chan *c, const struct iovec *iov, int iovcnt, size_t prefix,
		      uint32_t npages)
{
	int r = savevm_out_send_pages(c->mf->out, &c->path, iov, iovcnt, prefix);

	if (!r)
		c->pages += npages;
	return r;
}

/* A marker on this channel: the end of an epoch, or of the channel. */
static int send_marker(struct multifd_chan *c, enum job_kind kind)
{
	struct savevm_out *out = c->mf->out;
	uint8_t buf[STREAM_EOF_SIZE];
	size_t n = kind == JOB_WALK
			   ? stream_encode_pass_end(buf, ++c->epoch)
			   : stream_encode_eof(buf, &(struct stream_eof){ .nr_sections = 0, .nr_pages = c->pages });
	int r = ring_send(c->ch, buf, n);

	if (!r)
		savevm_out_account(out, n);
	/* after EOF: the guest pages must not be in flight once the
	 * migration is declared done */
	if (!r && kind == JOB_EOF)
		r = savevm_sendpath_flush(&c->path);
	return r;
}

static int run_job(struct multifd_chan *c, enum job_kind kind, multifd_walk_fn walk, void *opaque)
{
	int r = kind == JOB_WALK ? walk(opaque, c) : 0;

	return r ? r : send_marker(c, kind);
}

static void *send_thread(void *arg)
{
	struct multifd_chan *c = arg;
	struct multifd_send *mf = c->mf;

	for (;;) {
		pthread_mutex_lock(&mf->lock);
		while (c->job_done == mf->job && !mf->error)
			pthread_cond_wait(&mf->cond, &mf->lock);
		if (mf->error) {
			pthread_mutex_unlock(&mf->lock);
			return NULL;
		}
		uint64_t job = mf->job;
		enum job_kind kind = mf->kind;
		multifd_walk_fn walk = mf->walk;
		void *opaque = mf->opaque;

		pthread_mutex_unlock(&mf->lock);

		int r = run_job(c, kind, walk, opaque);

		if (r) {
			send_fail(mf, r);
			return NULL;
		}
		pthread_mutex_lock(&mf->lock);
		c->job_done = job;
		pthread_cond_broadcast(&mf->cond);
		pthread_mutex_unlock(&mf->lock);
		if (kind == JOB_EOF)
			return NULL;
	}
}

static int send_hello(struct multifd_chan *c, uint64_t cookie)
{
	uint8_t buf[STREAM_CHAN_HELLO_SIZE];
	struct stream_chan_hello h = { .index = c->index, .nr = c->mf->nr, .cookie = cookie };

	stream_encode_chan_hello(buf, &h);
	int r = ring_send(c->ch, buf, sizeof(buf));

	if (!r)
		savevm_out_account(c->mf->out, sizeof(buf));
	return r;
}

/* A RAM channel gets the main connection's TLS; on failure *ch is still
 * the plain channel, the caller's to close. */
static int secure_chan(struct ring_channel **ch, const struct ring_tls_peer *tls, unsigned int i, char *err,
		       size_t errlen)
{
	struct ring_channel *w;
	char why[400];
	int r = tls ? ring_tls_wrap(*ch, tls, CONNECT_TIMEOUT_MS, &w, why, sizeof(why)) : 0;

	if (r)
		snprintf(err, errlen, "migration channel %u: %s", i, why);
	else if (tls)
		*ch = w;
	return r;
}

int multifd_send_start(struct savevm_out *out, const struct ring_uri *uri, unsigned int nr,
		       uint64_t cookie, enum savevm_send_mode mode, const struct ring_tls_peer *tls,
		       struct multifd_send **mfp, char *err, size_t errlen)
{
	struct multifd_send *mf = calloc(1, sizeof(*mf));
	int r = -ENOMEM;

	if (!mf || !(mf->chans = calloc(nr, sizeof(*mf->chans)))) {
		free(mf);
		snprintf(err, errlen, "out of memory for %u channels", nr);
		return -ENOMEM;
	}
	mf->out = out;
	mf->nr = nr;
	pthread_mutex_init(&mf->lock, NULL);
	savevm_cond_init_monotonic(&mf->cond);
	*mfp = mf;
	for (unsigned int i = 0; i < nr; i++) {
		struct multifd_chan *c = &mf->chans[i];

		c->mf = mf;
		c->index = i;
		/* a destination that died after the main connection refuses
		 * these at once: not a reason to retry for CONNECT_TIMEOUT_MS */
		r = ring_connect_beside(uri, CONNECT_TIMEOUT_MS, out->ch, &c->ch);
		if (r) {
			snprintf(err, errlen, "cannot open migration channel %u: %s", i,
				 r == -ECONNRESET ? "the destination closed the main connection" : strerror(-r));
			return r;
		}
		/* a silent destination times out on every channel alike */
		ring_channel_set_timeout(c->ch, ring_channel_timeout(out->ch));
		if ((r = secure_chan(&c->ch, tls, i, err, errlen)))
			return r;
		r = send_hello(c, cookie);
		if (r) {
			snprintf(err, errlen, "cannot open migration channel %u: %s", i, strerror(-r));
			return r;
		}
		savevm_sendpath_init(&c->path, c->ch, mode);
	}
	for (unsigned int i = 0; i < nr; i++) {
		r = -pthread_create(&mf->chans[i].thread, NULL, send_thread, &mf->chans[i]);
		if (r) {
			snprintf(err, errlen, "cannot start the thread of channel %u", i);
			send_fail(mf, r);
			return r;
		}
		mf->chans[i].started = true;
	}
	return 0;
}

static bool job_finished_locked(const struct multifd_send *mf)
{
	for (unsigned int i = 0; i < mf->nr; i++)
		if (mf->chans[i].job_done != mf->job)
			return false;
	return true;
}

/* Wait (mf->lock held) until the current job is done on every channel, a
 * channel failed, or ms passed (ms < 0: no limit); looks at the main
 * connection every WATCH_MAIN_MS meanwhile: a destination that refused
 * said so there, and may have stopped reading a channel whose sender
 * would then block for ever.  Returns 1 done, 0 not yet, -errno. */
static bool ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static int wait_job_locked(struct multifd_send *mf, int ms)
{
	struct timespec end;

	if (ms >= 0)
		savevm_deadline_ms(&end, ms);
	while (!mf->error && !job_finished_locked(mf)) {
		struct timespec ts;
		bool last = false;

		savevm_deadline_ms(&ts, WATCH_MAIN_MS);
		if (ms >= 0 && ts_after(&ts, &end)) {
			ts = end;
			last = true;
		}
		if (pthread_cond_timedwait(&mf->cond, &mf->lock, &ts) != ETIMEDOUT)
			continue;
		/* readable, or broken: either way the stream is over; say
		 * why when the kernel knows (a dead link is not a peer that
		 * hung up) */
		if (mf->out->ch && ring_poll_readable(mf->out->ch, 0) != 0) {
			int why = ring_channel_socket_error(mf->out->ch);

			pthread_mutex_unlock(&mf->lock);
			send_fail(mf, why ? why : -EPIPE);
			pthread_mutex_lock(&mf->lock);
		}
		if (last)
			break;
	}
	return mf->error ? mf->error : job_finished_locked(mf);
}

/* Hand every channel the next job, once they all finished the last. */
static int post_job(struct multifd_send *mf, enum job_kind kind, multifd_walk_fn walk, void *opaque)
{
	pthread_mutex_lock(&mf->lock);
	int r = wait_job_locked(mf, -1);

	if (r == 1) {
		mf->job++;
		mf->kind = kind;
		mf->walk = walk;
		mf->opaque = opaque;
		pthread_cond_broadcast(&mf->cond);
		r = 0;
	}
	pthread_mutex_unlock(&mf->lock);
	return r;
}

int multifd_send_walk(struct multifd_send *mf, multifd_walk_fn walk, void *opaque)
{
	if (mf->out->cancel && *mf->out->cancel)
		return -ECANCELED;
	return post_job(mf, JOB_WALK, walk, opaque);
}

int multifd_send_wait(struct multifd_send *mf, int ms)
{
	pthread_mutex_lock(&mf->lock);
	int r = wait_job_locked(mf, ms);

	pthread_mutex_unlock(&mf->lock);
	return r;
}

int multifd_send_drain(struct multifd_send *mf)
{
	int r = multifd_send_wait(mf, -1);

	return r < 0 ? r : 0;
}

int multifd_send_finish(struct multifd_send *mf)
{
	int r = post_job(mf, JOB_EOF, NULL, NULL);

	/* sent to the end (watching the main connection), or failed: either
	 * way no thread is left blocked on a socket for the joins */
	if (!r)
		r = multifd_send_drain(mf);
	for (unsigned int i = 0; i < mf->nr; i++) {
		if (mf->chans[i].started) {
			pthread_join(mf->chans[i].thread, NULL);
			mf->chans[i].started = false;
		}
	}
	pthread_mutex_lock(&mf->lock);
	if (!r)
		r = mf->error;
	pthread_mutex_unlock(&mf->lock);
	return r;
}

void multifd_send_abort(struct multifd_send *mf)
{
	if (mf)
		send_fail(mf, -ECANCELED);
}

void multifd_send_free(struct multifd_send *mf)
{
	if (!mf)
		return;
	send_fail(mf, -ECANCELED);	/* wakes any thread still running */
	/* every thread joined before any channel closes: a thread that fails
	 * late aborts all channels (send_fail) */
	for (unsigned int i = 0; i < mf->nr; i++)
		if (mf->chans[i].started)
			pthread_join(mf->chans[i].thread, NULL);
	for (unsigned int i = 0; i < mf->nr; i++)
		ring_channel_close(mf->chans[i].ch);
	pthread_mutex_destroy(&mf->lock);
	pthread_cond_destroy(&mf->cond);
	free(mf->chans);
	free(mf);
}

uint64_t multifd_send_bytes(struct multifd_send *mf)
{
	uint64_t sum = 0;

	/* the sockets count every byte, hellos and markers too (as QEMU's
	 * multifd-bytes does) */
	for (unsigned int i = 0; mf && i < mf->nr; i++)
		sum += ring_channel_bytes_sent(mf->chans[i].ch);
	return sum;
}

enum savevm_send_mode multifd_send_mode(struct multifd_send *mf)
{
	return mf && mf->nr ? mf->chans[0].path.chosen : SAVEVM_SEND_AUTO;
}

void multifd_send_zc_stats(struct multifd_send *mf, uint64_t *sends, uint64_t *copied)
{
	*sends = *copied = 0;
	for (unsigned int i = 0; mf && i < mf->nr; i++) {
		uint64_t s, c;

		ring_zc_stats(mf->chans[i].ch, &s, &c);
		*sends += s;
		*copied += c;
	}
}

/* ------------------------------------------------------- destination */

struct recv_chan {
	struct multifd_recv *mr;
	unsigned int index;
	struct ring_channel *ch;
	struct savevm_in in;
	pthread_t thread;
	bool started;
	uint32_t epoch;		/* epochs finished, under mr->lock */
	uint64_t pages;
	int result;
	unsigned int fail_order;	/* 1 = failed first, 0 = did not fail */
	char err[384];
};

struct multifd_recv {
	unsigned int nr;
	struct ring_channel *main;	/* the main connection, not owned */
	/* its x-kmig-io-timeout, lifted while the RAM channels run (they
	 * carry the passes: main may be idle for a whole pass) */
	int main_timeout;
	bool main_timeout_lifted;
	multifd_ram_fn fn;
	void *opaque;
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* an epoch finished, or a channel failed */
	bool failed;
	unsigned int nr_failed;
	struct recv_chan *chans;
};

static void recv_fail(struct recv_chan *c, int r)
{
	struct multifd_recv *mr = c->mr;

	c->result = r;
	pthread_mutex_lock(&mr->lock);
	c->fail_order = ++mr->nr_failed;
	mr->failed = true;
	pthread_cond_broadcast(&mr->cond);
	pthread_mutex_unlock(&mr->lock);
	/* the source sees this channel close, and stops */
	ring_channel_abort(c->ch);
	/* the migration thread stops waiting for a main stream that may
	 * never come (the source can be stuck on this channel); it then
	 * reports this failure and sends the refusal */
	ring_channel_stop_reading(mr->main);
}

/* Epoch e is done on this channel: wait until it is done on all. */
static int epoch_barrier(struct recv_chan *c, uint32_t e)
{
	struct multifd_recv *mr = c->mr;
	bool all;

	pthread_mutex_lock(&mr->lock);
	c->epoch = e;
	pthread_cond_broadcast(&mr->cond);
	for (;;) {
		all = true;
		for (unsigned int i = 0; i < mr->nr; i++)
			all = all && mr->chans[i].epoch >= e;
		if (all || mr->failed)
			break;
		pthread_cond_wait(&mr->cond, &mr->lock);
	}
	pthread_mutex_unlock(&mr->lock);
	if (!all) {
		snprintf(c->err, sizeof(c->err), "another channel failed");
		return -ECANCELED;
	}
	return 0;
}

static int recv_record(struct recv_chan *c, enum stream_rec_type t, bool *eof)
{
	struct stream_eof e;
	uint64_t pages;
	uint32_t pass;
	int r;

	switch (t) {
	case STREAM_REC_RAM:
		r = c->mr->fn(c->mr->opaque, &c->in, &pages, c->err, sizeof(c->err));
		c->pages += pages;
		return r;
	case STREAM_REC_PASS_END:
		r = stream_read_pass_end(&c->in.src, &pass, c->err, sizeof(c->err));
		if (!r && pass != c->epoch + 1) {
			snprintf(c->err, sizeof(c->err), "epoch %u after epoch %u", pass, c->epoch);
			r = -EPROTO;
		}
		return r ? r : epoch_barrier(c, pass);
	case STREAM_REC_EOF:
		r = stream_read_eof(&c->in.src, &e, c->err, sizeof(c->err));
		if (!r && (e.nr_sections || e.nr_pages != c->pages)) {
			snprintf(c->err, sizeof(c->err),
				 "end of channel does not match: %u sections and %llu pages announced, 0 and %llu "
				 "received", e.nr_sections, (unsigned long long)e.nr_pages,
				 (unsigned long long)c->pages);
			r = -EPROTO;
		}
		*eof = true;
		return r;
	default:
		snprintf(c->err, sizeof(c->err), "%s record on a RAM channel", stream_rec_type_name(t));
		return -EPROTO;
	}
}

static int recv_loop(struct recv_chan *c)
{
	bool eof = false;
	int r = 0;

	while (!r && !eof) {
		enum stream_rec_type t;

		r = stream_read_type(&c->in.src, &t, c->err, sizeof(c->err));
		if (!r)
			r = recv_record(c, t, &eof);
	}
	return r;
}

static void *recv_thread(void *arg)
{
	struct recv_chan *c = arg;
	int r = recv_loop(c);

	if (r)
		recv_fail(c, r);
	return NULL;
}

static int check_hello(const struct stream_chan_hello *h, const struct stream_channels *sc, char *err,
		       size_t errlen)
{
	if (h->nr == sc->nr && h->cookie == sc->cookie)
		return 0;
	snprintf(err, errlen, "channel %u of %u does not belong to this migration (%u channels)", h->index, h->nr,
		 sc->nr);
	return -EPROTO;
}

/* Accept one connection and read its hello. */
static int accept_chan(struct ring_listener *l, const struct stream_channels *sc, const struct ring_tls_peer *tls,
		       struct ring_channel **chp, struct stream_chan_hello *h, char *err, size_t errlen)
{
	struct savevm_in in;
	int r = ring_accept(l, chp, CONNECT_TIMEOUT_MS);

	if (r) {
		snprintf(err, errlen, "channel did not connect: %s", strerror(-r));
		return r;
	}
	if ((r = secure_chan(chp, tls, 0, err, errlen)))
		return r;
	r = ring_poll_readable(*chp, HELLO_TIMEOUT_MS);
	if (r <= 0) {
		snprintf(err, errlen, "channel said no hello: %s", r ? strerror(-r) : "timed out");
		return r ? r : -ETIMEDOUT;
	}
	savevm_in_init(&in, *chp);
	r = stream_read_chan_hello(&in.src, h, err, errlen);
	return r ? r : check_hello(h, sc, err, errlen);
}

int multifd_recv_start(struct ring_listener *l, const struct stream_channels *sc, struct ring_channel *main,
		       const struct ring_tls_peer *tls, multifd_ram_fn fn, void *opaque, struct multifd_recv **mrp,
		       char *err, size_t errlen)
{
	struct multifd_recv *mr = calloc(1, sizeof(*mr));

	if (!mr || !(mr->chans = calloc(sc->nr, sizeof(*mr->chans)))) {
		free(mr);
		snprintf(err, errlen, "out of memory for %u channels", sc->nr);
		return -ENOMEM;
	}
	mr->nr = sc->nr;
	mr->main = main;
	mr->fn = fn;
	mr->opaque = opaque;
	pthread_mutex_init(&mr->lock, NULL);
	pthread_cond_init(&mr->cond, NULL);
	*mrp = mr;
	for (unsigned int i = 0; i < sc->nr; i++) {
		struct stream_chan_hello h;
		struct ring_channel *ch = NULL;
		int r = accept_chan(l, sc, tls, &ch, &h, err, errlen);

		if (!r && mr->chans[h.index].ch) {
			snprintf(err, errlen, "channel %u connected twice", h.index);
			r = -EPROTO;
		}
		if (r) {
			ring_channel_close(ch);
			return r;
		}
		struct recv_chan *c = &mr->chans[h.index];

		ring_channel_set_timeout(ch, ring_channel_timeout(main));
		c->mr = mr;
		c->index = h.index;
		c->ch = ch;
		savevm_in_init(&c->in, ch);
	}
	for (unsigned int i = 0; i < sc->nr; i++) {
		int r = -pthread_create(&mr->chans[i].thread, NULL, recv_thread, &mr->chans[i]);

		if (r) {
			snprintf(err, errlen, "cannot start the thread of channel %u", i);
			multifd_recv_abort(mr);
			return r;
		}
		mr->chans[i].started = true;
	}
	/* While the channels run, main may carry nothing for a whole pass:
	 * a silent source is noticed by the channels (each keeps the
	 * timeout), and a failed channel stops main's reads. */
	mr->main_timeout = ring_channel_timeout(main);
	mr->main_timeout_lifted = true;
	ring_channel_set_timeout(main, 0);
	return 0;
}

/* The main connection's own timeout again, once the channels are done. */
static void restore_main_timeout(struct multifd_recv *mr)
{
	if (mr->main_timeout_lifted)
		ring_channel_set_timeout(mr->main, mr->main_timeout);
	mr->main_timeout_lifted = false;
}

int multifd_recv_finish(struct multifd_recv *mr, uint64_t *pages, char *err, size_t errlen)
{
	int first = 0;

	*pages = 0;
	for (unsigned int i = 0; i < mr->nr; i++) {
		struct recv_chan *c = &mr->chans[i];

		if (c->started) {
			pthread_join(c->thread, NULL);
			c->started = false;
		}
		*pages += c->pages;
	}
	restore_main_timeout(mr);
	/* report the channel that failed first: the others mostly stopped
	 * because of it (the source gives up and closes every channel) */
	struct recv_chan *f = NULL;

	for (unsigned int i = 0; i < mr->nr; i++) {
		struct recv_chan *c = &mr->chans[i];

		if (c->fail_order && (!f || c->fail_order < f->fail_order))
			f = c;
	}
	if (f) {
		first = f->result;
		snprintf(err, errlen, "channel %u: %s", f->index, f->err[0] ? f->err : strerror(-first));
	}
	return first;
}

void multifd_recv_abort(struct multifd_recv *mr)
{
	if (!mr)
		return;
	pthread_mutex_lock(&mr->lock);
	mr->failed = true;
	pthread_cond_broadcast(&mr->cond);
	pthread_mutex_unlock(&mr->lock);
	for (unsigned int i = 0; i < mr->nr; i++)
		if (mr->chans[i].ch)
			ring_channel_abort(mr->chans[i].ch);
}

void multifd_recv_free(struct multifd_recv *mr)
{
	if (!mr)
		return;
	multifd_recv_abort(mr);
	for (unsigned int i = 0; i < mr->nr; i++)
		if (mr->chans[i].started)
			pthread_join(mr->chans[i].thread, NULL);
	restore_main_timeout(mr);
	for (unsigned int i = 0; i < mr->nr; i++) {
		ring_channel_close(mr->chans[i].ch);
		savevm_in_fini(&mr->chans[i].in);
	}
	pthread_mutex_destroy(&mr->lock);
	pthread_cond_destroy(&mr->cond);
	free(mr->chans);
	free(mr);
}

int multifd_recv_run_mem(const uint8_t *buf, size_t len, uint64_t cookie, multifd_ram_fn fn, void *opaque,
			 uint64_t *pages, char *err, size_t errlen)
{
	struct multifd_recv mr = { .nr = 1, .fn = fn, .opaque = opaque };
	struct recv_chan c = { .mr = &mr };
	const struct stream_channels sc = { .nr = 1, .cookie = cookie };
	struct stream_chan_hello h;
	int r;

	mr.chans = &c;
	pthread_mutex_init(&mr.lock, NULL);
	pthread_cond_init(&mr.cond, NULL);
	savevm_in_init_mem(&c.in, buf, len);
	r = stream_read_chan_hello(&c.in.src, &h, c.err, sizeof(c.err));
	if (!r)
		r = check_hello(&h, &sc, c.err, sizeof(c.err));
	if (!r)
		r = recv_loop(&c);
	*pages = c.pages;
	if (r)
		snprintf(err, errlen, "%s", c.err[0] ? c.err : strerror(-r));
	savevm_in_fini(&c.in);
	pthread_mutex_destroy(&mr.lock);
	pthread_cond_destroy(&mr.cond);
	return r;
}
