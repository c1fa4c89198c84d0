/* Listeners and connection setup: accept timeouts, ephemeral ports, connect
 * retry while the destination starts up, unix socket file handling. */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ring_test.h"

/* A tcp port that was free a moment ago (bound then released). */
static void reserve_port(char *port, size_t len)
{
	struct ring_listener *l;
	struct ring_uri uri;

	rt_parse("tcp:127.0.0.1:0", &uri);
	assert_int_equal(ring_listen(&uri, &l), 0);
	ring_listener_uri(l, &uri);
	ring_listener_close(l);
	snprintf(port, len, "%s", uri.port);
}

/* Leave a socket file nobody listens on, as a killed destination would. */
static void make_stale_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
}

static bool path_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static void ping_pong(struct ring_channel *a, struct ring_channel *b)
{
	char buf[4];

	assert_int_equal(ring_send(a, "ping", 4), 0);
	assert_int_equal(ring_recv(b, buf, 4), 0);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(ring_send(b, "pong", 4), 0);
	assert_int_equal(ring_recv(a, buf, 4), 0);
	assert_memory_equal(buf, "pong", 4);
}

static void test_accept_timeout(void **state)
{
	char dir[64], text[128];
	const char *texts[2] = { "tcp:127.0.0.1:0", text };
	struct ring_channel *ch = NULL;
	struct ring_listener *l;
	struct ring_uri uri;
	int64_t t0, dt;

	(void)state;
	rt_tmpdir(dir, sizeof(dir));
	snprintf(text, sizeof(text), "unix:%s/l", dir);
	for (int i = 0; i < 2; i++) {
		rt_parse(texts[i], &uri);
		assert_int_equal(ring_listen(&uri, &l), 0);

		t0 = rt_now_ms();
		assert_int_equal(ring_accept(l, &ch, 200), -ETIMEDOUT);
		dt = rt_now_ms() - t0;
		if (dt < 190 || dt > 2000)
			fail_msg("%s: 200 ms accept timeout took %lld ms", texts[i], (long long)dt);

		t0 = rt_now_ms();
		assert_int_equal(ring_accept(l, &ch, 0), -ETIMEDOUT);
		assert_true(rt_now_ms() - t0 < 500);
		assert_null(ch);

		/* a pending connection is returned even with timeout 0 */
		{
			struct ring_channel *a, *b;

			ring_listener_uri(l, &uri);
			assert_int_equal(ring_connect(&uri, 1000, &a), 0);
			assert_int_equal(ring_accept(l, &b, 0), 0);
			ping_pong(a, b);
			ring_channel_close(a);
			ring_channel_close(b);
		}
		ring_listener_close(l);
	}
	rmdir(dir);
}

static void test_ephemeral_port(void **state)
{
	struct ring_listener *l1, *l2;
	struct ring_channel *a, *b;
	struct ring_uri uri, u1, u2;
	char text[300];
	unsigned long p1, p2;

	(void)state;
	rt_parse("tcp:127.0.0.1:0", &uri);
	assert_int_equal(ring_listen(&uri, &l1), 0);
	assert_int_equal(ring_listen(&uri, &l2), 0);
	ring_listener_uri(l1, &u1);
	ring_listener_uri(l2, &u2);
	assert_int_equal(u1.kind, RING_URI_TCP);
	assert_string_equal(u1.host, "127.0.0.1");
	p1 = strtoul(u1.port, NULL, 10);
	p2 = strtoul(u2.port, NULL, 10);
	assert_true(p1 > 0 && p1 <= 65535);
	assert_true(p2 > 0 && p2 <= 65535);
	assert_true(p1 != p2);

	/* the reported URI is what a source connects to, as text */
	ring_uri_format(&u2, text, sizeof(text));
	rt_parse(text, &uri);
	assert_int_equal(ring_connect(&uri, 0, &a), 0);
	assert_int_equal(ring_accept(l2, &b, 1000), 0);
	ping_pong(a, b);
	ring_channel_close(a);
	ring_channel_close(b);
	/* nothing reached the other listener */
	assert_int_equal(ring_accept(l1, &b, 0), -ETIMEDOUT);
	ring_listener_close(l1);
	ring_listener_close(l2);

	/* a host name is kept as given, only the port is filled in */
	rt_parse("tcp:localhost:0", &uri);
	assert_int_equal(ring_listen(&uri, &l1), 0);
	ring_listener_uri(l1, &u1);
	assert_string_equal(u1.host, "localhost");
	assert_string_not_equal(u1.port, "0");
	assert_int_equal(ring_connect(&u1, 1000, &a), 0);
	assert_int_equal(ring_accept(l1, &b, 1000), 0);
	ping_pong(a, b);
	ring_channel_close(a);
	ring_channel_close(b);
	ring_listener_close(l1);
}

struct late_job {
	struct ring_uri uri;
	int delay_ms;
	int ret;
};

/* A destination that starts listening late, accepts one source and
 * answers its ping. */
static void *late_listener(void *arg)
{
	struct late_job *j = arg;
	struct ring_listener *l;
	struct ring_channel *ch;
	char buf[4];

	rt_sleep_ms(j->delay_ms);
	j->ret = ring_listen(&j->uri, &l);
	if (j->ret)
		return NULL;
	j->ret = ring_accept(l, &ch, 5000);
	if (!j->ret) {
		j->ret = ring_recv(ch, buf, 4);
		if (!j->ret)
			j->ret = memcmp(buf, "ping", 4) ? -EBADMSG : ring_send(ch, "pong", 4);
		if (!j->ret)	/* wait for the source to hang up */
			j->ret = ring_recv(ch, buf, 1) == -EPIPE ? 0 : -EPROTO;
		ring_channel_close(ch);
	}
	ring_listener_close(l);
	return NULL;
}

static void connect_to_late_listener(const struct ring_uri *uri)
{
	struct late_job j = { .uri = *uri, .delay_ms = 200 };
	struct ring_channel *ch;
	int64_t t0, dt;
	pthread_t t;
	char buf[4];

	t0 = rt_now_ms();
	assert_int_equal(pthread_create(&t, NULL, late_listener, &j), 0);
	assert_int_equal(ring_connect(uri, 5000, &ch), 0);
	dt = rt_now_ms() - t0;
	if (dt < 150 || dt > 3000)
		fail_msg("connected after %lld ms to a listener started after 200 ms",
			 (long long)dt);
	assert_int_equal(ring_send(ch, "ping", 4), 0);
	assert_int_equal(ring_recv(ch, buf, 4), 0);
	assert_memory_equal(buf, "pong", 4);
	ring_channel_close(ch);
	rt_join(t, 10000);
	assert_int_equal(j.ret, 0);
}

static void test_connect_retry_tcp(void **state)
{
	struct ring_uri uri;
	char text[64], port[16];

	(void)state;
	/* nothing listens: every attempt is ECONNREFUSED until the thread
	 * binds; the port is in the ephemeral range, so this also exercises
	 * the self-connect guard */
	reserve_port(port, sizeof(port));
	snprintf(text, sizeof(text), "tcp:127.0.0.1:%s", port);
	rt_parse(text, &uri);
	connect_to_late_listener(&uri);
}

static void test_connect_retry_unix(void **state)
{
	char dir[64], text[128];
	struct ring_uri uri;

	(void)state;
	rt_tmpdir(dir, sizeof(dir));
	snprintf(text, sizeof(text), "unix:%s/late", dir);
	rt_parse(text, &uri);
	/* no file yet: ENOENT is retried */
	connect_to_late_listener(&uri);
	assert_false(path_exists(uri.path));
	/* a stale file from a dead destination: ECONNREFUSED is retried, and
	 * the new listener replaces the file */
	make_stale_socket(uri.path);
	connect_to_late_listener(&uri);
	assert_false(path_exists(uri.path));
	rmdir(dir);
}

static void test_connect_gives_up(void **state)
{
	struct ring_channel *ch = NULL;
	char dir[64], text[128], port[16];
	struct ring_uri uri;
	int64_t t0, dt;

	(void)state;
	reserve_port(port, sizeof(port));
	snprintf(text, sizeof(text), "tcp:127.0.0.1:%s", port);
	rt_parse(text, &uri);
	t0 = rt_now_ms();
	assert_int_equal(ring_connect(&uri, 300, &ch), -ECONNREFUSED);
	dt = rt_now_ms() - t0;
	if (dt < 290 || dt > 2000)
		fail_msg("300 ms connect budget took %lld ms", (long long)dt);
	t0 = rt_now_ms();
	assert_int_equal(ring_connect(&uri, 0, &ch), -ECONNREFUSED);
	assert_true(rt_now_ms() - t0 < 500);
	assert_null(ch);

	rt_tmpdir(dir, sizeof(dir));
	snprintf(text, sizeof(text), "unix:%s/none", dir);
	rt_parse(text, &uri);
	t0 = rt_now_ms();
	assert_int_equal(ring_connect(&uri, 100, &ch), -ENOENT);
	assert_true(rt_now_ms() - t0 >= 90);
	make_stale_socket(uri.path);
	assert_int_equal(ring_connect(&uri, 100, &ch), -ECONNREFUSED);
	unlink(uri.path);
	rmdir(dir);
}

static void test_bad_uris(void **state)
{
	struct ring_listener *l = NULL;
	struct ring_channel *ch = NULL;
	struct ring_uri uri;

	(void)state;
	/* port 0 is for listening only */
	rt_parse("tcp:127.0.0.1:0", &uri);
	assert_int_equal(ring_connect(&uri, 0, &ch), -EINVAL);

	/* hand-built structs are checked too */
	memset(&uri, 0, sizeof(uri));
	uri.kind = RING_URI_UNIX;
	memset(uri.path, 'x', sizeof(uri.path));	/* no room for the NUL */
	assert_int_equal(ring_listen(&uri, &l), -ENAMETOOLONG);
	assert_int_equal(ring_connect(&uri, 0, &ch), -ENAMETOOLONG);
	uri.path[0] = '\0';
	assert_int_equal(ring_listen(&uri, &l), -EINVAL);
	assert_int_equal(ring_connect(&uri, 0, &ch), -EINVAL);
	memset(&uri, 0, sizeof(uri));
	uri.kind = RING_URI_TCP;
	strcpy(uri.host, "127.0.0.1");
	strcpy(uri.port, "port");
	assert_int_equal(ring_listen(&uri, &l), -EINVAL);
	uri.kind = (enum ring_uri_kind)42;
	assert_int_equal(ring_listen(&uri, &l), -EINVAL);
	assert_int_equal(ring_connect(&uri, 0, &ch), -EINVAL);
	assert_null(l);
	assert_null(ch);

	/* a hand-built bracketed IPv6 host is accepted too: resolution
	 * strips the brackets (listening may still fail without IPv6) */
	memset(&uri, 0, sizeof(uri));
	uri.kind = RING_URI_TCP;
	strcpy(uri.host, "[::1]");
	strcpy(uri.port, "0");
	if (ring_listen(&uri, &l) == 0)
		ring_listener_close(l);
}

static void test_tcp_addr_in_use(void **state)
{
	struct ring_listener *l1, *l2 = NULL;
	struct ring_uri uri;

	(void)state;
	rt_parse("tcp:127.0.0.1:0", &uri);
	assert_int_equal(ring_listen(&uri, &l1), 0);
	ring_listener_uri(l1, &uri);
	assert_int_equal(ring_listen(&uri, &l2), -EADDRINUSE);
	assert_null(l2);
	ring_listener_close(l1);
	/* the port is free again at once (SO_REUSEADDR) */
	assert_int_equal(ring_listen(&uri, &l1), 0);
	ring_listener_close(l1);
}

static void test_unix_files(void **state)
{
	struct ring_listener *l, *l2 = NULL;
	struct ring_channel *a, *b;
	char dir[64], text[128];
	struct ring_uri uri, got;
	int fd;

	(void)state;
	rt_tmpdir(dir, sizeof(dir));
	snprintf(text, sizeof(text), "unix:%s/sock", dir);
	rt_parse(text, &uri);

	/* a stale file is replaced; close removes the file we made */
	make_stale_socket(uri.path);
	assert_int_equal(ring_listen(&uri, &l), 0);
	ring_listener_uri(l, &got);
	assert_int_equal(got.kind, RING_URI_UNIX);
	assert_string_equal(got.path, uri.path);
	assert_int_equal(ring_connect(&uri, 0, &a), 0);
	assert_int_equal(ring_accept(l, &b, 1000), 0);
	ping_pong(a, b);
	ring_channel_close(a);
	ring_channel_close(b);

	/* a live listener's file is not stolen */
	assert_int_equal(ring_listen(&uri, &l2), -EADDRINUSE);
	assert_null(l2);
	assert_true(path_exists(uri.path));
	/* (the liveness probe shows up as one connection that ends at once) */
	assert_int_equal(ring_accept(l, &b, 1000), 0);
	assert_int_equal(ring_recv(b, text, 1), -EPIPE);
	ring_channel_close(b);
	assert_int_equal(ring_connect(&uri, 0, &a), 0);
	assert_int_equal(ring_accept(l, &b, 1000), 0);
	ping_pong(a, b);
	ring_channel_close(a);
	ring_channel_close(b);
	ring_listener_close(l);
	assert_false(path_exists(uri.path));

	/* close leaves alone a file somebody else has put there since */
	assert_int_equal(ring_listen(&uri, &l), 0);
	unlink(uri.path);
	make_stale_socket(uri.path);
	ring_listener_close(l);
	assert_true(path_exists(uri.path));
	unlink(uri.path);

	/* never delete something that is not a socket */
	fd = open(uri.path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ring_listen(&uri, &l2), -EEXIST);
	assert_true(path_exists(uri.path));
	unlink(uri.path);

	/* a missing directory is reported as such */
	snprintf(text, sizeof(text), "unix:%s/no/such/dir", dir);
	rt_parse(text, &uri);
	assert_int_equal(ring_listen(&uri, &l2), -ENOENT);
	rmdir(dir);
}

/* A second connection to a peer that has closed the first one gives up at
 * once (multifd's channels to a destination killed after the main
 * connection), where a plain connect retries the refusal until its
 * timeout; while the first connection stays open, refusals are retried. */
static void test_connect_beside(void **state)
{
	struct ring_channel *main_ch, *peer, *ch = NULL;
	struct ring_listener *l;
	struct ring_uri uri;
	int64_t t0, dt;

	(void)state;
	for (int gone = 1; gone >= 0; gone--) {
		rt_parse("tcp:127.0.0.1:0", &uri);
		assert_int_equal(ring_listen(&uri, &l), 0);
		ring_listener_uri(l, &uri);
		assert_int_equal(ring_connect(&uri, 1000, &main_ch), 0);
		assert_int_equal(ring_accept(l, &peer, 1000), 0);
		ring_listener_close(l);		/* nobody listens any more */
		if (gone)
			ring_channel_close(peer);	/* and the peer is gone */
		t0 = rt_now_ms();
		int r = ring_connect_beside(&uri, 400, main_ch, &ch);

		dt = rt_now_ms() - t0;
		assert_null(ch);
		if (gone && (r != -ECONNRESET || dt > 200))
			fail_msg("peer gone: %d after %lld ms, expected -ECONNRESET at once", r, (long long)dt);
		if (!gone && (r != -ECONNREFUSED || dt < 390))
			fail_msg("peer alive: %d after %lld ms, expected -ECONNREFUSED after 400 ms of retries", r,
				 (long long)dt);
		if (!gone)
			ring_channel_close(peer);
		ring_channel_close(main_ch);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_timeout),
		cmocka_unit_test(test_ephemeral_port),
		cmocka_unit_test(test_connect_retry_tcp),
		cmocka_unit_test(test_connect_retry_unix),
		cmocka_unit_test(test_connect_gives_up),
		cmocka_unit_test(test_connect_beside),
		cmocka_unit_test(test_bad_uris),
		cmocka_unit_test(test_tcp_addr_in_use),
		cmocka_unit_test(test_unix_files),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
