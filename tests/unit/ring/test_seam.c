/* The transport seam (ring/transport.c): every channel function goes to
 * the channel's transport; a transport without zero-copy still sends
 * through ring_sendv_zc (a copy), one without splice refuses it, and
 * ring_channel_caps() says which up front.  A fake transport stands in for
 * the next one (TLS); the socket transport says what it has. */
#include <sys/socket.h>

#include "ring_test.h"
#include "ring/ring-int.h"

struct fake {
	int sendv_calls, closed;
	size_t sent;
};

static int fake_sendv(void *impl, const struct iovec *iov, int iovcnt)
{
	struct fake *f = impl;

	f->sendv_calls++;
	for (int i = 0; i < iovcnt; i++)
		f->sent += iov[i].iov_len;
	return 0;
}

static void fake_close(void *impl)
{
	((struct fake *)impl)->closed++;
}

static const struct ring_transport fake_transport = {
	.name = "fake", .caps = 0, .sendv = fake_sendv, .close = fake_close,
};

static void test_fake_transport(void **state)
{
	struct fake f = { 0 };
	struct ring_channel *ch = calloc(1, sizeof(*ch));
	char page[4096] = { 1 };
	struct iovec iov = { page, sizeof(page) };
	uint64_t sends, copied;

	(void)state;
	assert_non_null(ch);
	*ch = (struct ring_channel){ .t = &fake_transport, .impl = &f };
	assert_int_equal(ring_channel_caps(ch), 0);
	assert_string_equal(ring_channel_transport(ch), "fake");
	assert_int_equal(ring_sendv_zc(ch, &iov, 1, 64), 0);	/* a copy */
	assert_int_equal(ring_send(ch, "abc", 3), 0);
	assert_int_equal(f.sendv_calls, 2);
	assert_int_equal(f.sent, sizeof(page) + 3);
	assert_int_equal(ring_zc_flush(ch), 0);
	ring_zc_stats(ch, &sends, &copied);
	assert_int_equal(sends + copied, 0);
	assert_int_equal(ring_recv_splice(ch, 0, 0, 4096), -EOPNOTSUPP);
	ring_channel_close(ch);
	assert_int_equal(f.closed, 1);
}

static void test_socket_transport(void **state)
{
	struct ring_listener *l;
	struct ring_channel *a, *b;
	struct ring_uri uri;

	(void)state;
	rt_parse("tcp:127.0.0.1:0", &uri);
	assert_int_equal(ring_listen(&uri, &l), 0);
	ring_listener_uri(l, &uri);
	assert_int_equal(ring_connect(&uri, 1000, &a), 0);
	assert_int_equal(ring_accept(l, &b, 1000), 0);
	assert_int_equal(ring_channel_caps(a), RING_CAP_ZEROCOPY | RING_CAP_SPLICE);
	assert_string_equal(ring_channel_transport(b), "socket");
	ring_channel_close(a);
	ring_channel_close(b);
	ring_listener_close(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fake_transport),
		cmocka_unit_test(test_socket_transport),
	};

	rt_require_io_uring();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
