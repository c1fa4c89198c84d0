/* ring/ — the migration transport: byte channels over TCP or unix sockets,
 * driven through io_uring (liburing).
 *
 * A channel is used by one thread at a time (its io_uring is not shared).
 * Every function returns 0 (or a count) on success and -errno on failure; none
 * relies on errno.  A peer that closes early makes reads fail with -EPIPE, so
 * a truncated stream is never mistaken for a complete one.
 *
 * ring_sendv() takes iovecs that may point straight into guest memory, and
 * ring_sendv_zc() sends from there without a copy (IORING_OP_SENDMSG_ZC;
 * no buffers are registered with io_uring); a migration may open several
 * channels to one URI (multifd).
 */
#ifndef KMIG_RING_H
#define KMIG_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum ring_uri_kind { RING_URI_TCP, RING_URI_UNIX };

struct ring_uri {
	enum ring_uri_kind kind;
	char host[256];		/* tcp: host name or address ("[::1]" accepted) */
	char port[16];		/* tcp: decimal port, "0" = any (listen only) */
	char path[108];		/* unix: socket path */
};

/* Parse "tcp:HOST:PORT" or "unix:PATH".  On error returns -EINVAL and writes
 * a human-readable reason into err (if errlen > 0). */
int ring_uri_parse(const char *text, struct ring_uri *uri, char *err, size_t errlen);

/* Look a tcp URI's host up (as a listener when passive) without
 * connecting: -errno with a message naming the host, 0 for unix URIs.
 * Lets a caller refuse "tcp:no.such.host:4444" with that reason before
 * anything starts. */
int ring_uri_resolve(const struct ring_uri *uri, bool passive, char *err, size_t errlen);

/* A tcp URI's host as getaddrinfo() and QEMU's SocketAddress take it:
 * "::1" for "[::1]".  -EINVAL if empty or longer than outlen allows,
 * -ENAMETOOLONG if unterminated. */
int ring_uri_host(const struct ring_uri *uri, char *out, size_t outlen);

/* Format a URI back to text ("tcp:127.0.0.1:4444"). */
void ring_uri_format(const struct ring_uri *uri, char *buf, size_t len);

struct ring_listener;
struct ring_channel;

/* Bind and listen.  For tcp with port "0" the kernel picks a port:
 * ring_listener_uri() then tells which.  A stale unix socket file is
 * replaced. */
int ring_listen(const struct ring_uri *uri, struct ring_listener **out);
void ring_listener_uri(const struct ring_listener *l, struct ring_uri *uri);
/* Wait up to timeout_ms (-1 = forever) for one connection. -ETIMEDOUT on
 * timeout; -ECANCELED after ring_listener_abort().  A connection an earlier
 * ring_accept_opening() kept (its `also` opening) comes first. */
int ring_accept(struct ring_listener *l, struct ring_channel **out, int timeout_ms);
/* What a connection must send first for ring_accept_opening() to take it:
 * len bytes (at most RING_OPENING_MAX), of which the first match must equal
 * bytes (a magic); what names it in messages ("a kmig stream header"). */
#define RING_OPENING_MAX 64u
#define RING_MAX_CANDIDATES 16u
struct ring_opening {
	const void *bytes;
	size_t match, len;
	const char *what;
	/* a candidate that has not sent its opening this long after
	 * connecting is dropped (<= 0: never, but see RING_MAX_CANDIDATES) */
	int idle_ms;
	/* told about each connection dropped (may be NULL): peer is its
	 * address, why a sentence ("it did not open with ...") */
	void (*dropped)(void *opaque, const char *peer, const char *why);
	void *opaque;
	/* the other candidates stay with the listener for the next call
	 * (a caller that may still refuse the one it takes: TLS) instead of
	 * being closed; ring_listener_close() closes them */
	bool keep_others;
	/* connections that open with these also_match bytes instead are not
	 * strays either: peers that connected early (a source's RAM channels,
	 * while its main connection's opening is still on its way); they are
	 * neither taken nor dropped, and ring_accept() hands them out first;
	 * so are, once one is taken, those that have sent nothing wrong yet
	 * (an early connection whose first bytes are still on their way) */
	const void *also;
	size_t also_match;
};

/* Accept connections until one sends its whole opening (peeked: the reader
 * sees those bytes again) and return it; the others are closed.  Up to
 * RING_MAX_CANDIDATES connections wait at once, so one that sends nothing,
 * garbage or half an opening neither ends the wait nor holds back the real
 * peer: a candidate is dropped as soon as a byte differs from the magic,
 * when it closes, after idle_ms, or (the oldest) when a newer one arrives
 * and all places are taken.  -ETIMEDOUT after timeout_ms (-1: forever),
 * -ECANCELED after ring_listener_abort(). */
int ring_accept_opening(struct ring_listener *l, const struct ring_opening *o, struct ring_channel **out,
			int timeout_ms);
/* Make a blocked ring_accept() return -ECANCELED (safe from another thread). */
void ring_listener_abort(struct ring_listener *l);
void ring_listener_close(struct ring_listener *l);

/* Connect, retrying for up to timeout_ms while the peer refuses (so a
 * destination that is still starting up is not an error). */
int ring_connect(const struct ring_uri *uri, int timeout_ms, struct ring_channel **out);
/* The same, for another connection to a peer that beside is already
 * connected to (multifd's channels): a refused attempt is retried only
 * while beside stays open and quiet; once the peer has closed it (a
 * destination killed before it accepted us), -ECONNRESET at once instead of
 * retrying until timeout_ms. */
int ring_connect_beside(const struct ring_uri *uri, int timeout_ms, struct ring_channel *beside,
			struct ring_channel **out);

/* What a channel's transport can do: RING_CAP_ZEROCOPY (ring_sendv_zc sends
 * from the caller's memory; without it, it copies), RING_CAP_SPLICE
 * (ring_recv_splice works; without it, -EOPNOTSUPP). */
#define RING_CAP_ZEROCOPY (1u << 0)
#define RING_CAP_SPLICE (1u << 1)
unsigned int ring_channel_caps(const struct ring_channel *ch);
/* "socket" (TCP or unix, io_uring), or a later transport's name */
const char *ring_channel_transport(const struct ring_channel *ch);

/* Send every byte of the iovecs (partial sends are resubmitted). */
int ring_sendv(struct ring_channel *ch, const struct iovec *iov, int iovcnt);
int ring_send(struct ring_channel *ch, const void *buf, size_t len);

/* Zero-copy send (IORING_OP_SENDMSG_ZC) of every byte of the iovecs.  The
 * first prefix bytes (at most 16 KiB: record and page headers the caller
 * reuses at once) are copied; the rest is sent straight from the caller's
 * memory, which must stay mapped until ring_zc_flush() or close.  Its
 * contents may change meanwhile (what goes out is then either version: the
 * caller must make that safe, as migration does with the dirty log). */
int ring_sendv_zc(struct ring_channel *ch, const struct iovec *iov, int iovcnt, size_t prefix);
/* Wait until the kernel has released every zero-copy send's memory. */
int ring_zc_flush(struct ring_channel *ch);
/* Notifications received, and how many of them said the kernel copied
 * the data anyway (loopback does: then zero-copy only costs). */
void ring_zc_stats(const struct ring_channel *ch, uint64_t *sends, uint64_t *copied);

/* Receive len bytes straight into fd at offset off (socket -> pipe ->
 * fd's page cache with splice(2)): for guest RAM in a memfd this fills the
 * pages without a user-space buffer and without faulting them into any
 * mapping. */
int ring_recv_splice(struct ring_channel *ch, int fd, uint64_t off, size_t len);

/* Receive exactly len bytes.  -EPIPE if the peer closed before len bytes
 * arrived (a truncated stream), other -errno on socket errors. */
int ring_recv(struct ring_channel *ch, void *buf, size_t len);
/* Receive into several buffers (e.g. page payloads straight into guest RAM). */
int ring_recvv(struct ring_channel *ch, const struct iovec *iov, int iovcnt);

/* From now on, any send or receive on ch during which nothing at all
 * completes for timeout_ms (a peer that neither sends nor reads, without
 * closing) fails with -ETIMEDOUT, and ch is unusable after.  0 = wait
 * for ever (the default). */
void ring_channel_set_timeout(struct ring_channel *ch, int timeout_ms);
int ring_channel_timeout(const struct ring_channel *ch);

/* Why the connection broke, as the kernel holds it (SO_ERROR: a peer
 * unreachable, a reset, a retransmission timeout), as -errno; 0 if it
 * holds none.  Reading it clears it. */
int ring_channel_socket_error(struct ring_channel *ch);
/* Wait up to timeout_ms for data to be readable: 1 readable, 0 timeout. */
int ring_poll_readable(struct ring_channel *ch, int timeout_ms);

/* Shut the socket down both ways: any send/recv blocked in another thread
 * returns an error promptly.  Used by cancel.  Thread-safe. */
void ring_channel_abort(struct ring_channel *ch);
/* Make the reader see the end of the stream (a blocked recv returns it at
 * once) while sends still work: another thread's failure ends a read loop
 * whose peer has nothing more to say, and the reply still goes out. */
void ring_channel_stop_reading(struct ring_channel *ch);
void ring_channel_close(struct ring_channel *ch);

uint64_t ring_channel_bytes_sent(const struct ring_channel *ch);
uint64_t ring_channel_bytes_received(const struct ring_channel *ch);

/* ------------------------------------------------------------------ TLS */

/* TLS credentials, QEMU's tls-creds-x509: the PEM files of dir under
 * QEMU's names (ca-cert.pem; server-cert.pem and server-key.pem for a
 * server; client-cert.pem and client-key.pem for a client, optional
 * unless the server verifies its peers).  verify_peer: a server requires
 * and checks a client certificate; a client checks the server's. */
struct ring_tls_creds;
int ring_tls_creds_load(const char *dir, bool server, bool verify_peer, struct ring_tls_creds **out, char *err,
			size_t errlen);
/* Credentials are shared by reference: each session holds one. */
struct ring_tls_creds *ring_tls_creds_ref(struct ring_tls_creds *c);
void ring_tls_creds_unref(struct ring_tls_creds *c);

/* One side of a TLS session. */
struct ring_tls_peer {
	struct ring_tls_creds *creds;
	/* client: the name the server's certificate must carry (QEMU's
	 * tls-hostname, else the URI's host) */
	const char *hostname;
	/* server: the client identities (certificate DNs, as QEMU's
	 * authz-simple) allowed; nr_identities 0 = any verified client */
	const char *const *identities;
	unsigned int nr_identities;
	/* keep the records in user space (GnuTLS) even where the kernel
	 * could take the keys (kTLS); so does KMIG_KTLS=0 in the environment */
	bool no_ktls;
};

/* The first bytes of a TLS client's opening, for ring_accept_opening(). */
#define RING_TLS_OPENING_LEN 5u
extern const uint8_t ring_tls_opening[2];

/* Run the TLS handshake on ch (within timeout_ms, <= 0: ch's own timeout
 * or for ever) and wrap it: *out is a channel of the TLS transport that
 * owns ch (closing *out closes ch; aborting either aborts both).  A
 * server checks the client's identity and tells it the verdict; a client
 * returns only once the server accepted it, so a refused client knows
 * why.  On failure ch is still the caller's to close (a cancel may be
 * aborting it meanwhile), and err says what went wrong, in words. */
int ring_tls_wrap(struct ring_channel *ch, const struct ring_tls_peer *p, int timeout_ms, struct ring_channel **out,
		  char *err, size_t errlen);
/* "ktls" (the kernel holds the keys: splice works) or "gnutls" (records
 * in user space) for a TLS channel, NULL otherwise */
const char *ring_tls_mode(const struct ring_channel *ch);

#endif
