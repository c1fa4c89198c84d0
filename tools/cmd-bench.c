/* kmig bench: runs the benchmark, bench/bench.py of the source tree this
 * kmig was built from, against this build directory.  The script does the
 * work (it drives kmig and QEMU over QMP, like any management tool would);
 * this subcommand only saves typing the paths, which meson gives this file
 * at compile time (KMIG_SOURCE_DIR, KMIG_BUILD_DIR, see tools/meson.build). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#ifndef KMIG_SOURCE_DIR
#error "tools/meson.build defines KMIG_SOURCE_DIR for this file"
#endif
#ifndef KMIG_BUILD_DIR
#error "tools/meson.build defines KMIG_BUILD_DIR for this file"
#endif

#define BENCH_SCRIPT KMIG_SOURCE_DIR "/bench/bench.py"

static void bench_usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig bench [--smoke] [--runs N] [--channels N] [--scenarios LIST]\n"
		"                  [--configs LIST] [--no-qemu] [--qemu-tcg] [--out DIR] [--build DIR]\n"
		"                  [--downtime-limit MS] [--timeout S] [--boot-timeout S]\n"
		"       kmig bench --report RESULTS_JSON [--out DIR]\n"
		"\n"
		"Benchmark kmig's live migration against QEMU 10 (bookworm-backports, unpacked\n"
		"into a private prefix by scripts/qemu10.sh), the system's QEMU 7.2 and the raw\n"
		"TCP loopback limits, on the same guest ELFs, in one run (as 'make bench').\n"
		"Runs python3 %s --build %s with the arguments given.\n"
		"\n"
		"Scenarios (--scenarios, comma-separated; default all):\n"
		"  idle-1g     idle guest, 1 GiB written once of 1200 MiB RAM, then idle\n"
		"  ws64-1g     dirty guest, 1 GiB written once, then a 64 MiB working set\n"
		"              rewritten as fast as possible while it migrates\n"
		"  ws256-1g    the same with a 256 MiB working set\n"
		"  sparse-16g  idle guest with 16 GiB RAM, 256 MiB of it written\n"
		"  idle-1g-2vcpu, ws64-1g-2vcpu\n"
		"              idle-1g and ws64-1g on 2 vCPUs\n"
		"  idle-1g-prealloc, ws64-1g-prealloc\n"
		"              idle-1g and ws64-1g into a destination whose RAM is faulted in\n"
		"              before the migration (kmig --mem-prealloc, QEMU -mem-prealloc)\n"
		"  ram-path-1g kmig's RAM path alone (bench/ram_path), 1 GiB into fresh memory,\n"
		"              no guest: runs without /dev/kvm\n"
		"  converge    2 vCPUs dirtying 3x what a 16 MiB/s link carries: kmig without\n"
		"              and with dirty-limit, QEMU with auto-converge (its own configs)\n"
		"  {idle-1g,ws64-1g,ram-path-1g}-{rack,site,lossy}\n"
		"              the same between two network namespaces over a shaped link:\n"
		"              rack 10 Gbit/s 0.2 ms RTT, site 1 Gbit/s 20 ms RTT (netem),\n"
		"              lossy 1 %% packet loss each way (tc BPF); only the (L) configs\n"
		"\n"
		"Configurations (--configs: comma-separated substrings of the names):\n"
		"  raw loopback {1 stream,N streams}                (no migration: the wire)\n"
		"  raw loopback {1 stream,N streams} into fresh memory\n"
		"                                  (each stream by its own thread into untouched memory)\n"
		"  raw link {1 stream,N streams}                    (L: across the shaped link)\n"
		"  kmig default                                     (nothing set: one connection)\n"
		"  kmig {1,N}ch copy {ring,bitmap}, kmig Nch zero-copy bitmap   (L: ring)\n"
		"  kmig {1,N}ch TLS copy ring                       (L: x509 both ways, kTLS or GnuTLS)\n"
		"  kmig RAM path {1,N}ch, kmig RAM path {1,N}ch TLS (ram-path-1g*, L)\n"
		"  QEMU 10 {1 stream,multifd-N} {bitmap,ring}, QEMU 10 multifd-N zero-copy bitmap\n"
		"                                                   (L: bitmap)\n"
		"  QEMU 10 {1 stream,multifd-N} TLS bitmap          (L: the same certificates)\n"
		"  QEMU 7.2 {1 stream,multifd-N} bitmap\n"
		"\n"
		"Options:\n"
		"  --runs N            runs per configuration, median (min-max) reported\n"
		"                      (default 3; the full bench needs at least 3)\n"
		"  --channels N        N of the multi-channel configurations (default 4)\n"
		"  --no-qemu           leave QEMU out\n"
		"  --qemu-tcg          QEMU's configurations on TCG (-accel tcg), named '(TCG)':\n"
		"                      without /dev/kvm, QEMU's TLS against kmig's RAM path with\n"
		"                      TLS (target 7t, indicative); no other target uses them\n"
		"  --smoke             a tiny run in seconds: idle guest 32 MiB of 256 MiB, one\n"
		"                      run, raw loopback, kmig 1ch copy and Nch zero-copy, ring;\n"
		"                      and the RAM path alone, 64 MiB (1ch, Nch, Nch TLS), over\n"
		"                      loopback and over the lossy link\n"
		"  --out DIR           results root (default bench/results in the source tree)\n"
		"  --build DIR         build directory to take kmig and the guests from\n"
		"                      (default: this kmig's, %s)\n"
		"  --downtime-limit MS downtime-limit of every migration (default 300)\n"
		"  --timeout S         cancel a migration not done after S seconds and count it\n"
		"                      as failed (default 60)\n"
		"  --boot-timeout S    wait for the source guest's ready line (default 300)\n"
		"  --report FILE       run nothing: judge and draw an earlier run's results.json\n"
		"                      (or .json.gz) again, into a new directory under --out\n"
		"  -h, --help          this help\n"
		"\n"
		"Every migration runs with max-bandwidth unlimited.  Measured per run: total\n"
		"time, downtime, expected-downtime, throughput, CPU seconds of both processes,\n"
		"peak RSS beyond guest RAM per side, and 'remaining' every 25 ms.\n"
		"Output: DIR/<YYYYmmdd-HHMMSS>/results.json (every raw sample, the host),\n"
		"results.md (a table per scenario and the targets against QEMU 10, PASS/MISS),\n"
		"PNG plots (gnuplot); DIR/latest points to it; the Markdown also goes to stdout.\n"
		"Runs as root; without /dev/kvm only the scenarios without a guest run.  Installs\n"
		"QEMU 10 (private prefix), qemu-system-x86 and gnuplot-nox if missing.\n",
		BENCH_SCRIPT, KMIG_BUILD_DIR, KMIG_BUILD_DIR);
}

int cmd_bench(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			bench_usage(stdout);
			return 0;
		}
	}
	/* python3 BENCH --build DIR ARGS...: a later --build in ARGS wins */
	char **args = calloc((size_t)argc + 4, sizeof(*args));

	if (!args) {
		fprintf(stderr, "kmig bench: out of memory\n");
		return 1;
	}
	int n = 0;

	args[n++] = "python3";
	args[n++] = BENCH_SCRIPT;
	args[n++] = "--build";
	args[n++] = KMIG_BUILD_DIR;
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	fflush(stdout);
	execvp(args[0], args);
	fprintf(stderr, "kmig bench: cannot run python3 %s: %s\n", BENCH_SCRIPT, strerror(errno));
	free(args);
	return 1;
}
