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
 * With --fresh each receiver instead moves its bytes into memory nobody
 * has touched yet, as a migration destination must: a memfd of its share's
 * size, filled in order with splice(2) (socket -> pipe -> file: one copy,
 * no page zeroed first, and one file per stream, so no lock shared).  And
 * each sender sends its whole share from memory of its own, as a source
 * sends a guest's distinct pages, touched before the clock by the process
 * and by the kernel (on a host that is itself a PVM guest each costs
 * microseconds a page the first time; a source's guest pays it while it
 * runs).  That is the limit for a destination on a host where first
 * touching memory is expensive (here: free page reporting hands freed
 * memory back to the hypervisor, which faults it in again on the next
 * touch; how much of a run's memory is such depends on what ran before).
 *
 * With --dst-netns NAME --addr IP the receivers are in network namespace
 * NAME (of `ip netns`), listening on IP there, and the senders connect
 * from the namespace loopback runs in: the limit of a link between two
 * hosts on one machine (bench/links.py), not of loopback.
 *
 * Built by bench/bench.py with the host's cc (no meson target, so the
 * benchmark stays self-contained):  cc -O2 -pthread loopback.c
 * usage: loopback [--fresh] [--dst-netns NAME --addr IP] STREAMS BYTES [BUF_MIB] */
#define _GNU_SOURCE
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
	int memfd;		/* receiver with --fresh: splice into this */
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

/* --fresh: socket -> pipe -> memfd at increasing offsets, 1 MiB a call */
static void *fresh_receiver(void *arg)
{
	struct side *s = arg;
	int p[2];

	if (pipe(p)) {
		s->err = errno;
		return NULL;
	}
	fcntl(p[1], F_SETPIPE_SZ, CHUNK);
	for (;;) {
		ssize_t in = splice(s->fd, NULL, p[1], NULL, CHUNK, SPLICE_F_MOVE);

		if (in < 0 && errno == EINTR)
			continue;
		if (in <= 0) {
			s->err = in < 0 ? errno : 0;
			break;
		}
		for (ssize_t out = 0; out < in;) {
			loff_t o = (loff_t)s->bytes;
			ssize_t k = splice(p[0], NULL, s->memfd, &o, (size_t)(in - out), SPLICE_F_MOVE);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				s->err = k < 0 ? errno : EIO;
				goto out;
			}
			out += k;
			s->bytes += (uint64_t)k;
		}
	}
out:
	close(p[0]);
	close(p[1]);
	return NULL;
}

static int fresh_memfd(uint64_t len)
{
	int fd = memfd_create("loopback-fresh", MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)len))
		die("memfd");
	return fd;
}

static unsigned char *touched_buffer(size_t len, unsigned char fill)
{
	unsigned char *b = malloc(len);

	if (!b)
		die("malloc");
	memset(b, fill, len);	/* fault every page in now, not on the clock */
	return b;
}

/* --fresh's sender memory: the whole share, in a memfd filled by the
 * kernel and then touched through the mapping, by this process and by the
 * kernel, exactly as bench/ram_path prepares kmig's source RAM (and as a
 * guest's RAM is by the time it migrates). */
static unsigned char *source_buffer(size_t len)
{
	static unsigned char chunk[CHUNK];
	int fd = fresh_memfd(len), scratch = memfd_create("loopback-scratch", MFD_CLOEXEC);

	memset(chunk, 0x5a, sizeof(chunk));
	for (size_t off = 0; off < len; off += CHUNK)
		if (pwrite(fd, chunk, len - off < CHUNK ? len - off : CHUNK, (off_t)off) < 0)
			die("fill");
	unsigned char *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (b == MAP_FAILED)
		die("mmap");
	close(fd);
	for (size_t off = 0; off < len; off += 4096)
		(void)*(volatile unsigned char *)(b + off);
	for (size_t off = 0; scratch >= 0 && off < len; off += CHUNK)
		if (pwrite(scratch, b + off, len - off < CHUNK ? len - off : CHUNK, 0) < 0)
			break;
	if (scratch >= 0)
		close(scratch);
	return b;
}

/* Enter network namespace NAME; returns the one we were in, to go back. */
static int enter_netns(const char *name)
{
	char path[256];
	int here = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), there;

	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	there = open(path, O_RDONLY | O_CLOEXEC);
	if (here < 0 || there < 0 || setns(there, CLONE_NEWNET))
		die(path);
	close(there);
	return here;
}

/* The listening socket, on addr, in network namespace netns when given:
 * a socket stays in the namespace it was made in, and so do the
 * connections it accepts. */
static int listen_on(const char *netns, const char *addr, struct sockaddr_in *sa)
{
	int back = netns ? enter_netns(netns) : -1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t sl = sizeof(*sa);

	*sa = (struct sockaddr_in){ .sin_family = AF_INET };
	if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
		fprintf(stderr, "loopback: --addr %s is no IPv4 address\n", addr);
		exit(2);
	}
	if (lfd < 0 || bind(lfd, (struct sockaddr *)sa, sizeof(*sa)) || listen(lfd, MAX_STREAMS) ||
	    getsockname(lfd, (struct sockaddr *)sa, &sl))
		die("listen");
	if (back >= 0) {
		if (setns(back, CLONE_NEWNET))
			die("setns back");
		close(back);
	}
	return lfd;
}

static void usage(void)
{
	fprintf(stderr, "usage: loopback [--fresh] [--dst-netns NAME --addr IP] STREAMS BYTES [BUF_MIB]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fresh", 0, 0, 'f' }, { "dst-netns", 1, 0, 'n' }, { "addr", 1, 0, 'a' }, { 0 }
	};
	const char *netns = NULL, *addr = "127.0.0.1";
	bool fresh = false;

	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		if (c == 'f')
			fresh = true;
		else if (c == 'n')
			netns = optarg;
		else if (c == 'a')
			addr = optarg;
		else
			usage();
	}
	argc -= optind - 1;
	argv += optind - 1;
	if (argc < 3 || argc > 4)
		usage();
	int n = atoi(argv[1]);
	uint64_t total = strtoull(argv[2], NULL, 10);
	size_t buf_mib = argc > 3 ? (size_t)atoi(argv[3]) : 64;

	if (n < 1 || n > MAX_STREAMS || !total || buf_mib < 1) {
		fprintf(stderr, "loopback: bad arguments\n");
		return 2;
	}
	struct sockaddr_in sa;
	int lfd = listen_on(netns, addr, &sa);

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
		uint64_t share = total / n + (i ? 0 : total % n);
		/* a share smaller than a chunk still sends chunks from it */
		size_t src_len = fresh ? (size_t)(share > CHUNK ? share : CHUNK) : buf_len;

		snd[i] = (struct side){ .fd = c, .bytes = share,
					.buf = fresh ? source_buffer(src_len) : touched_buffer(src_len, 0x5a),
					.buf_len = src_len };
		rcv[i] = (struct side){ .fd = a, .memfd = -1 };
		if (fresh)
			rcv[i].memfd = fresh_memfd(snd[i].bytes);
		else
			rcv[i].buf = touched_buffer(buf_len, 0), rcv[i].buf_len = buf_len;
	}

	pthread_t ts[MAX_STREAMS], tr[MAX_STREAMS];
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		if (pthread_create(&tr[i], NULL, fresh ? fresh_receiver : receiver, &rcv[i]) ||
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

	printf("{\"streams\": %d, \"bytes\": %llu, \"seconds\": %.6f, \"buffer_mib\": %zu, \"fresh\": %s}\n",
	       n, (unsigned long long)got, s, buf_mib, fresh ? "true" : "false");
	return 0;
}
