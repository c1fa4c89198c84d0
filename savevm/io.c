/* The stream ends of a migration: byte counting, max-bandwidth pacing and
 * the copy/zero-copy choice on the source, a stream_source over the
 * channel on the destination. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "ring/ring.h"
#include "savevm/savevm.h"

/* ------------------------------------------------------------ pacing */

/* How far the virtual clock may run ahead of real time: the largest burst
 * the link sees is this much of the limit (plus one send, which
 * savevm_rate_chunk keeps about as small). */
#define RATE_SLACK_NS 2000000ull

void savevm_rate_init(struct savevm_rate *r)
{
	pthread_mutex_init(&r->lock, NULL);
	atomic_store(&r->bandwidth, 0);
	r->vt_ns = 0;
}

void savevm_rate_destroy(struct savevm_rate *r)
{
	pthread_mutex_destroy(&r->lock);
}

void savevm_rate_pay(struct savevm_rate *r, size_t len, atomic_bool *cancel)
{
	uint64_t bw = r ? atomic_load(&r->bandwidth) : 0;

	if (!bw)
		return;
	pthread_mutex_lock(&r->lock);
	uint64_t now = kmig_now_ns();

	/* idle time is not credit: a link unused for a second does not
	 * earn a second's worth of burst */
	if (r->vt_ns < now)
		r->vt_ns = now;
	r->vt_ns += (uint64_t)((unsigned __int128)len * 1000000000ull / bw);
	uint64_t until = r->vt_ns > RATE_SLACK_NS ? r->vt_ns - RATE_SLACK_NS : 0;
	pthread_mutex_unlock(&r->lock);

	while ((now = kmig_now_ns()) < until && !(cancel && *cancel)) {
		uint64_t d = until - now > 5000000 ? 5000000 : until - now;
		struct timespec ts = { 0, (long)d };

		nanosleep(&ts, NULL);
	}
}

size_t savevm_rate_chunk(struct savevm_rate *r)
{
	uint64_t bw = r ? atomic_load(&r->bandwidth) : 0;

	/* 1 ms worth of the limit, at least one page */
	if (!bw)
		return SIZE_MAX;
	return bw / 1000 > 4096 ? (size_t)(bw / 1000) : 4096;
}

/* ------------------------------------------------ copy or zero-copy */

/* AUTO sends this much each way before choosing. */
#define PROBE_BYTES (16ull << 20)

void savevm_sendpath_init(struct savevm_sendpath *p, struct ring_channel *ch, enum savevm_send_mode asked)
{
	/* a transport without zero-copy (ring_channel_caps) copies, whatever
	 * was asked: nothing to measure */
	if (ch && !(ring_channel_caps(ch) & RING_CAP_ZEROCOPY))
		asked = SAVEVM_SEND_COPY;
	*p = (struct savevm_sendpath){ .ch = ch, .asked = asked, .chosen = asked };
}

/* Which mode this send uses while AUTO is still measuring: zero-copy
 * first, then copy, then the faster per byte.  Zero-copy loses outright
 * when the kernel reports it copied anyway (loopback does). */
static enum savevm_send_mode probe_mode(struct savevm_sendpath *p)
{
	uint64_t sends, copied;

	if (p->probe_bytes[SAVEVM_SEND_ZC] < PROBE_BYTES)
		return SAVEVM_SEND_ZC;
	if (p->probe_bytes[SAVEVM_SEND_COPY] < PROBE_BYTES)
		return SAVEVM_SEND_COPY;
	ring_zc_stats(p->ch, &sends, &copied);
	double zc = (double)p->probe_ns[SAVEVM_SEND_ZC] / (double)p->probe_bytes[SAVEVM_SEND_ZC];
	double cp = (double)p->probe_ns[SAVEVM_SEND_COPY] / (double)p->probe_bytes[SAVEVM_SEND_COPY];

	p->chosen = (sends && copied * 2 >= sends) || cp <= zc ? SAVEVM_SEND_COPY : SAVEVM_SEND_ZC;
	return p->chosen;
}

int savevm_sendpath_send(struct savevm_sendpath *p, const struct iovec *iov, int iovcnt, size_t prefix)
{
	enum savevm_send_mode mode = p->chosen == SAVEVM_SEND_AUTO ? probe_mode(p) : p->chosen;
	uint64_t t0 = p->chosen == SAVEVM_SEND_AUTO ? kmig_now_ns() : 0;
	int r = mode == SAVEVM_SEND_ZC ? ring_sendv_zc(p->ch, iov, iovcnt, prefix)
				       : ring_sendv(p->ch, iov, iovcnt);

	if (!r && t0) {
		for (int i = 0; i < iovcnt; i++)
			p->probe_bytes[mode] += iov[i].iov_len;
		p->probe_ns[mode] += kmig_now_ns() - t0;
	}
	return r;
}

int savevm_sendpath_flush(struct savevm_sendpath *p)
{
	return p->ch ? ring_zc_flush(p->ch) : 0;
}

/* ------------------------------------------------------------ source */

void savevm_out_account(struct savevm_out *out, size_t len)
{
	uint64_t total = atomic_fetch_add(&out->bytes, len) + len;

	if (out->progress)
		atomic_store_explicit(out->progress, total, memory_order_relaxed);
}

static size_t iov_bytes(const struct iovec *iov, int iovcnt)
{
	size_t len = 0;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	return len;
}

/* Every send of the source: cancel, pace, send (path NULL: a plain copy
 * on the main channel), count. */
static int out_send(struct savevm_out *out, struct savevm_sendpath *path, const struct iovec *iov,
		    int iovcnt, size_t prefix)
{
	size_t len = iov_bytes(iov, iovcnt);

	if (out->cancel && *out->cancel)
		return -ECANCELED;
	savevm_rate_pay(out->rate, len, out->cancel);
	int r = path ? savevm_sendpath_send(path, iov, iovcnt, prefix) : ring_sendv(out->ch, iov, iovcnt);

	if (!r)
		savevm_out_account(out, len);
	return r;
}

int savevm_out_sendv(struct savevm_out *out, const struct iovec *iov, int iovcnt)
{
	return out_send(out, NULL, iov, iovcnt, 0);
}

int savevm_out_send(struct savevm_out *out, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return savevm_out_sendv(out, &iov, 1);
}

int savevm_out_send_pages(struct savevm_out *out, struct savevm_sendpath *path, const struct iovec *iov,
			  int iovcnt, size_t prefix)
{
	return out_send(out, path, iov, iovcnt, prefix);
}

/* ------------------------------------------------------- destination */

/* Bytes in memory (savevm_in_init_mem) stand in for a connection that
 * delivers them and then closes: all of a read or -EPIPE. */
static int mem_take(struct savevm_in *in, size_t len, const uint8_t **p)
{
	if (in->mem_len - in->mem_pos < len) {
		in->mem_pos = in->mem_len;
		return -EPIPE;
	}
	*p = in->mem + in->mem_pos;
	in->mem_pos += len;
	return 0;
}

static int in_read(void *opaque, void *buf, size_t len)
{
	struct savevm_in *in = opaque;
	const uint8_t *p = NULL;
	int r = in->ch ? ring_recv(in->ch, buf, len) : mem_take(in, len, &p);

	if (!r && !in->ch)
		memcpy(buf, p, len);
	if (!r)
		in->bytes += len;
	return r;
}

void savevm_in_init(struct savevm_in *in, struct ring_channel *ch)
{
	*in = (struct savevm_in){ .ch = ch, .src = { .read = in_read, .opaque = in } };
}

void savevm_in_init_mem(struct savevm_in *in, const uint8_t *buf, size_t len)
{
	*in = (struct savevm_in){ .mem = buf, .mem_len = len, .src = { .read = in_read, .opaque = in } };
}

uint8_t *savevm_in_scratch(struct savevm_in *in, size_t len)
{
	if (in->scratch_len < len) {
		free(in->scratch);
		in->scratch = malloc(len);
		in->scratch_len = in->scratch ? len : 0;
	}
	return in->scratch;
}

void savevm_in_fini(struct savevm_in *in)
{
	free(in->scratch);
	in->scratch = NULL;
	in->scratch_len = 0;
}

static int mem_readv(struct savevm_in *in, const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++) {
		const uint8_t *p;
		int r = mem_take(in, iov[i].iov_len, &p);

		if (r)
			return r;
		memcpy(iov[i].iov_base, p, iov[i].iov_len);
	}
	return 0;
}

int savevm_in_readv(struct savevm_in *in, const struct iovec *iov, int iovcnt)
{
	int r = in->ch ? ring_recvv(in->ch, iov, iovcnt) : mem_readv(in, iov, iovcnt);

	if (!r)
		in->bytes += iov_bytes(iov, iovcnt);
	return r;
}

/* From memory, a splice is a pwrite: the file sees the same writes. */
static int mem_splice(struct savevm_in *in, int fd, uint64_t off, size_t len)
{
	const uint8_t *p;
	int r = mem_take(in, len, &p);

	while (!r && len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return r;
}

int savevm_in_splice(struct savevm_in *in, int fd, uint64_t off, size_t len)
{
	int r = in->ch ? ring_recv_splice(in->ch, fd, off, len) : mem_splice(in, fd, off, len);

	if (!r)
		in->bytes += len;
	return r;
}

void savevm_cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

void savevm_deadline_ms(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}
