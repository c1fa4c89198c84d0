/* ring_accept_opening(): the connection that sends the opening is taken;
 * connections that send nothing, garbage, half of it, or that crowd the
 * listener, neither end the wait nor hold the real peer back. */
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ring_test.h"

#define MAGIC "TESTMAGC"
#define OPENING_LEN 24

static const uint8_t opening[OPENING_LEN] = "TESTMAGCrest-of-opening";

struct drops {
	unsigned int n;
	char last[256];
	char all[4096];
};

static void on_dropped(void *opaque, const char *peer, const char *why)
{
	struct drops *d = opaque;

	d->n++;
	snprintf(d->last, sizeof(d->last), "%s: %s", peer, why);
	size_t used = strlen(d->all);

	snprintf(d->all + used, sizeof(d->all) - used, "%s: %s\n", peer, why);
}

static struct ring_opening make_opening(struct drops *d, int idle_ms)
{
	return (struct ring_opening){ .bytes = opening, .match = 8, .len = OPENING_LEN,
				      .what = "a test opening", .idle_ms = idle_ms,
				      .dropped = on_dropped, .opaque = d };
}

/* A plain client connection; connect() completes through the backlog
 * before anyone accepts. */
static int raw_connect(const struct ring_uri *u)
{
	int fd;

	if (u->kind == RING_URI_UNIX) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", u->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	} else {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(u->port)),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* The listener closed this connection: the client reads end of file
 * (or a reset) within a second. */
static void assert_closed_by_listener(int fd)
{
	struct timeval tv = { .tv_sec = 1 };
	char c;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t n = recv(fd, &c, 1, 0);

	if (n != 0 && !(n < 0 && errno == ECONNRESET))
		fail_msg("a connection not taken was left open (recv: %zd, %s)", n, n < 0 ? strerror(errno) : "data");
}

static struct ring_listener *listen_on(const char *text, char *dir, struct ring_uri *u)
{
	struct ring_listener *l;
	char buf[160];

	if (!strcmp(text, "unix")) {
		rt_tmpdir(dir, 64);
		snprintf(buf, sizeof(buf), "unix:%s/l", dir);
		text = buf;
	}
	rt_parse(text, u);
	assert_int_equal(ring_listen(u, &l), 0);
	ring_listener_uri(l, u);
	return l;
}

static void cleanup(struct ring_listener *l, const struct ring_uri *u, const char *dir)
{
	ring_listener_close(l);
	if (u->kind == RING_URI_UNIX)
		rmdir(dir);
}

/* Silent, garbage and half-opening strays connect first; the real peer's
 * connection is taken at once, with its opening still to be read. */
static void test_real_peer_wins(void **state)
{
	static const char *const kinds[] = { "tcp:127.0.0.1:0", "unix" };

	(void)state;
	for (int k = 0; k < 2; k++) {
		char dir[64] = "", payload[OPENING_LEN + 5];
		struct drops d = { 0 };
		struct ring_opening o = make_opening(&d, 30000);
		struct ring_channel *ch = NULL;
		struct ring_uri u;
		struct ring_listener *l = listen_on(kinds[k], dir, &u);
		int silent = raw_connect(&u), garbage = raw_connect(&u), half = raw_connect(&u);
		int real = raw_connect(&u);

		send_all(garbage, "GET / HTTP/1.0\r\n\r\n", 18);
		send_all(half, opening, 12);
		send_all(real, opening, OPENING_LEN);
		send_all(real, "data!", 5);
		int64_t t0 = rt_now_ms();

		assert_int_equal(ring_accept_opening(l, &o, &ch, 5000), 0);
		int64_t dt = rt_now_ms() - t0;

		if (dt > 1000)
			fail_msg("%s: taking the real peer took %lld ms", kinds[k], (long long)dt);
		/* the peeked opening is read again, then what followed it */
		assert_int_equal(ring_recv(ch, payload, sizeof(payload)), 0);
		assert_memory_equal(payload, opening, OPENING_LEN);
		assert_memory_equal(payload + OPENING_LEN, "data!", 5);
		assert_int_equal(ring_send(ch, "ok", 2), 0);
		char reply[2];

		assert_int_equal(recv(real, reply, 2, MSG_WAITALL), 2);
		/* the garbage was reported; the others were closed */
		if (!strstr(d.all, "did not open with a test opening"))
			fail_msg("%s: the garbage connection was not reported: %s", kinds[k], d.all);
		assert_closed_by_listener(silent);
		assert_closed_by_listener(garbage);
		assert_closed_by_listener(half);
		close(silent);
		close(garbage);
		close(half);
		close(real);
		ring_channel_close(ch);
		cleanup(l, &u, dir);
	}
}

/* A connection that sends nothing is dropped after idle_ms; the wait goes
 * on until its own timeout. */
static void test_silent_dropped_after_idle(void **state)
{
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 150);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "";
	struct ring_listener *l = listen_on("tcp:127.0.0.1:0", dir, &u);
	int silent = raw_connect(&u);
	int64_t t0 = rt_now_ms();

	(void)state;
	assert_int_equal(ring_accept_opening(l, &o, &ch, 600), -ETIMEDOUT);
	int64_t dt = rt_now_ms() - t0;

	assert_null(ch);
	if (dt < 590 || dt > 2000)
		fail_msg("a 600 ms wait took %lld ms", (long long)dt);
	assert_int_equal(d.n, 1);
	if (!strstr(d.last, "sent nothing within 150 ms (expected a test opening)") || !strstr(d.last, "127.0.0.1:"))
		fail_msg("drop reported as \"%s\"", d.last);
	assert_closed_by_listener(silent);
	close(silent);
	cleanup(l, &u, dir);
}

/* Half an opening, then a close: dropped at once, with how much came. */
static void test_half_then_close(void **state)
{
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 30000);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "";
	struct ring_listener *l = listen_on("unix", dir, &u);
	int half = raw_connect(&u);

	(void)state;
	send_all(half, opening, 10);
	close(half);
	assert_int_equal(ring_accept_opening(l, &o, &ch, 300), -ETIMEDOUT);
	assert_int_equal(d.n, 1);
	if (!strstr(d.last, "closed after 10 of the 24 bytes of a test opening"))
		fail_msg("drop reported as \"%s\"", d.last);
	cleanup(l, &u, dir);
}

struct late_sender {
	int fd;
	int delay_ms;
};

static void *send_rest_later(void *arg)
{
	struct late_sender *ls = arg;

	rt_sleep_ms(ls->delay_ms);
	if (send(ls->fd, opening + 10, OPENING_LEN - 10, MSG_NOSIGNAL) != OPENING_LEN - 10)
		ls->fd = -1;	/* checked after the join */
	return NULL;
}

/* An opening split over two sends is taken once it is whole: a partial
 * opening is looked at again, not lost, and costs no busy loop. */
static void test_split_opening(void **state)
{
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 30000);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "", got[OPENING_LEN];
	struct ring_listener *l = listen_on("tcp:127.0.0.1:0", dir, &u);
	struct late_sender ls = { .fd = raw_connect(&u), .delay_ms = 100 };
	struct rusage r0, r1;
	pthread_t t;
	int sender_fd = ls.fd;

	(void)state;
	send_all(ls.fd, opening, 10);
	getrusage(RUSAGE_SELF, &r0);
	assert_int_equal(pthread_create(&t, NULL, send_rest_later, &ls), 0);
	assert_int_equal(ring_accept_opening(l, &o, &ch, 5000), 0);
	getrusage(RUSAGE_SELF, &r1);
	pthread_join(t, NULL);
	assert_int_equal(ls.fd, sender_fd);
	assert_int_equal(d.n, 0);
	assert_int_equal(ring_recv(ch, got, sizeof(got)), 0);
	assert_memory_equal(got, opening, OPENING_LEN);
	/* 100 ms of waiting must not be 100 ms of CPU */
	long cpu_ms = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000 +
		      (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1000;

	if (cpu_ms > 50)
		fail_msg("waiting 100 ms for the rest of an opening used %ld ms of CPU", cpu_ms);
	ring_channel_close(ch);
	close(sender_fd);
	cleanup(l, &u, dir);
}

/* A peer's second connection may open before its first has sent its
 * whole opening (a source's RAM channels, early): with `also` naming its
 * magic it is neither taken nor dropped, costs no busy loop while the
 * opening completes, survives the winner's take, and is ring_accept()'s
 * next connection, its bytes unread.  So is one that has sent nothing yet
 * when the winner is taken (its hello still on its way).  A stray that
 * sent a wrong byte is still dropped. */
static void test_early_also_kept(void **state)
{
	static const uint8_t chan[16] = "CHANMAGC-index-1", chan2[16] = "CHANMAGC-index-2";
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 30000);
	struct ring_channel *ch = NULL, *early = NULL;
	struct ring_uri u;
	char dir[64] = "", got[OPENING_LEN];
	struct ring_listener *l = listen_on("tcp:127.0.0.1:0", dir, &u);
	struct late_sender ls = { .fd = raw_connect(&u), .delay_ms = 100 };
	int sender_fd = ls.fd, chan_fd, stray_fd, chan2_fd;
	struct rusage r0, r1;
	pthread_t t;

	(void)state;
	o.also = "CHANMAGC";
	o.also_match = 8;
	send_all(ls.fd, opening, 10);
	chan_fd = raw_connect(&u);
	send_all(chan_fd, chan, sizeof(chan));
	stray_fd = raw_connect(&u);
	send_all(stray_fd, "GARBAGE!", 8);
	chan2_fd = raw_connect(&u);
	getrusage(RUSAGE_SELF, &r0);
	assert_int_equal(pthread_create(&t, NULL, send_rest_later, &ls), 0);
	assert_int_equal(ring_accept_opening(l, &o, &ch, 5000), 0);
	getrusage(RUSAGE_SELF, &r1);
	pthread_join(t, NULL);
	assert_int_equal(ls.fd, sender_fd);
	assert_int_equal(ring_recv(ch, got, sizeof(got)), 0);
	assert_memory_equal(got, opening, OPENING_LEN);
	assert_int_equal(d.n, 1);
	assert_non_null(strstr(d.last, "did not open with a test opening"));
	assert_closed_by_listener(stray_fd);
	long cpu_ms = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000 +
		      (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1000;

	if (cpu_ms > 50)
		fail_msg("a kept connection made the 100 ms wait cost %ld ms of CPU", cpu_ms);
	send_all(chan2_fd, chan2, sizeof(chan2));
	bool seen[2] = { false, false };

	for (int k = 0; k < 2; k++) {
		assert_int_equal(ring_accept(l, &early, 0), 0);
		assert_int_equal(ring_recv(early, got, sizeof(chan)), 0);
		assert_memory_equal(got, chan, 15);
		seen[got[15] - '1'] = true;
		ring_channel_close(early);
	}
	assert_true(seen[0] && seen[1]);
	/* and only once each: the next accept waits for a new connection */
	struct ring_channel *none = NULL;

	assert_int_equal(ring_accept(l, &none, 50), -ETIMEDOUT);
	ring_channel_close(ch);
	close(sender_fd);
	close(chan_fd);
	close(chan2_fd);
	close(stray_fd);
	cleanup(l, &u, dir);
}

/* More silent connections than places: the oldest make room, and the real
 * peer, arriving last, is still taken. */
static void test_crowd(void **state)
{
	enum { STRAYS = RING_MAX_CANDIDATES + 8 };
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 30000);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "";
	struct ring_listener *l = listen_on("tcp:127.0.0.1:0", dir, &u);
	int strays[STRAYS];

	(void)state;
	for (int i = 0; i < STRAYS; i++)
		strays[i] = raw_connect(&u);
	int real = raw_connect(&u);

	send_all(real, opening, OPENING_LEN);
	assert_int_equal(ring_accept_opening(l, &o, &ch, 5000), 0);
	/* 25 connections for 16 places: 9 made room */
	assert_int_equal(d.n, STRAYS + 1 - RING_MAX_CANDIDATES);
	if (!strstr(d.last, "more than 16 connections were waiting"))
		fail_msg("drop reported as \"%s\"", d.last);
	for (int i = 0; i < STRAYS; i++) {
		assert_closed_by_listener(strays[i]);
		close(strays[i]);
	}
	close(real);
	ring_channel_close(ch);
	cleanup(l, &u, dir);
}

/* Abort ends the wait, and closes the connections it held. */
static void test_abort_closes_candidates(void **state)
{
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 30000);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "";
	struct ring_listener *l = listen_on("unix", dir, &u);
	int stray = raw_connect(&u);

	(void)state;
	ring_listener_abort(l);
	assert_int_equal(ring_accept_opening(l, &o, &ch, 5000), -ECANCELED);
	assert_null(ch);
	close(stray);
	cleanup(l, &u, dir);
}

static void test_bad_openings(void **state)
{
	struct drops d = { 0 };
	struct ring_opening o = make_opening(&d, 0);
	struct ring_channel *ch = NULL;
	struct ring_uri u;
	char dir[64] = "";
	struct ring_listener *l = listen_on("unix", dir, &u);

	(void)state;
	o.len = RING_OPENING_MAX + 1;
	assert_int_equal(ring_accept_opening(l, &o, &ch, 0), -EINVAL);
	o.len = 4;	/* match longer than the opening */
	assert_int_equal(ring_accept_opening(l, &o, &ch, 0), -EINVAL);
	o.len = 0;
	assert_int_equal(ring_accept_opening(l, &o, &ch, 0), -EINVAL);
	assert_int_equal(ring_accept_opening(NULL, &o, &ch, 0), -EINVAL);
	cleanup(l, &u, dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_peer_wins),
		cmocka_unit_test(test_silent_dropped_after_idle),
		cmocka_unit_test(test_half_then_close),
		cmocka_unit_test(test_split_opening),
		cmocka_unit_test(test_early_also_kept),
		cmocka_unit_test(test_crowd),
		cmocka_unit_test(test_abort_closes_candidates),
		cmocka_unit_test(test_bad_openings),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
