/* loopback: the raw TCP loopback limit the migration benchmark compares
 * against.  Pushes BYTES over STREAMS TCP connections on 127.0.0.1, split
 * evenly, with plain send()/recv() of 1 MiB, and prints one JSON line:
 *     {"streams": N, "bytes": B, "seconds": S, "buffer_mib": M}
 *
 * Kept honest the way a migration is: each sender reads from, and each
 * receiver writes into, its own BUF_MIB buffer (default 64 MiB, larger than
 * any cache here, so memory bandwidth is paid on both sides), walked 1 MiB
 * at a time; the buffers are touched before the clock starts, so page
 * faults are not counted (a migration destination pays those on top: that
 * is its own cost, not the wire's).  The clock runs from when every
 * connection is up until every receiver has seen EOF.
 *
 * Built by bench/bench.py with the host's cc (no meson target, so the
 * benchmark stays self-contained):  cc -O2 -pthread loopback.c
 * usage: loopback STREAMS BYTES [BUF_MIB] */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)
#define MAX_STREAMS 64

struct side {
	int fd;
	uint64_t bytes;		/* sender: to send; receiver: received */
	unsigned char *buf;
	size_t buf_len;
	int err;
};

static void die(const char *what)
{
	fprintf(stderr, "loopback: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *sender(void *arg)
{
	struct side *s = arg;
	size_t off = 0;

	while (s->bytes) {
		size_t n = s->bytes < CHUNK ? s->bytes : CHUNK;
		ssize_t r = send(s->fd, s->buf + off, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			s->err = errno;
			break;
		}
		s->bytes -= (uint64_t)r;
		off = (off + (size_t)r) % (s->buf_len - CHUNK + 1);
	}
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static void *receiver(void *arg)
{
	struct side *s = arg;
	size_t off = 0;

	for (;;) {
		ssize_t r = recv(s->fd, s->buf + off, CHUNK, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			s->err = errno;
			break;
		}
		if (r == 0)
			break;
		s->bytes += (uint64_t)r;
		off = (off + (size_t)r) % (s->buf_len - CHUNK + 1);
	}
	return NULL;
}

static unsigned char *touched_buffer(size_t len, unsigned char fill)
{
	unsigned char *b = malloc(len);

	if (!b)
		die("malloc");
	memset(b, fill, len);	/* fault every page in now, not on the clock */
	return b;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: loopback STREAMS BYTES [BUF_MIB]\n");
		return 2;
	}
	int n = atoi(argv[1]);
	uint64_t total = strtoull(argv[2], NULL, 10);
	size_t buf_mib = argc > 3 ? (size_t)atoi(argv[3]) : 64;

	if (n < 1 || n > MAX_STREAMS || !total || buf_mib < 1) {
		fprintf(stderr, "loopback: bad arguments\n");
		return 2;
	}
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, MAX_STREAMS) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl))
		die("listen");

	struct side snd[MAX_STREAMS], rcv[MAX_STREAMS];
	size_t buf_len = buf_mib << 20;

	for (int i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);

		if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)))
			die("connect");
		int a = accept(lfd, NULL, NULL);

		if (a < 0)
			die("accept");
		/* the same split bench.py's migrations see: equal shares, the
		 * first stream takes the remainder */
		snd[i] = (struct side){ .fd = c, .bytes = total / n + (i ? 0 : total % n),
					.buf = touched_buffer(buf_len, 0x5a), .buf_len = buf_len };
		rcv[i] = (struct side){ .fd = a, .buf = touched_buffer(buf_len, 0), .buf_len = buf_len };
	}

	pthread_t ts[MAX_STREAMS], tr[MAX_STREAMS];
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		if (pthread_create(&tr[i], NULL, receiver, &rcv[i]) ||
		    pthread_create(&ts[i], NULL, sender, &snd[i]))
			die("pthread_create");
	}
	uint64_t got = 0;
	int err = 0;

	for (int i = 0; i < n; i++) {
		pthread_join(ts[i], NULL);
		pthread_join(tr[i], NULL);
		got += rcv[i].bytes;
		err = err ? err : snd[i].err ? snd[i].err : rcv[i].err;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (err || got != total) {
		fprintf(stderr, "loopback: received %llu of %llu bytes: %s\n", (unsigned long long)got,
			(unsigned long long)total, strerror(err));
		return 1;
	}
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

	printf("{\"streams\": %d, \"bytes\": %llu, \"seconds\": %.6f, \"buffer_mib\": %zu}\n", n,
	       (unsigned long long)got, s, buf_mib);
	return 0;
}
