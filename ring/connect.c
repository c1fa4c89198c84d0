/* ring/connect.c — connect, retried while the peer is not there yet.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------------- connect */

static bool ring_connect_retryable(int err)
{
	/* ECONNREFUSED: nobody listening yet.  ENOENT: unix socket file not
	 * created yet.  EAGAIN: unix listener's backlog full. */
	return err == -ECONNREFUSED || err == -ENOENT || err == -EAGAIN;
}

/* Loopback TCP to a port in the ephemeral range with no listener can
 * "succeed" by connecting to itself (simultaneous open when the kernel picks
 * that very port as our source port), which would also block the real
 * listener's bind.  Treat it as the refusal it really is. */
static bool ring_self_connected(int fd)
{
	struct sockaddr_storage a, b;
	socklen_t alen = sizeof(a), blen = sizeof(b);

	if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0 ||
	    getpeername(fd, (struct sockaddr *)&b, &blen) < 0)
		return false;
	return alen == blen && !memcmp(&a, &b, alen);
}

/* One attempt.  Returns a connected blocking fd or -errno. */
static int ring_try_connect(int family, const struct sockaddr *sa, socklen_t salen,
			    int64_t deadline)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, err, n, flags, wait;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	ring_tune_socket(fd, family);

	if (connect(fd, sa, salen) < 0) {
		err = errno;
		if (err != EINPROGRESS)
			goto err_close;
		/* Non-blocking so that an unreachable host cannot hold us for
		 * the kernel's SYN retry period (minutes) past our deadline. */
		wait = ring_left_ms(deadline);
		if (wait >= 0 && wait < RING_HANDSHAKE_MIN_MS)
			wait = RING_HANDSHAKE_MIN_MS;
		pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
		do {
			n = poll(&pfd, 1, wait);
		} while (n < 0 && errno == EINTR);
		if (n < 0) {
			err = errno;
			goto err_close;
		}
		if (n == 0) {
			err = ETIMEDOUT;
			goto err_close;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err)
			goto err_close;
	}
	if (family != AF_UNIX && ring_self_connected(fd)) {
		err = ECONNREFUSED;
		goto err_close;
	}

	/* The data path does not depend on it (io_uring never blocks on a
	 * socket), but hand callers an ordinary blocking socket. */
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		err = errno;
		goto err_close;
	}
	return fd;

err_close:
	close(fd);
	return -err;
}

/* The peer behind beside has closed (or sent something, which a peer
 * being connected to does not do): it will not accept us either. */
static bool ring_beside_gone(struct ring_channel *beside)
{
	return beside && ring_poll_readable(beside, 0) != 0;
}

int ring_connect(const struct ring_uri *uri, int timeout_ms, struct ring_channel **out)
{
	return ring_connect_beside(uri, timeout_ms, NULL, out);
}

int ring_connect_beside(const struct ring_uri *uri, int timeout_ms, struct ring_channel *beside,
			struct ring_channel **out)
{
	int64_t deadline = ring_deadline(timeout_ms);
	struct addrinfo *res = NULL, *ai;
	struct sockaddr_un sa_un;
	socklen_t sa_unlen;
	int fd = -1, ret, left;
	bool retry;

	if (!uri || !out)
		return -EINVAL;
	switch (uri->kind) {
	case RING_URI_TCP:
		ret = ring_resolve(uri, false, &res, NULL);
		break;
	case RING_URI_UNIX:
		ret = ring_unix_addr(uri->path, sizeof(uri->path), &sa_un, &sa_unlen);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	if (ret)
		return ret;

	for (;;) {
		retry = false;
		if (res) {
			ret = -EADDRNOTAVAIL;
			for (ai = res; ai; ai = ai->ai_next) {
				fd = ring_try_connect(ai->ai_family, ai->ai_addr, ai->ai_addrlen,
						      deadline);
				if (fd >= 0)
					break;
				/* Report the refusal rather than, say, an
				 * unreachable IPv6 sibling address. */
				if (!retry)
					ret = fd;
				if (ring_connect_retryable(fd))
					retry = true;
			}
		} else {
			fd = ring_try_connect(AF_UNIX, (struct sockaddr *)&sa_un, sa_unlen, deadline);
			ret = fd;
			retry = ring_connect_retryable(fd);
		}
		if (fd >= 0)
			break;
		left = ring_left_ms(deadline);
		if (!retry || left == 0)
			goto out;
		if (ring_beside_gone(beside)) {
			ret = -ECONNRESET;
			goto out;
		}
		ring_sleep_ms(left < 0 || left > RING_CONNECT_RETRY_MS ? RING_CONNECT_RETRY_MS
								       : left);
	}

	ret = ring_channel_new(fd, out);
	if (ret)
		close(fd);
out:
	if (res)
		freeaddrinfo(res);
	return ret;
}
