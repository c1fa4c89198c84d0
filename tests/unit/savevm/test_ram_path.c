/* The RAM path alone, without KVM (bench/ramlink.h): kmig's RAM handlers,
 * stream and RAM channels between two processes over real sockets.  Every
 * case ends with the destination's RAM compared with the source's page by
 * page, and the source's holes checked to be holes on the destination.
 *
 * The guest is played by a writer thread that rewrites pages while the
 * passes run, in the patterns that break a RAM path: a page rewritten on
 * every pass (its copies go on different channels in different epochs),
 * a data page turned zero (a zero header after data), a zero page turned
 * data, data only in a page's last bytes, and pages on both sides of the
 * 3 GiB..4 GiB hole in guest physical space. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bench/ramlink.h"

#define MiB (1ull << 20)

/* What the fill writes, by page index: five kinds, mixed at page grain */
enum kind { FULL, TAIL, ZERO_WRITTEN, HOLE, HEAD };

struct guest {
	uint64_t lo_pages;	/* pages filled from offset 0 */
	uint64_t hi_first;	/* and from this page (0: none) */
	uint64_t hi_pages;
	uint64_t ws_pages;	/* the writer's working set, from page 0 */
};

static void write_page(struct kvm_mem *m, uint64_t pg, enum kind k, uint64_t gen)
{
	uint8_t page[KVM_PAGE_SIZE];
	uint64_t v = pg * 0x9e3779b97f4a7c15ull + gen + 1;

	memset(page, 0, sizeof(page));
	if (k == FULL)
		for (unsigned int i = 0; i < KVM_PAGE_SIZE / 8; i++)
			memcpy(page + i * 8, &(uint64_t){ v + i }, 8);
	else if (k == TAIL)
		memcpy(page + KVM_PAGE_SIZE - 8, &v, 8);
	else if (k == HEAD)
		page[0] = (uint8_t)(v | 1);
	if (k == HOLE)
		return;
	/* through the memfd: the kernel fills the page cache; the pages are
	 * no less populated than a guest's */
	assert_int_equal(pwrite(kvm_mem_fd(m), page, sizeof(page), (off_t)(pg * KVM_PAGE_SIZE)), sizeof(page));
}

static void fill_range(struct kvm_mem *m, uint64_t first, uint64_t n)
{
	for (uint64_t pg = first; pg < first + n; pg++)
		write_page(m, pg, (enum kind)(pg % 5), 0);
}

static void fill(struct kvm_mem *m, void *ctx)
{
	struct guest *g = ctx;

	fill_range(m, 0, g->lo_pages);
	if (g->hi_pages)
		fill_range(m, g->hi_first, g->hi_pages);
}

/* Each round rewrites the working set with the next generation, turning
 * every page's kind over (data -> zero -> data ...), publishing each
 * write after it as KVM does after re-protecting the page. */
static void rewrite(struct kvm_mem *m, void *ctx, atomic_bool *stop)
{
	struct guest *g = ctx;

	for (uint64_t gen = 1; !*stop; gen++) {
		for (uint64_t pg = 0; pg < g->ws_pages && !*stop; pg++) {
			enum kind k = (enum kind)((pg + gen) % 5);

			/* a hole cannot come back: write zeroes instead */
			write_page(m, pg, k == HOLE ? ZERO_WRITTEN : k, gen);
			dirty_bitmap_set(kvm_mem_dirty(m), pg);
		}
		usleep(2000);
	}
}

static void run(struct ramlink_opts *o, struct guest *g)
{
	struct ramlink_result res;

	o->uri = o->uri ? o->uri : "tcp:127.0.0.1:0";
	o->fill = fill;
	o->ctx = g;
	if (g->ws_pages)
		o->writer = rewrite;
	int r = ramlink_run(o, &res);

	/* a preallocated destination holds every page from the start */
	uint64_t holes_filled = o->dst_prealloc ? 0 : res.holes_filled;

	if (r || res.mismatched || holes_filled || res.dst_pages != res.src.headers)
		fprintf(stderr,
			"ram path (channels %u, send %s, recv %s, prealloc %d): %s\n"
			"  %llu pages differ (first at 0x%llx), %llu holes filled, %llu headers sent, %llu received,"
			" populated %llu -> %llu\n",
			o->channels, savevm_send_mode_name(o->send_mode), res.recv_path, o->dst_prealloc,
			r ? res.err : "completed", (unsigned long long)res.mismatched,
			(unsigned long long)res.first_mismatch, (unsigned long long)res.holes_filled,
			(unsigned long long)res.src.headers, (unsigned long long)res.dst_pages,
			(unsigned long long)res.src_populated, (unsigned long long)res.dst_populated);
	assert_int_equal(r, 0);
	assert_int_equal(res.mismatched, 0);
	assert_int_equal(holes_filled, 0);
	assert_int_equal(res.dst_pages, res.src.headers);
	/* every populated page went, zero ones as headers only */
	assert_true(res.src.normal + res.src.duplicate >= res.src_populated);
	/* zero pages never land as data */
	if (!o->dst_prealloc)
		assert_true(res.dst_populated <= res.src_populated);
}

static void main_connection(void **state)
{
	struct guest g = { .lo_pages = 4096 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .send_mode = SAVEVM_SEND_COPY };

	(void)state;
	run(&o, &g);
}

static void channels_copy(void **state)
{
	struct guest g = { .lo_pages = 8000 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = 3, .send_mode = SAVEVM_SEND_COPY };

	(void)state;
	run(&o, &g);
}

static void channels_zero_copy(void **state)
{
	struct guest g = { .lo_pages = 8000 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_ZC };

	(void)state;
	run(&o, &g);
}

static void preallocated_destination(void **state)
{
	struct guest g = { .lo_pages = 8000, .ws_pages = 300 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_COPY,
				  .dst_prealloc = true, .live_passes = 3 };

	(void)state;
	run(&o, &g);
}

static void rewritten_main(void **state)
{
	struct guest g = { .lo_pages = 6000, .ws_pages = 700 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .send_mode = SAVEVM_SEND_COPY, .live_passes = 5 };

	(void)state;
	run(&o, &g);
}

static void rewritten_channels(void **state)
{
	struct guest g = { .lo_pages = 6000, .ws_pages = 2500 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = 4, .send_mode = SAVEVM_SEND_COPY,
				  .live_passes = 6 };

	(void)state;
	run(&o, &g);
}

/* Each receive path a destination can be told to take. */
static void recv_paths(void **state)
{
	static const char *paths[] = { "write", "splice", "mapping" };

	(void)state;
	for (unsigned int i = 0; i < 3; i++) {
		for (unsigned int ch = 0; ch <= 2; ch += 2) {
			struct guest g = { .lo_pages = 3000, .ws_pages = 400 };
			struct ramlink_opts o = { .mem_bytes = 32 * MiB, .channels = ch, .recv_path = paths[i],
						  .send_mode = SAVEVM_SEND_COPY, .live_passes = 2 };

			run(&o, &g);
		}
	}
}

/* RAM above 4 GiB in guest physical space: pages on both sides of the
 * hole land at the right RAM offsets. */
static void high_ram(void **state)
{
	uint64_t low = (3ull << 30) / KVM_PAGE_SIZE;
	struct guest g = { .lo_pages = 2000, .hi_first = low - 1000, .hi_pages = 3000 };
	struct ramlink_opts o = { .mem_bytes = 3200 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_COPY };

	(void)state;
	run(&o, &g);
}

static void unix_socket(void **state)
{
	char uri[64];
	struct guest g = { .lo_pages = 3000, .ws_pages = 200 };
	struct ramlink_opts o = { .mem_bytes = 32 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_COPY,
				  .live_passes = 2, .uri = uri };

	(void)state;
	snprintf(uri, sizeof(uri), "unix:/tmp/kmig-ram-path-%d.sock", (int)getpid());
	run(&o, &g);
}

static void paced(void **state)
{
	struct guest g = { .lo_pages = 2048 };
	struct ramlink_opts o = { .mem_bytes = 32 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_COPY,
				  .max_bandwidth = 64 * MiB };

	(void)state;
	run(&o, &g);
}

/* A peer that goes silent without closing: the other side fails with
 * -ETIMEDOUT after x-kmig-io-timeout (here 400 ms), not later than a few
 * timeouts, on the main connection and with RAM channels. */
#define SILENT_TIMEOUT_MS 400

static void silent_peer(enum ramlink_silent who, unsigned int channels)
{
	/* more than the socket buffers hold, so that a source blocks */
	struct guest g = { .lo_pages = 8192 };
	struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = channels, .send_mode = SAVEVM_SEND_COPY,
				  .uri = "tcp:127.0.0.1:0", .fill = fill, .ctx = &g,
				  .io_timeout_ms = SILENT_TIMEOUT_MS, .silent = who };
	struct ramlink_result res;
	int r = ramlink_run(&o, &res);
	int status = who == RAMLINK_SILENT_DST ? res.src_status : res.dst_status;
	double end = who == RAMLINK_SILENT_DST ? res.src_end : res.dst_end;

	if (status != -ETIMEDOUT || end < SILENT_TIMEOUT_MS / 1000.0 || end > 4 * SILENT_TIMEOUT_MS / 1000.0)
		fail_msg("silent %s, %u channels: the other side ended with %d (%s) after %.2f s (want -ETIMEDOUT "
			 "after %d ms); ramlink %d: %s", who == RAMLINK_SILENT_DST ? "destination" : "source", channels,
			 status, strerror(-status), end, SILENT_TIMEOUT_MS, r, res.err);
}

static void silent_destination(void **state)
{
	(void)state;
	silent_peer(RAMLINK_SILENT_DST, 0);
	silent_peer(RAMLINK_SILENT_DST, 2);
}

static void silent_source(void **state)
{
	(void)state;
	silent_peer(RAMLINK_SILENT_SRC, 0);
	silent_peer(RAMLINK_SILENT_SRC, 2);
}

/* Connections cut at byte offsets spread over the whole stream (header,
 * declarations, the passes, the end), on the main connection and on RAM
 * channels: neither side hangs, a destination that says it loaded the
 * stream holds every page, one that did not get it all never says so, and
 * nothing is left open.  KMIG_CUT_RUNS sets how many cuts per layout
 * (default 12; the long form: KMIG_CUT_RUNS=40 or more), KMIG_CUT_TRACE=1
 * prints every cut's outcome. */
static double now_monotonic(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cut_once(unsigned int channels, unsigned int conn, uint64_t at)
{
	struct guest g = { .lo_pages = 3000, .ws_pages = 200 };
	struct ramlink_opts o = { .mem_bytes = 32 * MiB, .channels = channels, .send_mode = SAVEVM_SEND_COPY,
				  .uri = "tcp:127.0.0.1:0", .fill = fill, .ctx = &g, .writer = rewrite,
				  .live_passes = 2, .io_timeout_ms = 3000, .cut = true, .cut_conn = conn,
				  .cut_at = at };
	struct ramlink_result res;
	double t0 = now_monotonic();
	int r = ramlink_run(&o, &res);
	bool dst_ok = res.dst_status == 0;

	if (getenv("KMIG_CUT_TRACE"))
		fprintf(stderr, "cut conn %u/%u at %llu: %s src %d dst %d in %.2f s\n", conn, channels + 1,
			(unsigned long long)at, res.was_cut ? "cut" : "not reached", res.src_status, res.dst_status,
			now_monotonic() - t0);

	/* a destination that says it loaded: the source finished too, and
	 * every page is there; a connection never cut: all went through */
	if ((dst_ok && (res.src_status || r || res.mismatched)) || (!res.was_cut && (r || !dst_ok)))
		fail_msg("cut of connection %u of %u at byte %llu (%s): ramlink %d, source %d, destination %d, "
			 "%llu pages differ: %s", conn, channels + 1, (unsigned long long)at,
			 res.was_cut ? "cut" : "never reached", r, res.src_status, res.dst_status,
			 (unsigned long long)res.mismatched, res.err);
}

static void cut_connections(void **state)
{
	const char *env = getenv("KMIG_CUT_RUNS");
	unsigned int runs = env ? (unsigned int)atoi(env) : 12;
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	unsigned int fds = ramlink_open_fds();

	(void)state;
	/* main connection alone (~12 MiB), main of a multifd stream (a few
	 * hundred bytes: declarations, CHANNELS, epochs, EOF), a RAM channel
	 * (~6 MiB): offsets up to 2^bits on a log scale, so that the first
	 * bytes (header, hello) are cut as often as the bulk */
	static const struct { unsigned int channels, conn, bits; } layouts[] = { { 0, 0, 24 }, { 2, 0, 7 }, { 2, 2, 23 } };

	for (unsigned int l = 0; l < 3; l++) {
		for (unsigned int i = 0; i < runs; i++) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			uint64_t at = i < 3 ? (uint64_t[]){ 0, 23, 33 }[i] : rng % (1ull << (4 + (i * 7) % (layouts[l].bits - 3)));

			cut_once(layouts[l].channels, layouts[l].conn, at);
		}
	}
	unsigned int now = ramlink_open_fds();

	if (now > fds)
		fail_msg("%u descriptors more after the cuts than before (%u)", now - fds, fds);
	/* and then a migration that is not cut goes through */
	struct guest g = { .lo_pages = 3000 };
	struct ramlink_opts o = { .mem_bytes = 32 * MiB, .channels = 2, .send_mode = SAVEVM_SEND_COPY };

	run(&o, &g);
}

/* kill -9 of the destination at moments spread over the migration: the
 * source notices within 2 s (a dead process's sockets close: no waiting
 * for x-kmig-io-timeout, set to 5 s here as a guard) and ends cleanly,
 * leaving no descriptor behind. */
static void kill_destination(void **state)
{
	static const unsigned int delays_ms[] = { 1, 3, 10, 30, 60, 120, 250 };
	unsigned int fds = ramlink_open_fds();

	(void)state;
	for (unsigned int ch = 0; ch <= 2; ch += 2) {
		for (unsigned int i = 0; i < sizeof(delays_ms) / sizeof(delays_ms[0]); i++) {
			struct guest g = { .lo_pages = 12000, .ws_pages = 500 };
			struct ramlink_opts o = { .mem_bytes = 64 * MiB, .channels = ch, .send_mode = SAVEVM_SEND_COPY,
						  .uri = "tcp:127.0.0.1:0", .fill = fill, .ctx = &g, .writer = rewrite,
						  .live_passes = 3, .io_timeout_ms = 5000,
						  .kill_dst_ms = delays_ms[i] };
			struct ramlink_result res;
			int r = ramlink_run(&o, &res);

			if (getenv("KMIG_CUT_TRACE"))
				fprintf(stderr, "kill dst after %u ms, %u channels: killed at %.3f s, source %d at %.3f s\n",
					delays_ms[i], ch, res.killed_at, res.src_status, res.src_end);
			if (res.src_status && res.src_end - res.killed_at > 2.0)
				fail_msg("destination killed at %.3f s (%u channels): the source ended at %.3f s with %d: %s",
					 res.killed_at, ch, res.src_end, res.src_status, res.err);
			/* a destination killed mid-way is never reported as loaded */
			if (res.killed_at < res.src_end && !r)
				fail_msg("destination killed at %.3f s, before the source ended (%.3f s), yet all went well",
					 res.killed_at, res.src_end);
		}
	}
	unsigned int now = ramlink_open_fds();

	if (now > fds)
		fail_msg("%u descriptors more after the kills than before (%u)", now - fds, fds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(main_connection),	cmocka_unit_test(channels_copy),
		cmocka_unit_test(channels_zero_copy),	cmocka_unit_test(preallocated_destination),
		cmocka_unit_test(rewritten_main),	cmocka_unit_test(rewritten_channels),
		cmocka_unit_test(recv_paths),		cmocka_unit_test(high_ram),
		cmocka_unit_test(unix_socket),		cmocka_unit_test(paced),
		cmocka_unit_test(silent_destination),	cmocka_unit_test(silent_source),
		cmocka_unit_test(cut_connections),	cmocka_unit_test(kill_destination),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
