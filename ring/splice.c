/* ring/splice.c — splice receive: socket -> pipe -> the guest memfd.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------ splice receive */

static int ring_pipe_open(struct ring_sock *ch)
{
	int size;

	if (ch->pipe[0] >= 0)
		return 0;
	if (pipe2(ch->pipe, O_CLOEXEC))
		return -errno;
	/* A smaller pipe only means more splice calls per run. */
	size = fcntl(ch->pipe[1], F_SETPIPE_SZ, RING_PIPE_SIZE);
	if (size < 0)
		size = fcntl(ch->pipe[1], F_GETPIPE_SZ);
	ch->pipe_size = size > 0 ? (size_t)size : 65536;
	return 0;
}

/* Move len bytes from the socket into fd at off: the socket's pages go
 * into the pipe by reference, and from the pipe into fd's page cache with
 * the one copy the data needs.  Plain splice(2) calls: both ends block in
 * the kernel (an abort's shutdown() wakes the socket side). */
int ring_sock_recv_splice(void *self, int fd, uint64_t off, size_t len)
{
	struct ring_sock *ch = self;
	int ret = ch ? ring_check(ch) : -EINVAL;

	if (ret)
		return ret;
	ret = ring_pipe_open(ch);
	if (ret)
		return ret;
	while (len) {
		size_t want = len < ch->pipe_size ? len : ch->pipe_size;
		ssize_t in = splice(ch->fd, NULL, ch->pipe[1], NULL, want, SPLICE_F_MOVE);

		if (in < 0 && errno == EINTR)
			continue;
		if (in < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* SO_RCVTIMEO (ring_channel_set_timeout) ran out */
			ch->broken = -ETIMEDOUT;
			return ring_io_error(ch, -ETIMEDOUT);
		}
		if (in <= 0)
			return ring_io_error(ch, in == 0 ? -EPIPE : -errno);
		ring_account(ch, false, (int)in);
		for (ssize_t out = 0; out < in;) {
			loff_t o = (loff_t)off;
			ssize_t k = splice(ch->pipe[0], NULL, fd, &o, (size_t)(in - out), SPLICE_F_MOVE);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				/* the pipe now holds bytes of the stream that
				 * went nowhere: the channel cannot go on */
				ch->broken = k == 0 ? -EIO : -errno;
				return ch->broken;
			}
			out += k;
			off += (uint64_t)k;
		}
		len -= (size_t)in;
	}
	return 0;
}
