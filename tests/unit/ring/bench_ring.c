/* bench_ring — loopback throughput of the ring/ data path against plain
 * syscalls on an identically configured socket pair.
 *
 *   bench_ring [MiB (1024)] [reps (5)] [tcp|unix (tcp)]
 *
 * The sender walks a 64 MiB "guest RAM" region in 256 KiB batches:
 *   ring    ring_sendv() of 64 × 4 KiB iovecs  → ring_recv() of 256 KiB
 *   writev  writev() of the same 64 iovecs      → read() loop, 256 KiB
 *   write   write() of 256 KiB contiguous       → read() loop, 256 KiB
 * Each line is the median of the repetitions (GB = 10^9 bytes).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ring/ring.h"

#define BATCH (256u << 10)
#define PAGE 4096u
#define NIOV (BATCH / PAGE)
#define REGION (64u << 20)

static unsigned char *region;
static size_t total;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_ring: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* ------------------------------------------------------------ ring mode */

static void *ring_sender(void *arg)
{
	struct ring_channel *ch = arg;
	struct iovec iov[NIOV];
	size_t off = 0;
	int ret;

	for (size_t sent = 0; sent < total; sent += BATCH) {
		for (unsigned i = 0; i < NIOV; i++)
			iov[i] = (struct iovec){ region + off + i * PAGE, PAGE };
		ret = ring_sendv(ch, iov, NIOV);
		if (ret)
			die("ring_sendv", ret);
		off = (off + BATCH) % REGION;
	}
	return NULL;
}

static double run_ring(const char *listen_text, unsigned char *rbuf)
{
	struct ring_channel *a, *b;
	struct ring_listener *l;
	struct ring_uri uri;
	char err[256];
	pthread_t t;
	double t0, t1;
	int ret;

	ret = ring_uri_parse(listen_text, &uri, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "bench_ring: %s\n", err);
		exit(1);
	}
	if ((ret = ring_listen(&uri, &l)))
		die("ring_listen", ret);
	ring_listener_uri(l, &uri);
	if ((ret = ring_connect(&uri, 1000, &a)))
		die("ring_connect", ret);
	if ((ret = ring_accept(l, &b, 1000)))
		die("ring_accept", ret);
	ring_listener_close(l);

	t0 = now_s();
	pthread_create(&t, NULL, ring_sender, a);
	for (size_t got = 0; got < total; got += BATCH) {
		ret = ring_recv(b, rbuf, BATCH);
		if (ret)
			die("ring_recv", ret);
	}
	t1 = now_s();
	pthread_join(t, NULL);
	ring_channel_close(a);
	ring_channel_close(b);
	return total / (t1 - t0) / 1e9;
}

/* ---------------------------------------------------------- plain modes */

/* Same socket options as ring/socket.c applies, set before listen/connect. */
static void tune(int fd, int family)
{
	int one = 1, size = 4 << 20;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void raw_pair(int family, int fds[2])
{
	struct sockaddr_storage ss;
	socklen_t len;
	int l;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	} else {
		struct sockaddr_un *sa_un = (struct sockaddr_un *)&ss;

		sa_un->sun_family = AF_UNIX;
		snprintf(sa_un->sun_path, sizeof(sa_un->sun_path), "/tmp/bench_ring.%d", (int)getpid());
		unlink(sa_un->sun_path);
		len = sizeof(*sa_un);
	}
	l = socket(family, SOCK_STREAM, 0);
	tune(l, family);
	if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 4) ||
	    getsockname(l, (struct sockaddr *)&ss, &len))
		die("raw listen", errno);
	fds[0] = socket(family, SOCK_STREAM, 0);
	tune(fds[0], family);
	if (connect(fds[0], (struct sockaddr *)&ss, len))
		die("raw connect", errno);
	fds[1] = accept(l, NULL, NULL);
	if (fds[1] < 0)
		die("raw accept", errno);
	if (family == AF_UNIX)
		unlink(((struct sockaddr_un *)&ss)->sun_path);
	close(l);
}

struct plain_job {
	int fd;
	int vectored;
};

static void *plain_sender(void *arg)
{
	struct plain_job *j = arg;
	struct iovec iov[NIOV];
	size_t off = 0;
	ssize_t n;

	for (size_t sent = 0; sent < total; sent += BATCH) {
		size_t done = 0;

		if (j->vectored) {
			for (unsigned i = 0; i < NIOV; i++)
				iov[i] = (struct iovec){ region + off + i * PAGE, PAGE };
			/* loopback rarely cuts a writev short; count it if so */
			n = writev(j->fd, iov, NIOV);
			if (n < 0)
				die("writev", errno);
			done = (size_t)n;
		}
		while (done < BATCH) {
			n = write(j->fd, region + off + done, BATCH - done);
			if (n < 0)
				die("write", errno);
			done += (size_t)n;
		}
		off = (off + BATCH) % REGION;
	}
	return NULL;
}

static double run_plain(int family, int vectored, unsigned char *rbuf)
{
	struct plain_job j;
	int fds[2];
	pthread_t t;
	double t0, t1;

	raw_pair(family, fds);
	j = (struct plain_job){ .fd = fds[0], .vectored = vectored };
	t0 = now_s();
	pthread_create(&t, NULL, plain_sender, &j);
	for (size_t got = 0; got < total;) {
		ssize_t n = read(fds[1], rbuf, BATCH);

		if (n <= 0)
			die("read", n < 0 ? errno : EPIPE);
		got += (size_t)n;
	}
	t1 = now_s();
	pthread_join(t, NULL);
	close(fds[0]);
	close(fds[1]);
	return total / (t1 - t0) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	int reps = argc > 2 ? atoi(argv[2]) : 5;
	int unix_sock = argc > 3 && !strcmp(argv[3], "unix");
	static const char *names[] = { "ring", "writev", "write" };
	char text[128];
	unsigned char *rbuf;
	double r[3][64];

	if (reps < 1 || reps > 64 || !mib) {
		fprintf(stderr, "usage: bench_ring [MiB] [reps 1..64] [tcp|unix]\n");
		return 2;
	}
	total = mib << 20;
	total -= total % BATCH;
	region = malloc(REGION);
	rbuf = malloc(BATCH);
	if (!region || !rbuf)
		die("malloc", ENOMEM);
	for (size_t i = 0; i < REGION; i++)
		region[i] = (unsigned char)(i * 131 + 7);
	memset(rbuf, 0, BATCH);
	if (unix_sock)
		snprintf(text, sizeof(text), "unix:/tmp/bench_ring_ring.%d", (int)getpid());
	else
		snprintf(text, sizeof(text), "tcp:127.0.0.1:0");

	/* interleave the modes so drift (thermal, other load) hits all alike */
	for (int i = 0; i < reps; i++) {
		r[0][i] = run_ring(text, rbuf);
		r[1][i] = run_plain(unix_sock ? AF_UNIX : AF_INET, 1, rbuf);
		r[2][i] = run_plain(unix_sock ? AF_UNIX : AF_INET, 0, rbuf);
	}
	printf("%s loopback, %zu MiB per run, 256 KiB batches, median of %d\n",
	       unix_sock ? "unix" : "tcp", total >> 20, reps);
	for (int m = 0; m < 3; m++) {
		qsort(r[m], (size_t)reps, sizeof(double), cmp_double);
		printf("  %-7s %6.2f GB/s  (min %.2f, max %.2f)\n", names[m], r[m][reps / 2], r[m][0],
		       r[m][reps - 1]);
	}
	free(region);
	free(rbuf);
	return 0;
}
