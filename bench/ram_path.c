/* ram_path: the throughput and CPU cost of kmig's RAM path alone (kmig's
 * RAM handlers, stream, RAM channels and io_uring transport between two
 * processes over loopback, into fresh or preallocated destination memory),
 * without KVM: it runs where /dev/kvm does not, and isolates the data path
 * from the guest.  bench/bench.py runs it next to the raw socket's limits;
 * it prints one JSON line per run:
 *   {"seconds": S, "MBps": M, "src_cpu": C, "dst_cpu": C, "bytes": B,
 *    "recv_path": "write", "mismatched": 0, "holes_filled": 0}
 *
 * usage: ram_path [--mem MiB] [--fill MiB] [--channels N] [--send copy|zero-copy|auto]
 *                 [--recv write|splice|mapping] [--prealloc] [--ws MiB] [--passes N]
 *                 [--uri URI] [--runs N] [--tls DIR] [--dst-netns NAME] [--io-timeout MS]
 * --fill MiB of RAM hold data (the rest is never touched: holes);
 * --ws MiB: a writer rewrites that much during --passes live passes.
 * --tls DIR: every connection in TLS (kTLS where the kernel has the "tls"
 * ULP, else GnuTLS records; KMIG_KTLS=0 keeps GnuTLS), with the certificate set
 * `build/tests/tls/tls-certs DIR` made.
 * --dst-netns NAME: the destination in network namespace NAME (listening
 * on --uri there), the source where ram_path runs: two hosts on one
 * machine (tests/integration/netns.py sets them up).
 *
 * ram_path --soak N: N migrations in a row from this one long-lived source
 * process (a fresh destination each), alternating the main connection and
 * 4 RAM channels, copy and zero-copy sends, each one verified page by
 * page; prints every 100th, then the totals and how this process's open
 * descriptors and RSS moved from the 10th migration to the last (least
 * squares slope per migration).  Exits 1 on any failed or damaged
 * migration, or descriptors that grew. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/ramlink.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

struct fill {
	uint64_t fill_bytes, ws_bytes;
};

/* Data pages the quick way (the kernel writes the page cache), then each
 * read once through the mapping, as a guest's writes through KVM leave
 * them: mapped in this process, and read once by the kernel through the
 * mapping too.  (On a host that is itself a PVM guest, such as the machines
 * without /dev/kvm where this runs, the first access to each page through a
 * mapping costs microseconds, once from user mode and once more from the
 * kernel (send copies from it): a real source's guest paid that while it
 * ran, not while migrating.) */
static void fill_ram(struct kvm_mem *m, void *ctx)
{
	struct fill *f = ctx;
	static uint8_t buf[1 << 20];

	for (uint64_t off = 0; off < f->fill_bytes; off += sizeof(buf)) {
		for (unsigned int p = 0; p < sizeof(buf) / KVM_PAGE_SIZE; p++)
			memset(buf + p * KVM_PAGE_SIZE, (int)((off / KVM_PAGE_SIZE + p) % 251 + 1), KVM_PAGE_SIZE);
		if (pwrite(kvm_mem_fd(m), buf, sizeof(buf), (off_t)off) != (ssize_t)sizeof(buf)) {
			perror("ram_path: fill");
			exit(1);
		}
	}
	madvise(kvm_mem_base(m), f->fill_bytes, MADV_POPULATE_READ);
	for (uint64_t off = 0; off < f->fill_bytes; off += KVM_PAGE_SIZE)
		(void)*(volatile uint8_t *)(kvm_mem_base(m) + off);
	int sink = memfd_create("ram-path-sink", MFD_CLOEXEC);

	for (uint64_t off = 0; sink >= 0 && off < f->fill_bytes; off += sizeof(buf))
		if (pwrite(sink, kvm_mem_base(m) + off, sizeof(buf), 0) < 0)
			break;
	if (sink >= 0)
		close(sink);
}

/* A guest rewriting its working set as fast as it can. */
static void write_ws(struct kvm_mem *m, void *ctx, atomic_bool *stop)
{
	struct fill *f = ctx;
	uint64_t pages = f->ws_bytes / KVM_PAGE_SIZE, gen = 0;

	while (!*stop && pages) {
		gen++;
		for (uint64_t pg = 0; pg < pages && !*stop; pg++) {
			memcpy(kvm_mem_base(m) + pg * KVM_PAGE_SIZE, &gen, sizeof(gen));
			dirty_bitmap_set(kvm_mem_dirty(m), pg);
		}
	}
}

static enum savevm_send_mode send_mode(const char *s)
{
	if (!strcmp(s, "copy"))
		return SAVEVM_SEND_COPY;
	if (!strcmp(s, "zero-copy"))
		return SAVEVM_SEND_ZC;
	if (strcmp(s, "auto")) {
		fprintf(stderr, "ram_path: --send must be copy, zero-copy or auto\n");
		exit(2);
	}
	return SAVEVM_SEND_AUTO;
}

static uint64_t mib(const char *s, const char *what)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (*end || !*s || v > (1ull << 24)) {
		fprintf(stderr, "ram_path: %s must be a number of MiB\n", what);
		exit(2);
	}
	return (uint64_t)v << 20;
}

static double rss_kib(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1024.0;
}

/* least squares slope of y over x */
static double slope(const double *x, const double *y, int n)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0;

	for (int i = 0; i < n; i++) {
		sx += x[i], sy += y[i], sxx += x[i] * x[i], sxy += x[i] * y[i];
	}
	double d = n * sxx - sx * sx;

	return d ? (n * sxy - sx * sy) / d : 0;
}

static int soak(struct ramlink_opts *base, int n)
{
	double *x = calloc((size_t)n, sizeof(double)), *fds = calloc((size_t)n, sizeof(double));
	double *rss = calloc((size_t)n, sizeof(double)), seconds = 0;
	int failed = 0, damaged = 0;

	if (!x || !fds || !rss)
		return 1;
	for (int i = 0; i < n; i++) {
		struct ramlink_opts o = *base;
		struct ramlink_result res;

		o.channels = i % 2 ? 4 : 0;
		o.send_mode = i / 2 % 2 ? SAVEVM_SEND_ZC : SAVEVM_SEND_COPY;
		int r = ramlink_run(&o, &res);

		failed += r != 0;
		damaged += !r && (res.mismatched || res.holes_filled);
		if (r || res.mismatched || res.holes_filled)
			fprintf(stderr, "ram_path: soak %d (%u channels, %s): %s; %llu pages differ, %llu holes filled\n",
				i + 1, o.channels, savevm_send_mode_name(o.send_mode), r ? res.err : "completed",
				(unsigned long long)res.mismatched, (unsigned long long)res.holes_filled);
		seconds += res.seconds;
		x[i] = i + 1;
		fds[i] = ramlink_open_fds();
		rss[i] = rss_kib();
		if ((i + 1) % 100 == 0)
			printf("soak: %d migrations, %d failed, %d damaged; %0.f descriptors, RSS %.0f KiB\n", i + 1,
			       failed, damaged, fds[i], rss[i]);
		fflush(stdout);
	}
	int from = n > 10 ? 9 : 0;
	double fd_slope = slope(x + from, fds + from, n - from), rss_slope = slope(x + from, rss + from, n - from);
	bool fds_grew = fds[n - 1] > fds[from];

	printf("{\"migrations\": %d, \"failed\": %d, \"damaged\": %d, \"mean_seconds\": %.4f, "
	       "\"fds_at_10\": %.0f, \"fds_at_end\": %.0f, \"fds_slope_per_migration\": %.5f, "
	       "\"rss_kib_at_10\": %.0f, \"rss_kib_at_end\": %.0f, \"rss_kib_slope_per_migration\": %.4f}\n",
	       n, failed, damaged, seconds / n, fds[from], fds[n - 1], fd_slope, rss[from], rss[n - 1], rss_slope);
	free(x);
	free(fds);
	free(rss);
	return failed || damaged || fds_grew;
}

static void usage(void)
{
	fprintf(stderr, "usage: ram_path [--mem MiB] [--fill MiB] [--channels N] [--send copy|zero-copy|auto]\n"
			"                [--recv write|splice|mapping] [--prealloc] [--ws MiB] [--passes N]\n"
			"                [--uri URI] [--runs N] [--soak N] [--tls DIR] [--dst-netns NAME]\n"
			"                [--io-timeout MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mem", 1, 0, 'm' }, { "fill", 1, 0, 'f' }, { "channels", 1, 0, 'c' }, { "send", 1, 0, 's' },
		{ "recv", 1, 0, 'r' }, { "prealloc", 0, 0, 'p' }, { "ws", 1, 0, 'w' }, { "passes", 1, 0, 'P' },
		{ "uri", 1, 0, 'u' }, { "runs", 1, 0, 'n' }, { "soak", 1, 0, 'S' }, { "help", 0, 0, 'h' },
		{ "tls", 1, 0, 't' }, { "dst-netns", 1, 0, 'N' }, { "io-timeout", 1, 0, 'T' },
		{ 0, 0, 0, 0 },
	};
	struct fill f = { .fill_bytes = 1024ull << 20 };
	struct ramlink_opts o = { .mem_bytes = 1200ull << 20, .send_mode = SAVEVM_SEND_COPY,
				  .uri = "tcp:127.0.0.1:0", .fill = fill_ram, .ctx = &f, .live_passes = 1 };
	int runs = 1, soak_n = 0, c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o.mem_bytes = mib(optarg, "--mem"); break;
		case 'f': f.fill_bytes = mib(optarg, "--fill"); break;
		case 'c': o.channels = (unsigned int)atoi(optarg); break;
		case 's': o.send_mode = send_mode(optarg); break;
		case 'r': o.recv_path = optarg; break;
		case 'p': o.dst_prealloc = true; break;
		case 'w': f.ws_bytes = mib(optarg, "--ws"); break;
		case 'P': o.live_passes = (unsigned int)atoi(optarg); break;
		case 'u': o.uri = optarg; break;
		case 'n': runs = atoi(optarg); break;
		case 'S': soak_n = atoi(optarg); break;
		case 't': o.tls_dir = optarg; break;
		case 'N': o.dst_netns = optarg; break;
		case 'T': o.io_timeout_ms = atoi(optarg); break;
		default: usage();
		}
	}
	if (optind != argc || f.fill_bytes > o.mem_bytes || f.ws_bytes > f.fill_bytes || o.channels > 64)
		usage();
	if (f.ws_bytes)
		o.writer = write_ws;
	if (soak_n > 0)
		return soak(&o, soak_n);
	for (int i = 0; i < runs; i++) {
		struct ramlink_result res;
		int r = ramlink_run(&o, &res);

		if (r) {
			fprintf(stderr, "ram_path: %s\n", res.err);
			return 1;
		}
		printf("{\"seconds\": %.4f, \"MBps\": %.0f, \"src_cpu\": %.3f, \"dst_cpu\": %.3f, \"bytes\": %llu, "
		       "\"recv_path\": \"%s\", \"tls\": \"%s\", \"mismatched\": %llu, \"holes_filled\": %llu}\n",
		       res.seconds, (double)res.bytes / res.seconds / 1e6, res.src_cpu, res.dst_cpu,
		       (unsigned long long)res.bytes, res.recv_path, res.tls, (unsigned long long)res.mismatched,
		       (unsigned long long)res.holes_filled);
		fflush(stdout);
		/* a preallocated destination holds every page from the start */
		if (res.mismatched || (res.holes_filled && !o.dst_prealloc)) {
			fprintf(stderr, "ram_path: the destination's RAM differs: %llu pages, first at 0x%llx; "
					"%llu holes filled\n",
				(unsigned long long)res.mismatched, (unsigned long long)res.first_mismatch,
				(unsigned long long)res.holes_filled);
			return 1;
		}
	}
	return 0;
}
