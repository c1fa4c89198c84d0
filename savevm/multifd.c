/* RAM over several connections: a sender thread per channel on the source,
 * a receiver thread per channel on the destination.  See multifd.h for the
 * ordering rule (epochs) that keeps one consistent memory image. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "savevm/multifd.h"

#define CONNECT_TIMEOUT_MS 5000
#define HELLO_TIMEOUT_MS 5000
/* Records queued per channel: enough to keep its socket busy while the
 * migration thread checks the next pages, few enough that the queued
 * bytes (at most 1 MiB a record) stay out of the pending figure briefly. */
#define QUEUE_LEN 4
#define HDR_MAX (STREAM_RAM_HDR_SIZE + STREAM_MAX_PAGES_PER_REC * 8)
/* How often a waiting migration thread looks at the main connection. */
#define WATCH_MAIN_MS 50

enum item_kind { ITEM_PAGES, ITEM_EPOCH, ITEM_EOF };

struct item {
	enum item_kind kind;
	uint32_t npages;
	size_t hdrlen;
	int npayload;
	uint8_t hdr[HDR_MAX];
	struct iovec iov[STREAM_MAX_PAGES_PER_REC + 1];
};

struct send_chan {
	struct multifd_send *mf;
	unsigned int index;
	struct ring_channel *ch;
	struct savevm_sendpath path;
	pthread_t thread;
	bool started;
	/* queue, under mf->lock */
	struct item q[QUEUE_LEN];
	unsigned int head, count;
	uint32_t epoch;
	uint64_t pages;
};

struct multifd_send {
	struct savevm_out *out;
	unsigned int nr;
	unsigned int next;	/* round robin among equally loaded channels */
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* queue space, new items, failure */
	int error;		/* first channel error, sticky */
	struct send_chan *chans;
};

/* ------------------------------------------------------------ source */

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

/* Wait for the channels (mf->lock held), looking at the main connection
 * every WATCH_MAIN_MS: a destination that refused said so there and may
 * have stopped reading a channel, whose sender would then block for ever. */
static void wait_channels(struct multifd_send *mf)
{
	struct timespec ts;

	savevm_deadline_ms(&ts, WATCH_MAIN_MS);
	if (pthread_cond_timedwait(&mf->cond, &mf->lock, &ts) != ETIMEDOUT || !mf->out->ch)
		return;
	if (ring_poll_readable(mf->out->ch, 0) == 0)
		return;
	pthread_mutex_unlock(&mf->lock);
	send_fail(mf, -EPIPE);
	pthread_mutex_lock(&mf->lock);
}

static int send_item(struct send_chan *c, struct item *it)
{
	struct savevm_out *out = c->mf->out;
	uint8_t buf[STREAM_EOF_SIZE];
	size_t n;
	int r;

	switch (it->kind) {
	case ITEM_PAGES:
		it->iov[0] = (struct iovec){ it->hdr, it->hdrlen };
		r = savevm_out_send_pages(out, &c->path, it->iov, it->npayload + 1, it->hdrlen);
		if (!r)
			c->pages += it->npages;
		return r;
	case ITEM_EPOCH:
		n = stream_encode_pass_end(buf, ++c->epoch);
		break;
	case ITEM_EOF:
		n = stream_encode_eof(buf, &(struct stream_eof){ .nr_sections = 0, .nr_pages = c->pages });
		break;
	default:
		return -EINVAL;
	}
	r = ring_send(c->ch, buf, n);
	if (!r)
		savevm_out_account(out, n);
	/* after EOF: the guest pages must not be in flight once the
	 * migration is declared done */
	if (!r && it->kind == ITEM_EOF)
		r = savevm_sendpath_flush(&c->path);
	return r;
}

static void *send_thread(void *arg)
{
	struct send_chan *c = arg;
	struct multifd_send *mf = c->mf;

	for (;;) {
		pthread_mutex_lock(&mf->lock);
		while (!c->count && !mf->error)
			pthread_cond_wait(&mf->cond, &mf->lock);
		if (mf->error) {
			pthread_mutex_unlock(&mf->lock);
			return NULL;
		}
		struct item *it = &c->q[c->head];
		pthread_mutex_unlock(&mf->lock);

		/* the item stays in the queue (not reusable) while sent */
		int r = send_item(c, it);
		bool eof = it->kind == ITEM_EOF;

		pthread_mutex_lock(&mf->lock);
		c->head = (c->head + 1) % QUEUE_LEN;
		c->count--;
		pthread_cond_broadcast(&mf->cond);
		pthread_mutex_unlock(&mf->lock);
		if (r) {
			send_fail(mf, r);
			return NULL;
		}
		if (eof)
			return NULL;
	}
}

static int send_hello(struct send_chan *c, uint64_t cookie)
{
	uint8_t buf[STREAM_CHAN_HELLO_SIZE];
	struct stream_chan_hello h = { .index = c->index, .nr = c->mf->nr, .cookie = cookie };

	stream_encode_chan_hello(buf, &h);
	int r = ring_send(c->ch, buf, sizeof(buf));

	if (!r)
		savevm_out_account(c->mf->out, sizeof(buf));
	return r;
}

int multifd_send_start(struct savevm_out *out, const struct ring_uri *uri, unsigned int nr,
		       uint64_t cookie, enum savevm_send_mode mode, struct multifd_send **mfp,
		       char *err, size_t errlen)
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
		struct send_chan *c = &mf->chans[i];

		c->mf = mf;
		c->index = i;
		r = ring_connect(uri, CONNECT_TIMEOUT_MS, &c->ch);
		if (!r)
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

/* The least loaded channel with room, round robin among equals; waits for
 * room.  Called with mf->lock held. */
static struct send_chan *pick_chan(struct multifd_send *mf)
{
	for (;;) {
		struct send_chan *best = NULL;

		if (mf->error)
			return NULL;
		for (unsigned int k = 0; k < mf->nr; k++) {
			struct send_chan *c = &mf->chans[(mf->next + k) % mf->nr];

			if (c->count < QUEUE_LEN && (!best || c->count < best->count))
				best = c;
		}
		if (best) {
			mf->next = (best->index + 1) % mf->nr;
			return best;
		}
		wait_channels(mf);
	}
}

static struct item *queue_tail(struct send_chan *c)
{
	return &c->q[(c->head + c->count) % QUEUE_LEN];
}

int multifd_send_pages(struct multifd_send *mf, const void *hdr, size_t hdrlen, uint32_t npages,
		       const struct iovec *pages, int npayload)
{
	if (hdrlen > HDR_MAX || npayload < 0 || (unsigned int)npayload > STREAM_MAX_PAGES_PER_REC)
		return -EINVAL;
	if (mf->out->cancel && *mf->out->cancel)
		return -ECANCELED;
	pthread_mutex_lock(&mf->lock);
	struct send_chan *c = pick_chan(mf);

	if (!c) {
		int r = mf->error;

		pthread_mutex_unlock(&mf->lock);
		return r;
	}
	/* the tail slot is free (the thread only touches the head's) */
	struct item *it = queue_tail(c);

	it->kind = ITEM_PAGES;
	it->npages = npages;
	it->hdrlen = hdrlen;
	it->npayload = npayload;
	memcpy(it->hdr, hdr, hdrlen);
	memcpy(&it->iov[1], pages, (size_t)npayload * sizeof(*pages));
	c->count++;
	pthread_cond_broadcast(&mf->cond);
	pthread_mutex_unlock(&mf->lock);
	return 0;
}

/* Queue a marker on every channel, waiting for room where needed. */
static int queue_all(struct multifd_send *mf, enum item_kind kind)
{
	int r = 0;

	pthread_mutex_lock(&mf->lock);
	for (unsigned int i = 0; i < mf->nr && !mf->error; i++) {
		struct send_chan *c = &mf->chans[i];

		while (c->count == QUEUE_LEN && !mf->error)
			wait_channels(mf);
		if (mf->error)
			break;
		queue_tail(c)->kind = kind;
		c->count++;
		pthread_cond_broadcast(&mf->cond);
	}
	r = mf->error;
	pthread_mutex_unlock(&mf->lock);
	return r;
}

int multifd_send_drain(struct multifd_send *mf)
{
	int r;

	pthread_mutex_lock(&mf->lock);
	for (unsigned int i = 0; i < mf->nr && !mf->error; i++)
		while (mf->chans[i].count && !mf->error)
			wait_channels(mf);
	r = mf->error;
	pthread_mutex_unlock(&mf->lock);
	return r;
}

int multifd_send_epoch(struct multifd_send *mf)
{
	return queue_all(mf, ITEM_EPOCH);
}

int multifd_send_finish(struct multifd_send *mf)
{
	int r = queue_all(mf, ITEM_EOF);

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

static void *recv_thread(void *arg)
{
	struct recv_chan *c = arg;
	bool eof = false;
	int r = 0;

	while (!r && !eof) {
		enum stream_rec_type t;

		r = stream_read_type(&c->in.src, &t, c->err, sizeof(c->err));
		if (!r)
			r = recv_record(c, t, &eof);
	}
	if (r)
		recv_fail(c, r);
	return NULL;
}

/* Accept one connection and read its hello. */
static int accept_chan(struct ring_listener *l, const struct stream_channels *sc, struct ring_channel **chp,
		       struct stream_chan_hello *h, char *err, size_t errlen)
{
	struct savevm_in in;
	int r = ring_accept(l, chp, CONNECT_TIMEOUT_MS);

	if (r) {
		snprintf(err, errlen, "channel did not connect: %s", strerror(-r));
		return r;
	}
	r = ring_poll_readable(*chp, HELLO_TIMEOUT_MS);
	if (r <= 0) {
		snprintf(err, errlen, "channel said no hello: %s", r ? strerror(-r) : "timed out");
		return r ? r : -ETIMEDOUT;
	}
	savevm_in_init(&in, *chp);
	r = stream_read_chan_hello(&in.src, h, err, errlen);
	if (!r && (h->nr != sc->nr || h->cookie != sc->cookie)) {
		snprintf(err, errlen, "channel %u of %u does not belong to this migration (%u channels)", h->index,
			 h->nr, sc->nr);
		r = -EPROTO;
	}
	return r;
}

int multifd_recv_start(struct ring_listener *l, const struct stream_channels *sc, struct ring_channel *main,
		       multifd_ram_fn fn, void *opaque, struct multifd_recv **mrp, char *err, size_t errlen)
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
		int r = accept_chan(l, sc, &ch, &h, err, errlen);

		if (!r && mr->chans[h.index].ch) {
			snprintf(err, errlen, "channel %u connected twice", h.index);
			r = -EPROTO;
		}
		if (r) {
			ring_channel_close(ch);
			return r;
		}
		struct recv_chan *c = &mr->chans[h.index];

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
	return 0;
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
	for (unsigned int i = 0; i < mr->nr; i++)
		ring_channel_close(mr->chans[i].ch);
	pthread_mutex_destroy(&mr->lock);
	pthread_cond_destroy(&mr->cond);
	free(mr->chans);
	free(mr);
}
