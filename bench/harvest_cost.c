/* harvest_cost — what collecting dirty pages costs the host, dirty ring vs
 * dirty bitmap, across guest RAM sizes and guest dirty rates (issue 4).
 *
 * For each backend, RAM size and rate: a VM with the built-in `dirty`
 * guest (ws MiB, rate MiB/s per vCPU, 0 = as fast as it can), dirty
 * logging on, then
 *  (a) periodic syncs, kvm_dirty_sync(vm, false) every --period-ms while
 *      the guest dirties, each followed (untimed) by consuming the bitmap
 *      as the RAM sender would: µs per sync (wall, as the caller sees it),
 *      the host CPU time of all harvesting per second and per harvested
 *      page;
 *  (b) switchovers: a sync, the vCPUs paused, the final sync
 *      (kvm_dirty_sync(vm, true)) timed, the vCPUs resumed; --final-reps
 *      times, --final-gap-ms apart.
 *
 * CPU time of harvesting comes from kvm_dirty_stats.harvest_cpu_ns: each
 * harvest pass reads its thread's CLOCK_THREAD_CPUTIME_ID before and after
 * (sync calls, ring-full exits in vCPU threads), and the ring's background
 * harvester counts its whole thread CPU time, wake-ups included.  vCPU
 * time (the guest's write faults, the kernel's ring pushes) is not in it:
 * the guest's achieved rate shows that side.
 *
 * Guest rate: the dirty guest's own report lines (page writes per second,
 * which counts rewrites of pages already dirty) and the harvested pages
 * per second (pages that went from clean to dirty: what migration sends).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvm/guests/builtin.h"
#include "kvm/kvm.h"

#define MAX_LIST 8

struct opts {
	unsigned int sizes_gib[MAX_LIST], nr_sizes;
	unsigned int rates[MAX_LIST], nr_rates;		/* MiB/s per vCPU, 0 = max */
	enum kmig_dirty_tracking backends[3];
	unsigned int nr_backends;
	unsigned int ws_mib, vcpus, dirty_ring_entries;
	unsigned int secs_ms, period_ms, warmup_ms;
	unsigned int final_reps, final_gap_ms;
	const char *json;
};

/* what the guest printed, parsed line by line */
struct guest_out {
	pthread_mutex_t lock;
	char line[256];
	size_t len;
	bool started;
	bool counting;		/* add rate lines to the sums */
	double rate_sum;	/* MiB/s */
	unsigned int rate_n;
	bool stopped;
	char why[256];
};

struct result {
	char backend[32];		/* "ring", "bitmap", "auto (bitmap)" */
	unsigned int size_gib, rate, ws_mib, vcpus;
	double secs;
	double guest_mibs;		/* the guest's own report, -1 if none */
	double harvested_mibs;		/* clean -> dirty pages per second, as MiB/s */
	uint64_t pages, harvests, syncs;
	double sync_us_mean, sync_us_p50, sync_us_max;
	double cpu_pct;			/* harvesting CPU time / wall time */
	double cpu_us_per_page;
	double cpu_us_per_harvest;
	double final_us_p50, final_us_max, final_pages_mean;
	double pause_us_p50;
	uint64_t dirty_ring_full_exits, overflows, resyncs;
};

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void parse_line(struct guest_out *g)
{
	const char *l = g->line, *p;

	if (!strncmp(l, "dirty: start", 12))
		g->started = true;
	else if (!strncmp(l, "dirty: error", 12) || strstr(l, "FAIL"))
		fprintf(stderr, "harvest_cost: guest: %s\n", l);
	if (g->counting && (p = strstr(l, "MiB/s="))) {
		g->rate_sum += strtod(p + 6, NULL);
		g->rate_n++;
	}
}

static void on_serial(void *opaque, const char *buf, size_t len)
{
	struct guest_out *g = opaque;

	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '\n') {
			g->line[g->len] = 0;
			parse_line(g);
			g->len = 0;
		} else if (g->len < sizeof(g->line) - 1) {
			g->line[g->len++] = buf[i];
		}
	}
	pthread_mutex_unlock(&g->lock);
}

static void on_stopped(void *opaque, enum kvm_stop_reason why, int code, const char *detail)
{
	struct guest_out *g = opaque;

	pthread_mutex_lock(&g->lock);
	g->stopped = true;
	snprintf(g->why, sizeof(g->why), "%s", detail ? detail : "stopped");
	pthread_mutex_unlock(&g->lock);
	(void)why;
	(void)code;
}

/* What the RAM sender does with the bitmap after a sync: test-and-clear
 * every set bit.  Returns the pages consumed. */
static uint64_t consume(struct kvm_vm *vm)
{
	uint64_t n = 0, end = kvm_vm_nr_pages(vm);

	for (uint64_t pg = kvm_dirty_find_next(vm, 0); pg < end; pg = kvm_dirty_find_next(vm, pg + 1))
		n += kvm_dirty_test_and_clear(vm, pg);
	return n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double median_us(uint64_t *ns, size_t n)
{
	if (!n)
		return 0;
	qsort(ns, n, sizeof(*ns), cmp_u64);
	return (double)ns[n / 2] / 1e3;
}

static double max_us(const uint64_t *ns, size_t n)
{
	uint64_t m = 0;

	for (size_t i = 0; i < n; i++)
		if (ns[i] > m)
			m = ns[i];
	return (double)m / 1e3;
}

static bool guest_stopped(struct guest_out *g, char *why, size_t len)
{
	pthread_mutex_lock(&g->lock);
	bool s = g->stopped;

	if (s)
		snprintf(why, len, "%s", g->why);
	pthread_mutex_unlock(&g->lock);
	return s;
}

static int measure(const struct opts *o, enum kmig_dirty_tracking be, unsigned int size_gib,
		   unsigned int rate, struct result *res)
{
	struct guest_out g = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct kvm_vm_config cfg = {
		.mem_bytes = (uint64_t)size_gib << 30, .nr_vcpus = o->vcpus,
		.dirty_backend = be, .dirty_ring_entries = o->dirty_ring_entries,
	};
	struct kvm_vm_callbacks cb = { .serial_out = on_serial, .stopped = on_stopped, .opaque = &g };
	const struct kvm_builtin_guest *guest = kvm_builtin_guest_find("dirty");
	char err[512] = "", cmdline[128];
	struct kvm_vm *vm;
	int r;

	if (!guest) {
		fprintf(stderr, "harvest_cost: no built-in guest 'dirty'\n");
		return -ENOENT;
	}
	r = kvm_vm_create(&cfg, &cb, &vm, err, sizeof(err));
	if (r) {
		fprintf(stderr, "harvest_cost: %s\n", err);
		return r;
	}
	/* report every 250 ms: several rate lines in a short window */
	snprintf(cmdline, sizeof(cmdline), "ws=%u rate=%u report=250", o->ws_mib, rate);
	r = kvm_load_multiboot(vm, guest->elf, guest->elf_size, cmdline, err, sizeof(err));
	if (r) {
		fprintf(stderr, "harvest_cost: %s\n", err);
		goto out;
	}
	r = kvm_vm_start(vm);
	if (r) {
		fprintf(stderr, "harvest_cost: cannot start the vCPUs: %s\n", strerror(-r));
		goto out;
	}
	for (int i = 0; i < 1000; i++) {
		pthread_mutex_lock(&g.lock);
		bool s = g.started;
		pthread_mutex_unlock(&g.lock);
		if (s || guest_stopped(&g, err, sizeof(err)))
			break;
		sleep_ms(10);
	}
	if (!g.started) {
		fprintf(stderr, "harvest_cost: the guest did not start: %s\n", g.stopped ? g.why : "timeout");
		r = -ETIMEDOUT;
		goto out;
	}
	/* let the guest populate its working set before logging starts, so
	 * first-touch faults do not count as dirtying */
	sleep_ms(o->warmup_ms);
	r = kvm_dirty_start(vm, err, sizeof(err));
	if (r) {
		fprintf(stderr, "harvest_cost: %s\n", err);
		goto out;
	}

	/* (a) periodic syncs while the guest runs */
	size_t cap = o->secs_ms / o->period_ms + 16;
	uint64_t *sync_ns = calloc(cap, sizeof(*sync_ns));
	uint64_t *final_ns = calloc(o->final_reps + 1, sizeof(*final_ns));
	uint64_t *pause_ns = calloc(o->final_reps + 1, sizeof(*pause_ns));
	struct kvm_dirty_stats s0, s1;
	size_t n = 0;

	if (!sync_ns || !final_ns || !pause_ns) {
		r = -ENOMEM;
		goto free_out;
	}
	kvm_dirty_sync(vm, false);
	consume(vm);
	pthread_mutex_lock(&g.lock);
	g.counting = true;
	pthread_mutex_unlock(&g.lock);
	kvm_dirty_get_stats(vm, &s0);
	uint64_t t0 = now_ns(CLOCK_MONOTONIC), deadline = t0 + (uint64_t)o->secs_ms * 1000000u;

	while (n < cap && now_ns(CLOCK_MONOTONIC) < deadline) {
		sleep_ms(o->period_ms);
		uint64_t a = now_ns(CLOCK_MONOTONIC);

		r = kvm_dirty_sync(vm, false);
		sync_ns[n++] = now_ns(CLOCK_MONOTONIC) - a;
		if (r) {
			fprintf(stderr, "harvest_cost: sync: %s\n", strerror(-r));
			goto free_out;
		}
		consume(vm);
	}
	uint64_t t1 = now_ns(CLOCK_MONOTONIC);

	kvm_dirty_get_stats(vm, &s1);
	pthread_mutex_lock(&g.lock);
	g.counting = false;
	res->guest_mibs = g.rate_n ? g.rate_sum / g.rate_n : -1;
	pthread_mutex_unlock(&g.lock);

	/* (b) switchovers: what the guest waits for once it is stopped */
	double final_pages = 0;

	for (unsigned int i = 0; i < o->final_reps; i++) {
		sleep_ms(o->final_gap_ms);
		/* as the last pass does: collect, then decide to stop */
		kvm_dirty_sync(vm, false);
		consume(vm);
		uint64_t a = now_ns(CLOCK_MONOTONIC);

		kvm_vm_pause(vm);
		pause_ns[i] = now_ns(CLOCK_MONOTONIC) - a;
		r = kvm_dirty_sync(vm, true);
		struct kvm_dirty_stats fs;

		kvm_dirty_get_stats(vm, &fs);
		final_ns[i] = fs.final_sync_ns;
		final_pages += (double)fs.final_sync_pages;
		consume(vm);
		kvm_vm_resume(vm);
		if (r) {
			fprintf(stderr, "harvest_cost: final sync: %s\n", strerror(-r));
			goto free_out;
		}
	}
	if (guest_stopped(&g, err, sizeof(err))) {
		fprintf(stderr, "harvest_cost: the guest stopped: %s\n", err);
		r = -EIO;
		goto free_out;
	}

	const char *name = kvm_dirty_backend_name(vm) + strlen("dirty-");
	double secs = (double)(t1 - t0) / 1e9, sum = 0;
	uint64_t pages = s1.harvested - s0.harvested, cpu = s1.harvest_cpu_ns - s0.harvest_cpu_ns;

	for (size_t i = 0; i < n; i++)
		sum += (double)sync_ns[i];
	*res = (struct result){
		.size_gib = size_gib, .rate = rate, .ws_mib = o->ws_mib, .vcpus = o->vcpus,
		.secs = secs, .guest_mibs = res->guest_mibs,
		.harvested_mibs = (double)pages * KVM_PAGE_SIZE / (1 << 20) / secs,
		.pages = pages, .harvests = s1.harvests - s0.harvests, .syncs = n,
		.sync_us_mean = n ? sum / (double)n / 1e3 : 0,
		.sync_us_max = max_us(sync_ns, n),
		.cpu_pct = (double)cpu / 1e7 / secs,
		.cpu_us_per_page = pages ? (double)cpu / 1e3 / (double)pages : 0,
		.cpu_us_per_harvest = s1.harvests > s0.harvests ?
			(double)cpu / 1e3 / (double)(s1.harvests - s0.harvests) : 0,
		.final_pages_mean = o->final_reps ? final_pages / o->final_reps : 0,
		.final_us_max = max_us(final_ns, o->final_reps),
		.dirty_ring_full_exits = s1.dirty_ring_full_exits, .overflows = s1.overflows, .resyncs = s1.resyncs,
	};
	if (be == KMIG_DIRTY_AUTO)
		snprintf(res->backend, sizeof(res->backend), "auto (%s)", name);
	else
		snprintf(res->backend, sizeof(res->backend), "%s", name);
	res->sync_us_p50 = median_us(sync_ns, n);
	res->final_us_p50 = median_us(final_ns, o->final_reps);
	res->pause_us_p50 = median_us(pause_ns, o->final_reps);
	r = 0;
free_out:
	free(sync_ns);
	free(final_ns);
	free(pause_ns);
	kvm_dirty_stop(vm);
out:
	kvm_vm_destroy(vm);
	return r;
}

static void print_rate(char *buf, size_t len, unsigned int rate)
{
	if (rate)
		snprintf(buf, len, "%u", rate);
	else
		snprintf(buf, len, "max");
}

static void print_table(const struct result *res, size_t n)
{
	printf("| backend | RAM GiB | rate MiB/s/vCPU | guest MiB/s | harvested MiB/s | syncs | "
	       "sync µs p50 | sync µs max | harvest CPU %% | CPU µs/page | CPU µs/harvest | "
	       "final µs p50 | final µs max | final pages | ring-full | overflows |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = 0; i < n; i++) {
		const struct result *r = &res[i];
		char rate[16], guest[32];

		print_rate(rate, sizeof(rate), r->rate);
		if (r->guest_mibs < 0)
			snprintf(guest, sizeof(guest), "-");
		else
			snprintf(guest, sizeof(guest), "%.0f", r->guest_mibs);
		printf("| %s | %u | %s | %s | %.1f | %llu | %.1f | %.1f | %.2f | %.3f | %.1f | %.1f | %.1f | "
		       "%.1f | %llu | %llu |\n",
		       r->backend, r->size_gib, rate, guest, r->harvested_mibs,
		       (unsigned long long)r->syncs, r->sync_us_p50, r->sync_us_max, r->cpu_pct,
		       r->cpu_us_per_page, r->cpu_us_per_harvest, r->final_us_p50, r->final_us_max,
		       r->final_pages_mean, (unsigned long long)r->dirty_ring_full_exits,
		       (unsigned long long)r->overflows);
	}
}

static int write_json(const char *path, const struct opts *o, const struct result *res, size_t n)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "{\"ws_mib\": %u, \"vcpus\": %u, \"dirty_ring_entries\": %u, \"period_ms\": %u, "
		"\"secs_ms\": %u, \"final_reps\": %u, \"final_gap_ms\": %u, \"results\": [\n",
		o->ws_mib, o->vcpus, o->dirty_ring_entries, o->period_ms, o->secs_ms, o->final_reps,
		o->final_gap_ms);
	for (size_t i = 0; i < n; i++) {
		const struct result *r = &res[i];

		fprintf(f, "  {\"backend\": \"%s\", \"ram_gib\": %u, \"rate_mibs\": %u, \"secs\": %.3f, "
			"\"guest_mibs\": %.1f, \"harvested_mibs\": %.2f, \"pages\": %llu, "
			"\"harvests\": %llu, \"syncs\": %llu, \"sync_us_mean\": %.2f, \"sync_us_p50\": %.2f, "
			"\"sync_us_max\": %.2f, \"harvest_cpu_pct\": %.3f, \"cpu_us_per_page\": %.4f, "
			"\"cpu_us_per_harvest\": %.2f, \"final_us_p50\": %.2f, \"final_us_max\": %.2f, "
			"\"final_pages_mean\": %.2f, \"pause_us_p50\": %.2f, \"dirty_ring_full_exits\": %llu, "
			"\"overflows\": %llu, \"resyncs\": %llu}%s\n",
			r->backend, r->size_gib, r->rate, r->secs, r->guest_mibs, r->harvested_mibs,
			(unsigned long long)r->pages, (unsigned long long)r->harvests,
			(unsigned long long)r->syncs, r->sync_us_mean, r->sync_us_p50, r->sync_us_max,
			r->cpu_pct, r->cpu_us_per_page, r->cpu_us_per_harvest, r->final_us_p50,
			r->final_us_max, r->final_pages_mean, r->pause_us_p50,
			(unsigned long long)r->dirty_ring_full_exits, (unsigned long long)r->overflows,
			(unsigned long long)r->resyncs, i + 1 < n ? "," : "");
	}
	fprintf(f, "]}\n");
	return fclose(f) ? -errno : 0;
}

/* "1,4,16" -> list; "max" or 0 allowed in rates */
static int parse_list(const char *s, unsigned int *out, unsigned int *n, bool allow_max)
{
	char buf[128], *save, *tok;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		unsigned long v;

		if (*n == MAX_LIST)
			return -E2BIG;
		if (allow_max && !strcmp(tok, "max")) {
			v = 0;
		} else {
			errno = 0;
			v = strtoul(tok, &end, 10);
			if (errno || *end || !*tok || v > 1u << 20 || (!v && !allow_max))
				return -EINVAL;
		}
		out[(*n)++] = (unsigned int)v;
	}
	return *n ? 0 : -EINVAL;
}

static int parse_backends(const char *s, struct opts *o)
{
	static const char *const names[] = {
		[KMIG_DIRTY_RING] = "ring", [KMIG_DIRTY_BITMAP] = "bitmap", [KMIG_DIRTY_AUTO] = "auto",
	};
	char buf[64], *save, *tok;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	o->nr_backends = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned int i = 0;

		while (i < 3 && strcmp(tok, names[i]))
			i++;
		if (i == 3 || o->nr_backends == 3)
			return -EINVAL;
		o->backends[o->nr_backends++] = (enum kmig_dirty_tracking)i;
	}
	return o->nr_backends ? 0 : -EINVAL;
}

static int parse_uint(const char *s, unsigned int min, unsigned int max, unsigned int *out)
{
	char *end;

	errno = 0;
	unsigned long v = strtoul(s, &end, 10);

	if (errno || *end || !*s || v < min || v > max)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: harvest_cost [options]\n"
		"\n"
		"Host cost of collecting dirty pages, KVM dirty ring vs dirty bitmap, with the\n"
		"built-in 'dirty' guest: periodic syncs while it dirties, and the final sync of a\n"
		"switchover (vCPUs paused).  Prints a Markdown table.\n"
		"\n"
		"  --sizes LIST        guest RAM sizes in GiB (default 1,4,16,64,256; memfd RAM is\n"
		"                      sparse: only the guest's working set is ever allocated)\n"
		"  --rates LIST        guest dirty rates, MiB/s per vCPU, 'max' or 0 = as fast as it\n"
		"                      can (default 1,16,256,max)\n"
		"  --backends LIST     of ring, bitmap, auto (default ring,bitmap)\n"
		"  --ws MIB            the guest's working set (default 64)\n"
		"  --vcpus N           vCPUs (default 1)\n"
		"  --ring N            dirty ring entries per vCPU (default 4096)\n"
		"  --secs MS           length of the periodic-sync window, ms (default 2000)\n"
		"  --period MS         time between periodic syncs, ms (default 50)\n"
		"  --warmup MS         guest run time before dirty logging starts (default 300)\n"
		"  --final-reps N      switchovers timed per configuration (default 10)\n"
		"  --final-gap MS      guest run time before each (default 20)\n"
		"  --json FILE         also write the results as JSON\n"
		"  -h, --help          this help\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "sizes", required_argument, NULL, 's' }, { "rates", required_argument, NULL, 'r' },
		{ "backends", required_argument, NULL, 'b' }, { "ws", required_argument, NULL, 'w' },
		{ "vcpus", required_argument, NULL, 'c' }, { "ring", required_argument, NULL, 'R' },
		{ "secs", required_argument, NULL, 'S' }, { "period", required_argument, NULL, 'p' },
		{ "warmup", required_argument, NULL, 'W' }, { "final-reps", required_argument, NULL, 'f' },
		{ "final-gap", required_argument, NULL, 'g' }, { "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' }, { 0 },
	};
	struct opts o = {
		.sizes_gib = { 1, 4, 16, 64, 256 }, .nr_sizes = 5,
		.rates = { 1, 16, 256, 0 }, .nr_rates = 4,
		.backends = { KMIG_DIRTY_RING, KMIG_DIRTY_BITMAP }, .nr_backends = 2,
		.ws_mib = 64, .vcpus = 1, .dirty_ring_entries = 4096,
		.secs_ms = 2000, .period_ms = 50, .warmup_ms = 300,
		.final_reps = 10, .final_gap_ms = 20,
	};
	int c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		int bad = 0;

		switch (c) {
		case 's': bad = parse_list(optarg, o.sizes_gib, &o.nr_sizes, false); break;
		case 'r': bad = parse_list(optarg, o.rates, &o.nr_rates, true); break;
		case 'b': bad = parse_backends(optarg, &o); break;
		case 'w': bad = parse_uint(optarg, 1, 2048, &o.ws_mib); break;
		case 'c': bad = parse_uint(optarg, 1, KMIG_MAX_VCPUS, &o.vcpus); break;
		case 'R': bad = parse_uint(optarg, 256, 65536, &o.dirty_ring_entries); break;
		case 'S': bad = parse_uint(optarg, 100, 600000, &o.secs_ms); break;
		case 'p': bad = parse_uint(optarg, 1, 10000, &o.period_ms); break;
		case 'W': bad = parse_uint(optarg, 0, 60000, &o.warmup_ms); break;
		case 'f': bad = parse_uint(optarg, 0, 10000, &o.final_reps); break;
		case 'g': bad = parse_uint(optarg, 0, 10000, &o.final_gap_ms); break;
		case 'j': o.json = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (bad) {
			const struct option *p = lo;

			while (p->name && p->val != c)
				p++;
			fprintf(stderr, "harvest_cost: invalid --%s '%s'\n", p->name, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	size_t total = (size_t)o.nr_backends * o.nr_sizes * o.nr_rates, n = 0;
	unsigned int failed = 0;
	struct result *res = calloc(total, sizeof(*res));

	if (!res)
		return 1;
	for (unsigned int si = 0; si < o.nr_sizes; si++) {
		for (unsigned int ri = 0; ri < o.nr_rates; ri++) {
			for (unsigned int bi = 0; bi < o.nr_backends; bi++) {
				char rate[16];

				print_rate(rate, sizeof(rate), o.rates[ri]);
				fprintf(stderr, "harvest_cost: %s %u GiB rate %s ...\n",
					o.backends[bi] == KMIG_DIRTY_RING ? "ring" :
					o.backends[bi] == KMIG_DIRTY_BITMAP ? "bitmap" : "auto",
					o.sizes_gib[si], rate);
				/* a size this host cannot create is left out, not fatal */
				if (measure(&o, o.backends[bi], o.sizes_gib[si], o.rates[ri], &res[n]))
					failed++;
				else
					n++;
			}
		}
	}
	printf("\nharvest_cost: ws=%u MiB, %u vCPU(s), ring %u entries, sync every %u ms for %u ms; "
	       "%u switchovers %u ms apart\n\n", o.ws_mib, o.vcpus, o.dirty_ring_entries, o.period_ms,
	       o.secs_ms, o.final_reps, o.final_gap_ms);
	print_table(res, n);
	int r = o.json ? write_json(o.json, &o, res, n) : 0;

	if (r)
		fprintf(stderr, "harvest_cost: cannot write %s: %s\n", o.json, strerror(-r));
	if (failed)
		fprintf(stderr, "harvest_cost: %u configuration(s) failed (see above)\n", failed);
	free(res);
	return r || failed ? 1 : 0;
}
