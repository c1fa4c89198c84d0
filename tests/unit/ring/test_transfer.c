/* Bulk transfers over tcp loopback and unix sockets with content checks,
 * iovec batching past IOV_MAX, and truncated streams (-EPIPE). */
#include <limits.h>
#include <sys/uio.h>

#include "ring_test.h"

#define BULK (64u << 20)
#define PAGE 4096u
#define NPAGES (BULK / PAGE)

static enum rt_kind kind_tcp = RT_TCP, kind_unix = RT_UNIX;

static enum rt_kind kind_of(void **state)
{
	return *(enum rt_kind *)*state;
}

struct send_job {
	struct ring_channel *ch;
	const struct iovec *iov;
	int iovcnt;
	int max_batch;		/* 0: everything in one ring_sendv() */
	uint64_t seed;
	int ret;
};

static void *send_thread(void *arg)
{
	struct send_job *j = arg;
	uint64_t rnd = j->seed;
	int i = 0, n;

	if (!j->max_batch) {
		j->ret = ring_sendv(j->ch, j->iov, j->iovcnt);
		return NULL;
	}
	while (i < j->iovcnt) {
		n = 1 + (int)(rt_rand(&rnd) % (uint64_t)j->max_batch);
		if (n > j->iovcnt - i)
			n = j->iovcnt - i;
		j->ret = ring_sendv(j->ch, j->iov + i, n);
		if (j->ret)
			return NULL;
		i += n;
	}
	return NULL;
}

struct send_buf_job {
	struct ring_channel *ch;
	const void *buf;
	size_t len;
	bool close_after;
	int ret;
};

static void *send_buf_thread(void *arg)
{
	struct send_buf_job *j = arg;

	j->ret = ring_send(j->ch, j->buf, j->len);
	if (j->close_after)
		ring_channel_close(j->ch);
	return NULL;
}

/* 64 MiB of 4 KiB "pages" gathered in a scrambled order by a single
 * ring_sendv() of 16384 iovecs (16 kernel batches), scattered back to the
 * same scrambled addresses by ring_recvv() calls of 777 iovecs. */
static void test_pages(void **state)
{
	unsigned char *src = rt_xmalloc(BULK), *dst = rt_xmalloc(BULK);
	struct iovec *siov = rt_xmalloc(NPAGES * sizeof(*siov));
	struct iovec *riov = rt_xmalloc(NPAGES * sizeof(*riov));
	struct send_job job;
	struct rt_pair p;
	pthread_t t;

	rt_fill(src, BULK, 1);
	memset(dst, 0, BULK);
	for (size_t k = 0; k < NPAGES; k++) {
		size_t pg = (k * 7919) % NPAGES;	/* odd stride: a permutation */

		siov[k] = (struct iovec){ src + pg * PAGE, PAGE };
		riov[k] = (struct iovec){ dst + pg * PAGE, PAGE };
	}

	rt_pair_open(kind_of(state), &p);
	job = (struct send_job){ .ch = p.a, .iov = siov, .iovcnt = (int)NPAGES };
	assert_int_equal(pthread_create(&t, NULL, send_thread, &job), 0);
	for (int i = 0; i < (int)NPAGES; i += 777) {
		int n = (int)NPAGES - i < 777 ? (int)NPAGES - i : 777;

		assert_int_equal(ring_recvv(p.b, riov + i, n), 0);
	}
	rt_join(t, 30000);
	assert_int_equal(job.ret, 0);
	assert_true(memcmp(src, dst, BULK) == 0);
	assert_int_equal(ring_channel_bytes_sent(p.a), BULK);
	assert_int_equal(ring_channel_bytes_received(p.b), BULK);
	assert_int_equal(ring_channel_bytes_received(p.a), 0);
	assert_int_equal(ring_channel_bytes_sent(p.b), 0);
	rt_pair_close(&p);
	free(src);
	free(dst);
	free(siov);
	free(riov);
}

/* Odd-sized iovecs (zero-length ones included) in random batches of up to
 * 2500, received by ring_recv() in random chunks of 1 byte .. 1 MiB. */
static void test_odd_sizes(void **state)
{
	unsigned char *src = rt_xmalloc(BULK), *dst = rt_xmalloc(BULK);
	size_t cap = BULK / 2000, n = 0, off = 0, got = 0;
	struct iovec *iov = rt_xmalloc(cap * sizeof(*iov));
	uint64_t rnd = 42;
	struct send_job job;
	struct rt_pair p;
	pthread_t t;

	rt_fill(src, BULK, 2);
	memset(dst, 0, BULK);
	while (off < BULK) {
		size_t len = (size_t)(rt_rand(&rnd) % 9001);

		if (len > BULK - off)
			len = BULK - off;
		if (n == cap) {
			cap *= 2;
			iov = realloc(iov, cap * sizeof(*iov));
			assert_non_null(iov);
		}
		iov[n++] = (struct iovec){ src + off, len };
		off += len;
	}

	rt_pair_open(kind_of(state), &p);
	job = (struct send_job){ .ch = p.a, .iov = iov, .iovcnt = (int)n, .max_batch = 2500,
				 .seed = 7 };
	assert_int_equal(pthread_create(&t, NULL, send_thread, &job), 0);
	while (got < BULK) {
		size_t len = 1 + (size_t)(rt_rand(&rnd) % (1u << 20));

		if (len > BULK - got)
			len = BULK - got;
		assert_int_equal(ring_recv(p.b, dst + got, len), 0);
		got += len;
	}
	rt_join(t, 30000);
	assert_int_equal(job.ret, 0);
	assert_true(memcmp(src, dst, BULK) == 0);
	assert_int_equal(ring_channel_bytes_sent(p.a), BULK);
	assert_int_equal(ring_channel_bytes_received(p.b), BULK);
	rt_pair_close(&p);
	free(src);
	free(dst);
	free(iov);
}

/* 1-byte iovecs around the IOV_MAX boundaries. */
static void test_iov_max_boundaries(void **state)
{
	static const int counts[] = { 1, IOV_MAX - 1, IOV_MAX, IOV_MAX + 1, 2 * IOV_MAX + 1, 5000 };
	unsigned char src[5000], dst[5000];
	struct iovec siov[5000], riov[5000];
	struct rt_pair p;

	rt_pair_open(kind_of(state), &p);
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		int n = counts[c];

		rt_fill(src, sizeof(src), 100 + c);
		memset(dst, 0, sizeof(dst));
		for (int i = 0; i < n; i++) {
			siov[i] = (struct iovec){ src + i, 1 };
			/* scatter backwards: proves every byte lands in its own
			 * iovec across the batch boundaries */
			riov[i] = (struct iovec){ dst + (n - 1 - i), 1 };
		}
		/* small enough for the socket buffer: no second thread needed */
		assert_int_equal(ring_sendv(p.a, siov, n), 0);
		assert_int_equal(ring_recvv(p.b, riov, n), 0);
		for (int i = 0; i < n; i++)
			if (dst[n - 1 - i] != src[i])
				fail_msg("count %d: byte %d misplaced", n, i);
	}
	rt_pair_close(&p);
}

static void test_small_and_empty(void **state)
{
	struct iovec empty[3] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
	char buf[64] = "x", out[64];
	struct rt_pair p;
	uint32_t v;

	rt_pair_open(kind_of(state), &p);

	/* nothing to move: returns at once, nothing counted, nothing hangs */
	assert_int_equal(ring_send(p.a, buf, 0), 0);
	assert_int_equal(ring_recv(p.b, out, 0), 0);
	assert_int_equal(ring_sendv(p.a, NULL, 0), 0);
	assert_int_equal(ring_sendv(p.a, empty, 3), 0);
	assert_int_equal(ring_recvv(p.b, empty, 3), 0);
	assert_int_equal(ring_channel_bytes_sent(p.a), 0);
	assert_int_equal(ring_channel_bytes_received(p.b), 0);

	/* bad arguments */
	assert_int_equal(ring_sendv(p.a, empty, -1), -EINVAL);
	assert_int_equal(ring_sendv(p.a, NULL, 1), -EINVAL);
	assert_int_equal(ring_recvv(p.b, NULL, 2), -EINVAL);
	assert_int_equal(ring_send(p.a, NULL, 1), -EINVAL);
	assert_int_equal(ring_recv(p.b, NULL, 1), -EINVAL);
	assert_int_equal(ring_send(NULL, buf, 1), -EINVAL);
	assert_int_equal(ring_recv(NULL, buf, 1), -EINVAL);

	/* ping-pong of small records, both directions */
	for (uint32_t i = 0; i < 2000; i++) {
		assert_int_equal(ring_send(p.a, &i, sizeof(i)), 0);
		assert_int_equal(ring_recv(p.b, &v, sizeof(v)), 0);
		assert_int_equal(v, i);
		v = ~v;
		assert_int_equal(ring_send(p.b, &v, sizeof(v)), 0);
		assert_int_equal(ring_recv(p.a, &v, sizeof(v)), 0);
		assert_int_equal(v, ~i);
	}
	assert_int_equal(ring_channel_bytes_sent(p.a), 2000 * 4);
	assert_int_equal(ring_channel_bytes_received(p.a), 2000 * 4);
	assert_int_equal(ring_channel_bytes_sent(p.b), 2000 * 4);
	assert_int_equal(ring_channel_bytes_received(p.b), 2000 * 4);

	/* nothing pending */
	assert_int_equal(ring_poll_readable(p.b, 0), 0);
	assert_int_equal(ring_send(p.a, "z", 1), 0);
	assert_int_equal(ring_poll_readable(p.b, 1000), 1);
	assert_int_equal(ring_recv(p.b, out, 1), 0);
	assert_int_equal(out[0], 'z');
	rt_pair_close(&p);
}

/* The sender stops half-way and closes: the receiver must see -EPIPE, not a
 * short success, and must have counted exactly what arrived. */
static void test_truncated_recv(void **state)
{
	const size_t half = 1u << 20;
	unsigned char *src = rt_xmalloc(2 * half), *dst = rt_xmalloc(2 * half);
	struct send_buf_job job;
	struct rt_pair p;
	pthread_t t;

	rt_fill(src, 2 * half, 3);
	rt_pair_open(kind_of(state), &p);
	job = (struct send_buf_job){ .ch = p.a, .buf = src, .len = half, .close_after = true };
	assert_int_equal(pthread_create(&t, NULL, send_buf_thread, &job), 0);
	assert_int_equal(ring_recv(p.b, dst, 2 * half), -EPIPE);
	rt_join(t, 10000);
	p.a = NULL;	/* closed by the thread */
	assert_int_equal(job.ret, 0);
	assert_int_equal(ring_channel_bytes_received(p.b), half);
	assert_memory_equal(src, dst, half);
	/* the end of the stream stays the end */
	assert_int_equal(ring_recv(p.b, dst, 1), -EPIPE);
	rt_pair_close(&p);

	/* same through ring_recvv(), truncated inside the second iovec */
	rt_pair_open(kind_of(state), &p);
	job = (struct send_buf_job){ .ch = p.a, .buf = src, .len = half + 100,
				     .close_after = true };
	assert_int_equal(pthread_create(&t, NULL, send_buf_thread, &job), 0);
	{
		struct iovec iov[2] = { { dst, half }, { dst + half, half } };

		assert_int_equal(ring_recvv(p.b, iov, 2), -EPIPE);
	}
	rt_join(t, 10000);
	p.a = NULL;
	assert_int_equal(ring_channel_bytes_received(p.b), half + 100);
	rt_pair_close(&p);

	/* closing exactly on a record boundary: the record is complete */
	rt_pair_open(kind_of(state), &p);
	assert_int_equal(ring_send(p.a, src, 100), 0);
	ring_channel_close(p.a);
	p.a = NULL;
	assert_int_equal(ring_recv(p.b, dst, 100), 0);
	assert_memory_equal(src, dst, 100);
	assert_int_equal(ring_recv(p.b, dst, 1), -EPIPE);
	rt_pair_close(&p);
	free(src);
	free(dst);
}

/* The receiver reads a little and closes: the blocked sender must fail with
 * -EPIPE (tcp answers with RST here, which must not leak out as a different
 * error). */
static void test_truncated_send(void **state)
{
	unsigned char *src = rt_xmalloc(BULK), buf[4096];
	struct send_buf_job job;
	struct rt_pair p;
	pthread_t t;

	rt_fill(src, BULK, 4);
	rt_pair_open(kind_of(state), &p);
	job = (struct send_buf_job){ .ch = p.a, .buf = src, .len = BULK };
	assert_int_equal(pthread_create(&t, NULL, send_buf_thread, &job), 0);
	for (int i = 0; i < 256; i++)
		assert_int_equal(ring_recv(p.b, buf, sizeof(buf)), 0);
	ring_channel_close(p.b);
	p.b = NULL;
	rt_join(t, 10000);
	assert_int_equal(job.ret, -EPIPE);
	assert_true(ring_channel_bytes_sent(p.a) < BULK);
	assert_true(ring_channel_bytes_sent(p.a) >= 256 * sizeof(buf));
	/* and keeps failing */
	assert_int_equal(ring_send(p.a, src, 1), -EPIPE);
	rt_pair_close(&p);
	free(src);
}

#define BOTH(fn)                                                          \
	{ #fn "/tcp", fn, NULL, NULL, &kind_tcp }, { #fn "/unix", fn, NULL, NULL, &kind_unix }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_pages),
		BOTH(test_odd_sizes),
		BOTH(test_iov_max_boundaries),
		BOTH(test_small_and_empty),
		BOTH(test_truncated_recv),
		BOTH(test_truncated_send),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
