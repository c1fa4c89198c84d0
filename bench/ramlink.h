/* bench/ramlink.h — the RAM path of a migration alone, without KVM: guest
 * RAM (kvm/mem.h) on each side, kmig's own RAM handlers, stream codec, RAM
 * channels (multifd) and io_uring transport between them, over real
 * sockets.  The destination is a child process, so that its memory is as
 * fresh as a real destination's and its CPU time is its own.
 *
 * A "writer" thread on the source plays a guest: it rewrites pages while
 * the precopy passes run and publishes each write in the dirty bitmap
 * after it (as KVM does after re-protecting a page), so pages are sent
 * again and channels must order their copies.  At the end the
 * destination's RAM is compared with the source's page by page, and the
 * pages that must stay holes (never written on the source) are checked.
 *
 * Used by bench/ram_path (the RAM path's throughput and CPU against the
 * raw socket, runnable where /dev/kvm is not) and by the unit test
 * tests/unit/savevm/test_ram_path.c. */
#ifndef KMIG_BENCH_RAMLINK_H
#define KMIG_BENCH_RAMLINK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvm/mem.h"
#include "savevm/ram.h"
#include "savevm/savevm.h"

struct ramlink_opts {
	uint64_t mem_bytes;		/* guest RAM, both sides */
	unsigned int channels;		/* 0 = the main connection carries RAM */
	enum savevm_send_mode send_mode;
	bool dst_prealloc;		/* destination RAM faulted in first */
	const char *recv_path;		/* KMIG_RECV_PATH for the destination, or NULL */
	const char *uri;		/* where the destination listens: "tcp:127.0.0.1:0" */
	uint64_t max_bandwidth;		/* bytes/s, 0 = unlimited */
	/* the source's RAM before the migration (runs before the clock) */
	void (*fill)(struct kvm_mem *src, void *ctx);
	/* while passes run: a thread that writes pages and publishes each
	 * write in kvm_mem_dirty(src) after it; returns when *stop */
	void (*writer)(struct kvm_mem *src, void *ctx, atomic_bool *stop);
	void *ctx;
	unsigned int live_passes;	/* passes with the writer running (>= 1) */
	/* faults: each side's x-kmig-io-timeout (0 = none), and a side that
	 * goes silent without closing: the destination right after accepting
	 * (it reads nothing), or the source right after its declarations and
	 * RAM channels (it sends nothing more); it stays silent for four
	 * timeouts, then goes away */
	int io_timeout_ms;
	enum ramlink_silent { RAMLINK_SILENT_NONE, RAMLINK_SILENT_DST, RAMLINK_SILENT_SRC } silent;
	/* a connection cut (bench/cutproxy.h, tcp only): connection number
	 * cut_conn (0 = main, 1.. = RAM channels) after cut_at bytes */
	bool cut;
	unsigned int cut_conn;
	uint64_t cut_at;
	/* kill -9 of the destination this long after the source starts
	 * (0 = never) */
	unsigned int kill_dst_ms;
	/* TLS on every connection: the directory of tests/tls's certificate
	 * set (`tls-certs DIR`), its client/ and server/ credentials; NULL =
	 * plaintext */
	const char *tls_dir;
	/* the destination runs in this network namespace (`ip netns add`
	 * NAME: /var/run/netns/NAME), the source where the caller is: two
	 * hosts on one machine (tests/integration/netns.py); NULL = here */
	const char *dst_netns;
};

struct ramlink_result {
	double seconds;			/* setup to the destination's EOF */
	double src_cpu, dst_cpu;	/* seconds of CPU each side spent meanwhile */
	uint64_t bytes;			/* every byte the source sent */
	struct ram_stats src;
	uint64_t dst_pages;		/* page headers the destination received */
	uint64_t mismatched;		/* pages whose contents differ */
	uint64_t first_mismatch;	/* RAM offset of the first */
	uint64_t dst_populated;		/* destination pages that are not holes */
	uint64_t src_populated;
	uint64_t holes_filled;		/* source holes that are data on the destination */
	int src_status, dst_status;	/* each side's result (0 or -errno) */
	bool was_cut;			/* the cut happened (the connection got that far) */
	double killed_at;		/* seconds from the start to the kill, or 0 */
	double src_end, dst_end;	/* seconds from the start until each side ended */
	char recv_path[32];		/* the destination's */
	char tls[8];			/* the source's main connection: off, ktls or gnutls */
	char err[1200];			/* both sides' reasons */
};

/* Returns 0 once both sides finished and the comparison ran (look at
 * mismatched and holes_filled), -errno with res->err otherwise. */
int ramlink_run(const struct ramlink_opts *o, struct ramlink_result *res);

/* Descriptors this process has open (leak checks of the soak and tests). */
unsigned int ramlink_open_fds(void);

#endif
