/* ring/tls.c — the TLS transport: a socket channel wrapped in a GnuTLS
 * session (QEMU's library and QEMU's x509 credential files).
 *
 * The second table behind the seam (ring-int.h): it owns the socket
 * channel it wraps and moves bytes through gnutls_record_send/recv on the
 * socket's fd, with the socket channel's timeout, abort and stop-reading.
 * Records are built from a staging buffer of one full record, so a batch
 * of 16-byte page headers and 4 KiB pages costs one encryption per 16 KiB,
 * not one per piece.  No zero-copy, no splice: the bytes pass through user
 * space to be encrypted (caps say so, and the engine copies).
 *
 * After the handshake the server checks the client's identity against
 * its allowed list and sends one byte of verdict inside the session (or a
 * fatal access-denied alert): so a refused client learns why from the
 * handshake itself, not from a broken pipe later (docs/transport.md).
 *
 * Then, where the kernel can (the "tls" ULP), the session's keys go to
 * the kernel (kTLS): the channel becomes the socket again, with the kernel
 * encrypting each send and decrypting each receive, so splice into guest
 * memory works under encryption (caps: RING_CAP_SPLICE; still no
 * zero-copy send, as the kernel must read the pages to encrypt them). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "ring/ring-int.h"

/* the largest plaintext of one TLS record */
#define TLS_RECORD_MAX 16384u
/* the server's verdict, the first byte inside the session */
#define TLS_VERDICT_OK 0x4bu

const uint8_t ring_tls_opening[2] = { 0x16, 0x03 };	/* handshake record, TLS 1.x */

struct ring_tls_creds {
	atomic_int refs;
	bool server, verify_peer;
	gnutls_certificate_credentials_t x509;
};

struct ring_tls {
	struct ring_channel *inner;	/* the socket channel, owned */
	struct ring_sock *sock;		/* inner's state: fd, timeout, abort */
	struct ring_tls_creds *creds;	/* a reference */
	gnutls_session_t s;
	int io_errno;			/* what push/pull last failed with */
	uint8_t *stage;			/* TLS_RECORD_MAX bytes of plaintext to send */
	size_t staged;
	/* poll_readable's look ahead: application data it decrypted (the
	 * next receive returns it first), or the error it met */
	uint8_t *ahead;			/* TLS_RECORD_MAX bytes */
	size_t ahead_len, ahead_off;
	int ahead_err;
	bool nonblock;			/* the pull returns at once */
	uint64_t sent, received;	/* __atomic: plaintext bytes */
	bool ktls;			/* the kernel holds the keys: bytes go through inner */
	uint64_t inner_sent0, inner_received0;	/* inner's counts when kTLS began */
};

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int tls_init_result;

static void tls_global_init(void)
{
	tls_init_result = gnutls_global_init();
}

/* ---------------------------------------------------------- credentials */

static int tls_path(char *buf, size_t len, const char *dir, const char *file, char *err, size_t errlen)
{
	if ((size_t)snprintf(buf, len, "%s/%s", dir, file) >= len) {
		kmig_set_err(err, errlen, "TLS credentials directory name too long: '%s'", dir);
		return -ENAMETOOLONG;
	}
	return 0;
}

static bool tls_file_exists(const char *path)
{
	struct stat st;

	return !stat(path, &st);
}

static int tls_load_ca(struct ring_tls_creds *c, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int r = tls_path(path, sizeof(path), dir, "ca-cert.pem", err, errlen);

	if (r)
		return r;
	if (!tls_file_exists(path)) {
		kmig_set_err(err, errlen, "cannot read TLS CA certificate '%s': %s", path, strerror(errno));
		return -ENOENT;
	}
	r = gnutls_certificate_set_x509_trust_file(c->x509, path, GNUTLS_X509_FMT_PEM);
	if (r <= 0) {
		kmig_set_err(err, errlen, "no usable CA certificate in '%s': %s", path,
			     r ? gnutls_strerror(r) : "no certificate in the file");
		return -EINVAL;
	}
	return 0;
}

/* cert-and-key files of one endpoint ("server" or "client"); optional: a
 * client that the server does not ask for a certificate needs none */
static int tls_load_key(struct ring_tls_creds *c, const char *dir, const char *who, bool optional, char *err,
			size_t errlen)
{
	char cert[4096], key[4096], name[32];
	int r;

	snprintf(name, sizeof(name), "%s-cert.pem", who);
	if ((r = tls_path(cert, sizeof(cert), dir, name, err, errlen)))
		return r;
	snprintf(name, sizeof(name), "%s-key.pem", who);
	if ((r = tls_path(key, sizeof(key), dir, name, err, errlen)))
		return r;
	bool have_cert = tls_file_exists(cert), have_key = tls_file_exists(key);

	if (optional && !have_cert && !have_key)
		return 0;
	if (!have_cert || !have_key) {
		kmig_set_err(err, errlen, "cannot read TLS %s '%s': %s", have_cert ? "key" : "certificate",
			     have_cert ? key : cert, strerror(ENOENT));
		return -ENOENT;
	}
	r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		kmig_set_err(err, errlen, "cannot load TLS %s certificate '%s' with key '%s': %s", who, cert, key,
			     gnutls_strerror(r));
		return -EINVAL;
	}
	return 0;
}

int ring_tls_creds_load(const char *dir, bool server, bool verify_peer, struct ring_tls_creds **out, char *err,
			size_t errlen)
{
	struct ring_tls_creds *c;
	int r;

	pthread_once(&tls_once, tls_global_init);
	if (tls_init_result < 0) {
		kmig_set_err(err, errlen, "cannot initialise GnuTLS: %s", gnutls_strerror(tls_init_result));
		return -EIO;
	}
	if (!dir || !dir[0]) {
		kmig_set_err(err, errlen, "TLS credentials need a directory (dir=...)");
		return -EINVAL;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	atomic_init(&c->refs, 1);
	c->server = server;
	c->verify_peer = verify_peer;
	if (gnutls_certificate_allocate_credentials(&c->x509) < 0) {
		free(c);
		return -ENOMEM;
	}
	/* a server's CA checks clients (verify-peer); a client's, the server */
	r = verify_peer ? tls_load_ca(c, dir, err, errlen) : 0;
	if (!r)
		r = tls_load_key(c, dir, server ? "server" : "client", !server, err, errlen);
	if (r) {
		ring_tls_creds_unref(c);
		return r;
	}
	*out = c;
	return 0;
}

struct ring_tls_creds *ring_tls_creds_ref(struct ring_tls_creds *c)
{
	if (c)
		atomic_fetch_add(&c->refs, 1);
	return c;
}

void ring_tls_creds_unref(struct ring_tls_creds *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	gnutls_certificate_free_credentials(c->x509);
	free(c);
}

/* ------------------------------------------------- the socket underneath */

/* Wait for fd to be ready (events) within the channel's timeout: 0, or
 * -1 with errno (ETIMEDOUT, ECANCELED after an abort). */
static int tls_wait(struct ring_tls *t, short events)
{
	int timeout = t->sock->timeout_ms > 0 ? t->sock->timeout_ms : -1;
	struct pollfd pfd = { .fd = t->sock->fd, .events = events };

	for (;;) {
		if (__atomic_load_n(&t->sock->aborted, __ATOMIC_SEQ_CST)) {
			errno = ECANCELED;
			return -1;
		}
		int n = poll(&pfd, 1, timeout);

		if (n > 0)
			return 0;
		if (n == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
	struct ring_tls *t = p;
	struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };

	for (;;) {
		ssize_t n = sendmsg(t->sock->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n >= 0) {
			__atomic_add_fetch(&t->sock->bytes_sent, (uint64_t)n, __ATOMIC_RELAXED);
			return n;
		}
		if (errno != EAGAIN && errno != EINTR)
			break;
		if (errno == EAGAIN && tls_wait(t, POLLOUT))
			break;
	}
	t->io_errno = errno;
	gnutls_transport_set_errno(t->s, errno == ETIMEDOUT || errno == ECANCELED ? EIO : errno);
	return -1;
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct ring_tls *t = p;

	for (;;) {
		ssize_t n = recv(t->sock->fd, buf, len, MSG_DONTWAIT);

		if (n >= 0) {
			__atomic_add_fetch(&t->sock->bytes_received, (uint64_t)n, __ATOMIC_RELAXED);
			return n;
		}
		if (errno != EAGAIN && errno != EINTR)
			break;
		if (errno == EAGAIN && t->nonblock) {
			gnutls_transport_set_errno(t->s, EAGAIN);
			return -1;
		}
		if (errno == EAGAIN && tls_wait(t, POLLIN))
			break;
	}
	t->io_errno = errno;
	gnutls_transport_set_errno(t->s, errno == ETIMEDOUT || errno == ECANCELED ? EIO : errno);
	return -1;
}

/* A GnuTLS failure as -errno: the socket's own error when that was it,
 * -ECANCELED once aborted, -EPIPE when the peer went away. */
static int tls_error(struct ring_tls *t, int gr)
{
	if (__atomic_load_n(&t->sock->aborted, __ATOMIC_SEQ_CST))
		return -ECANCELED;
	if ((gr == GNUTLS_E_PUSH_ERROR || gr == GNUTLS_E_PULL_ERROR) && t->io_errno)
		return -t->io_errno;
	if (gr == GNUTLS_E_PREMATURE_TERMINATION || gr == 0)
		return -EPIPE;
	if (gr == GNUTLS_E_TIMEDOUT)
		return -ETIMEDOUT;
	return -EPROTO;
}

/* The failure was the connection's (closed, reset, timed out, aborted),
 * not TLS's own: there is nobody left to send an alert to. */
static bool tls_error_is_io(struct ring_tls *t, int gr)
{
	return gr == GNUTLS_E_PUSH_ERROR || gr == GNUTLS_E_PULL_ERROR || gr == GNUTLS_E_PREMATURE_TERMINATION ||
	       __atomic_load_n(&t->sock->aborted, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------ the TLS transport */

static int tls_send_all(struct ring_tls *t, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = gnutls_record_send(t->s, p, len);

		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n < 0)
			return tls_error(t, (int)n);
		p += n;
		len -= (size_t)n;
		__atomic_add_fetch(&t->sent, (uint64_t)n, __ATOMIC_RELAXED);
	}
	return 0;
}

static int tls_flush_stage(struct ring_tls *t)
{
	int r = tls_send_all(t, t->stage, t->staged);

	t->staged = 0;
	return r;
}

/* Small pieces gather into one record; a full record's worth goes
 * straight from the caller's memory. */
static int tls_sendv(void *self, const struct iovec *iov, int iovcnt)
{
	struct ring_tls *t = self;
	int r = 0;

	for (int i = 0; i < iovcnt && !r; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		while (len && !r) {
			if (!t->staged && len >= TLS_RECORD_MAX) {
				size_t whole = len - len % TLS_RECORD_MAX;

				r = tls_send_all(t, p, whole);
				p += whole;
				len -= whole;
				continue;
			}
			size_t n = TLS_RECORD_MAX - t->staged < len ? TLS_RECORD_MAX - t->staged : len;

			memcpy(t->stage + t->staged, p, n);
			t->staged += n;
			p += n;
			len -= n;
			if (t->staged == TLS_RECORD_MAX)
				r = tls_flush_stage(t);
		}
	}
	return r ? r : tls_flush_stage(t);
}

static int tls_recv(void *self, void *buf, size_t len)
{
	struct ring_tls *t = self;
	uint8_t *p = buf;

	if (t->ahead_off < t->ahead_len) {
		size_t n = t->ahead_len - t->ahead_off < len ? t->ahead_len - t->ahead_off : len;

		memcpy(p, t->ahead + t->ahead_off, n);
		t->ahead_off += n;
		p += n;
		len -= n;
	}
	if (len && t->ahead_err)
		return t->ahead_err;
	while (len) {
		ssize_t n = gnutls_record_recv(t->s, p, len);

		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n <= 0)
			return tls_error(t, (int)n);
		p += n;
		len -= (size_t)n;
		__atomic_add_fetch(&t->received, (uint64_t)n, __ATOMIC_RELAXED);
	}
	return 0;
}

static int tls_recvv(void *self, const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++) {
		int r = tls_recv(self, iov[i].iov_base, iov[i].iov_len);

		if (r)
			return r;
	}
	return 0;
}

/* Readable means application data (or the end, or an error) is there:
 * bytes on the socket may be only a record TLS consumes itself (a key
 * update, a ticket), so a readable socket is read ahead, without
 * blocking, and what it held is kept for the next receive. */
static int tls_poll_readable(void *self, int timeout_ms)
{
	struct ring_tls *t = self;
	int64_t deadline = ring_deadline(timeout_ms);

	for (;;) {
		if (t->ahead_off < t->ahead_len || t->ahead_err || gnutls_record_check_pending(t->s))
			return 1;
		int r = t->inner->t->poll_readable(t->inner->impl, ring_left_ms(deadline));

		if (r <= 0)
			return r;
		t->nonblock = true;
		ssize_t n = gnutls_record_recv(t->s, t->ahead, TLS_RECORD_MAX);

		t->nonblock = false;
		if (n > 0) {
			t->ahead_len = (size_t)n;
			t->ahead_off = 0;
			__atomic_add_fetch(&t->received, (uint64_t)n, __ATOMIC_RELAXED);
		} else if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
			t->ahead_err = tls_error(t, (int)n);
		} else if (!ring_left_ms(deadline)) {
			return 0;
		}
	}
}

static int tls_socket_error(void *self)
{
	struct ring_tls *t = self;

	return t->inner->t->socket_error ? t->inner->t->socket_error(t->inner->impl) : 0;
}

static void tls_set_timeout(void *self, int timeout_ms)
{
	struct ring_tls *t = self;

	t->inner->t->set_timeout(t->inner->impl, timeout_ms);
}

static int tls_timeout(const void *self)
{
	const struct ring_tls *t = self;

	return t->inner->t->timeout(t->inner->impl);
}

static void tls_abort(void *self)
{
	struct ring_tls *t = self;

	t->inner->t->abort(t->inner->impl);
}

static void tls_stop_reading(void *self)
{
	struct ring_tls *t = self;

	t->inner->t->stop_reading(t->inner->impl);
}

static void tls_free(struct ring_tls *t)
{
	if (t->s)
		gnutls_deinit(t->s);
	ring_tls_creds_unref(t->creds);
	ring_channel_close(t->inner);
	free(t->stage);
	free(t->ahead);
	free(t);
}

static void tls_close(void *self)
{
	struct ring_tls *t = self;

	/* a polite close_notify, never waited for (under kTLS GnuTLS's
	 * record state is stale: the kernel's peer sees a plain FIN) */
	if (!t->ktls && !__atomic_load_n(&t->sock->aborted, __ATOMIC_SEQ_CST)) {
		int old = t->sock->timeout_ms;

		t->sock->timeout_ms = 100;
		gnutls_bye(t->s, GNUTLS_SHUT_WR);
		t->sock->timeout_ms = old;
	}
	tls_free(t);
}

static uint64_t tls_bytes_sent(const void *self)
{
	const struct ring_tls *t = self;

	return __atomic_load_n(&t->sent, __ATOMIC_RELAXED);
}

static uint64_t tls_bytes_received(const void *self)
{
	const struct ring_tls *t = self;

	return __atomic_load_n(&t->received, __ATOMIC_RELAXED);
}

static const struct ring_transport tls_transport = {
	.name = "tls",
	.caps = 0,
	.sendv = tls_sendv,
	.recv = tls_recv,
	.recvv = tls_recvv,
	.poll_readable = tls_poll_readable,
	.socket_error = tls_socket_error,
	.set_timeout = tls_set_timeout,
	.timeout = tls_timeout,
	.abort = tls_abort,
	.stop_reading = tls_stop_reading,
	.close = tls_close,
	.bytes_sent = tls_bytes_sent,
	.bytes_received = tls_bytes_received,
};

/* ------------------------------------------------------------------ kTLS */

/* Under kTLS the bytes are the socket's: each op is the inner channel's. */
static int ktls_sendv(void *self, const struct iovec *iov, int iovcnt)
{
	struct ring_tls *t = self;

	return t->inner->t->sendv(t->inner->impl, iov, iovcnt);
}

#ifndef TLS_GET_RECORD_TYPE
#define TLS_GET_RECORD_TYPE 2
#endif
#define TLS_CT_ALERT 21
#define TLS_ALERT_CLOSE_NOTIFY 0

/* A kTLS socket will not pass a record other than application data to a
 * read without a control buffer: recv fails with EIO, splice with EINVAL,
 * and the record waits.  A peer still in GnuTLS ends its session with a
 * close_notify alert (a kTLS peer sends none, just a FIN): read it here,
 * and report the end of the stream as GnuTLS and plaintext do, -EPIPE.
 * Any other record stays an I/O error. */
static int ktls_end_of_stream(struct ring_tls *t, int r)
{
	unsigned char alert[2];
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { alert, sizeof(alert) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };

	if (r != -EIO && r != -EINVAL)
		return r;
	ssize_t n = recvmsg(t->sock->fd, &m, MSG_DONTWAIT);
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;

	if (c && c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE &&
	    *CMSG_DATA(c) == TLS_CT_ALERT && n == 2 && alert[1] == TLS_ALERT_CLOSE_NOTIFY)
		return -EPIPE;
	return r;
}

static int ktls_recv(void *self, void *buf, size_t len)
{
	struct ring_tls *t = self;

	return ktls_end_of_stream(t, t->inner->t->recv(t->inner->impl, buf, len));
}

static int ktls_recvv(void *self, const struct iovec *iov, int iovcnt)
{
	struct ring_tls *t = self;

	return ktls_end_of_stream(t, t->inner->t->recvv(t->inner->impl, iov, iovcnt));
}

static int ktls_recv_splice(void *self, int fd, uint64_t off, size_t len)
{
	struct ring_tls *t = self;

	return ktls_end_of_stream(t, t->inner->t->recv_splice(t->inner->impl, fd, off, len));
}

static int ktls_poll_readable(void *self, int timeout_ms)
{
	struct ring_tls *t = self;

	return t->inner->t->poll_readable(t->inner->impl, timeout_ms);
}

/* Plaintext bytes: GnuTLS's before the hand-over, the socket's after
 * (a kTLS socket counts plaintext; before, it counted the handshake). */
static uint64_t ktls_bytes_sent(const void *self)
{
	const struct ring_tls *t = self;

	return t->sent + t->inner->t->bytes_sent(t->inner->impl) - t->inner_sent0;
}

static uint64_t ktls_bytes_received(const void *self)
{
	const struct ring_tls *t = self;

	return t->received + t->inner->t->bytes_received(t->inner->impl) - t->inner_received0;
}

/* No zero-copy send: the kernel encrypts from the caller's pages into
 * its own buffers, so a send is already the one pass over the data. */
static const struct ring_transport ktls_transport = {
	.name = "ktls",
	.caps = RING_CAP_SPLICE,
	.sendv = ktls_sendv,
	.recv = ktls_recv,
	.recvv = ktls_recvv,
	.recv_splice = ktls_recv_splice,
	.poll_readable = ktls_poll_readable,
	.socket_error = tls_socket_error,
	.set_timeout = tls_set_timeout,
	.timeout = tls_timeout,
	.abort = tls_abort,
	.stop_reading = tls_stop_reading,
	.close = tls_close,
	.bytes_sent = ktls_bytes_sent,
	.bytes_received = ktls_bytes_received,
};

const char *ring_tls_mode(const struct ring_channel *ch)
{
	if (ch && ch->t == &ktls_transport)
		return "ktls";
	return ch && ch->t == &tls_transport ? "gnutls" : NULL;
}

/* The kernel's crypto info, one for each cipher it takes. */
union ktls_info {
	struct tls_crypto_info base;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* AES-GCM: a 4-byte salt, then in TLS 1.3 the rest of the 12-byte IV,
 * in TLS 1.2 the explicit nonce, which GnuTLS takes from the sequence
 * number (so does the kernel, from rec_seq on). */
#define KTLS_GCM(f, C)                                                                                   \
	do {                                                                                             \
		if (key->size != C##_KEY_SIZE || iv->size < C##_SALT_SIZE ||                              \
		    (tls13 && iv->size != C##_SALT_SIZE + C##_IV_SIZE))                                  \
			return -EOPNOTSUPP;                                                              \
		ki->f.info.cipher_type = C;                                                              \
		memcpy(ki->f.key, key->data, C##_KEY_SIZE);                                              \
		memcpy(ki->f.salt, iv->data, C##_SALT_SIZE);                                             \
		memcpy(ki->f.iv, tls13 ? iv->data + C##_SALT_SIZE : seq, C##_IV_SIZE);                    \
		memcpy(ki->f.rec_seq, seq, C##_REC_SEQ_SIZE);                                            \
		*len = sizeof(ki->f);                                                                    \
	} while (0)

static int ktls_fill(gnutls_cipher_algorithm_t c, bool tls13, const gnutls_datum_t *key, const gnutls_datum_t *iv,
		     const unsigned char seq[8], union ktls_info *ki, socklen_t *len)
{
	switch (c) {
	case GNUTLS_CIPHER_AES_128_GCM:
		KTLS_GCM(gcm128, TLS_CIPHER_AES_GCM_128);
		return 0;
	case GNUTLS_CIPHER_AES_256_GCM:
		KTLS_GCM(gcm256, TLS_CIPHER_AES_GCM_256);
		return 0;
	case GNUTLS_CIPHER_CHACHA20_POLY1305:
		/* the whole 12-byte IV, XORed with the sequence in both versions */
		if (key->size != TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE ||
		    iv->size != TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE)
			return -EOPNOTSUPP;
		ki->chacha.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		memcpy(ki->chacha.key, key->data, key->size);
		memcpy(ki->chacha.iv, iv->data, iv->size);
		memcpy(ki->chacha.rec_seq, seq, TLS_CIPHER_CHACHA20_POLY1305_REC_SEQ_SIZE);
		*len = sizeof(ki->chacha);
		return 0;
	default:
		return -EOPNOTSUPP;
	}
}

/* One direction's keys, IV and sequence number as the kernel takes them. */
static int ktls_info(gnutls_session_t s, bool read, union ktls_info *ki, socklen_t *len)
{
	gnutls_protocol_t v = gnutls_protocol_get_version(s);
	gnutls_datum_t mac, iv, key;
	unsigned char seq[8];

	memset(ki, 0, sizeof(*ki));
	if (v != GNUTLS_TLS1_2 && v != GNUTLS_TLS1_3)
		return -EOPNOTSUPP;
	if (gnutls_record_get_state(s, read, &mac, &iv, &key, seq) < 0)
		return -EOPNOTSUPP;
	ki->base.version = v == GNUTLS_TLS1_3 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
	return ktls_fill(gnutls_cipher_get(s), v == GNUTLS_TLS1_3, &key, &iv, seq, ki, len);
}

/* Hand the session to the kernel.  0: done; -EOPNOTSUPP: not possible
 * here (no "tls" ULP, a cipher the kernel does not take), and the socket
 * is as it was, so GnuTLS goes on; any other error: the socket is half
 * handed over and the connection is lost. */
static int ktls_enable(struct ring_tls *t)
{
	union ktls_info tx, rx;
	socklen_t txlen = 0, rxlen = 0;
	int fd = t->sock->fd, r = -EOPNOTSUPP;

	/* decrypted bytes GnuTLS still holds would be lost */
	if (gnutls_record_check_pending(t->s) || t->ahead_off < t->ahead_len)
		return -EOPNOTSUPP;
	if (ktls_info(t->s, false, &tx, &txlen) || ktls_info(t->s, true, &rx, &rxlen))
		goto out;
	/* ENOENT: no tls module; the socket is untouched */
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")))
		goto out;
	/* with the ULP but no keys, the socket passes bytes through as before */
	if (setsockopt(fd, SOL_TLS, TLS_TX, &tx, txlen))
		goto out;
	r = setsockopt(fd, SOL_TLS, TLS_RX, &rx, rxlen) ? -EIO : 0;
	if (!r) {
		t->sock->send_flags = MSG_NOSIGNAL;
		t->inner_sent0 = t->inner->t->bytes_sent(t->inner->impl);
		t->inner_received0 = t->inner->t->bytes_received(t->inner->impl);
	}
out:
	explicit_bzero(&tx, sizeof(tx));
	explicit_bzero(&rx, sizeof(rx));
	return r;
}

/* kTLS unless the caller or KMIG_KTLS=0 (for comparisons) says no. */
static bool ktls_wanted(const struct ring_tls_peer *p)
{
	const char *env = getenv("KMIG_KTLS");

	return !p->no_ktls && !(env && !strcmp(env, "0"));
}

/* ---------------------------------------------------------- the handshake */

/* Why the handshake failed, in the peer's terms. */
static void tls_explain(struct ring_tls *t, int gr, bool server, char *err, size_t errlen)
{
	const char *peer = server ? "the source" : "the destination";

	if (gr == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t why = { 0 };
		unsigned int status = gnutls_session_get_verify_cert_status(t->s);

		gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
		kmig_set_err(err, errlen, "TLS: %s's certificate was refused: %s", peer,
			     why.data ? (const char *)why.data : "not trusted");
		gnutls_free(why.data);
	} else if (gr == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		gnutls_alert_description_t a = gnutls_alert_get(t->s);

		kmig_set_err(err, errlen, "TLS: %s refused the session: %s%s", peer, gnutls_alert_get_name(a),
			     a == GNUTLS_A_CERTIFICATE_REQUIRED || a == GNUTLS_A_HANDSHAKE_FAILURE
				     ? " (does this side have a certificate it trusts?)" : "");
	} else if (gr == GNUTLS_E_NO_CERTIFICATE_FOUND || gr == GNUTLS_E_CERTIFICATE_REQUIRED) {
		kmig_set_err(err, errlen, "TLS: %s sent no certificate of a CA this side trusts, and verify-peer "
			     "requires one", peer);
	} else if (gr == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || gr == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
		   gr == GNUTLS_E_UNEXPECTED_PACKET) {
		kmig_set_err(err, errlen, "TLS: %s does not speak TLS here (is tls-creds set on both sides?): %s",
			     peer, gnutls_strerror(gr));
	} else {
		int e = -tls_error(t, gr);

		if (e == EPIPE || e == ECONNRESET)
			kmig_set_err(err, errlen, "TLS: %s closed the connection during the handshake "
				     "(is tls-creds set on both sides?)", peer);
		else if (e == ETIMEDOUT)
			kmig_set_err(err, errlen, "TLS: no handshake from %s in time (x-kmig-io-timeout)", peer);
		else if (e == ECANCELED)
			kmig_set_err(err, errlen, "TLS handshake cancelled");
		else
			kmig_set_err(err, errlen, "TLS handshake with %s failed: %s", peer,
				     e == EPROTO ? gnutls_strerror(gr) : strerror(e));
	}
}

static int tls_session_new(struct ring_tls *t, const struct ring_tls_peer *p, char *err, size_t errlen)
{
	bool server = p->creds->server;
	/* no session tickets: kmig never resumes a session, and a ticket
	 * arriving on an idle main connection would read as the peer
	 * speaking (multifd watches it for a refusal) */
	int gr = gnutls_init(&t->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);

	if (gr >= 0)
		gr = gnutls_set_default_priority(t->s);
	if (gr >= 0)
		gr = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, p->creds->x509);
	if (gr < 0) {
		kmig_set_err(err, errlen, "cannot set up a TLS session: %s", gnutls_strerror(gr));
		return -EIO;
	}
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_vec_push_function(t->s, tls_push);
	gnutls_transport_set_pull_function(t->s, tls_pull);
	if (server && p->creds->verify_peer) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(t->s, NULL, 0);
	} else if (!server && p->creds->verify_peer) {
		struct in6_addr a;
		const char *h = p->hostname ? p->hostname : "";
		bool ip = inet_pton(AF_INET, h, &a) == 1 || inet_pton(AF_INET6, h, &a) == 1;

		/* SNI carries names only; the check takes addresses too */
		if (h[0] && !ip)
			gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, h, strlen(h));
		gnutls_session_set_verify_cert(t->s, h[0] ? h : NULL, 0);
	}
	return 0;
}

/* The client certificate's DN, as QEMU's authz-simple compares it. */
static int tls_peer_dn(struct ring_tls *t, char *dn, size_t len)
{
	unsigned int n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	gnutls_x509_crt_t crt;
	size_t sz = len;
	int r = -1;

	if (!certs || !n || gnutls_x509_crt_init(&crt) < 0)
		return -1;
	if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
	    gnutls_x509_crt_get_dn(crt, dn, &sz) >= 0)
		r = 0;
	gnutls_x509_crt_deinit(crt);
	return r;
}

/* Server: is the client one of the allowed identities?  The verdict goes
 * to the client either way. */
static int tls_authorize(struct ring_tls *t, const struct ring_tls_peer *p, char *err, size_t errlen)
{
	char dn[1024] = "";
	bool ok = !p->nr_identities;

	if (!ok && !tls_peer_dn(t, dn, sizeof(dn)))
		for (unsigned int i = 0; i < p->nr_identities && !ok; i++)
			ok = !strcmp(dn, p->identities[i]);
	if (!ok) {
		kmig_set_err(err, errlen, "TLS: the source's identity '%s' is not allowed by tls-authz",
			     dn[0] ? dn : "(no certificate)");
		gnutls_alert_send(t->s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
		return -EACCES;
	}
	uint8_t v = TLS_VERDICT_OK;

	return tls_send_all(t, &v, 1);
}

/* Client: the server's verdict. */
static int tls_await_verdict(struct ring_tls *t, char *err, size_t errlen)
{
	uint8_t v = 0;
	ssize_t n;

	do
		n = gnutls_record_recv(t->s, &v, 1);
	while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
	if (n == 1 && v == TLS_VERDICT_OK)
		return 0;
	if (n == GNUTLS_E_FATAL_ALERT_RECEIVED && gnutls_alert_get(t->s) == GNUTLS_A_ACCESS_DENIED)
		kmig_set_err(err, errlen, "TLS: the destination does not allow this source's identity (tls-authz)");
	else if (n < 0)
		tls_explain(t, (int)n, false, err, errlen);
	else
		kmig_set_err(err, errlen, "TLS: the destination sent no verdict after the handshake");
	return n < 0 ? tls_error(t, (int)n) == -EPROTO ? -EACCES : tls_error(t, (int)n) : -EPROTO;
}

int ring_tls_wrap(struct ring_channel *ch, const struct ring_tls_peer *p, int timeout_ms, struct ring_channel **out,
		  char *err, size_t errlen)
{
	struct ring_tls *t = NULL;
	struct ring_channel *wrapped = NULL;
	int r = -ENOMEM, gr;

	if (!ch || !p || !p->creds || strcmp(ch->t->name, "socket")) {
		kmig_set_err(err, errlen, "TLS needs credentials and a socket channel");
		return -EINVAL;
	}
	if (!(t = calloc(1, sizeof(*t))) || !(t->stage = malloc(TLS_RECORD_MAX)) ||
	    !(t->ahead = malloc(TLS_RECORD_MAX)) ||
	    !(wrapped = malloc(sizeof(*wrapped)))) {
		kmig_set_err(err, errlen, "out of memory for a TLS session");
		goto fail;
	}
	t->inner = ch;
	t->sock = ch->impl;
	t->creds = ring_tls_creds_ref(p->creds);
	if ((r = tls_session_new(t, p, err, errlen)))
		goto fail;
	int old = t->sock->timeout_ms;

	if (timeout_ms > 0)
		t->sock->timeout_ms = timeout_ms;
	do
		gr = gnutls_handshake(t->s);
	while (gr == GNUTLS_E_AGAIN || gr == GNUTLS_E_INTERRUPTED);
	if (gr < 0) {
		/* tell the peer why (bad certificate, certificate required...),
		 * or it only sees the connection close */
		if (gr != GNUTLS_E_FATAL_ALERT_RECEIVED && !tls_error_is_io(t, gr))
			gnutls_alert_send_appropriate(t->s, gr);
		tls_explain(t, gr, p->creds->server, err, errlen);
		r = tls_error(t, gr) == -EPROTO ? -EACCES : tls_error(t, gr);
	} else {
		r = p->creds->server ? tls_authorize(t, p, err, errlen) : tls_await_verdict(t, err, errlen);
	}
	t->sock->timeout_ms = old;
	if (!r && ktls_wanted(p)) {
		int k = ktls_enable(t);

		t->ktls = !k;
		if (k && k != -EOPNOTSUPP) {
			kmig_set_err(err, errlen, "TLS: handing the session to the kernel (kTLS) failed half-way");
			r = k;
		}
	}
	if (r)
		goto fail;
	*wrapped = (struct ring_channel){ .t = t->ktls ? &ktls_transport : &tls_transport, .impl = t };
	*out = wrapped;
	return 0;
fail:
	/* ch stays the caller's: another thread may be aborting it */
	if (t) {
		t->inner = NULL;
		tls_free(t);
	}
	free(wrapped);
	return r;
}
