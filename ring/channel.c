/* ring/channel.c — a channel and its io_uring: the synchronous data path
 * (send, receive, poll), its timeout, abort and close.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------------- channels */

/* The socket transport's ops (ring-int.h: struct ring_transport); the
 * zero-copy and splice ops are in zerocopy.c and splice.c. */
static int sock_sendv(void *self, const struct iovec *iov, int iovcnt);
static int sock_recvv(void *self, const struct iovec *iov, int iovcnt);
static int sock_recv(void *self, void *buf, size_t len);
static int sock_poll_readable(void *self, int timeout_ms);
static int sock_socket_error(void *self);
static void sock_set_timeout(void *self, int timeout_ms);
static int sock_timeout(const void *self);
static void sock_abort(void *self);
static void sock_stop_reading(void *self);
static void sock_close(void *self);
static uint64_t sock_bytes_sent(const void *self);
static uint64_t sock_bytes_received(const void *self);

static const struct ring_transport sock_transport = {
	.name = "socket",
	.caps = RING_CAP_ZEROCOPY | RING_CAP_SPLICE,
	.sendv = sock_sendv,
	.sendv_zc = ring_sock_sendv_zc,
	.zc_flush = ring_sock_zc_flush,
	.zc_stats = ring_sock_zc_stats,
	.recv = sock_recv,
	.recvv = sock_recvv,
	.recv_splice = ring_sock_recv_splice,
	.poll_readable = sock_poll_readable,
	.socket_error = sock_socket_error,
	.set_timeout = sock_set_timeout,
	.timeout = sock_timeout,
	.abort = sock_abort,
	.stop_reading = sock_stop_reading,
	.close = sock_close,
	.bytes_sent = sock_bytes_sent,
	.bytes_received = sock_bytes_received,
};

/* A channel of the socket transport around a connected socket; takes fd
 * on success. */
int ring_channel_new(int fd, struct ring_channel **out)
{
	struct ring_channel *c = calloc(1, sizeof(*c));
	struct ring_sock *ch = calloc(1, sizeof(*ch));
	int ret = -ENOMEM;

	if (!c || !ch)
		goto err_free;
	/* COOP_TASKRUN: completions are only ever reaped inside our own
	 * io_uring_enter(), so the kernel need not IPI the task to run task
	 * work.  No SINGLE_ISSUER/DEFER_TASKRUN: a channel may be set up by
	 * one thread and then handed to another (multifd workers). */
	ret = io_uring_queue_init(RING_QUEUE_DEPTH, &ch->ring, IORING_SETUP_COOP_TASKRUN);
	if (ret == -EINVAL)
		ret = io_uring_queue_init(RING_QUEUE_DEPTH, &ch->ring, 0);
	if (ret < 0)
		goto err_free;
	ch->fd = fd;
	ch->pipe[0] = ch->pipe[1] = -1;
	ch->send_flags = MSG_NOSIGNAL | MSG_WAITALL;
	*c = (struct ring_channel){ .t = &sock_transport, .impl = ch };
	*out = c;
	return 0;

err_free:
	free(ch);
	free(c);
	return ret;
}

int ring_check(const struct ring_sock *ch)
{
	if (__atomic_load_n(&ch->aborted, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	return ch->broken;
}

/* Map a failed or truncated transfer to what the caller should see. */
int ring_io_error(const struct ring_sock *ch, int res)
{
	/* Whatever the socket said after our own shutdown, the cause is the
	 * abort. */
	if (__atomic_load_n(&ch->aborted, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	/* A peer that dies with unread data in its receive queue sends RST
	 * instead of FIN.  For a migration stream both mean "the peer went
	 * away mid-stream", so report both as -EPIPE. */
	if (res == -ECONNRESET)
		return -EPIPE;
	return res;
}

/* A zero-copy send's notification: the kernel no longer references the
 * memory of that send, so its prefix slot may be reused. */
static void ring_zc_notified(struct ring_sock *ch, const struct io_uring_cqe *cqe)
{
	unsigned int slot = (unsigned int)(cqe->user_data - RING_UD_ZC_BASE);

	if (slot < RING_ZC_SLOTS && ch->zc_busy[slot]) {
		ch->zc_busy[slot] = false;
		ch->zc_inflight--;
	}
	__atomic_fetch_add(&ch->zc_sends, 1, __ATOMIC_RELAXED);
	if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)
		__atomic_fetch_add(&ch->zc_copied, 1, __ATOMIC_RELAXED);
}

/* Reap one CQE (waiting if submit is set or none is ready).  Returns 1 with
 * *res for the operation's own completion, 0 for a notification (consumed
 * here), -errno if the ring broke. */
int ring_reap(struct ring_sock *ch, bool submit, int *res, unsigned int *flags)
{
	struct io_uring_cqe *cqe;
	int ret;

	struct __kernel_timespec ts = { ch->timeout_ms / 1000, (long long)(ch->timeout_ms % 1000) * 1000000 };

	if (submit) {
		/* io_uring_enter() returns the submitted count even when the
		 * wait is interrupted, so -EINTR means the SQE is still queued.
		 * With a timeout the wait is a separate call (one more syscall
		 * per operation, against transfers of up to a MiB). */
		do {
			ret = ch->timeout_ms ? io_uring_submit(&ch->ring) : io_uring_submit_and_wait(&ch->ring, 1);
		} while (ret == -EINTR);
		if (ret < 0)
			goto broken;
	}
	do {
		ret = ch->timeout_ms ? io_uring_wait_cqe_timeout(&ch->ring, &cqe, &ts)
				     : io_uring_wait_cqe(&ch->ring, &cqe);
	} while (ret == -EINTR);
	/* Nothing completed for the whole timeout: the peer neither sends
	 * nor reads.  The operation is still in flight, so the channel is
	 * unusable from here on (broken), as after any ring failure. */
	if (ret == -ETIME)
		ret = -ETIMEDOUT;
	if (ret < 0)
		goto broken;
	if (cqe->flags & IORING_CQE_F_NOTIF) {
		ring_zc_notified(ch, cqe);
		io_uring_cqe_seen(&ch->ring, cqe);
		return 0;
	}
	*res = cqe->res;
	if (flags)
		*flags = cqe->flags;
	io_uring_cqe_seen(&ch->ring, cqe);
	return 1;

broken:
	/* An SQE that was never consumed (or a CQE never reaped) would be
	 * mistaken for the next operation's: the channel is unusable now. */
	ch->broken = ret;
	return ret;
}

/* Submit the single prepared SQE and wait for its completion, consuming
 * any zero-copy notifications that arrive meanwhile. */
static int ring_run(struct ring_sock *ch, int *res)
{
	bool submit = true;
	int ret;

	while ((ret = ring_reap(ch, submit, res, NULL)) == 0)
		submit = false;
	return ret < 0 ? ret : 0;
}

/* Run the prepared transfer: 1 when interrupted (prepare it again), 0 with
 * *res bytes moved and counted, -errno on failure; 0 bytes is the end of
 * the stream on receive, and no progress possible on send: -EPIPE. */
static int ring_run_xfer(struct ring_sock *ch, bool send, int *res)
{
	int ret = ring_run(ch, res);

	if (ret)
		return ret;
	if (*res == -EINTR)
		return 1;
	if (*res <= 0)
		return ring_io_error(ch, *res < 0 ? *res : -EPIPE);
	ring_account(ch, send, *res);
	return 0;
}

void ring_account(struct ring_sock *ch, bool send, int n)
{
	__atomic_fetch_add(send ? &ch->bytes_sent : &ch->bytes_received, (uint64_t)n,
			   __ATOMIC_RELAXED);
}

/* Move every byte of iov[] with one SENDMSG/RECVMSG per batch of at most
 * RING_IOV_BATCH iovecs.  MSG_WAITALL makes the kernel itself retry short
 * transfers on stream sockets; the loop covers what it still returns short
 * (signals, errors after partial progress, MAX_RW_COUNT). */
int ring_xfer(struct ring_sock *ch, bool send, const struct iovec *iov, int iovcnt)
{
	struct io_uring_sqe *sqe;
	struct msghdr msg;
	struct iovec part;
	size_t off = 0;		/* bytes of iov[i] already done */
	int i = 0, res, ret;

	if (!ch || iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	ret = ring_check(ch);
	if (ret)
		return ret;

	for (;;) {
		/* Skip finished and empty iovecs: a zero-length RECVMSG would
		 * complete with 0 and read as end-of-stream. */
		while (i < iovcnt && off == iov[i].iov_len) {
			i++;
			off = 0;
		}
		if (i == iovcnt)
			return 0;

		memset(&msg, 0, sizeof(msg));
		if (off) {
			/* Resume inside iov[i]: send its tail alone rather
			 * than copying the rest of the caller's array. */
			part.iov_base = (char *)iov[i].iov_base + off;
			part.iov_len = iov[i].iov_len - off;
			msg.msg_iov = &part;
			msg.msg_iovlen = 1;
		} else {
			/* The kernel only reads the array (for RECVMSG it
			 * writes the buffers, not the iovecs). */
			msg.msg_iov = (struct iovec *)&iov[i];
			msg.msg_iovlen = (size_t)(iovcnt - i < RING_IOV_BATCH ? iovcnt - i
							      : RING_IOV_BATCH);
		}

		sqe = io_uring_get_sqe(&ch->ring);
		if (!sqe)
			return -EBUSY;	/* cannot happen: nothing else is queued */
		if (send)
			io_uring_prep_sendmsg(sqe, ch->fd, &msg, ch->send_flags);
		else
			io_uring_prep_recvmsg(sqe, ch->fd, &msg, MSG_WAITALL);

		ret = ring_run_xfer(ch, send, &res);
		if (ret < 0)
			return ret;
		if (ret)
			continue;

		for (size_t left = (size_t)res; left;) {
			size_t avail = iov[i].iov_len - off;

			if (left < avail) {
				off += left;
				left = 0;
			} else {
				left -= avail;
				i++;
				off = 0;
			}
		}
	}
}

static int sock_sendv(void *self, const struct iovec *iov, int iovcnt)
{
	return ring_xfer(self, true, iov, iovcnt);
}

static int sock_recvv(void *self, const struct iovec *iov, int iovcnt)
{
	return ring_xfer(self, false, iov, iovcnt);
}

static int sock_recv(void *self, void *buf, size_t len)
{
	struct ring_sock *ch = self;
	struct io_uring_sqe *sqe;
	size_t done = 0;
	int res, ret;

	if (!ch || (len && !buf))
		return -EINVAL;
	ret = ring_check(ch);
	if (ret)
		return ret;

	while (done < len) {
		size_t chunk = len - done < RING_MAX_RECV ? len - done : RING_MAX_RECV;

		sqe = io_uring_get_sqe(&ch->ring);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_recv(sqe, ch->fd, (char *)buf + done, chunk, MSG_WAITALL);
		ret = ring_run_xfer(ch, false, &res);
		if (ret < 0)
			return ret;
		if (ret)
			continue;
		done += (size_t)res;
	}
	return 0;
}

static int sock_poll_readable(void *self, int timeout_ms)
{
	struct ring_sock *ch = self;
	int64_t deadline = ring_deadline(timeout_ms);
	struct pollfd pfd;
	int n, ret;

	if (!ch)
		return -EINVAL;
	for (;;) {
		ret = ring_check(ch);
		if (ret)
			return ret;
		pfd.fd = ch->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		n = poll(&pfd, 1, ring_left_ms(deadline));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		/* POLLHUP/POLLERR count as readable: the next recv will not
		 * block, it reports the error (or -EPIPE). */
		ret = ring_check(ch);
		return ret ? ret : 1;
	}
}

static int sock_socket_error(void *self)
{
	struct ring_sock *ch = self;
	int e = 0;
	socklen_t len = sizeof(e);

	if (!ch || getsockopt(ch->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		return 0;
	return -e;
}

static void sock_set_timeout(void *self, int timeout_ms)
{
	struct ring_sock *ch = self;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (!ch || timeout_ms < 0)
		return;
	ch->timeout_ms = timeout_ms;
	/* the splice receive is a plain blocking syscall */
	setsockopt(ch->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int sock_timeout(const void *self)
{
	const struct ring_sock *ch = self;

	return ch ? ch->timeout_ms : 0;
}

static void sock_abort(void *self)
{
	struct ring_sock *ch = self;

	if (!ch)
		return;
	/* Flag first, so the thread our shutdown wakes reports -ECANCELED
	 * instead of the -EPIPE the shutdown provokes.  shutdown() (unlike
	 * close()) keeps the fd number valid for that thread's pending
	 * io_uring request and wakes it through the socket's wait queue. */
	__atomic_store_n(&ch->aborted, 1, __ATOMIC_SEQ_CST);
	shutdown(ch->fd, SHUT_RDWR);
}

static void sock_stop_reading(void *self)
{
	struct ring_sock *ch = self;

	if (ch)
		shutdown(ch->fd, SHUT_RD);
}

static void sock_close(void *self)
{
	struct ring_sock *ch = self;

	if (!ch)
		return;
	/* Outstanding zero-copy notifications die with the ring; the memory
	 * they referenced is the caller's (guest RAM), kept until after this. */
	io_uring_queue_exit(&ch->ring);
	close(ch->fd);
	if (ch->pipe[0] >= 0) {
		close(ch->pipe[0]);
		close(ch->pipe[1]);
	}
	free(ch->zc_prefix);
	free(ch);
}

static uint64_t sock_bytes_sent(const void *self)
{
	const struct ring_sock *ch = self;

	return ch ? __atomic_load_n(&ch->bytes_sent, __ATOMIC_RELAXED) : 0;
}

static uint64_t sock_bytes_received(const void *self)
{
	const struct ring_sock *ch = self;

	return ch ? __atomic_load_n(&ch->bytes_received, __ATOMIC_RELAXED) : 0;
}
