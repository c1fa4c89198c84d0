/* ring/transport.c — the seam: every public channel function of ring.h
 * dispatches to its channel's transport (ring-int.h: struct
 * ring_transport).  The engine (savevm/) sees only these functions, so a
 * second transport (TLS) is a second table, not edits inside the first.
 * See docs/transport.md.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "ring/ring-int.h"

unsigned int ring_channel_caps(const struct ring_channel *ch)
{
	return ch ? ch->t->caps : 0;
}

const char *ring_channel_transport(const struct ring_channel *ch)
{
	return ch ? ch->t->name : "";
}

int ring_sendv(struct ring_channel *ch, const struct iovec *iov, int iovcnt)
{
	return ch ? ch->t->sendv(ch->impl, iov, iovcnt) : -EINVAL;
}

int ring_send(struct ring_channel *ch, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	if (len && !buf)
		return -EINVAL;
	return ring_sendv(ch, &iov, 1);
}

int ring_sendv_zc(struct ring_channel *ch, const struct iovec *iov, int iovcnt, size_t prefix)
{
	if (!ch)
		return -EINVAL;
	/* without zero-copy, a copy: the same bytes, the same contract */
	return ch->t->sendv_zc ? ch->t->sendv_zc(ch->impl, iov, iovcnt, prefix) : ch->t->sendv(ch->impl, iov, iovcnt);
}

int ring_zc_flush(struct ring_channel *ch)
{
	return ch && ch->t->zc_flush ? ch->t->zc_flush(ch->impl) : 0;
}

void ring_zc_stats(const struct ring_channel *ch, uint64_t *sends, uint64_t *copied)
{
	*sends = *copied = 0;
	if (ch && ch->t->zc_stats)
		ch->t->zc_stats(ch->impl, sends, copied);
}

int ring_recv(struct ring_channel *ch, void *buf, size_t len)
{
	return ch ? ch->t->recv(ch->impl, buf, len) : -EINVAL;
}

int ring_recvv(struct ring_channel *ch, const struct iovec *iov, int iovcnt)
{
	return ch ? ch->t->recvv(ch->impl, iov, iovcnt) : -EINVAL;
}

int ring_recv_splice(struct ring_channel *ch, int fd, uint64_t off, size_t len)
{
	if (!ch)
		return -EINVAL;
	return ch->t->recv_splice ? ch->t->recv_splice(ch->impl, fd, off, len) : -EOPNOTSUPP;
}

int ring_channel_socket_error(struct ring_channel *ch)
{
	return ch && ch->t->socket_error ? ch->t->socket_error(ch->impl) : 0;
}

int ring_poll_readable(struct ring_channel *ch, int timeout_ms)
{
	return ch ? ch->t->poll_readable(ch->impl, timeout_ms) : -EINVAL;
}

void ring_channel_set_timeout(struct ring_channel *ch, int timeout_ms)
{
	if (ch)
		ch->t->set_timeout(ch->impl, timeout_ms);
}

int ring_channel_timeout(const struct ring_channel *ch)
{
	return ch ? ch->t->timeout(ch->impl) : 0;
}

void ring_channel_abort(struct ring_channel *ch)
{
	if (ch)
		ch->t->abort(ch->impl);
}

void ring_channel_stop_reading(struct ring_channel *ch)
{
	if (ch)
		ch->t->stop_reading(ch->impl);
}

void ring_channel_close(struct ring_channel *ch)
{
	if (!ch)
		return;
	ch->t->close(ch->impl);
	free(ch);
}

uint64_t ring_channel_bytes_sent(const struct ring_channel *ch)
{
	return ch ? ch->t->bytes_sent(ch->impl) : 0;
}

uint64_t ring_channel_bytes_received(const struct ring_channel *ch)
{
	return ch ? ch->t->bytes_received(ch->impl) : 0;
}
