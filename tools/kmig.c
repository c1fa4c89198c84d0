/* kmig — live migration of KVM guests.  Subcommands: run, migrate, info, demo, bench.
 * Parsing and wiring only: the work is in kvm/, ring/, savevm/, qapi/. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib-unix.h>

#include "qapi/qmp.h"
#include "machine/machine.h"
#include "tools/kmig.h"

/* --------------------------------------------------------------- run */

static void run_usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig run (--kernel FILE | --guest NAME[,key=value...]) [options]\n"
		"\n"
		"Run a guest under KVM; drive it and its migration over QMP.\n"
		"\n"
		"  --kernel FILE         multiboot v1 ELF (as for qemu -kernel), or with --flat a raw binary\n"
		"  --append STRING       kernel command line (multiboot cmdline)\n"
		"  --flat ADDR           load --kernel as a flat binary at ADDR (hex ok) and enter there\n"
		"  --guest NAME[,k=v..]  a built-in guest; its parameters become its command line\n"
		"  --mem SIZE            guest RAM in MiB, or with suffix M/G (default 256)\n"
		"  --mem-prealloc        fault all guest RAM in at start (QEMU's -mem-prealloc):\n"
		"                        the RAM is then held for good, and an incoming migration\n"
		"                        does not pay first touches; refused when the host has\n"
		"                        less memory available\n"
		"  --vcpus N             vCPUs, 1..%d (default 1)\n"
		"  --serial FILE         COM1 output to FILE (default: stdout)\n"
		"  --qmp PATH            QMP server on unix socket PATH (mode 0600)\n"
		"  --incoming URI|defer  wait for an incoming migration on tcp:HOST:PORT or unix:PATH;\n"
		"                        'defer' waits for QMP migrate-incoming\n"
		"  --dirty-tracking ring|bitmap|auto\n"
		"                        how dirty pages are tracked: KVM dirty rings, KVM's dirty\n"
		"                        bitmap, or auto (the default): the bitmap below %llu GiB of\n"
		"                        RAM, rings from there up, whichever costs least at that size\n"
		"                        (bench/harvest_cost.c measures it)\n"
		"  --dirty-ring N        dirty rings of N entries per vCPU (power of two, default 4096);\n"
		"                        implies --dirty-tracking ring\n"
		"  --dirty-bitmap        the same as --dirty-tracking bitmap\n"
		"  --device blob,id=NAME,size=SIZE[,dirty-rate=BYTES/S][,stop-copy=SIZE]\n"
		"                        an iterable device with SIZE bytes of state (like a VFIO\n"
		"                        device) rewritten at dirty-rate while the guest runs, plus\n"
		"                        stop-copy bytes sent only when stopped; K/M/G suffixes;\n"
		"                        repeatable; a destination needs the same devices\n"
		"  --object tls-creds-x509,id=ID,endpoint=server|client,dir=DIR[,verify-peer=on|off]\n"
		"  --object authz-simple,id=ID,identity=DN\n"
		"                        QEMU's objects for TLS: DIR holds ca-cert.pem and\n"
		"                        server-cert.pem/server-key.pem or client-cert.pem/\n"
		"                        client-key.pem; name them with the tls-creds and tls-authz\n"
		"                        parameters (migrate-set-parameters); a comma inside a\n"
		"                        value is written ',,' (identity=O=kmig,,CN=src); repeatable\n"
		"  --stats-file PATH     while a migration runs (either side), append to PATH one JSON\n"
		"                        line per period: the MigrationInfo query-migrate returns, plus\n"
		"                        one member \"x-kmig-timestamp-ms\" (wall clock, ms since the\n"
		"                        epoch); and one line when it ends (completed, failed or\n"
		"                        cancelled).  PATH is created or truncated once every other\n"
		"                        option has been checked and the guest is loaded (mode 0644)\n"
		"  --stats-period MS     the period of --stats-file, %d..%d ms (default %d)\n"
		"  -h, --help            this help\n"
		"\n"
		"Exit status: the code the guest wrote to port 0xf4, 0 after quit or SIGINT,\n"
		"SIGTERM or SIGHUP (the QMP socket file is removed), 1 when an incoming\n"
		"migration failed, 2 on a KVM error.\n"
		"\nBuilt-in guests:\n", KMIG_MAX_VCPUS, KMIG_DIRTY_AUTO_RING_MIN_BYTES >> 30,
		STATS_PERIOD_MIN_MS, STATS_PERIOD_MAX_MS,
		STATS_PERIOD_DEFAULT_MS);
	struct machine_guest_info g[16];
	size_t n = machine_builtin_guests(g, G_N_ELEMENTS(g));

	for (size_t i = 0; i < n && i < G_N_ELEMENTS(g); i++)
		fprintf(f, "  %-8s %s\n           parameters: %s\n", g[i].name, g[i].summary, g[i].params_help);
}

struct run_ctx {
	struct machine *m;
	GMainLoop *loop;
};

static gboolean quit_loop(gpointer data)
{
	g_main_loop_quit(data);
	return G_SOURCE_REMOVE;
}

static gpointer wait_thread(gpointer data)
{
	struct run_ctx *c = data;
	int code = machine_wait(c->m);

	g_idle_add(quit_loop, c->loop);
	return GINT_TO_POINTER(code);
}

static gboolean on_signal(gpointer data)
{
	machine_request_quit(data);
	return G_SOURCE_CONTINUE;
}

static int bad_arg(const char *what, const char *val)
{
	fprintf(stderr, "kmig run: invalid %s '%s' (see kmig run --help)\n", what, val);
	return 2;
}

/* --stats-file is truncated at start: never the kernel or the serial file. */
static int check_stats_path(const char *path, const struct machine_config *cfg, char *err, size_t errlen)
{
	if (!path)
		return 0;
	if (!*path) {
		snprintf(err, errlen, "--stats-file '' is empty");
		return -EINVAL;
	}
	return machine_output_check(cfg, "stats-file", "stats file", path, err, errlen);
}

/* The guest's name and command line, owned by cmd_run so that every exit
 * of run_main frees them. */
struct guest_strings {
	char *name, *cmdline;
};

static int run_main(int argc, char **argv, struct guest_strings *gs)
{
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "append", required_argument, NULL, 'a' },
		{ "flat", required_argument, NULL, 'F' }, { "guest", required_argument, NULL, 'g' },
		{ "mem", required_argument, NULL, 'm' }, { "vcpus", required_argument, NULL, 'c' },
		{ "serial", required_argument, NULL, 's' }, { "qmp", required_argument, NULL, 'q' },
		{ "incoming", required_argument, NULL, 'i' }, { "dirty-ring", required_argument, NULL, 'r' },
		{ "dirty-bitmap", no_argument, NULL, 'b' }, { "dirty-tracking", required_argument, NULL, 'T' },
		{ "device", required_argument, NULL, 'D' }, { "mem-prealloc", no_argument, NULL, 'p' },
		{ "object", required_argument, NULL, 'O' },
		{ "stats-file", required_argument, NULL, 'S' }, { "stats-period", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	struct machine_config cfg = { .mem_mib = 256, .vcpus = 1, .dirty_mode = KMIG_DIRTY_AUTO,
				      .dirty_ring_entries = 4096 };
	const char *qmp_path = NULL, *append = NULL, *stats_path = NULL;
	uint64_t stats_period = STATS_PERIOD_DEFAULT_MS;
	bool has_stats_period = false;
	const char *devices[8], *objects[16];
	unsigned int nr_devices = 0, nr_objects = 0;
	uint64_t v;
	int o;

	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'k': cfg.kernel_path = optarg; break;
		case 'a': append = optarg; break;
		case 'F': {
			char *end;
			errno = 0;
			cfg.flat_load_addr = strtoull(optarg, &end, 0);
			if (errno || *end || !*optarg)
				return bad_arg("--flat address", optarg);
			cfg.flat = true;
			break;
		}
		case 'g':
			g_free(gs->name);
			g_free(gs->cmdline);
			gs->name = gs->cmdline = NULL;
			if (parse_guest(optarg, &gs->name, &gs->cmdline))
				return bad_arg("--guest", optarg);
			break;
		case 'm':
			if (parse_mem_mib(optarg, &cfg.mem_mib))
				return bad_arg("--mem size", optarg);
			break;
		case 'p': cfg.mem_prealloc = true; break;
		case 'c':
			if (parse_u64(optarg, KMIG_MAX_VCPUS, &v) || !v)
				return bad_arg("--vcpus count", optarg);
			cfg.vcpus = (unsigned int)v;
			break;
		case 's': cfg.serial_path = optarg; break;
		case 'q': qmp_path = optarg; break;
		case 'i': cfg.incoming = optarg; break;
		case 'r':
			if (parse_u64(optarg, 65536, &v) || v < 256 || (v & (v - 1)))
				return bad_arg("--dirty-ring size (a power of two, 256..65536)", optarg);
			cfg.dirty_ring_entries = (uint32_t)v;
			cfg.dirty_mode = KMIG_DIRTY_RING;
			break;
		case 'b': cfg.dirty_mode = KMIG_DIRTY_BITMAP; break;
		case 'T':
			if (!strcmp(optarg, "ring"))
				cfg.dirty_mode = KMIG_DIRTY_RING;
			else if (!strcmp(optarg, "bitmap"))
				cfg.dirty_mode = KMIG_DIRTY_BITMAP;
			else if (!strcmp(optarg, "auto"))
				cfg.dirty_mode = KMIG_DIRTY_AUTO;
			else
				return bad_arg("--dirty-tracking (ring, bitmap or auto)", optarg);
			break;
		case 'D':
			if (nr_devices == sizeof(devices) / sizeof(devices[0])) {
				fprintf(stderr, "kmig run: at most %zu --device options\n",
					sizeof(devices) / sizeof(devices[0]));
				return 2;
			}
			devices[nr_devices++] = optarg;
			break;
		case 'O':
			if (nr_objects == sizeof(objects) / sizeof(objects[0])) {
				fprintf(stderr, "kmig run: at most %zu --object options\n",
					sizeof(objects) / sizeof(objects[0]));
				return 2;
			}
			objects[nr_objects++] = optarg;
			break;
		case 'S': stats_path = optarg; break;
		case 'P':
			if (parse_u64(optarg, STATS_PERIOD_MAX_MS, &stats_period) ||
			    stats_period < STATS_PERIOD_MIN_MS)
				return bad_arg("--stats-period (10..3600000 ms)", optarg);
			has_stats_period = true;
			break;
		case 'h': run_usage(stdout); return 0;
		default: run_usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kmig run: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!!cfg.kernel_path == !!gs->name) {
		fprintf(stderr, "kmig run: give exactly one of --kernel FILE or --guest NAME\n");
		return 2;
	}
	if (cfg.flat && !cfg.kernel_path) {
		fprintf(stderr, "kmig run: --flat needs --kernel\n");
		return 2;
	}
	if (has_stats_period && !stats_path) {
		fprintf(stderr, "kmig run: --stats-period needs --stats-file\n");
		return 2;
	}
	cfg.guest_name = gs->name;
	cfg.devices = devices;
	cfg.nr_devices = nr_devices;
	cfg.objects = objects;
	cfg.nr_objects = nr_objects;
	cfg.cmdline = gs->name ? gs->cmdline : append;

	char err[512] = "";
	struct machine *m = NULL;
	struct stats_file *stats = NULL;

	/* everything is checked before any file is created or truncated */
	if (qmp_path && !*qmp_path)
		return bad_arg("--qmp path", qmp_path);
	if (machine_config_check(&cfg, err, sizeof(err)) ||
	    check_stats_path(stats_path, &cfg, err, sizeof(err))) {
		fprintf(stderr, "kmig run: %s\n", err);
		return 1;
	}
	int r = machine_create(&cfg, &m, err, sizeof(err));

	if (!r && stats_path)
		r = stats_file_open(stats_path, (unsigned int)stats_period, &stats, err, sizeof(err));
	if (r) {
		fprintf(stderr, "kmig run: %s\n", err);
		if (m)
			machine_destroy(m);
		return 1;
	}
	struct run_ctx ctx = { .m = m, .loop = g_main_loop_new(NULL, FALSE) };
	struct qmp_server *qmp = NULL;

	if (qmp_path && qmp_server_start(m, qmp_path, &qmp, err, sizeof(err))) {
		fprintf(stderr, "kmig run: %s\n", err);
		stats_file_close(stats);
		machine_destroy(m);
		return 1;
	}
	if (machine_start(m, err, sizeof(err))) {
		fprintf(stderr, "kmig run: %s\n", err);
		stats_file_close(stats);
		qmp_server_stop(qmp);
		machine_destroy(m);
		return 1;
	}
	/* SIGHUP too (a closed terminal, a session ending): like QEMU, a
	 * clean stop that removes the QMP socket file, not a death by signal */
	g_unix_signal_add(SIGINT, on_signal, m);
	g_unix_signal_add(SIGTERM, on_signal, m);
	g_unix_signal_add(SIGHUP, on_signal, m);
	stats_file_start(stats, m);
	GThread *waiter = g_thread_new("kmig-wait", wait_thread, &ctx);

	g_main_loop_run(ctx.loop);
	int code = GPOINTER_TO_INT(g_thread_join(waiter));

	stats_file_close(stats);
	qmp_server_stop(qmp);
	machine_destroy(m);
	g_main_loop_unref(ctx.loop);
	return code;
}

int cmd_run(int argc, char **argv)
{
	struct guest_strings gs = { 0 };
	int code = run_main(argc, argv, &gs);

	g_free(gs.name);
	g_free(gs.cmdline);
	return code;
}

/* -------------------------------------------------------------- main */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig COMMAND [options]\n"
		"\n"
		"Live migration of KVM guests over KVM dirty rings and io_uring.\n"
		"\n"
		"Commands:\n"
		"  run       run a guest under KVM (source or destination of a migration)\n"
		"  migrate   migrate a running kmig guest over QMP, with progress\n"
		"  info      show a running guest's migration status (like QEMU's 'info migrate')\n"
		"  demo      migrate the self-checking guest between two kmig processes on loopback\n"
		"  bench     benchmark kmig's migration against QEMU's and the raw loopback limit\n"
		"\n"
		"'kmig COMMAND --help' describes each command.\n");
}

int main(int argc, char **argv)
{
	/* a peer that goes away must be an error return, not a signal */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];

	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 1, argv + 1);
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(argc - 1, argv + 1);
	if (!strcmp(cmd, "info"))
		return cmd_info(argc - 1, argv + 1);
	if (!strcmp(cmd, "demo"))
		return cmd_demo(argc - 1, argv + 1);
	if (!strcmp(cmd, "bench"))
		return cmd_bench(argc - 1, argv + 1);
	fprintf(stderr, "kmig: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
