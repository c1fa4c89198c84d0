/* ring_channel_set_timeout: a peer that goes silent without closing (it
 * neither sends nor reads) must make a send or receive fail with
 * -ETIMEDOUT after the timeout, on every path (copy send, zero-copy send
 * and its notifications, receive, splice receive); a peer that is slow but
 * alive must not; and without a timeout nothing changes. */
#include <fcntl.h>
#include <sys/mman.h>

#include "ring_test.h"

#define TIMEOUT_MS 300
/* the failure must come after the timeout and not much later */
#define LATE_MS 1500

static enum rt_kind kind_tcp = RT_TCP, kind_unix = RT_UNIX;

static enum rt_kind kind_of(void **state)
{
	return *(const enum rt_kind *)*state;
}

static void assert_timed_out(int ret, int64_t t0)
{
	int64_t took = rt_now_ms() - t0;

	if (ret != -ETIMEDOUT || took < TIMEOUT_MS - 20 || took > TIMEOUT_MS + LATE_MS)
		fail_msg("expected -ETIMEDOUT after ~%d ms, got %d (%s) after %lld ms", TIMEOUT_MS, ret,
			 strerror(-ret), (long long)took);
}

static void test_recv_silent_peer(void **state)
{
	struct rt_pair p;
	char buf[64];

	rt_pair_open(kind_of(state), &p);
	ring_channel_set_timeout(p.b, TIMEOUT_MS);
	assert_int_equal(ring_channel_timeout(p.b), TIMEOUT_MS);
	int64_t t0 = rt_now_ms();

	assert_timed_out(ring_recv(p.b, buf, sizeof(buf)), t0);
	/* the channel stays unusable */
	assert_int_equal(ring_recv(p.b, buf, 1), -ETIMEDOUT);
	rt_pair_close(&p);
}

/* 64 MiB into a peer that reads nothing: the socket buffers fill, then
 * nothing completes. */
static void test_send_silent_peer(void **state)
{
	size_t len = 64u << 20;
	uint8_t *buf = calloc(1, len);
	struct rt_pair p;

	assert_non_null(buf);
	rt_pair_open(kind_of(state), &p);
	ring_channel_set_timeout(p.a, TIMEOUT_MS);
	int64_t t0 = rt_now_ms();
	int ret = ring_send(p.a, buf, len);

	/* the whole timeout passes after the buffers filled */
	if (ret != -ETIMEDOUT || rt_now_ms() - t0 < TIMEOUT_MS - 20)
		fail_msg("send into a silent peer: %d (%s) after %lld ms", ret, strerror(-ret),
			 (long long)(rt_now_ms() - t0));
	rt_pair_close(&p);
	free(buf);
}

static void test_zero_copy_silent_peer(void **state)
{
	size_t len = 64u << 20;
	uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iovec iov = { buf, len };
	struct rt_pair p;

	assert_true(buf != MAP_FAILED);
	memset(buf, 1, len);
	rt_pair_open(kind_of(state), &p);
	ring_channel_set_timeout(p.a, TIMEOUT_MS);
	int ret = ring_sendv_zc(p.a, &iov, 1, 0);

	if (!ret)
		ret = ring_zc_flush(p.a);
	if (ret == -EOPNOTSUPP || ret == -EINVAL) {
		/* no zero-copy on this socket kind or kernel: nothing to test */
		rt_pair_close(&p);
		munmap(buf, len);
		skip();
	}
	if (ret != -ETIMEDOUT)
		fail_msg("zero-copy send into a silent peer: %d (%s)", ret, strerror(-ret));
	rt_pair_close(&p);
	munmap(buf, len);
}

static void test_splice_silent_peer(void **state)
{
	int fd = memfd_create("ring-timeout", MFD_CLOEXEC);
	struct rt_pair p;

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	rt_pair_open(kind_of(state), &p);
	ring_channel_set_timeout(p.b, TIMEOUT_MS);
	int64_t t0 = rt_now_ms();
	int ret = ring_recv_splice(p.b, fd, 0, 4096);

	if (ret == -EINVAL) {	/* no splice from unix sockets */
		rt_pair_close(&p);
		close(fd);
		skip();
	}
	assert_timed_out(ret, t0);
	rt_pair_close(&p);
	close(fd);
}

struct trickle {
	struct ring_channel *ch;
	int ret;
};

/* 10 pieces, each sent after 2/3 of the timeout */
static void *trickle_thread(void *arg)
{
	struct trickle *t = arg;
	char piece[100];

	memset(piece, 7, sizeof(piece));
	for (int i = 0; i < 10 && !t->ret; i++) {
		rt_sleep_ms(TIMEOUT_MS * 2 / 3);
		t->ret = ring_send(t->ch, piece, sizeof(piece));
	}
	return NULL;
}

/* A slow peer that keeps sending is not silent: each receive completes
 * before the timeout, though the whole exchange takes 7 times longer. */
static void test_slow_peer_is_not_silent(void **state)
{
	struct rt_pair p;
	struct trickle t = { 0 };
	pthread_t th;
	char piece[100];

	rt_pair_open(kind_of(state), &p);
	ring_channel_set_timeout(p.b, TIMEOUT_MS);
	t.ch = p.a;
	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(ring_recv(p.b, piece, sizeof(piece)), 0);
	rt_join(th, 10000);
	assert_int_equal(t.ret, 0);
	rt_pair_close(&p);
}

/* Without a timeout a silent peer is waited for (here: until it speaks
 * after three timeouts' time). */
static void test_no_timeout_waits(void **state)
{
	struct rt_pair p;
	struct trickle t = { 0 };
	pthread_t th;
	char piece[100];

	rt_pair_open(kind_of(state), &p);
	t.ch = p.a;
	int64_t t0 = rt_now_ms();

	assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
	rt_sleep_ms(TIMEOUT_MS * 3);
	for (int i = 0; i < 10; i++)
		assert_int_equal(ring_recv(p.b, piece, sizeof(piece)), 0);
	rt_join(th, 10000);
	assert_true(rt_now_ms() - t0 >= TIMEOUT_MS * 3);
	rt_pair_close(&p);
}

#define BOTH(fn)                                                          \
	{ #fn "/tcp", fn, NULL, NULL, &kind_tcp }, { #fn "/unix", fn, NULL, NULL, &kind_unix }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_recv_silent_peer),
		BOTH(test_send_silent_peer),
		BOTH(test_zero_copy_silent_peer),
		BOTH(test_splice_silent_peer),
		BOTH(test_slow_peer_is_not_silent),
		BOTH(test_no_timeout_waits),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
