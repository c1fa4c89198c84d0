/* ring/ring.c — migration transport over TCP and unix stream sockets.
 *
 * Connection setup (resolve, bind, listen, connect, accept) uses plain
 * syscalls; every byte of the data path moves through the channel's own
 * io_uring, one SQE at a time, submitted and reaped by the calling thread.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include "ring/ring.h"

/* Every operation is synchronous (one SQE in flight), but a zero-copy send
 * leaves a notification CQE behind for each of up to RING_ZC_SLOTS sends
 * still referencing memory: the CQ ring (twice the SQ) must hold them all. */
#define RING_QUEUE_DEPTH 32

/* Zero-copy sends in flight per channel, each with a copy of its small
 * transient prefix (record and page headers) that must stay unchanged until
 * the kernel's notification says the skbs are gone. */
#define RING_ZC_SLOTS 16
#define RING_ZC_PREFIX_MAX 16384

/* user_data of operations; a zero-copy send's notification carries its
 * slot in the low bits. */
#define RING_UD_OP 1ull
#define RING_UD_ZC_BASE 0x100ull

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

/* Splice receive: a pipe of this size carries payload from the socket to
 * the guest memfd (the kernel's default pipe-max-size is 1 MiB). */
#define RING_PIPE_SIZE (1 << 20)

/* The kernel rejects msg_iovlen above UIO_MAXIOV (1024) with EMSGSIZE. */
#define RING_IOV_BATCH 1024

/* sqe->len is 32 bits; keep a single RECV well inside it (and inside the
 * kernel's MAX_RW_COUNT, which would silently shorten it anyway). */
#define RING_MAX_RECV (1u << 30)

/* What sits in the socket buffers when migration stops the guest is sent
 * during the downtime, unseen by the pending figure the switchover was
 * decided on: with 4 MiB a side, 1 GiB idle on loopback took 11-13 ms of
 * downtime against 2 ms with 1 MiB, at the same throughput (and 33 ms with
 * 4 multifd channels).  1 MiB still covers 10 Gbit/s up to 0.8 ms RTT. */
#define RING_SOCKBUF (1 << 20)
#define RING_BACKLOG 64
#define RING_CONNECT_RETRY_MS 20
/* A single connect attempt's handshake gets at least this long even when the
 * retry budget is smaller, so timeout_ms = 0 means "one attempt", not "give
 * up on any handshake that is not instantaneous". */
#define RING_HANDSHAKE_MIN_MS 1000

#define RING_URI_EXPECTED "expected tcp:HOST:PORT or unix:PATH"

struct ring_channel {
	int fd;
	int aborted;		/* __atomic: set by ring_channel_abort() */
	int broken;		/* sticky -errno after an io_uring failure */
	uint64_t bytes_sent;	/* __atomic: may be read by another thread */
	uint64_t bytes_received;
	struct io_uring ring;
	/* zero-copy sends: slot i busy until its notification arrives */
	bool zc_busy[RING_ZC_SLOTS];
	unsigned int zc_inflight;
	uint64_t zc_sends, zc_copied;	/* __atomic: notifications, of them copied */
	uint8_t *zc_prefix;		/* RING_ZC_SLOTS * RING_ZC_PREFIX_MAX */
	int pipe[2];			/* splice receive, created on first use */
	size_t pipe_size;
	int timeout_ms;			/* no completion for this long: -ETIMEDOUT; 0 = none */
};

struct ring_listener {
	int fd;
	int abort_fd;		/* eventfd, readable once aborted */
	int family;
	struct ring_uri uri;	/* as asked for, with the real tcp port */
	bool unlink_on_close;
	dev_t dev;		/* identity of the socket file we created */
	ino_t ino;
};

/* ---------------------------------------------------------------- time */

static int64_t ring_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ring_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : ring_now_ms() + timeout_ms;
}

/* Milliseconds left before deadline, as a poll(2) timeout (-1 = forever). */
static int ring_left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - ring_now_ms();
	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

static void ring_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	/* An early wake-up only shortens one retry interval. */
	nanosleep(&ts, NULL);
}

/* ----------------------------------------------------------------- URIs */

static void __attribute__((format(printf, 3, 4)))
ring_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Strict decimal 0..65535: digits only, no sign, no spaces, no junk. */
static int ring_parse_port(const char *s, unsigned *port)
{
	unsigned v = 0;
	size_t n = 0;

	for (; s[n]; n++) {
		if (n >= 5 || s[n] < '0' || s[n] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (!n || v > 65535)
		return -EINVAL;
	*port = v;
	return 0;
}

static bool ring_host_char_ok(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* "[...]" must hold an IPv6 literal, optionally with a %zone suffix. */
static bool ring_v6_literal_ok(const char *s)
{
	char addr[INET6_ADDRSTRLEN];
	struct in6_addr a;
	const char *zone = strchr(s, '%');
	size_t alen = zone ? (size_t)(zone - s) : strlen(s);

	if (!alen || alen >= sizeof(addr))
		return false;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET6, addr, &a) != 1)
		return false;
	if (zone) {
		if (!zone[1])
			return false;
		for (const char *p = zone + 1; *p; p++)
			if (!ring_host_char_ok(*p))
				return false;
	}
	return true;
}

static int ring_parse_tcp(const char *text, const char *rest, struct ring_uri *u,
			  char *err, size_t errlen)
{
	const char *host, *hend, *port;
	size_t hlen;
	unsigned portnum;

	if (*rest == '[') {
		host = rest + 1;
		hend = strchr(host, ']');
		if (!hend) {
			ring_seterr(err, errlen, "unterminated '[' in '%s' (%s)", text,
				    RING_URI_EXPECTED);
			return -EINVAL;
		}
		if (hend[1] != ':') {
			if (hend[1])
				ring_seterr(err, errlen, "unexpected '%c' after ']' in '%s' (%s)",
					    hend[1], text, RING_URI_EXPECTED);
			else
				ring_seterr(err, errlen, "missing port in '%s' (%s)", text,
					    RING_URI_EXPECTED);
			return -EINVAL;
		}
		port = hend + 2;
	} else {
		host = rest;
		hend = strchr(host, ':');
		if (!hend) {
			ring_seterr(err, errlen, "missing port in '%s' (%s)", text,
				    RING_URI_EXPECTED);
			return -EINVAL;
		}
		port = hend + 1;
		if (strchr(port, ':')) {
			ring_seterr(err, errlen,
				    "too many ':' in '%s' (write IPv6 addresses in brackets: tcp:[::1]:PORT)",
				    text);
			return -EINVAL;
		}
	}

	hlen = (size_t)(hend - host);
	if (!hlen) {
		ring_seterr(err, errlen, "empty host in '%s' (%s)", text, RING_URI_EXPECTED);
		return -EINVAL;
	}
	if (hlen >= sizeof(u->host)) {
		ring_seterr(err, errlen, "host too long in '%s' (%zu bytes, at most %zu)", text,
			    hlen, sizeof(u->host) - 1);
		return -EINVAL;
	}
	memcpy(u->host, host, hlen);
	u->host[hlen] = '\0';

	if (*rest == '[') {
		if (!ring_v6_literal_ok(u->host)) {
			ring_seterr(err, errlen, "bad IPv6 address '[%s]' in '%s'", u->host, text);
			return -EINVAL;
		}
	} else {
		for (size_t i = 0; i < hlen; i++) {
			if (!ring_host_char_ok(u->host[i])) {
				ring_seterr(err, errlen, "bad character '%c' in host '%s' of '%s'",
					    u->host[i], u->host, text);
				return -EINVAL;
			}
		}
	}

	if (ring_parse_port(port, &portnum)) {
		ring_seterr(err, errlen, "bad port '%s' in '%s' (expected a decimal number 0..65535)",
			    port, text);
		return -EINVAL;
	}
	/* canonical form: "04444" and "4444" are the same port */
	snprintf(u->port, sizeof(u->port), "%u", portnum);
	u->kind = RING_URI_TCP;
	return 0;
}

static int ring_parse_unix(const char *text, const char *path, struct ring_uri *u,
			   char *err, size_t errlen)
{
	size_t len = strlen(path);

	if (!len) {
		ring_seterr(err, errlen, "empty socket path in '%s' (expected unix:PATH)", text);
		return -EINVAL;
	}
	/* sun_path must also hold the terminating NUL */
	if (len >= sizeof(u->path)) {
		ring_seterr(err, errlen,
			    "unix socket path too long (%zu bytes, at most %zu): '%s' (%s)",
			    len, sizeof(u->path) - 1, path, strerror(ENAMETOOLONG));
		return -EINVAL;
	}
	memcpy(u->path, path, len + 1);
	u->kind = RING_URI_UNIX;
	return 0;
}

int ring_uri_parse(const char *text, struct ring_uri *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	const char *colon;
	size_t slen;
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (!uri) {
		ring_seterr(err, errlen, "no URI to parse into");
		return -EINVAL;
	}
	if (!text || !*text) {
		ring_seterr(err, errlen, "empty migration URI (%s)", RING_URI_EXPECTED);
		return -EINVAL;
	}
	colon = strchr(text, ':');
	if (!colon) {
		ring_seterr(err, errlen, "missing scheme in URI '%s' (%s)", text, RING_URI_EXPECTED);
		return -EINVAL;
	}

	memset(&u, 0, sizeof(u));
	slen = (size_t)(colon - text);
	if (slen == 3 && !memcmp(text, "tcp", 3)) {
		ret = ring_parse_tcp(text, colon + 1, &u, err, errlen);
	} else if (slen == 4 && !memcmp(text, "unix", 4)) {
		ret = ring_parse_unix(text, colon + 1, &u, err, errlen);
	} else if ((slen == 4 && !memcmp(text, "exec", 4)) || (slen == 2 && !memcmp(text, "fd", 2))) {
		ring_seterr(err, errlen,
			    "'%.*s:' migration URIs are not supported by kmig (%s)",
			    (int)slen, text, RING_URI_EXPECTED);
		ret = -EINVAL;
	} else {
		ring_seterr(err, errlen, "unsupported URI scheme '%.*s' (%s)",
			    slen > 32 ? 32 : (int)slen, text, RING_URI_EXPECTED);
		ret = -EINVAL;
	}
	if (ret)
		return ret;
	*uri = u;
	return 0;
}

void ring_uri_format(const struct ring_uri *uri, char *buf, size_t len)
{
	int hlen, plen;
	bool bracket;

	if (!buf || !len)
		return;
	if (!uri) {
		buf[0] = '\0';
		return;
	}
	switch (uri->kind) {
	case RING_URI_TCP:
		/* strnlen: a hand-built struct need not be NUL-terminated */
		hlen = (int)strnlen(uri->host, sizeof(uri->host));
		plen = (int)strnlen(uri->port, sizeof(uri->port));
		bracket = memchr(uri->host, ':', (size_t)hlen) && uri->host[0] != '[';
		snprintf(buf, len, bracket ? "tcp:[%.*s]:%.*s" : "tcp:%.*s:%.*s",
			 hlen, uri->host, plen, uri->port);
		break;
	case RING_URI_UNIX:
		snprintf(buf, len, "unix:%.*s", (int)strnlen(uri->path, sizeof(uri->path)),
			 uri->path);
		break;
	default:
		snprintf(buf, len, "invalid:");
		break;
	}
}

/* ------------------------------------------------------ socket helpers */

static void ring_tune_socket(int fd, int family)
{
	int one = 1, size = RING_SOCKBUF;

	/* Best effort: the kernel clamps these to net.core.[wr]mem_max, and a
	 * smaller buffer costs throughput, never correctness.  They must be set
	 * before connect()/listen(): the receive buffer size decides the TCP
	 * window scale offered in the SYN, and accepted sockets inherit the
	 * listener's sizes. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	/* Records are handed over whole; Nagle would only hold back the small
	 * ones (a lone header, the destination's final status) waiting for
	 * the peer's delayed ACK. */
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Copy the tcp host for getaddrinfo(), dropping "[...]" around IPv6. */
static int ring_host_copy(const struct ring_uri *uri, char *out, size_t outlen)
{
	size_t len = strnlen(uri->host, sizeof(uri->host));
	const char *h = uri->host;

	if (len == sizeof(uri->host))
		return -ENAMETOOLONG;
	if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
		h++;
		len -= 2;
	}
	if (!len || len >= outlen)
		return -EINVAL;
	memcpy(out, h, len);
	out[len] = '\0';
	return 0;
}

/* gai, when not NULL, receives getaddrinfo()'s own code for messages. */
static int ring_resolve(const struct ring_uri *uri, bool passive, struct addrinfo **res, int *gai)
{
	/* No AI_ADDRCONFIG: glibc ignores loopback when deciding which
	 * families are "configured", which would make tcp:[::1]:PORT fail
	 * on hosts with only a loopback IPv6 address. */
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	char host[sizeof(uri->host)];
	unsigned port;
	int ret;

	ret = ring_host_copy(uri, host, sizeof(host));
	if (ret)
		return ret;
	if (strnlen(uri->port, sizeof(uri->port)) == sizeof(uri->port) ||
	    ring_parse_port(uri->port, &port))
		return -EINVAL;
	if (!passive && port == 0)
		return -EINVAL;

	ret = getaddrinfo(host, uri->port, &hints, res);
	if (gai)
		*gai = ret;
	switch (ret) {
	case 0:
		return 0;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_SERVICE:
	case EAI_BADFLAGS:
	case EAI_FAMILY:
	case EAI_SOCKTYPE:
		return -EINVAL;
	default:		/* EAI_NONAME, EAI_NODATA, EAI_FAIL, ... */
		return -EHOSTUNREACH;
	}
}

int ring_uri_resolve(const struct ring_uri *uri, bool passive, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	int gai = 0, ret;

	if (uri->kind != RING_URI_TCP)
		return 0;
	ret = ring_resolve(uri, passive, &res, &gai);
	if (!ret)
		freeaddrinfo(res);
	else if (gai && gai != EAI_SYSTEM)
		snprintf(err, errlen, "cannot resolve host '%s': %s", uri->host, gai_strerror(gai));
	else
		snprintf(err, errlen, "cannot resolve host '%s' (port %s): %s", uri->host, uri->port,
			 strerror(-ret));
	return ret;
}

static int ring_unix_addr(const char *path, size_t pathmax, struct sockaddr_un *sa,
			  socklen_t *salen)
{
	size_t len = strnlen(path, pathmax);

	if (!len)
		return -EINVAL;
	if (len == pathmax || len >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, len + 1);
	*salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	return 0;
}

/* ------------------------------------------------------------- channels */

static int ring_channel_new(int fd, struct ring_channel **out)
{
	struct ring_channel *ch;
	int ret;

	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
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
	*out = ch;
	return 0;

err_free:
	free(ch);
	return ret;
}

static int ring_check(const struct ring_channel *ch)
{
	if (__atomic_load_n(&ch->aborted, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	return ch->broken;
}

/* Map a failed or truncated transfer to what the caller should see. */
static int ring_io_error(const struct ring_channel *ch, int res)
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
static void ring_zc_notified(struct ring_channel *ch, const struct io_uring_cqe *cqe)
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
static int ring_reap(struct ring_channel *ch, bool submit, int *res, unsigned int *flags)
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
static int ring_run(struct ring_channel *ch, int *res)
{
	bool submit = true;
	int ret;

	while ((ret = ring_reap(ch, submit, res, NULL)) == 0)
		submit = false;
	return ret < 0 ? ret : 0;
}

static void ring_account(struct ring_channel *ch, bool send, int n)
{
	__atomic_fetch_add(send ? &ch->bytes_sent : &ch->bytes_received, (uint64_t)n,
			   __ATOMIC_RELAXED);
}

/* Move every byte of iov[] with one SENDMSG/RECVMSG per batch of at most
 * RING_IOV_BATCH iovecs.  MSG_WAITALL makes the kernel itself retry short
 * transfers on stream sockets; the loop covers what it still returns short
 * (signals, errors after partial progress, MAX_RW_COUNT). */
static int ring_xfer(struct ring_channel *ch, bool send, const struct iovec *iov, int iovcnt)
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
			io_uring_prep_sendmsg(sqe, ch->fd, &msg, MSG_NOSIGNAL | MSG_WAITALL);
		else
			io_uring_prep_recvmsg(sqe, ch->fd, &msg, MSG_WAITALL);

		ret = ring_run(ch, &res);
		if (ret)
			return ret;
		if (res == -EINTR)
			continue;
		if (res < 0)
			return ring_io_error(ch, res);
		if (res == 0)	/* EOF on recv; no progress possible on send */
			return ring_io_error(ch, -EPIPE);
		ring_account(ch, send, res);

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

int ring_sendv(struct ring_channel *ch, const struct iovec *iov, int iovcnt)
{
	return ring_xfer(ch, true, iov, iovcnt);
}

int ring_send(struct ring_channel *ch, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	if (len && !buf)
		return -EINVAL;
	return ring_xfer(ch, true, &iov, 1);
}

int ring_recvv(struct ring_channel *ch, const struct iovec *iov, int iovcnt)
{
	return ring_xfer(ch, false, iov, iovcnt);
}

int ring_recv(struct ring_channel *ch, void *buf, size_t len)
{
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
		ret = ring_run(ch, &res);
		if (ret)
			return ret;
		if (res == -EINTR)
			continue;
		if (res < 0)
			return ring_io_error(ch, res);
		if (res == 0)
			return ring_io_error(ch, -EPIPE);
		ring_account(ch, false, res);
		done += (size_t)res;
	}
	return 0;
}

/* ------------------------------------------------------ zero-copy send */

/* Wait for one notification, so that a slot frees up. */
static int ring_zc_wait_one(struct ring_channel *ch)
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

static int ring_zc_slot(struct ring_channel *ch)
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
static int ring_zc_submit(struct ring_channel *ch, int slot, struct msghdr *msg, int *sent)
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

int ring_sendv_zc(struct ring_channel *ch, const struct iovec *iov, int iovcnt, size_t prefix)
{
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

int ring_zc_flush(struct ring_channel *ch)
{
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

void ring_zc_stats(const struct ring_channel *ch, uint64_t *sends, uint64_t *copied)
{
	*sends = ch ? __atomic_load_n(&ch->zc_sends, __ATOMIC_RELAXED) : 0;
	*copied = ch ? __atomic_load_n(&ch->zc_copied, __ATOMIC_RELAXED) : 0;
}

/* ------------------------------------------------------ splice receive */

static int ring_pipe_open(struct ring_channel *ch)
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
int ring_recv_splice(struct ring_channel *ch, int fd, uint64_t off, size_t len)
{
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

int ring_poll_readable(struct ring_channel *ch, int timeout_ms)
{
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

void ring_channel_set_timeout(struct ring_channel *ch, int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (!ch || timeout_ms < 0)
		return;
	ch->timeout_ms = timeout_ms;
	/* the splice receive is a plain blocking syscall */
	setsockopt(ch->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

int ring_channel_timeout(const struct ring_channel *ch)
{
	return ch ? ch->timeout_ms : 0;
}

void ring_channel_abort(struct ring_channel *ch)
{
	if (!ch)
		return;
	/* Flag first, so the thread our shutdown wakes reports -ECANCELED
	 * instead of the -EPIPE the shutdown provokes.  shutdown() (unlike
	 * close()) keeps the fd number valid for that thread's pending
	 * io_uring request and wakes it through the socket's wait queue. */
	__atomic_store_n(&ch->aborted, 1, __ATOMIC_SEQ_CST);
	shutdown(ch->fd, SHUT_RDWR);
}

void ring_channel_stop_reading(struct ring_channel *ch)
{
	if (ch)
		shutdown(ch->fd, SHUT_RD);
}

void ring_channel_close(struct ring_channel *ch)
{
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

uint64_t ring_channel_bytes_sent(const struct ring_channel *ch)
{
	return ch ? __atomic_load_n(&ch->bytes_sent, __ATOMIC_RELAXED) : 0;
}

uint64_t ring_channel_bytes_received(const struct ring_channel *ch)
{
	return ch ? __atomic_load_n(&ch->bytes_received, __ATOMIC_RELAXED) : 0;
}

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
static int ring_accept_fd(struct ring_listener *l, int *fdp)
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

static int ring_channel_from_fd(int fd, struct ring_channel **out)
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

/* ------------------------------------------------- accept by an opening */

/* A connection accepted but not yet taken: it has until deadline (-1:
 * for ever) to send the opening.  retry_at: it sent part of it, look again
 * then (0: wait for input). */
struct ring_candidate {
	int fd;
	int64_t deadline, retry_at;
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

/* 1: the candidate sent the whole opening, 0: not yet, -1: dropped. */
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
	if (memcmp(buf, o->bytes, (size_t)n < o->match ? (size_t)n : o->match)) {
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
		c->retry_at = ring_now_ms() + RING_PARTIAL_RETRY_MS;
	return 0;
}

static void ring_candidates_close(struct ring_candidates *cs, int except)
{
	for (unsigned int i = 0; i < cs->nr; i++)
		if (cs->c[i].fd != except)
			close(cs->c[i].fd);
	cs->nr = 0;
}

/* Drop candidates past their deadline and look again at those due for
 * it; the index of one that sent its whole opening, or -1. */
static int ring_candidates_due(struct ring_candidates *cs)
{
	int64_t now = ring_now_ms();

	for (unsigned int i = 0; i < cs->nr;) {
		struct ring_candidate *c = &cs->c[i];

		if (c->deadline >= 0 && now >= c->deadline) {
			ring_candidate_drop(cs, i, "it sent no %s within %d ms", cs->o->what, cs->o->idle_ms);
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
		.fd = fd, .deadline = cs->o->idle_ms > 0 ? ring_now_ms() + cs->o->idle_ms : -1 };
	return 0;
}

static int ring_candidates_take(struct ring_candidates *cs, int i, struct ring_channel **out)
{
	int fd = cs->c[i].fd;

	ring_candidates_close(cs, fd);
	return ring_channel_from_fd(fd, out);
}

int ring_accept_opening(struct ring_listener *l, const struct ring_opening *o, struct ring_channel **out,
			int timeout_ms)
{
	struct ring_candidates cs = { .o = o };
	struct pollfd pfd[2 + RING_MAX_CANDIDATES];
	int64_t deadline = ring_deadline(timeout_ms);
	int n, r, won;

	if (!l || !o || !out || !o->len || o->len > RING_OPENING_MAX || o->match > o->len)
		return -EINVAL;
	for (;;) {
		if ((won = ring_candidates_due(&cs)) >= 0)
			return ring_candidates_take(&cs, won, out);
		int64_t wake = deadline;
		nfds_t npfd = ring_candidates_pollset(l, &cs, pfd, &wake);

		n = poll(pfd, npfd, ring_left_ms(wake));
		if (n < 0 && errno == EINTR)
			continue;
		/* the eventfd is never drained: once aborted, stay aborted */
		r = n < 0 ? -errno : pfd[1].revents ? -ECANCELED : 0;
		if (!r && (won = ring_candidates_ready(&cs, pfd, npfd)) >= 0)
			return ring_candidates_take(&cs, won, out);
		if (!r && deadline >= 0 && ring_now_ms() >= deadline)
			r = -ETIMEDOUT;
		if (!r && (pfd[0].revents & POLLIN))
			r = ring_candidates_add(l, &cs);
		if (r) {
			ring_candidates_close(&cs, -1);
			return r;
		}
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
	close(l->fd);
	close(l->abort_fd);
	free(l);
}

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

int ring_connect(const struct ring_uri *uri, int timeout_ms, struct ring_channel **out)
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
