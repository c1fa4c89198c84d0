/* ring_channel_abort()/ring_listener_abort() from another thread unblock a
 * send, a recv, a poll and an accept promptly, with -ECANCELED. */
#include <sys/uio.h>

#include "ring_test.h"

#define BIG (64u << 20)
/* how long a blocked call may take to notice an abort */
#define PROMPT_MS 1000

static enum rt_kind kind_tcp = RT_TCP, kind_unix = RT_UNIX;

static enum rt_kind kind_of(void **state)
{
	return *(enum rt_kind *)*state;
}

enum op { OP_SEND, OP_RECV, OP_RECVV, OP_POLL };

struct job {
	struct ring_channel *ch;
	enum op op;
	void *buf;
	size_t len;
	int ret;
	int done;		/* __atomic */
	int64_t end_ms;
};

static void *job_thread(void *arg)
{
	struct job *j = arg;
	char *half = j->buf ? (char *)j->buf + j->len / 2 : NULL;	/* no arithmetic on NULL */
	struct iovec iov[2] = { { j->buf, j->len / 2 }, { half, j->len - j->len / 2 } };

	switch (j->op) {
	case OP_SEND:
		j->ret = ring_send(j->ch, j->buf, j->len);
		break;
	case OP_RECV:
		j->ret = ring_recv(j->ch, j->buf, j->len);
		break;
	case OP_RECVV:
		j->ret = ring_recvv(j->ch, iov, 2);
		break;
	case OP_POLL:
		j->ret = ring_poll_readable(j->ch, -1);
		break;
	}
	j->end_ms = rt_now_ms();
	__atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Start op in a thread, check it really blocks, abort, check it returns
 * -ECANCELED within PROMPT_MS. */
static void block_then_abort(struct ring_channel *ch, enum op op, void *buf, size_t len)
{
	struct job j = { .ch = ch, .op = op, .buf = buf, .len = len };
	int64_t t0;
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, job_thread, &j), 0);
	rt_sleep_ms(300);
	if (__atomic_load_n(&j.done, __ATOMIC_SEQ_CST))
		fail_msg("op %d did not block (returned %d)", op, j.ret);
	t0 = rt_now_ms();
	ring_channel_abort(ch);
	rt_join(t, 10000);
	assert_int_equal(j.ret, -ECANCELED);
	if (j.end_ms - t0 > PROMPT_MS)
		fail_msg("op %d took %lld ms to notice the abort", op, (long long)(j.end_ms - t0));
}

static void test_abort_recv(void **state)
{
	char buf[1000];
	struct rt_pair p;

	rt_pair_open(kind_of(state), &p);
	block_then_abort(p.b, OP_RECV, buf, sizeof(buf));
	/* sticky, and the peer sees the end of the stream */
	assert_int_equal(ring_recv(p.b, buf, 1), -ECANCELED);
	assert_int_equal(ring_send(p.b, buf, 1), -ECANCELED);
	assert_int_equal(ring_poll_readable(p.b, 0), -ECANCELED);
	assert_int_equal(ring_recv(p.a, buf, 1), -EPIPE);
	rt_pair_close(&p);
}

static void test_abort_recv_partial(void **state)
{
	char buf[1000];
	struct rt_pair p;

	/* some bytes arrived, the rest never will */
	rt_pair_open(kind_of(state), &p);
	assert_int_equal(ring_send(p.a, "0123456789", 10), 0);
	block_then_abort(p.b, OP_RECVV, buf, sizeof(buf));
	assert_int_equal(ring_channel_bytes_received(p.b), 10);
	assert_memory_equal(buf, "0123456789", 10);
	rt_pair_close(&p);
}

static void test_abort_send(void **state)
{
	unsigned char *buf = rt_xmalloc(BIG);
	struct rt_pair p;

	/* the peer never reads: the send fills both socket buffers and blocks */
	memset(buf, 0x11, BIG);
	rt_pair_open(kind_of(state), &p);
	block_then_abort(p.a, OP_SEND, buf, BIG);
	assert_true(ring_channel_bytes_sent(p.a) < BIG);
	assert_int_equal(ring_send(p.a, buf, 1), -ECANCELED);
	rt_pair_close(&p);
	free(buf);
}

static void test_abort_poll(void **state)
{
	struct rt_pair p;

	rt_pair_open(kind_of(state), &p);
	block_then_abort(p.b, OP_POLL, NULL, 0);
	rt_pair_close(&p);
}

static void test_abort_before_use(void **state)
{
	char buf[8] = "abc";
	struct rt_pair p;

	rt_pair_open(kind_of(state), &p);
	ring_channel_abort(p.a);
	ring_channel_abort(p.a);	/* idempotent */
	assert_int_equal(ring_send(p.a, buf, 3), -ECANCELED);
	assert_int_equal(ring_recv(p.a, buf, 3), -ECANCELED);
	assert_int_equal(ring_channel_bytes_sent(p.a), 0);
	rt_pair_close(&p);
	ring_channel_abort(NULL);
}

struct accept_job {
	struct ring_listener *l;
	int timeout_ms;
	int ret;
	int done;
	int64_t end_ms;
};

static void *accept_thread(void *arg)
{
	struct accept_job *j = arg;
	struct ring_channel *ch = NULL;

	j->ret = ring_accept(j->l, &ch, j->timeout_ms);
	if (!j->ret)
		ring_channel_close(ch);
	j->end_ms = rt_now_ms();
	__atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_listener_abort(void **state)
{
	static const int timeouts[] = { -1, 30000 };
	char dir[64] = "", text[128];
	struct ring_channel *ch;
	struct ring_listener *l;
	struct ring_uri uri;

	if (kind_of(state) == RT_TCP) {
		snprintf(text, sizeof(text), "tcp:127.0.0.1:0");
	} else {
		rt_tmpdir(dir, sizeof(dir));
		snprintf(text, sizeof(text), "unix:%s/l", dir);
	}
	for (size_t i = 0; i < 2; i++) {
		struct accept_job j = { .timeout_ms = timeouts[i] };
		int64_t t0;
		pthread_t t;

		rt_parse(text, &uri);
		assert_int_equal(ring_listen(&uri, &l), 0);
		j.l = l;
		assert_int_equal(pthread_create(&t, NULL, accept_thread, &j), 0);
		rt_sleep_ms(300);
		assert_false(__atomic_load_n(&j.done, __ATOMIC_SEQ_CST));
		t0 = rt_now_ms();
		ring_listener_abort(l);
		rt_join(t, 10000);
		assert_int_equal(j.ret, -ECANCELED);
		assert_true(j.end_ms - t0 <= PROMPT_MS);
		/* stays aborted */
		assert_int_equal(ring_accept(l, &ch, 0), -ECANCELED);
		assert_int_equal(ring_accept(l, &ch, -1), -ECANCELED);
		ring_listener_close(l);
	}
	ring_listener_abort(NULL);
	if (dir[0])
		rmdir(dir);
}

#define BOTH(fn)                                                          \
	{ #fn "/tcp", fn, NULL, NULL, &kind_tcp }, { #fn "/unix", fn, NULL, NULL, &kind_unix }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_abort_recv),
		BOTH(test_abort_recv_partial),
		BOTH(test_abort_send),
		BOTH(test_abort_poll),
		BOTH(test_abort_before_use),
		BOTH(test_listener_abort),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
