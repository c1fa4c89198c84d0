/* The TLS transport (ring/tls.c) over real TCP on loopback, with a
 * throwaway CA made at test time (tests/tls/tls_certs.h): the good path
 * moves bytes both ways through every iovec shape; each refusal case —
 * no client certificate, a certificate of another CA on either side, an
 * expired certificate, a wrong hostname, an identity tls-authz does not
 * allow, plaintext against TLS both ways, a silent peer — must fail on
 * both sides, each with its own message.  Where the kernel has the "tls"
 * ULP the good path runs in kTLS (and splices into a file), and kTLS
 * talks to GnuTLS records both ways; where it has none, the fallback to
 * GnuTLS is what is checked. */
#include "ring_test.h"

#include <sys/mman.h>

#include "tests/tls/tls_certs.h"

static char root[64];

struct side_cfg {
	const char *dir;		/* under root */
	bool verify;
	const char *hostname;		/* client */
	const char *identity;		/* server: the one allowed, or NULL */
	bool plain;			/* no TLS: speak raw bytes instead */
	bool silent;			/* plain: say nothing, wait */
	bool no_ktls;			/* records in user space even if kTLS is there */
	bool splice;			/* server: receive by splice into a memfd */
	bool read_end;			/* server: after the echo, read the client's close */
};

struct result {
	int r;
	char err[512];
	const char *mode;
	unsigned int caps;
	uint64_t moved;
	int end;			/* read_end: what the read after the client's close returned */
};

struct server_arg {
	struct ring_listener *l;
	struct side_cfg cfg;
	struct result res;
	size_t echo;			/* bytes to receive and send back */
};

/* Does this kernel offer the "tls" ULP (kTLS)? */
static bool kernel_has_ktls(void)
{
	char ulps[256] = "";
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

	if (f) {
		if (!fgets(ulps, sizeof(ulps), f))
			ulps[0] = 0;
		fclose(f);
	}
	return strstr(ulps, "tls") != NULL;
}

static const char *expected_mode(const struct side_cfg *c)
{
	return kernel_has_ktls() && !c->no_ktls ? "ktls" : "gnutls";
}

static int load(const struct side_cfg *c, bool server, struct ring_tls_creds **creds, char *err, size_t len)
{
	char dir[160];

	snprintf(dir, sizeof(dir), "%s/%s", root, c->dir);
	return ring_tls_creds_load(dir, server, c->verify, creds, err, len);
}

/* Receive n bytes by splice into a memfd (as the RAM loader does), then
 * read them back from it. */
static int recv_by_splice(struct ring_channel *ch, uint8_t *buf, size_t n)
{
	int fd = memfd_create("tls-splice", 0), r;

	if (fd < 0)
		return -errno;
	r = ftruncate(fd, (off_t)n) ? -errno : ring_recv_splice(ch, fd, 0, n);
	if (!r && pread(fd, buf, n, 0) != (ssize_t)n)
		r = -EIO;
	close(fd);
	return r;
}

/* Receive n bytes and send them back, in pieces of several sizes. */
static int echo(struct ring_channel *ch, size_t n, bool splice)
{
	uint8_t *buf = malloc(n ? n : 1);
	int r = splice ? recv_by_splice(ch, buf, n) : ring_recv(ch, buf, n);

	if (!r) {
		struct iovec iov[4] = { { buf, 1 }, { buf + 1, 15 }, { buf + 16, 4096 }, { buf + 4112, n - 4112 } };

		r = ring_sendv(ch, iov, 4);
	}
	free(buf);
	return r;
}

static void *server_main(void *p)
{
	struct server_arg *a = p;
	struct ring_channel *ch = NULL, *tls = NULL;
	struct ring_tls_creds *creds = NULL;
	int r = ring_accept(a->l, &ch, 5000);

	if (!r && a->cfg.plain) {
		uint8_t b[5];

		/* a plaintext destination: reads an opening, hangs up */
		r = a->cfg.silent ? (rt_sleep_ms(1500), 0) : ring_recv(ch, b, sizeof(b));
		ring_channel_close(ch);
		a->res.r = r;
		return NULL;
	}
	if (!r)
		r = load(&a->cfg, true, &creds, a->res.err, sizeof(a->res.err));
	if (!r) {
		const char *ids[1] = { a->cfg.identity };
		const struct ring_tls_peer peer = { .creds = creds, .identities = ids,
						    .nr_identities = a->cfg.identity ? 1 : 0, .no_ktls = a->cfg.no_ktls };

		r = ring_tls_wrap(ch, &peer, 2000, &tls, a->res.err, sizeof(a->res.err));
		if (!r)
			ch = NULL;
	}
	if (!r) {
		a->res.mode = ring_tls_mode(tls);
		a->res.caps = ring_channel_caps(tls);
		r = echo(tls, a->echo, a->cfg.splice);
		a->res.moved = ring_channel_bytes_received(tls);
	}
	if (!r && a->cfg.read_end) {
		uint8_t b;
		int fd = memfd_create("tls-end", 0);

		/* the client closes once its echo is back: GnuTLS with a
		 * close_notify alert, kTLS with a bare FIN */
		a->res.end = a->cfg.splice ? (fd < 0 ? -errno : ring_recv_splice(tls, fd, 0, 1)) : ring_recv(tls, &b, 1);
		if (fd >= 0)
			close(fd);
	}
	ring_channel_close(ch);
	ring_channel_close(tls);
	ring_tls_creds_unref(creds);
	a->res.r = r;
	return NULL;
}

/* Run a client with cfg against a server with scfg; both results. */
static void run(const struct side_cfg *ccfg, const struct side_cfg *scfg, size_t n, struct result *cres,
		struct server_arg *sa)
{
	struct ring_uri u;
	char err[256];
	pthread_t th;
	struct ring_channel *ch = NULL, *tls = NULL;
	struct ring_tls_creds *creds = NULL;

	memset(sa, 0, sizeof(*sa));
	memset(cres, 0, sizeof(*cres));
	assert_int_equal(ring_uri_parse("tcp:127.0.0.1:0", &u, err, sizeof(err)), 0);
	assert_int_equal(ring_listen(&u, &sa->l), 0);
	ring_listener_uri(sa->l, &u);
	sa->cfg = *scfg;
	sa->echo = n;
	assert_int_equal(pthread_create(&th, NULL, server_main, sa), 0);
	int r = ring_connect(&u, 2000, &ch);

	if (!r && ccfg->plain) {
		uint8_t open[64] = "KMIGSTRM";

		r = ring_send(ch, open, sizeof(open));
		uint8_t b = 0;

		/* the server's answer: a TLS alert record, or a hang-up */
		if (!r)
			r = ring_recv(ch, &b, 1);
		if (!r)
			r = b == 0x15 ? -EPROTO : 0;
		ring_channel_close(ch);
		ch = NULL;
	} else if (!r) {
		r = load(ccfg, false, &creds, cres->err, sizeof(cres->err));
	}
	if (!r && !ccfg->plain) {
		const struct ring_tls_peer peer = { .creds = creds, .hostname = ccfg->hostname,
						    .no_ktls = ccfg->no_ktls };

		r = ring_tls_wrap(ch, &peer, 1000, &tls, cres->err, sizeof(cres->err));
		if (!r)
			ch = NULL;
	}
	if (!r && !ccfg->plain) {
		uint8_t *out = malloc(n), *back = malloc(n);

		rt_fill(out, n, 42);
		struct iovec iov[3] = { { out, 16 }, { out + 16, 100000 }, { out + 100016, n - 100016 } };

		cres->mode = ring_tls_mode(tls);
		r = ring_sendv(tls, iov, 3);
		if (!r)
			r = ring_recv(tls, back, n);
		if (!r && memcmp(out, back, n))
			r = -EBADMSG;
		cres->moved = ring_channel_bytes_sent(tls);
		free(out);
		free(back);
	}
	ring_channel_close(ch);
	ring_channel_close(tls);
	ring_tls_creds_unref(creds);
	cres->r = r;
	pthread_join(th, NULL);
	ring_listener_close(sa->l);
}

static void expect_refused(const struct side_cfg *c, const struct side_cfg *s, const char *client_says,
			   const char *server_says)
{
	struct result cr;
	struct server_arg sa;

	run(c, s, 1 << 20, &cr, &sa);
	printf("  client: %d %s\n  server: %d %s\n", cr.r, cr.err, sa.res.r, sa.res.err);
	assert_int_not_equal(cr.r, 0);
	assert_int_not_equal(sa.res.r, 0);
	if (client_says && !strstr(cr.err, client_says))
		fail_msg("client said '%s', expected '%s'", cr.err, client_says);
	if (server_says && !strstr(sa.res.err, server_says))
		fail_msg("server said '%s', expected '%s'", sa.res.err, server_says);
}

static const struct side_cfg good_server = { .dir = "server", .verify = true, .identity = TLS_CLIENT_DN };
static const struct side_cfg good_client = { .dir = "client", .verify = true, .hostname = "127.0.0.1" };

static void test_good_path(void **state)
{
	struct result cr;
	struct server_arg sa;
	struct side_cfg by_name = good_client;

	(void)state;
	run(&good_client, &good_server, 8 << 20, &cr, &sa);
	if (cr.r || sa.res.r)
		fail_msg("client %d '%s', server %d '%s'", cr.r, cr.err, sa.res.r, sa.res.err);
	assert_string_equal(cr.mode, expected_mode(&good_client));
	assert_string_equal(sa.res.mode, expected_mode(&good_server));
	/* never zero-copy; splice only once the kernel holds the keys */
	assert_int_equal(sa.res.caps, kernel_has_ktls() ? RING_CAP_SPLICE : 0);
	assert_int_equal(cr.moved, 8 << 20);
	assert_int_equal(sa.res.moved, 8 << 20);
	by_name.hostname = "localhost";
	run(&by_name, &good_server, 1 << 20, &cr, &sa);
	if (cr.r || sa.res.r)
		fail_msg("by name: client %d '%s', server %d '%s'", cr.r, cr.err, sa.res.r, sa.res.err);
}

/* Either side may keep its records in user space while the other hands
 * them to the kernel: the bytes on the wire are the same TLS.  The server
 * receives by splice wherever it is in kTLS.  The client's close reads as
 * the end of the stream (-EPIPE) on every pair: a kTLS receiver must take
 * a GnuTLS peer's close_notify alert for what it is, not an I/O error. */
static void test_ktls_and_gnutls_mixed(void **state)
{
	const bool k = kernel_has_ktls();
	const struct { bool client_no_ktls, server_no_ktls; } pairs[] = {
		{ false, false }, { true, false }, { false, true }, { true, true },
	};

	(void)state;
	printf("  kTLS on this kernel: %s\n", k ? "yes (the tls ULP)" : "no: the fallback is checked");
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		struct side_cfg c = good_client, s = good_server;
		struct result cr;
		struct server_arg sa;

		c.no_ktls = pairs[i].client_no_ktls;
		s.no_ktls = pairs[i].server_no_ktls;
		s.splice = k && !s.no_ktls;
		s.read_end = true;
		run(&c, &s, 3 << 20, &cr, &sa);
		printf("  client %s, server %s%s: %d %d, the client's close read as %d\n", cr.mode ? cr.mode : "-",
		       sa.res.mode ? sa.res.mode : "-", s.splice ? " (splice)" : "", cr.r, sa.res.r, sa.res.end);
		if (cr.r || sa.res.r)
			fail_msg("pair %zu: client %d '%s', server %d '%s'", i, cr.r, cr.err, sa.res.r, sa.res.err);
		if (sa.res.end != -EPIPE)
			fail_msg("pair %zu: the client's close read as %d (%s), not the end of the stream (-EPIPE)", i,
				 sa.res.end, strerror(-sa.res.end));
		assert_string_equal(cr.mode, expected_mode(&c));
		assert_string_equal(sa.res.mode, expected_mode(&s));
		assert_int_equal(sa.res.moved, 3 << 20);
	}
}

/* verify-peer off on both sides: encrypted, nobody checked */
static void test_no_verification(void **state)
{
	struct result cr;
	struct server_arg sa;
	const struct side_cfg c = { .dir = "client-nocert", .hostname = "wrong.example" };
	const struct side_cfg s = { .dir = "server" };

	(void)state;
	run(&c, &s, 1 << 20, &cr, &sa);
	if (cr.r || sa.res.r)
		fail_msg("client %d '%s', server %d '%s'", cr.r, cr.err, sa.res.r, sa.res.err);
}

static void test_client_without_certificate(void **state)
{
	const struct side_cfg c = { .dir = "client-nocert", .verify = true, .hostname = "127.0.0.1" };

	(void)state;
	expect_refused(&c, &good_server, "the destination refused the session", "sent no certificate");
}

static void test_client_of_another_ca(void **state)
{
	const struct side_cfg c = { .dir = "client-other-ca", .verify = true, .hostname = "127.0.0.1" };

	(void)state;
	/* GnuTLS sends no certificate the server's CA did not sign */
	expect_refused(&c, &good_server, "the destination refused the session", "sent no certificate");
}

static void test_server_of_another_ca(void **state)
{
	const struct side_cfg s = { .dir = "server-other-ca", .verify = true, .identity = TLS_CLIENT_DN };

	(void)state;
	expect_refused(&good_client, &s, "the destination's certificate was refused", NULL);
}

static void test_expired_server(void **state)
{
	const struct side_cfg s = { .dir = "server-expired", .verify = true, .identity = TLS_CLIENT_DN };

	(void)state;
	expect_refused(&good_client, &s, "expired", NULL);
}

static void test_wrong_hostname(void **state)
{
	struct side_cfg c = good_client;

	(void)state;
	c.hostname = "wrong.example";
	expect_refused(&c, &good_server, "does not match", NULL);
}

static void test_identity_not_allowed(void **state)
{
	struct side_cfg s = good_server;

	(void)state;
	s.identity = "CN=someone-else,O=kmig";
	expect_refused(&good_client, &s, "does not allow this source's identity",
		       "identity '" TLS_CLIENT_DN "' is not allowed");
}

static void test_plaintext_source(void **state)
{
	const struct side_cfg c = { .plain = true };

	(void)state;
	expect_refused(&c, &good_server, NULL, "does not speak TLS here");
}

static void test_plaintext_destination(void **state)
{
	const struct side_cfg s = { .plain = true };

	(void)state;
	/* the server's own status is its recv of the opening: it succeeds */
	struct result cr;
	struct server_arg sa;

	run(&good_client, &s, 1 << 20, &cr, &sa);
	printf("  client: %d %s\n", cr.r, cr.err);
	assert_int_not_equal(cr.r, 0);
	if (!strstr(cr.err, "closed the connection during the handshake"))
		fail_msg("client said '%s'", cr.err);
}

static void test_silent_destination(void **state)
{
	const struct side_cfg s = { .plain = true, .silent = true };
	struct result cr;
	struct server_arg sa;
	int64_t t0 = rt_now_ms();

	(void)state;
	run(&good_client, &s, 1 << 20, &cr, &sa);
	printf("  client: %d %s after %lld ms\n", cr.r, cr.err, (long long)(rt_now_ms() - t0));
	assert_int_equal(cr.r, -ETIMEDOUT);
	if (!strstr(cr.err, "in time"))
		fail_msg("client said '%s'", cr.err);
}

static void test_bad_credentials(void **state)
{
	struct ring_tls_creds *c;
	char err[512], dir[160];

	(void)state;
	assert_int_equal(ring_tls_creds_load("/nonexistent", true, true, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/ca-cert.pem"));
	/* a server needs its certificate even without verify-peer */
	snprintf(dir, sizeof(dir), "%s/client", root);
	assert_int_equal(ring_tls_creds_load(dir, true, false, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "server-cert.pem"));
	/* a client verifying the server needs the CA */
	snprintf(dir, sizeof(dir), "%s/ca", root);
	assert_int_equal(ring_tls_creds_load(dir, false, true, &c, err, sizeof(err)), 0);
	ring_tls_creds_unref(c);
	assert_int_equal(ring_tls_creds_load("", false, true, &c, err, sizeof(err)), -EINVAL);
}

static void rm_tree(const char *path)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_path),
		cmocka_unit_test(test_ktls_and_gnutls_mixed),
		cmocka_unit_test(test_no_verification),
		cmocka_unit_test(test_client_without_certificate),
		cmocka_unit_test(test_client_of_another_ca),
		cmocka_unit_test(test_server_of_another_ca),
		cmocka_unit_test(test_expired_server),
		cmocka_unit_test(test_wrong_hostname),
		cmocka_unit_test(test_identity_not_allowed),
		cmocka_unit_test(test_plaintext_source),
		cmocka_unit_test(test_plaintext_destination),
		cmocka_unit_test(test_silent_destination),
		cmocka_unit_test(test_bad_credentials),
	};

	rt_require_io_uring();
	snprintf(root, sizeof(root), "/tmp/kmig-tls-XXXXXX");
	if (!mkdtemp(root) || tls_make_set(root)) {
		printf("cannot make the test certificates in %s\n", root);
		return 1;
	}
	int r = cmocka_run_group_tests(tests, NULL, NULL);

	rm_tree(root);
	return r;
}
