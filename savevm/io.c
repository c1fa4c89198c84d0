/* The stream ends of a migration: byte counting, max-bandwidth pacing on
 * the source, a stream_source over the channel on the destination. */
#include <errno.h>
#include <time.h>

#include "ring/ring.h"
#include "savevm/savevm.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Pace in 10 ms windows: short enough that the link never sees a burst of
 * more than 10 ms worth of the limit. */
#define RL_WINDOW_NS 10000000ull

static void rate_limit(struct savevm_out *out, size_t len)
{
	if (!out->max_bandwidth)
		return;
	uint64_t now = now_ns();

	if (now - out->rl_start_ns >= RL_WINDOW_NS) {
		out->rl_start_ns = now;
		out->rl_bytes = 0;
	}
	out->rl_bytes += len;
	uint64_t budget = out->max_bandwidth * RL_WINDOW_NS / 1000000000ull;

	if (out->rl_bytes > budget) {
		/* sleep until this window's share is paid for */
		uint64_t need_ns = out->rl_bytes * 1000000000ull / out->max_bandwidth;
		uint64_t until = out->rl_start_ns + need_ns;

		while ((now = now_ns()) < until && !(out->cancel && *out->cancel)) {
			uint64_t d = until - now > 5000000 ? 5000000 : until - now;
			struct timespec ts = { 0, (long)d };
			nanosleep(&ts, NULL);
		}
		out->rl_start_ns = now;
		out->rl_bytes = 0;
	}
}

int savevm_out_sendv(struct savevm_out *out, const struct iovec *iov, int iovcnt)
{
	size_t len = 0;

	if (out->cancel && *out->cancel)
		return -ECANCELED;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	rate_limit(out, len);
	int r = ring_sendv(out->ch, iov, iovcnt);

	if (!r) {
		out->bytes += len;
		if (out->progress)
			atomic_store_explicit(out->progress, out->bytes, memory_order_relaxed);
	}
	return r;
}

int savevm_out_send(struct savevm_out *out, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return savevm_out_sendv(out, &iov, 1);
}

static int in_read(void *opaque, void *buf, size_t len)
{
	struct savevm_in *in = opaque;
	int r = ring_recv(in->ch, buf, len);

	if (!r)
		in->bytes += len;
	return r;
}

void savevm_in_init(struct savevm_in *in, struct ring_channel *ch)
{
	in->ch = ch;
	in->bytes = 0;
	in->src.read = in_read;
	in->src.opaque = in;
}

int savevm_in_readv(struct savevm_in *in, const struct iovec *iov, int iovcnt)
{
	int r = ring_recvv(in->ch, iov, iovcnt);

	if (!r)
		for (int i = 0; i < iovcnt; i++)
			in->bytes += iov[i].iov_len;
	return r;
}
