/* ring/accept-opening.c — accept by an opening: the first connection that sends
 * the expected first bytes, among strays (docs/transport.md).
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ring/ring-int.h"

/* ------------------------------------------------- accept by an opening */

/* A connection accepted but not yet taken: it has until deadline (-1:
 * for ever) to send the opening.  retry_at: it sent part of it, look again
 * then (0: wait for input). */
struct ring_candidate {
	int fd;
	int64_t deadline, retry_at;
	bool kept;		/* opened with the `also` bytes: for ring_accept() */
};

struct ring_candidates {
	struct ring_candidate c[RING_MAX_CANDIDATES];
	unsigned int nr;
	const struct ring_opening *o;
};

/* How long a candidate that sent part of the opening waits before it is
 * looked at again: a peer's opening split over two segments is taken a
 * few ms late, and a peer that stops half-way costs no busy loop. */
#define RING_PARTIAL_RETRY_MS 5

static void ring_peer_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(buf, len, "a peer");
	} else if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "a unix socket peer");
	}
}

static void ring_candidate_drop(struct ring_candidates *cs, unsigned int i, const char *why, ...)
{
	char peer[INET6_ADDRSTRLEN + 16], text[256];
	va_list ap;

	if (cs->o->dropped) {
		ring_peer_name(cs->c[i].fd, peer, sizeof(peer));
		va_start(ap, why);
		vsnprintf(text, sizeof(text), why, ap);
		va_end(ap);
		cs->o->dropped(cs->o->opaque, peer, text);
	}
	close(cs->c[i].fd);
	cs->c[i] = cs->c[--cs->nr];
}

/* Do the n bytes of buf begin like magic (of match bytes)? */
static bool ring_opens_like(const uint8_t *buf, size_t n, const void *magic, size_t match)
{
	return magic && !memcmp(buf, magic, n < match ? n : match);
}

/* 1: the candidate sent the whole opening, 0: not yet (or kept), -1:
 * dropped. */
static int ring_candidate_check(struct ring_candidates *cs, unsigned int i, bool hung_up)
{
	const struct ring_opening *o = cs->o;
	struct ring_candidate *c = &cs->c[i];
	uint8_t buf[RING_OPENING_MAX];
	ssize_t n = recv(c->fd, buf, o->len, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		n = 0;
	else if (n < 0) {
		ring_candidate_drop(cs, i, "%s", strerror(errno));
		return -1;
	}
	bool ours = ring_opens_like(buf, (size_t)n, o->bytes, o->match);
	bool also = ring_opens_like(buf, (size_t)n, o->also, o->also_match);

	if (also && !ours && (size_t)n >= o->also_match) {
		c->kept = true;		/* the reader sees these bytes again */
		c->retry_at = 0;
		return 0;
	}
	if (!ours && !also) {
		ring_candidate_drop(cs, i, "it did not open with %s", o->what);
		return -1;
	}
	if ((size_t)n == o->len)
		return 1;
	if (hung_up) {
		ring_candidate_drop(cs, i, "it closed after %zd of the %zu bytes of %s", n, o->len, o->what);
		return -1;
	}
	if (n > 0)
		c->retry_at = kmig_now_ms() + RING_PARTIAL_RETRY_MS;
	return 0;
}

/* Close every candidate but except and, with keep_kept, the kept ones. */
static void ring_candidates_close(struct ring_candidates *cs, int except, bool keep_kept)
{
	unsigned int left = 0;

	for (unsigned int i = 0; i < cs->nr; i++) {
		if (cs->c[i].fd == except)
			continue;
		if (keep_kept && cs->c[i].kept)
			cs->c[left++] = cs->c[i];
		else
			close(cs->c[i].fd);
	}
	cs->nr = left;
}

/* Drop candidates past their deadline and look again at those due for
 * it; the index of one that sent its whole opening, or -1. */
static int ring_candidates_due(struct ring_candidates *cs)
{
	int64_t now = kmig_now_ms();

	for (unsigned int i = 0; i < cs->nr;) {
		struct ring_candidate *c = &cs->c[i];

		if (c->kept) {
			i++;
			continue;
		}
		if (c->deadline >= 0 && now >= c->deadline) {
			ring_candidate_drop(cs, i, "it sent nothing within %d ms (expected %s)", cs->o->idle_ms, cs->o->what);
			continue;
		}
		if (c->retry_at && now >= c->retry_at) {
			c->retry_at = 0;
			int r = ring_candidate_check(cs, i, false);

			if (r > 0)
				return (int)i;
			if (r < 0)
				continue;
		}
		i++;
	}
	return -1;
}

/* The poll set (listener, abort, candidates) and the time to wake up. */
static nfds_t ring_candidates_pollset(struct ring_listener *l, struct ring_candidates *cs, struct pollfd *pfd,
				      int64_t *wake)
{
	nfds_t n = 2;

	pfd[0] = (struct pollfd){ .fd = l->fd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = l->abort_fd, .events = POLLIN };
	for (unsigned int i = 0; i < cs->nr; i++) {
		const struct ring_candidate *c = &cs->c[i];
		int64_t t = c->retry_at ? c->retry_at : c->deadline;

		if (c->kept)	/* readable until ring_accept() takes it */
			continue;
		/* a partial opening stays readable: only a hang-up matters
		 * until its retry */
		pfd[n++] = (struct pollfd){ .fd = c->fd, .events = (short)(c->retry_at ? POLLRDHUP
									       : POLLIN | POLLRDHUP) };
		if (t >= 0 && (*wake < 0 || t < *wake))
			*wake = t;
	}
	return n;
}

/* Look at the candidates poll woke for; the index of a winner or -1. */
static int ring_candidates_ready(struct ring_candidates *cs, const struct pollfd *pfd, nfds_t npfd)
{
	/* checking may drop candidates (reordering the array): go by fd */
	for (nfds_t k = 2; k < npfd; k++) {
		if (!pfd[k].revents)
			continue;
		for (unsigned int i = 0; i < cs->nr; i++) {
			if (cs->c[i].fd != pfd[k].fd)
				continue;
			bool hup = pfd[k].revents & (POLLRDHUP | POLLHUP | POLLERR);

			if ((pfd[k].revents & POLLIN) || hup) {
				cs->c[i].retry_at = 0;
				if (ring_candidate_check(cs, i, hup) > 0)
					return (int)i;
			}
			break;
		}
	}
	return -1;
}

static int ring_candidates_add(struct ring_listener *l, struct ring_candidates *cs)
{
	int fd, r = ring_accept_fd(l, &fd);

	if (r)
		return r == -EAGAIN ? 0 : r;
	if (cs->nr == RING_MAX_CANDIDATES)	/* the oldest has waited longest */
		ring_candidate_drop(cs, 0, "more than %u connections were waiting", RING_MAX_CANDIDATES);
	cs->c[cs->nr++] = (struct ring_candidate){
		.fd = fd, .deadline = cs->o->idle_ms > 0 ? kmig_now_ms() + cs->o->idle_ms : -1 };
	return 0;
}

static int ring_candidates_take(struct ring_candidates *cs, int i, struct ring_channel **out)
{
	int fd = cs->c[i].fd;

	/* With `also`, a candidate that has sent nothing wrong yet may be an
	 * early connection of the same peer whose first bytes are still on
	 * their way: kept too.  ring_accept()'s caller checks what it sends. */
	for (unsigned int k = 0; cs->o->also && k < cs->nr; k++)
		cs->c[k].kept = true;
	if (cs->o->keep_others)
		cs->c[i] = cs->c[--cs->nr];
	else
		ring_candidates_close(cs, fd, true);
	return ring_channel_from_fd(fd, out);
}

int ring_candidates_take_kept(struct ring_listener *l, struct ring_channel **out)
{
	struct ring_candidates *cs = l->cands;

	for (unsigned int i = 0; cs && i < cs->nr; i++) {
		if (!cs->c[i].kept)
			continue;
		int fd = cs->c[i].fd;

		cs->c[i] = cs->c[--cs->nr];
		return ring_channel_from_fd(fd, out);
	}
	return -ENOENT;
}

void ring_candidates_free(struct ring_listener *l)
{
	if (l->cands)
		ring_candidates_close(l->cands, -1, false);
	free(l->cands);
	l->cands = NULL;
}

int ring_accept_opening(struct ring_listener *l, const struct ring_opening *o, struct ring_channel **out,
			int timeout_ms)
{
	struct pollfd pfd[2 + RING_MAX_CANDIDATES];
	int64_t deadline = ring_deadline(timeout_ms);
	int n, r, won;

	if (!l || !o || !out || !o->len || o->len > RING_OPENING_MAX || o->match > o->len)
		return -EINVAL;
	if (!l->cands && !(l->cands = calloc(1, sizeof(*l->cands))))
		return -ENOMEM;
	struct ring_candidates *cs = l->cands;

	cs->o = o;
	for (;;) {
		if ((won = ring_candidates_due(cs)) >= 0)
			return ring_candidates_take(cs, won, out);
		int64_t wake = deadline;
		nfds_t npfd = ring_candidates_pollset(l, cs, pfd, &wake);

		n = poll(pfd, npfd, ring_left_ms(wake));
		if (n < 0 && errno == EINTR)
			continue;
		/* the eventfd is never drained: once aborted, stay aborted */
		r = n < 0 ? -errno : pfd[1].revents ? -ECANCELED : 0;
		if (!r && (won = ring_candidates_ready(cs, pfd, npfd)) >= 0)
			return ring_candidates_take(cs, won, out);
		if (!r && deadline >= 0 && kmig_now_ms() >= deadline)
			r = -ETIMEDOUT;
		if (!r && (pfd[0].revents & POLLIN))
			r = ring_candidates_add(l, cs);
		if (r) {
			if (!o->keep_others)
				ring_candidates_close(cs, -1, true);
			return r;
		}
	}
}
