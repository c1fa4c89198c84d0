/* ring_uri_parse()/ring_uri_format(): every accepted form and every rejected
 * one, with the reason the user will read. */
#include "ring_test.h"

struct good {
	const char *text;
	enum ring_uri_kind kind;
	const char *host, *port, *path;
	const char *formatted;	/* NULL: same as text */
};

static const struct good goods[] = {
	{ "tcp:127.0.0.1:4444", RING_URI_TCP, "127.0.0.1", "4444", NULL, NULL },
	{ "tcp:localhost:0", RING_URI_TCP, "localhost", "0", NULL, NULL },
	{ "tcp:0.0.0.0:65535", RING_URI_TCP, "0.0.0.0", "65535", NULL, NULL },
	{ "tcp:[::1]:4444", RING_URI_TCP, "::1", "4444", NULL, NULL },
	{ "tcp:[::]:1", RING_URI_TCP, "::", "1", NULL, NULL },
	{ "tcp:[fe80::1%eth0]:7", RING_URI_TCP, "fe80::1%eth0", "7", NULL, NULL },
	{ "tcp:[::ffff:127.0.0.1]:80", RING_URI_TCP, "::ffff:127.0.0.1", "80", NULL, NULL },
	{ "tcp:dst-host_1.example.com:4444", RING_URI_TCP, "dst-host_1.example.com", "4444",
	  NULL, NULL },
	{ "tcp:h:04444", RING_URI_TCP, "h", "4444", NULL, "tcp:h:4444" },
	{ "unix:/tmp/kmig.sock", RING_URI_UNIX, NULL, NULL, "/tmp/kmig.sock", NULL },
	{ "unix:relative/sock", RING_URI_UNIX, NULL, NULL, "relative/sock", NULL },
	{ "unix:/path:with:colons", RING_URI_UNIX, NULL, NULL, "/path:with:colons", NULL },
};

static void test_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		struct ring_uri uri, again;
		char err[256] = "untouched", text[512];

		memset(&uri, 0xa5, sizeof(uri));
		if (ring_uri_parse(g->text, &uri, err, sizeof(err)))
			fail_msg("'%s' rejected: %s", g->text, err);
		assert_string_equal(err, "");
		assert_int_equal(uri.kind, g->kind);
		if (g->kind == RING_URI_TCP) {
			assert_string_equal(uri.host, g->host);
			assert_string_equal(uri.port, g->port);
		} else {
			assert_string_equal(uri.path, g->path);
		}
		ring_uri_format(&uri, text, sizeof(text));
		assert_string_equal(text, g->formatted ? g->formatted : g->text);

		assert_int_equal(ring_uri_parse(text, &again, NULL, 0), 0);
		assert_int_equal(again.kind, uri.kind);
		assert_string_equal(again.host, uri.host);
		assert_string_equal(again.port, uri.port);
		assert_string_equal(again.path, uri.path);
	}
}

static void test_longest_unix_path(void **state)
{
	char text[5 + 108 + 1], err[256];
	struct ring_uri uri;

	(void)state;
	memcpy(text, "unix:", 5);
	memset(text + 5, 'p', 107);
	text[5 + 107] = '\0';
	assert_int_equal(ring_uri_parse(text, &uri, err, sizeof(err)), 0);
	assert_int_equal(strlen(uri.path), 107);

	text[5 + 107] = 'p';
	text[5 + 108] = '\0';
	assert_int_equal(ring_uri_parse(text, &uri, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "too long (108 bytes, at most 107)"));
}

static void test_longest_host(void **state)
{
	char text[4 + 256 + 3 + 1], err[256];
	struct ring_uri uri;

	(void)state;
	memcpy(text, "tcp:", 4);
	memset(text + 4, 'h', 255);
	strcpy(text + 4 + 255, ":1");
	assert_int_equal(ring_uri_parse(text, &uri, err, sizeof(err)), 0);
	assert_int_equal(strlen(uri.host), 255);

	memset(text + 4, 'h', 256);
	strcpy(text + 4 + 256, ":1");
	assert_int_equal(ring_uri_parse(text, &uri, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "host too long"));
}

struct bad {
	const char *text;
	const char *reason;	/* must appear in err */
};

static const struct bad bads[] = {
	{ NULL, "empty migration URI" },
	{ "", "empty migration URI" },
	{ "tcp", "missing scheme in URI 'tcp'" },
	{ "/tmp/sock", "missing scheme" },
	{ "foo:bar", "unsupported URI scheme 'foo' (expected tcp:HOST:PORT or unix:PATH)" },
	{ "TCP:1.2.3.4:1", "unsupported URI scheme 'TCP'" },
	{ "Unix:/x", "unsupported URI scheme 'Unix'" },
	{ "rdma:1.2.3.4:4444", "unsupported URI scheme 'rdma'" },
	{ "file:/tmp/x", "unsupported URI scheme 'file'" },
	{ ":4444", "unsupported URI scheme ''" },
	{ "exec:cat > /tmp/mig", "'exec:' migration URIs are not supported" },
	{ "fd:3", "'fd:' migration URIs are not supported" },
	{ "tcp:", "missing port in 'tcp:'" },
	{ "tcp:host", "missing port in 'tcp:host'" },
	{ "tcp::4444", "empty host in 'tcp::4444'" },
	{ "tcp:::1:4444", "too many ':'" },
	{ "tcp:1.2.3.4:44:44", "too many ':'" },
	{ "tcp:fe80::1:4444", "too many ':'" },
	{ "tcp:host:", "bad port '' in 'tcp:host:'" },
	{ "tcp:host:99999", "bad port '99999' in 'tcp:host:99999'" },
	{ "tcp:host:65536", "bad port '65536'" },
	{ "tcp:host:-1", "bad port '-1'" },
	{ "tcp:host:+1", "bad port '+1'" },
	{ "tcp:host:12ab", "bad port '12ab'" },
	{ "tcp:host:0x10", "bad port '0x10'" },
	{ "tcp:host:4444 ", "bad port '4444 '" },
	{ "tcp:host: 4444", "bad port ' 4444'" },
	{ "tcp:host:000001", "bad port '000001'" },
	{ "tcp:host:4444/", "bad port '4444/'" },
	{ "tcp:host:http", "bad port 'http'" },
	{ "tcp:[::1]", "missing port in 'tcp:[::1]'" },
	{ "tcp:[::1]:", "bad port ''" },
	{ "tcp:[::1]4444", "unexpected '4' after ']'" },
	{ "tcp:[::1:4444", "unterminated '['" },
	{ "tcp:[]:4444", "empty host" },
	{ "tcp:[1.2.3.4]:4444", "bad IPv6 address '[1.2.3.4]'" },
	{ "tcp:[zz::1]:4444", "bad IPv6 address" },
	{ "tcp:[fe80::1%]:4444", "bad IPv6 address" },
	{ "tcp:[::1]]:4444", "unexpected ']' after ']'" },
	{ "tcp:ho st:1", "bad character ' ' in host" },
	{ "tcp:host/x:1", "bad character '/' in host" },
	{ "tcp:user@host:1", "bad character '@' in host" },
	{ "unix:", "empty socket path in 'unix:'" },
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		struct ring_uri uri, before;
		char err[512];

		memset(&uri, 0x5a, sizeof(uri));
		before = uri;
		err[0] = '\0';
		if (ring_uri_parse(b->text, &uri, err, sizeof(err)) != -EINVAL)
			fail_msg("'%s' accepted", b->text ? b->text : "(null)");
		if (!strstr(err, b->reason))
			fail_msg("'%s': error '%s' lacks '%s'", b->text ? b->text : "(null)", err,
				 b->reason);
		/* a rejected URI leaves the output alone */
		assert_memory_equal(&uri, &before, sizeof(uri));
	}
}

static void test_err_buffer_edges(void **state)
{
	struct ring_uri uri;
	char small[8];

	(void)state;
	/* no buffer at all */
	assert_int_equal(ring_uri_parse("foo:x", &uri, NULL, 0), -EINVAL);
	assert_int_equal(ring_uri_parse("foo:x", &uri, NULL, 100), -EINVAL);
	/* truncated, still terminated */
	memset(small, 'x', sizeof(small));
	assert_int_equal(ring_uri_parse("foo:x", &uri, small, sizeof(small)), -EINVAL);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	/* no output struct */
	assert_int_equal(ring_uri_parse("tcp:h:1", NULL, NULL, 0), -EINVAL);
}

/* the host as getaddrinfo() and QEMU's SocketAddress take it */
static void test_host(void **state)
{
	struct ring_uri u;
	char h[64];

	(void)state;
	rt_parse("tcp:[::1]:4444", &u);
	assert_int_equal(ring_uri_host(&u, h, sizeof(h)), 0);
	assert_string_equal(h, "::1");
	rt_parse("tcp:127.0.0.1:0", &u);
	assert_int_equal(ring_uri_host(&u, h, sizeof(h)), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_int_equal(ring_uri_host(&u, h, 4), -EINVAL);	/* does not fit */
}

static void test_format(void **state)
{
	struct ring_uri uri;
	char buf[64];

	(void)state;
	/* hand-built structs: bare and bracketed IPv6 both come out bracketed */
	memset(&uri, 0, sizeof(uri));
	uri.kind = RING_URI_TCP;
	strcpy(uri.host, "::1");
	strcpy(uri.port, "4444");
	ring_uri_format(&uri, buf, sizeof(buf));
	assert_string_equal(buf, "tcp:[::1]:4444");
	strcpy(uri.host, "[::1]");
	ring_uri_format(&uri, buf, sizeof(buf));
	assert_string_equal(buf, "tcp:[::1]:4444");

	/* truncation is safe */
	ring_uri_format(&uri, buf, 5);
	assert_string_equal(buf, "tcp:");
	buf[0] = 'x';
	ring_uri_format(&uri, buf, 0);
	assert_int_equal(buf[0], 'x');

	memset(&uri, 0, sizeof(uri));
	uri.kind = RING_URI_UNIX;
	strcpy(uri.path, "/run/kmig.sock");
	ring_uri_format(&uri, buf, sizeof(buf));
	assert_string_equal(buf, "unix:/run/kmig.sock");

	/* an unterminated path is bounded by the field */
	memset(uri.path, 'a', sizeof(uri.path));
	{
		char big[256];

		ring_uri_format(&uri, big, sizeof(big));
		assert_int_equal(strlen(big), 5 + sizeof(uri.path));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_longest_unix_path),
		cmocka_unit_test(test_longest_host),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_err_buffer_edges),
		cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
