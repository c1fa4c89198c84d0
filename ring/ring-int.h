/* ring/ring-int.h — what the files of ring/ share and nobody else sees:
 * the channel and listener structs, the transport's constants, the
 * monotonic-clock helpers and the functions one file lends another.
 */
#ifndef KMIG_RING_INT_H
#define KMIG_RING_INT_H

#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>

#include <liburing.h>

#include "common/util.h"
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

/* The socket transport's channel: a connected TCP or unix socket and its
 * io_uring (channel.c), zero-copy slots (zerocopy.c), splice pipe
 * (splice.c). */
struct ring_sock {
	int fd;
	int aborted;		/* __atomic: set by the abort op */
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
	/* sendmsg's flags: MSG_WAITALL lets io_uring finish a send in one
	 * completion, but kTLS refuses it (ring_xfer loops either way) */
	int send_flags;
};

/* ---------------------------------------------------------- the seam */

/* A transport: how a channel's bytes move.  Every public channel function
 * (ring.h) dispatches to its channel's transport; the socket transport
 * (channel.c, zerocopy.c, splice.c) is the first, and a second (TLS) adds
 * a table and a constructor, not edits inside the first.  An op left NULL
 * is a capability the transport lacks: ring.h's functions then fall back
 * (a copying send for sendv_zc) or refuse (-EOPNOTSUPP for recv_splice),
 * and RING_CAP_* in caps says so up front. */
struct ring_transport {
	const char *name;
	unsigned int caps;		/* RING_CAP_* */
	int (*sendv)(void *impl, const struct iovec *iov, int iovcnt);
	int (*sendv_zc)(void *impl, const struct iovec *iov, int iovcnt, size_t prefix);
	int (*zc_flush)(void *impl);
	void (*zc_stats)(const void *impl, uint64_t *sends, uint64_t *copied);
	int (*recv)(void *impl, void *buf, size_t len);
	int (*recvv)(void *impl, const struct iovec *iov, int iovcnt);
	int (*recv_splice)(void *impl, int fd, uint64_t off, size_t len);
	int (*poll_readable)(void *impl, int timeout_ms);
	/* the connection's pending error (SO_ERROR) as -errno, or 0 */
	int (*socket_error)(void *impl);
	void (*set_timeout)(void *impl, int timeout_ms);
	int (*timeout)(const void *impl);
	void (*abort)(void *impl);
	void (*stop_reading)(void *impl);
	void (*close)(void *impl);
	uint64_t (*bytes_sent)(const void *impl);
	uint64_t (*bytes_received)(const void *impl);
};

struct ring_channel {
	const struct ring_transport *t;
	void *impl;			/* the transport's own state */
};

struct ring_listener {
	int fd;
	int abort_fd;		/* eventfd, readable once aborted */
	int family;
	struct ring_uri uri;	/* as asked for, with the real tcp port */
	bool unlink_on_close;
	dev_t dev;		/* identity of the socket file we created */
	ino_t ino;
	/* connections ring_accept_opening() holds between calls (with
	 * keep_others), closed with the listener */
	struct ring_candidates *cands;
};

/* ---------------------------------------------------------------- time */

static inline int64_t ring_deadline(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : kmig_now_ms() + timeout_ms;
}

/* Milliseconds left before deadline, as a poll(2) timeout (-1 = forever). */
static inline int ring_left_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - kmig_now_ms();
	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

static inline void ring_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	/* An early wake-up only shortens one retry interval. */
	nanosleep(&ts, NULL);
}

/* ------------------------------------------------ lent between files */

/* uri.c: a strict decimal port 0..65535; 0 or -EINVAL */
int ring_parse_port(const char *s, unsigned *port);
/* socket.c: buffer sizes and options every connected socket gets */
void ring_tune_socket(int fd, int family);
/* socket.c: getaddrinfo() for a tcp URI (passive: to listen on); gai, when
 * not NULL, receives getaddrinfo()'s own code */
int ring_resolve(const struct ring_uri *uri, bool passive, struct addrinfo **res, int *gai);
/* socket.c: a sockaddr_un for path (-EINVAL if empty, -ENAMETOOLONG if it
 * does not fit) */
int ring_unix_addr(const char *path, size_t pathmax, struct sockaddr_un *sa, socklen_t *salen);
/* channel.c: a socket-transport channel around a connected socket (takes
 * fd on success) */
int ring_channel_new(int fd, struct ring_channel **out);
/* zerocopy.c, splice.c: the socket transport's zero-copy and splice ops */
int ring_sock_sendv_zc(void *self, const struct iovec *iov, int iovcnt, size_t prefix);
int ring_sock_zc_flush(void *self);
void ring_sock_zc_stats(const void *self, uint64_t *sends, uint64_t *copied);
int ring_sock_recv_splice(void *self, int fd, uint64_t off, size_t len);
/* channel.c: 0, -ECANCELED once aborted, or the channel's sticky error */
int ring_check(const struct ring_sock *ch);
/* channel.c: an io_uring result turned into the channel's error */
int ring_io_error(const struct ring_sock *ch, int res);
/* channel.c: reap one CQE (waiting if submit is set or none is ready): 1
 * with *res for the operation's own completion, 0 for a zero-copy
 * notification (consumed there), -errno if the ring broke */
int ring_reap(struct ring_sock *ch, bool submit, int *res, unsigned int *flags);
/* channel.c: count n bytes sent or received */
void ring_account(struct ring_sock *ch, bool send, int n);
/* channel.c: move every byte of the iovecs, one SQE at a time */
int ring_xfer(struct ring_sock *ch, bool send, const struct iovec *iov, int iovcnt);
/* listen.c: accept one pending connection; -EAGAIN when there was none */
int ring_accept_fd(struct ring_listener *l, int *fdp);
/* accept-opening.c: close the candidates a listener still holds */
void ring_candidates_free(struct ring_listener *l);
/* A connection ring_accept_opening() kept (its `also` opening), or -ENOENT. */
int ring_candidates_take_kept(struct ring_listener *l, struct ring_channel **out);
/* listen.c: ring_channel_new(), closing fd on failure */
int ring_channel_from_fd(int fd, struct ring_channel **out);

#endif
