/* tests/unit/ring/ring_test.h — helpers shared by the ring/ unit tests.
 *
 * cmocka's assertions longjmp and are not thread-safe, so helper threads
 * only record results; the main thread checks them after joining.
 */
#ifndef KMIG_TEST_RING_TEST_H
#define KMIG_TEST_RING_TEST_H

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "ring/ring.h"

/* meson's "skipped" exit code */
#define RT_SKIP 77

static inline int64_t rt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void rt_sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Exit 77 (skip) with a reason unless io_uring can run the opcodes the
 * transport uses: a seccomp profile or kernel.io_uring_disabled would
 * otherwise turn every test into a confusing failure. */
static inline void rt_require_io_uring(void)
{
	static const int ops[] = { IORING_OP_SENDMSG, IORING_OP_RECVMSG, IORING_OP_RECV };
	struct io_uring_probe *probe;
	struct io_uring r;
	int ret;

	ret = io_uring_queue_init(2, &r, 0);
	if (ret < 0) {
		printf("SKIP: io_uring unavailable: io_uring_queue_init: %s\n", strerror(-ret));
		fflush(stdout);
		exit(RT_SKIP);
	}
	probe = io_uring_get_probe_ring(&r);
	if (!probe) {
		printf("SKIP: io_uring unavailable: cannot probe supported opcodes\n");
		fflush(stdout);
		exit(RT_SKIP);
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (!io_uring_opcode_supported(probe, ops[i])) {
			printf("SKIP: io_uring unavailable: opcode %d not supported\n", ops[i]);
			fflush(stdout);
			exit(RT_SKIP);
		}
	}
	io_uring_free_probe(probe);
	io_uring_queue_exit(&r);
}

/* Deterministic pseudo-random bytes (xorshift64*), so a misplaced chunk of
 * the stream cannot compare equal by accident. */
static inline void rt_fill(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed | 1, v;
	unsigned char *p = buf;

	while (len) {
		size_t n = len < 8 ? len : 8;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		v = x * 2685821657736338717ull;
		memcpy(p, &v, n);
		p += n;
		len -= n;
	}
}

static inline uint64_t rt_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ull;
}

static inline void *rt_xmalloc(size_t len)
{
	void *p = malloc(len);

	assert_non_null(p);
	return p;
}

/* A private directory for unix socket paths; meson runs tests in parallel. */
static inline void rt_tmpdir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/kmig-ring-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static inline void rt_parse(const char *text, struct ring_uri *uri)
{
	char err[256];
	int ret = ring_uri_parse(text, uri, err, sizeof(err));

	if (ret)
		fail_msg("ring_uri_parse(%s): %d %s", text, ret, err);
}

/* Connected pair over a fresh listener; listen_text may use port 0. */
static inline void rt_pair_uri(const char *listen_text, struct ring_channel **a,
			       struct ring_channel **b)
{
	struct ring_listener *l;
	struct ring_uri uri;

	rt_parse(listen_text, &uri);
	assert_int_equal(ring_listen(&uri, &l), 0);
	ring_listener_uri(l, &uri);
	/* the backlog completes the handshake before we accept */
	assert_int_equal(ring_connect(&uri, 2000, a), 0);
	assert_int_equal(ring_accept(l, b, 2000), 0);
	ring_listener_close(l);
}

enum rt_kind { RT_TCP, RT_UNIX };

struct rt_pair {
	struct ring_channel *a, *b;
	char dir[64];
	char path[128];
};

static inline void rt_pair_open(enum rt_kind kind, struct rt_pair *p)
{
	char text[160];

	memset(p, 0, sizeof(*p));
	if (kind == RT_TCP) {
		rt_pair_uri("tcp:127.0.0.1:0", &p->a, &p->b);
		return;
	}
	rt_tmpdir(p->dir, sizeof(p->dir));
	snprintf(p->path, sizeof(p->path), "%s/s", p->dir);
	snprintf(text, sizeof(text), "unix:%s", p->path);
	rt_pair_uri(text, &p->a, &p->b);
}

static inline void rt_pair_close(struct rt_pair *p)
{
	ring_channel_close(p->a);
	ring_channel_close(p->b);
	if (p->dir[0]) {
		unlink(p->path);
		rmdir(p->dir);
	}
	memset(p, 0, sizeof(*p));
}

/* Join, but fail instead of hanging the suite if the thread is stuck. */
static inline void rt_join(pthread_t t, int timeout_ms)
{
	struct timespec ts;
	int ret;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	ret = pthread_timedjoin_np(t, NULL, &ts);
	if (ret)
		fail_msg("thread did not finish within %d ms: %s", timeout_ms, strerror(ret));
}

#endif
