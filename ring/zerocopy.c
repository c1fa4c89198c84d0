/* ring/zerocopy.c — zero-copy send (IORING_OP_SENDMSG_ZC) and its notifications.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <liburing.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------ zero-copy send */

/* Wait for one notification, so that a slot frees up. */
static int ring_zc_wait_one(struct ring_sock *ch)
{
	unsigned int before = ch->zc_inflight;
	int res, ret;

	while (ch->zc_inflight == before) {
		ret = ring_reap(ch, false, &res, NULL);
		if (ret < 0)
			return ret;
		if (ret == 1)	/* no operation is outstanding: cannot happen */
			return -EIO;
	}
	return 0;
}

static int ring_zc_slot(struct ring_sock *ch)
{
	int ret;

	if (!ch->zc_prefix) {
		ch->zc_prefix = malloc((size_t)RING_ZC_SLOTS * RING_ZC_PREFIX_MAX);
		if (!ch->zc_prefix)
			return -ENOMEM;
	}
	while (ch->zc_inflight == RING_ZC_SLOTS) {
		ret = ring_zc_wait_one(ch);
		if (ret)
			return ret;
	}
	for (int i = 0; i < RING_ZC_SLOTS; i++)
		if (!ch->zc_busy[i])
			return i;
	return -EIO;
}

/* One SENDMSG_ZC of iov[0..n): 0 with *sent, or -errno. */
static int ring_zc_submit(struct ring_sock *ch, int slot, struct msghdr *msg, int *sent)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ch->ring);
	unsigned int flags = 0;
	bool submit = true;
	int ret, res;

	if (!sqe)
		return -EBUSY;
	io_uring_prep_sendmsg_zc(sqe, ch->fd, msg, MSG_NOSIGNAL | MSG_WAITALL);
	sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
	io_uring_sqe_set_data64(sqe, RING_UD_ZC_BASE + (uint64_t)slot);
	ch->zc_busy[slot] = true;
	ch->zc_inflight++;
	while ((ret = ring_reap(ch, submit, &res, &flags)) == 0)
		submit = false;
	if (ret < 0)
		return ret;
	/* Without F_MORE no notification follows (the send failed before
	 * taking any reference): the slot is free again now. */
	if (!(flags & IORING_CQE_F_MORE)) {
		ch->zc_busy[slot] = false;
		ch->zc_inflight--;
	}
	*sent = res;
	return 0;
}

int ring_sock_sendv_zc(void *self, const struct iovec *iov, int iovcnt, size_t prefix)
{
	struct ring_sock *ch = self;
	struct iovec v[RING_IOV_BATCH];
	struct msghdr msg;
	size_t copied = 0, total = 0;
	int i, n = 1, slot, res, ret;

	if (!ch || iovcnt < 0 || (iovcnt && !iov) || prefix > RING_ZC_PREFIX_MAX)
		return -EINVAL;
	ret = ring_check(ch);
	if (ret)
		return ret;
	slot = ring_zc_slot(ch);
	if (slot < 0)
		return slot;
	/* The prefix (headers the caller reuses at once) goes from our slot
	 * copy; the rest (guest pages) straight from the caller's memory. */
	uint8_t *pfx = ch->zc_prefix + (size_t)slot * RING_ZC_PREFIX_MAX;

	for (i = 0; i < iovcnt && copied < prefix; i++) {
		size_t take = iov[i].iov_len < prefix - copied ? iov[i].iov_len : prefix - copied;

		memcpy(pfx + copied, iov[i].iov_base, take);
		copied += take;
		if (take < iov[i].iov_len) {	/* prefix ends inside iov[i] */
			v[n++] = (struct iovec){ (char *)iov[i].iov_base + take, iov[i].iov_len - take };
			i++;
			break;
		}
	}
	if (copied != prefix)
		return -EINVAL;
	v[0] = (struct iovec){ pfx, prefix };
	for (; i < iovcnt; i++) {
		if (n == RING_IOV_BATCH)
			return -E2BIG;
		v[n++] = iov[i];
	}
	for (i = 0; i < n; i++)
		total += v[i].iov_len;

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = v;
	msg.msg_iovlen = (size_t)n;
	ret = ring_zc_submit(ch, slot, &msg, &res);
	if (ret)
		return ret;
	if (res < 0 && res != -EINTR)
		return ring_io_error(ch, res);
	if (res == 0 && total)
		return ring_io_error(ch, -EPIPE);
	if (res > 0)
		ring_account(ch, true, res);
	if (res >= 0 && (size_t)res == total)
		return 0;
	/* Short (a signal, or MAX_RW_COUNT): the rest goes by plain send,
	 * which copies, so the prefix slot's lifetime no longer matters. */
	size_t skip = res > 0 ? (size_t)res : 0;
	for (i = 0; i < n && skip >= v[i].iov_len; i++)
		skip -= v[i].iov_len;
	v[i].iov_base = (char *)v[i].iov_base + skip;
	v[i].iov_len -= skip;
	return ring_xfer(ch, true, &v[i], n - i);
}

int ring_sock_zc_flush(void *self)
{
	struct ring_sock *ch = self;
	int ret;

	if (!ch)
		return -EINVAL;
	while (ch->zc_inflight) {
		ret = ring_zc_wait_one(ch);
		if (ret)
			return ret;
	}
	return 0;
}

void ring_sock_zc_stats(const void *self, uint64_t *sends, uint64_t *copied)
{
	const struct ring_sock *ch = self;

	*sends = ch ? __atomic_load_n(&ch->zc_sends, __ATOMIC_RELAXED) : 0;
	*copied = ch ? __atomic_load_n(&ch->zc_copied, __ATOMIC_RELAXED) : 0;
}
