/* kmig demo: the main job on its built-in default.  Starts a destination
 * and a source kmig on loopback with the self-checking 'verify' guest,
 * migrates while the guest rewrites its working set from every vCPU, and
 * shows the guest still running, still correct, on the destination. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "tools/kmig.h"

struct demo_opts {
	uint64_t mem_mib, vcpus, ws_mib, rate;
	const char *tracking;	/* ring, bitmap or auto */
	bool keep;
};

static int free_tcp_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    !getsockname(fd, (struct sockaddr *)&sa, &len))
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static GSubprocess *spawn_kmig(const struct demo_opts *o, const char *dir, const char *name,
			       const char *incoming)
{
	char guest[128], mem[32], vcpus[16], serial[4096], qmp[4096];
	GError *error = NULL;

	snprintf(guest, sizeof(guest), "verify,ws=%llu,rate=%llu", (unsigned long long)o->ws_mib,
		 (unsigned long long)o->rate);
	snprintf(mem, sizeof(mem), "%llu", (unsigned long long)o->mem_mib);
	snprintf(vcpus, sizeof(vcpus), "%llu", (unsigned long long)o->vcpus);
	snprintf(serial, sizeof(serial), "%s/%s.log", dir, name);
	snprintf(qmp, sizeof(qmp), "%s/%s.qmp", dir, name);
	const char *argv[20];
	int n = 0;

	argv[n++] = "/proc/self/exe";
	argv[n++] = "run";
	argv[n++] = "--guest"; argv[n++] = guest;
	argv[n++] = "--mem"; argv[n++] = mem;
	argv[n++] = "--vcpus"; argv[n++] = vcpus;
	argv[n++] = "--serial"; argv[n++] = serial;
	argv[n++] = "--qmp"; argv[n++] = qmp;
	argv[n++] = "--dirty-tracking";
	argv[n++] = o->tracking;
	if (incoming) {
		argv[n++] = "--incoming";
		argv[n++] = incoming;
	}
	argv[n] = NULL;
	GSubprocess *p = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_NONE, &error);

	if (!p) {
		fprintf(stderr, "kmig demo: cannot start %s: %s\n", name, error->message);
		g_error_free(error);
	}
	return p;
}

/* The guest's lines on COM1 so far. */
static char **read_lines(const char *dir, const char *name)
{
	char path[4096], *text = NULL;

	snprintf(path, sizeof(path), "%s/%s.log", dir, name);
	if (!g_file_get_contents(path, &text, NULL, NULL))
		return g_new0(char *, 1);
	char **lines = g_strsplit(text, "\n", -1);

	g_free(text);
	return lines;
}

static int count_matching(char **lines, const char *needle)
{
	int n = 0;

	for (char **l = lines; *l; l++)
		n += strstr(*l, needle) != NULL;
	return n;
}

static void show_tail(char **lines, const char *prefix, int max)
{
	int n = (int)g_strv_length(lines);

	while (n > 0 && !*lines[n - 1])
		n--;
	for (int i = n > max ? n - max : 0; i < n; i++)
		printf("  %s| %s\n", prefix, lines[i]);
}

/* Wait until the guest has printed `want` progress lines, or it failed. */
static bool wait_guest(const char *dir, const char *name, int want, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 100) {
		char **l = read_lines(dir, name);
		int ok = count_matching(l, " ok"), fail = count_matching(l, "FAIL");

		g_strfreev(l);
		if (fail)
			return false;
		if (ok >= want)
			return true;
		usleep(100000);
	}
	return false;
}

static void demo_usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig demo [--mem MIB] [--vcpus N] [--ws MIB] [--rate MIB/S]\n"
		"                 [--dirty-tracking ring|bitmap|auto] [--keep]\n"
		"\n"
		"Start a destination and a source kmig on loopback running the self-checking\n"
		"'verify' guest, live-migrate it while every vCPU rewrites its working set,\n"
		"and show that it keeps running, correct, on the destination.\n"
		"\n"
		"  --mem MIB       guest RAM (default 512)\n"
		"  --vcpus N       vCPUs, each dirtying its share of the working set (default 2)\n"
		"  --ws MIB        working set rewritten by the guest (default 64)\n"
		"  --rate MIB/S    dirty rate per vCPU, 0 = as fast as it can (default 32)\n"
		"  --dirty-tracking MODE\n"
		"                  KVM's dirty ring, dirty bitmap, or auto (default: kmig run's\n"
		"                  rule, see kmig run --help); --dirty-bitmap = bitmap\n"
		"  --keep          keep the work directory with logs and sockets\n");
}

static int parse_demo(int argc, char **argv, struct demo_opts *o)
{
	static const struct option opts[] = {
		{ "mem", required_argument, NULL, 'm' }, { "vcpus", required_argument, NULL, 'c' },
		{ "ws", required_argument, NULL, 'w' }, { "rate", required_argument, NULL, 'r' },
		{ "dirty-bitmap", no_argument, NULL, 'b' }, { "keep", no_argument, NULL, 'k' },
		{ "dirty-tracking", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	int c;

	*o = (struct demo_opts){ .mem_mib = 512, .vcpus = 2, .ws_mib = 64, .rate = 32, .tracking = "auto" };
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;

		switch (c) {
		case 'm': bad = parse_mem_mib(optarg, &o->mem_mib); break;
		case 'c': bad = parse_u64(optarg, 64, &o->vcpus) || !o->vcpus; break;
		case 'w': bad = parse_u64(optarg, 1 << 20, &o->ws_mib) || !o->ws_mib; break;
		case 'r': bad = parse_u64(optarg, 1 << 20, &o->rate); break;
		case 'b': o->tracking = "bitmap"; break;
		case 't':
			bad = strcmp(optarg, "ring") && strcmp(optarg, "bitmap") && strcmp(optarg, "auto");
			o->tracking = optarg;
			break;
		case 'k': o->keep = true; break;
		case 'h': demo_usage(stdout); return 1;
		default: demo_usage(stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "kmig demo: invalid value '%s'\n", optarg);
			return 2;
		}
	}
	if (optind != argc) {
		demo_usage(stderr);
		return 2;
	}
	return 0;
}

static void quit_instance(const char *dir, const char *name, GSubprocess *p)
{
	char path[4096], err[256];
	struct qmp_client *c;

	snprintf(path, sizeof(path), "%s/%s.qmp", dir, name);
	if (!qmp_client_open(path, 500, &c, err, sizeof(err))) {
		qmp_client_exec(c, "quit", NULL, NULL, err, sizeof(err));
		qmp_client_close(c);
	}
	if (p) {
		g_subprocess_wait(p, NULL, NULL);
		g_object_unref(p);
	}
}

static const char *runstate(const char *dir, const char *name, char *buf, size_t len)
{
	char path[4096], err[256];
	struct qmp_client *c;
	JsonNode *ret = NULL;

	snprintf(buf, len, "unreachable");
	snprintf(path, sizeof(path), "%s/%s.qmp", dir, name);
	if (!qmp_client_open(path, 500, &c, err, sizeof(err))) {
		if (!qmp_client_exec(c, "query-status", NULL, &ret, err, sizeof(err))) {
			snprintf(buf, len, "%s", qmp_get_str(json_node_get_object(ret), "status", "?"));
			json_node_unref(ret);
		}
		qmp_client_close(c);
	}
	return buf;
}

int cmd_demo(int argc, char **argv)
{
	struct demo_opts o;
	int r = parse_demo(argc, argv, &o);

	if (r)
		return r == 1 ? 0 : r;
	if (access("/dev/kvm", R_OK | W_OK)) {
		fprintf(stderr, "kmig demo: /dev/kvm is not usable here (%s); the demo runs real KVM guests\n",
			strerror(errno));
		return 1;
	}
	char *dir = g_dir_make_tmp("kmig-demo-XXXXXX", NULL);
	int port = free_tcp_port();
	char uri[64], path[4096], err[512], st1[32], st2[32];

	if (!dir || port < 0) {
		fprintf(stderr, "kmig demo: cannot prepare a work directory or a port\n");
		return 1;
	}
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", port);
	printf("kmig demo: verify guest, %llu MiB RAM, %llu vCPUs rewriting %llu MiB at %llu MiB/s each, "
	       "dirty tracking %s\n",
	       (unsigned long long)o.mem_mib, (unsigned long long)o.vcpus, (unsigned long long)o.ws_mib,
	       (unsigned long long)o.rate, o.tracking);
	printf("work directory: %s\n\n", dir);
	GSubprocess *dst = spawn_kmig(&o, dir, "destination", uri);
	GSubprocess *src = dst ? spawn_kmig(&o, dir, "source", NULL) : NULL;
	struct qmp_client *c = NULL;
	int rc = 1;

	snprintf(path, sizeof(path), "%s/source.qmp", dir);
	if (!src || qmp_client_open(path, 5000, &c, err, sizeof(err))) {
		fprintf(stderr, "kmig demo: source did not come up: %s\n", src ? err : "");
		goto out;
	}
	if (!wait_guest(dir, "source", 2, 15000)) {
		fprintf(stderr, "kmig demo: the source guest did not report progress\n");
		goto out;
	}
	printf("source guest, COM1:\n");
	char **before = read_lines(dir, "source");
	show_tail(before, "source", 4);
	g_strfreev(before);
	printf("\nmigrating to %s while the guest runs...\n", uri);
	r = migrate_and_watch(c, uri, false);
	qmp_client_close(c);
	c = NULL;
	if (r)
		goto out;
	printf("\nsource is now '%s'; destination is '%s'\n", runstate(dir, "source", st1, sizeof(st1)),
	       runstate(dir, "destination", st2, sizeof(st2)));
	bool ok = wait_guest(dir, "destination", 3, 10000);
	char **after = read_lines(dir, "destination");

	printf("destination guest, COM1 (its output after the switchover):\n");
	show_tail(after, "destination", 6);
	int fails = count_matching(after, "FAIL");

	g_strfreev(after);
	if (ok && !fails && !strcmp(st2, "running")) {
		printf("\nThe guest kept running on the destination and its self-check passes: "
		       "every page holds what it last wrote, registers intact.\n");
		rc = 0;
	} else {
		printf("\nThe destination guest did NOT report a clean self-check (see above).\n");
	}
out:
	qmp_client_close(c);
	quit_instance(dir, "source", src);
	quit_instance(dir, "destination", dst);
	if (!o.keep) {
		const char *names[] = { "source.log", "destination.log", "source.qmp", "destination.qmp" };
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
			unlink(path);
		}
		rmdir(dir);
	}
	g_free(dir);
	return rc;
}
