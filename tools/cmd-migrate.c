/* kmig migrate: start a migration on a running kmig (or QEMU) over QMP and
 * follow it: a progress bar on a terminal, one line a second otherwise,
 * then the final query-migrate and a human summary. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "qapi/qmp-json.h"
#include "tools/kmig.h"

#define POLL_MS 100

static void human_bytes(double b, char *buf, size_t len)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;

	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void show_progress(JsonObject *info, bool tty, bool final)
{
	JsonObject *ram = kmig_json_object(info, "ram");
	double total = (double)qmp_get_int(ram, "total", 0);
	double remaining = (double)qmp_get_int(ram, "remaining", 0);
	double sent = (double)qmp_get_int(ram, "transferred", 0);
	char rem[32], tx[32];
	/* the system-wide figure (RAM and every device) when the server has it */
	uint64_t all;
	bool has_all = kmig_json_u64(info, "remaining", &all);
	const char *rem_label = has_all ? "remaining (RAM+devices)" : "remaining";
	const char *stalled = kmig_json_truthy(info, "x-kmig-stall") ? ", STALLED" : "";

	human_bytes(has_all ? (double)all : remaining, rem, sizeof(rem));
	human_bytes(sent, tx, sizeof(tx));
	gint64 passes = qmp_get_int(ram, "dirty-sync-count", 0);
	double mbps = qmp_get_double(ram, "mbps", 0);
	char *status = qmp_printable(qmp_get_str(info, "status", "?"));

	if (tty) {
		int pct = total > 0 ? (int)(100.0 * (total - remaining) / total) : 0;
		char bar[31];

		if (pct < 0)
			pct = 0;
		memset(bar, '#', (size_t)(pct * 30 / 100));
		memset(bar + pct * 30 / 100, '.', (size_t)(30 - pct * 30 / 100));
		bar[30] = 0;
		printf("\r\033[K[%s] %3d%%  %-9s sent %s, %s %s, %.0f Mbps, syncs %lld%s",
		       bar, pct, status, tx, rem_label, rem, mbps, (long long)passes, stalled);
		if (final)
			printf("\n");
		fflush(stdout);
	} else {
		printf("%-9s sent %s, %s %s, %.0f Mbps, syncs %lld", status, tx, rem_label, rem, mbps,
		       (long long)passes);
		if (json_object_has_member(info, "expected-downtime"))
			printf(", expected downtime %lld ms", (long long)qmp_get_int(info, "expected-downtime", 0));
		printf("%s\n", stalled);
	}
	g_free(status);
}

static void print_summary(JsonObject *info)
{
	JsonObject *ram = kmig_json_object(info, "ram");
	char tx[32];

	human_bytes((double)qmp_get_int(ram, "transferred", 0), tx, sizeof(tx));
	printf("Summary: %s in %lld ms (setup %lld ms), downtime %lld ms\n",
	       qmp_get_str(info, "status", "?"), (long long)qmp_get_int(info, "total-time", 0),
	       (long long)qmp_get_int(info, "setup-time", 0), (long long)qmp_get_int(info, "downtime", 0));
	printf("         %s transferred at %.0f Mbps; pages: %lld sent whole, %lld zero; %lld dirty syncs\n",
	       tx, qmp_get_double(ram, "mbps", 0), (long long)qmp_get_int(ram, "normal", 0),
	       (long long)qmp_get_int(ram, "duplicate", 0), (long long)qmp_get_int(ram, "dirty-sync-count", 0));
}

static bool is_final(const char *status)
{
	return !strcmp(status, "completed") || !strcmp(status, "failed") || !strcmp(status, "cancelled");
}

static void print_final(JsonNode *ret, JsonObject *info, bool quiet_json)
{
	if (!quiet_json) {
		char *text = qmp_json_to_string(ret, TRUE);

		printf("query-migrate:\n%s\n", text);
		g_free(text);
	}
	print_summary(info);
	if (!strcmp(qmp_get_str(info, "status", ""), "failed")) {
		char *desc = qmp_printable(qmp_get_str(info, "error-desc", "failed"));

		fprintf(stderr, "kmig migrate: %s\n", desc);
		g_free(desc);
	}
}

/* Ctrl-C (or SIGTERM) while watching: the first cancels the migration, as
 * virsh migrate does, and the watch goes on to its end; the second leaves
 * at once. */
static volatile sig_atomic_t interrupts;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupts++;
}

static void catch_interrupts(struct qmp_client *c)
{
	struct sigaction sa = { .sa_handler = on_interrupt };	/* no SA_RESTART */

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	qmp_client_set_interrupt(c, &interrupts);
}

/* Ask the source to cancel; say so whatever the answer. */
static void cancel_on_interrupt(struct qmp_client *c)
{
	char err[512];

	fprintf(stderr, "\nkmig migrate: interrupted: cancelling the migration "
			"(interrupt again to leave it running)\n");
	if (qmp_client_exec(c, "migrate_cancel", NULL, NULL, err, sizeof(err)) && interrupts < 2)
		fprintf(stderr, "kmig migrate: migrate_cancel: %s\n", err);
}

/* How long a source may say "none" after migrate was accepted. */
#define START_TIMEOUT_MS 5000

int migrate_and_watch(struct qmp_client *c, const char *uri, bool quiet_json)
{
	char err[512];
	JsonObject *args = json_object_new();

	json_object_set_string_member(args, "uri", uri);
	JsonNode *an = json_node_init_object(json_node_alloc(), args);
	int r = qmp_client_exec(c, "migrate", an, NULL, err, sizeof(err));

	json_node_unref(an);
	json_object_unref(args);
	if (r) {
		fprintf(stderr, "kmig migrate: %s\n", err);
		return 1;
	}
	bool tty = isatty(STDOUT_FILENO), cancelling = false;
	gint64 last_line = -1;

	for (int tick = 0;; tick++) {
		JsonNode *ret = NULL;

		if (interrupts >= 2) {
			fprintf(stderr, "kmig migrate: interrupted again: the migration's end is not "
					"watched; 'kmig info --qmp PATH' shows it\n");
			return 130;
		}
		if (interrupts && !cancelling) {
			cancelling = true;
			cancel_on_interrupt(c);
			continue;
		}
		r = qmp_client_exec(c, "query-migrate", NULL, &ret, err, sizeof(err));
		if (r == -EINTR)
			continue;
		if (r) {
			fprintf(stderr, "kmig migrate: %s\n", err);
			return 1;
		}
		JsonObject *info = JSON_NODE_HOLDS_OBJECT(ret) ? json_node_get_object(ret) : NULL;
		const char *st = qmp_get_str(info, "status", NULL);

		if (!st || (!strcmp(st, "none") && tick * POLL_MS > START_TIMEOUT_MS)) {
			fprintf(stderr, "kmig migrate: query-migrate returned %s\n",
				st ? "status \"none\" for 5 s: the migration did not start"
				   : "no \"status\" string: not a migration status");
			json_node_unref(ret);
			return 1;
		}
		bool done = is_final(st);
		gint64 second = tick * POLL_MS / 1000;

		if (tty || done || second != last_line) {
			show_progress(info, tty, done);
			last_line = second;
		}
		if (done) {
			print_final(ret, info, quiet_json);
			if (cancelling && !strcmp(st, "completed"))
				fprintf(stderr, "kmig migrate: the migration completed before the cancel\n");
			r = strcmp(st, "completed") ? 1 : 0;
			json_node_unref(ret);
			return r;
		}
		json_node_unref(ret);
		usleep(POLL_MS * 1000);
	}
}

static void migrate_usage(FILE *f)
{
	fprintf(f,
		"Usage: kmig migrate --qmp PATH [--downtime-limit MS] [--max-bandwidth BYTES/S] URI\n"
		"\n"
		"Migrate the guest of a running 'kmig run --qmp PATH' (or QEMU -qmp) to URI\n"
		"(tcp:HOST:PORT or unix:PATH, where the destination waits with --incoming).\n"
		"Shows a progress bar on a terminal, progress lines otherwise, then the final\n"
		"query-migrate and a summary.  Ctrl-C cancels the migration (migrate_cancel)\n"
		"and shows how it ended; a second Ctrl-C leaves at once, the migration going on.\n"
		"Exit status 0 when the migration completed, 1 when it did not (failed,\n"
		"cancelled, or the server misbehaved), 130 after a second Ctrl-C.\n"
		"\n"
		"  --qmp PATH              the source's QMP socket\n"
		"  --downtime-limit MS     set downtime-limit first (default: the source's, 300)\n"
		"  --max-bandwidth BYTES   set max-bandwidth first (bytes/s, 0 = unlimited)\n"
		"  -h, --help              this help\n");
}

static int set_param(struct qmp_client *c, const char *name, uint64_t v)
{
	char err[512];
	JsonObject *args = json_object_new();

	json_object_set_int_member(args, name, (gint64)v);
	JsonNode *an = json_node_init_object(json_node_alloc(), args);
	int r = qmp_client_exec(c, "migrate-set-parameters", an, NULL, err, sizeof(err));

	json_node_unref(an);
	json_object_unref(args);
	if (r)
		fprintf(stderr, "kmig migrate: %s: %s\n", name, err);
	return r;
}

int cmd_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "downtime-limit", required_argument, NULL, 'd' },
		{ "max-bandwidth", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	const char *qmp = NULL;
	uint64_t dl = 0, bw = 0;
	bool has_dl = false, has_bw = false;
	int o;

	optind = 1;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'q': qmp = optarg; break;
		case 'd':
			if (parse_u64(optarg, 2000000, &dl)) {
				fprintf(stderr, "kmig migrate: invalid --downtime-limit '%s'\n", optarg);
				return 2;
			}
			has_dl = true;
			break;
		case 'b':
			if (parse_u64(optarg, UINT64_MAX / 2, &bw)) {
				fprintf(stderr, "kmig migrate: invalid --max-bandwidth '%s'\n", optarg);
				return 2;
			}
			has_bw = true;
			break;
		case 'h': migrate_usage(stdout); return 0;
		default: migrate_usage(stderr); return 2;
		}
	}
	if (!qmp || optind != argc - 1) {
		migrate_usage(stderr);
		return 2;
	}
	char err[512];
	struct qmp_client *c;

	if (qmp_client_open(qmp, 2000, &c, err, sizeof(err))) {
		fprintf(stderr, "kmig migrate: %s\n", err);
		return 1;
	}
	int r = 0;

	catch_interrupts(c);
	if (has_dl)
		r = set_param(c, "downtime-limit", dl);
	if (!r && has_bw)
		r = set_param(c, "max-bandwidth", bw);
	if (!r)
		r = migrate_and_watch(c, argv[optind], false);
	qmp_client_close(c);
	return r == 130 ? 130 : r ? 1 : 0;
}
