/* ring/listen.c — listeners: bind, listen (a stale unix socket replaced), accept,
 * abort and close.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------------ listeners */

static int ring_listen_tcp(struct ring_listener *l)
{
	struct addrinfo *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int fd = -1, one = 1, ret;
	unsigned port;

	ret = ring_resolve(&l->uri, true, &res, NULL);
	if (ret)
		return ret;

	/* Bind the first address that works.  A name with several addresses
	 * (localhost → 127.0.0.1, ::1) still yields a reachable listener:
	 * ring_connect() tries every address of the same name. */
	ret = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		/* A destination restarted right after a failed migration must
		 * be able to rebind while old connections sit in TIME_WAIT. */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		ring_tune_socket(fd, ai->ai_family);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, RING_BACKLOG) == 0) {
			l->family = ai->ai_family;
			break;
		}
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ret;

	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (ss.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	snprintf(l->uri.port, sizeof(l->uri.port), "%u", port);
	l->fd = fd;
	return 0;

err_close:
	close(fd);
	return ret;
}

/* Remove a socket file left behind by a dead listener, but never a live
 * listener's (that would silently steal its address) nor a non-socket. */
static int ring_unlink_stale(const struct sockaddr_un *sa, socklen_t salen)
{
	struct stat st;
	int probe, err;

	if (lstat(sa->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;

	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return -errno;
	err = connect(probe, (const struct sockaddr *)sa, salen) < 0 ? errno : 0;
	close(probe);
	/* EAGAIN: somebody is listening, its backlog is just full. */
	if (err == 0 || err == EAGAIN)
		return -EADDRINUSE;
	if (err != ECONNREFUSED)
		return -err;
	if (unlink(sa->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int ring_listen_unix(struct ring_listener *l)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct stat st;
	int fd, ret;

	ret = ring_unix_addr(l->uri.path, sizeof(l->uri.path), &sa, &salen);
	if (ret)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	ring_tune_socket(fd, AF_UNIX);

	ret = ring_unlink_stale(&sa, salen);
	if (ret)
		goto err_close;
	if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
		ret = -errno;
		goto err_close;
	}
	/* Remember which file we created, so close never unlinks a socket
	 * somebody else has bound at the same path since. */
	if (stat(sa.sun_path, &st) == 0) {
		l->unlink_on_close = true;
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	if (listen(fd, RING_BACKLOG) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	l->family = AF_UNIX;
	l->fd = fd;
	return 0;

err_unlink:
	unlink(sa.sun_path);
err_close:
	close(fd);
	return ret;
}

int ring_listen(const struct ring_uri *uri, struct ring_listener **out)
{
	struct ring_listener *l;
	int ret;

	if (!uri || !out)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->uri = *uri;
	l->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->abort_fd < 0) {
		ret = -errno;
		goto err_free;
	}

	switch (uri->kind) {
	case RING_URI_TCP:
		ret = ring_listen_tcp(l);
		break;
	case RING_URI_UNIX:
		ret = ring_listen_unix(l);
		break;
	default:
		ret = -EINVAL;
		break;
	}
	if (ret)
		goto err_abort_fd;
	*out = l;
	return 0;

err_abort_fd:
	close(l->abort_fd);
err_free:
	free(l);
	return ret;
}

void ring_listener_uri(const struct ring_listener *l, struct ring_uri *uri)
{
	if (l && uri)
		*uri = l->uri;
}

/* Accept one pending connection: 0 with *fdp, -EAGAIN when there was
 * none after all (a connection reset between poll and accept costs a loop,
 * not a hang: the listener is non-blocking; Linux also reports some pending
 * network errors through accept(2)), other -errno on failure. */
int ring_accept_fd(struct ring_listener *l, int *fdp)
{
	int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
	int err = errno;

	if (fd >= 0) {
		/* Linux copies these from the listener, but only by implementation. */
		ring_tune_socket(fd, l->family);
		*fdp = fd;
		return 0;
	}
	if (err == EAGAIN || err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
	    err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH || err == EOPNOTSUPP ||
	    err == ENETUNREACH)
		return -EAGAIN;
	return -err;
}

int ring_channel_from_fd(int fd, struct ring_channel **out)
{
	int ret = ring_channel_new(fd, out);

	if (ret)
		close(fd);
	return ret;
}

int ring_accept(struct ring_listener *l, struct ring_channel **out, int timeout_ms)
{
	int64_t deadline = ring_deadline(timeout_ms);
	struct pollfd pfd[2];
	int fd, n, r;

	if (!l || !out)
		return -EINVAL;
	/* a peer that connected while ring_accept_opening() waited for
	 * another (a source's RAM channel before its main stream's opening) */
	if ((r = ring_candidates_take_kept(l, out)) != -ENOENT)
		return r;
	for (;;) {
		pfd[0] = (struct pollfd){ .fd = l->fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = l->abort_fd, .events = POLLIN };
		n = poll(pfd, 2, ring_left_ms(deadline));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* The eventfd is never drained: once aborted, stay aborted. */
		if (pfd[1].revents)
			return -ECANCELED;
		if (n == 0)
			return -ETIMEDOUT;
		r = ring_accept_fd(l, &fd);
		if (r == -EAGAIN)
			continue;
		if (r)
			return r;
		return ring_channel_from_fd(fd, out);
	}
}

void ring_listener_abort(struct ring_listener *l)
{
	uint64_t one = 1;

	if (!l)
		return;
	/* Can only fail with EAGAIN once the counter is near overflow, which
	 * leaves it readable anyway. */
	if (write(l->abort_fd, &one, sizeof(one)) < 0)
		return;
}

void ring_listener_close(struct ring_listener *l)
{
	struct stat st;

	if (!l)
		return;
	/* Unlink before close: a client racing with us then sees ENOENT (and
	 * retries) rather than a socket file nobody will ever accept on. */
	if (l->unlink_on_close && stat(l->uri.path, &st) == 0 && st.st_dev == l->dev &&
	    st.st_ino == l->ino)
		unlink(l->uri.path);
	ring_candidates_free(l);
	close(l->fd);
	close(l->abort_fd);
	free(l);
}
