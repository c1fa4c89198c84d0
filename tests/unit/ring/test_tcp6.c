/* tcp over IPv6 loopback: tcp:[::1]:0 listen, reported URI, round trip.
 * Its own executable so a host without IPv6 skips it (exit 77) without
 * hiding the IPv4 results. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ring_test.h"

#define LEN (8u << 20)

static void require_ipv6_loopback(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	int err = 0;

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		err = errno;
	if (fd >= 0)
		close(fd);
	if (err) {
		printf("SKIP: no IPv6 loopback: %s\n", strerror(err));
		fflush(stdout);
		exit(RT_SKIP);
	}
}

struct send_job {
	struct ring_channel *ch;
	const unsigned char *buf;
	int ret;
};

static void *send_thread(void *arg)
{
	struct send_job *j = arg;
	struct iovec iov[LEN / 4096];

	for (size_t i = 0; i < LEN / 4096; i++)
		iov[i] = (struct iovec){ (void *)(j->buf + i * 4096), 4096 };
	j->ret = ring_sendv(j->ch, iov, (int)(LEN / 4096));
	return NULL;
}

static void test_v6_round_trip(void **state)
{
	unsigned char *src = rt_xmalloc(LEN), *dst = rt_xmalloc(LEN);
	struct ring_channel *a, *b;
	struct ring_listener *l;
	struct ring_uri uri;
	struct send_job j;
	char text[300];
	pthread_t t;

	(void)state;
	rt_fill(src, LEN, 6);
	rt_parse("tcp:[::1]:0", &uri);
	assert_int_equal(ring_listen(&uri, &l), 0);
	ring_listener_uri(l, &uri);
	assert_string_equal(uri.host, "::1");
	assert_string_not_equal(uri.port, "0");
	ring_uri_format(&uri, text, sizeof(text));
	assert_int_equal(strncmp(text, "tcp:[::1]:", 10), 0);

	rt_parse(text, &uri);
	assert_int_equal(ring_connect(&uri, 1000, &a), 0);
	assert_int_equal(ring_accept(l, &b, 1000), 0);
	ring_listener_close(l);

	j = (struct send_job){ .ch = a, .buf = src };
	assert_int_equal(pthread_create(&t, NULL, send_thread, &j), 0);
	assert_int_equal(ring_recv(b, dst, LEN), 0);
	rt_join(t, 10000);
	assert_int_equal(j.ret, 0);
	assert_true(memcmp(src, dst, LEN) == 0);
	assert_int_equal(ring_channel_bytes_received(b), LEN);

	ring_channel_close(a);
	assert_int_equal(ring_recv(b, dst, 1), -EPIPE);
	ring_channel_close(b);
	free(src);
	free(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v6_round_trip),
	};

	rt_require_io_uring();
	require_ipv6_loopback();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
