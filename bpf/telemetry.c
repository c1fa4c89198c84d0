/* Loader for bpf/dirty.bpf.c: checks what the host allows, loads and
 * attaches the programs for one VM process, reads their per-vCPU counters
 * and drains the queue of dirty-ring entries the kernel overwrote.
 *
 * Nothing here prints: libbpf's log goes through capture_print(), and its
 * first warning of a failed open becomes part of the reason we return. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>

#include "common/util.h"
#include "bpf/telemetry.h"
#include "bpf-config.h"

#if KMIG_BPF_BUILT
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "dirty.h"
#include "dirty.skel.h"
#endif

#define BTF_PATH "/sys/kernel/btf/vmlinux"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

/* One shadow slot per ring entry: bound its memory (32 bytes a slot). */
#define MAX_SHADOW_ENTRIES (1u << 23)

static void set_why(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	kmig_vset_err(why, whylen, fmt, ap);
	va_end(ap);
	/* one line, whatever libbpf gave us */
	for (char *p = why; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

bool kmig_bpf_built(void)
{
	return KMIG_BPF_BUILT;
}

static bool disabled_by_env(void)
{
	const char *v = getenv("KMIG_BPF");

	return v && strcmp(v, "0") == 0;
}

static bool has_cap(int cap)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data))
		return false;
	return data[cap / 32].effective & (1u << (cap % 32));
}

/* Tracing programs need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN). */
static bool privileged(void)
{
	if (geteuid() == 0)
		return true;
	return has_cap(CAP_SYS_ADMIN) || (has_cap(CAP_BPF) && has_cap(CAP_PERFMON));
}

/* Common checks, in the order an operator would fix them. */
static int precheck(unsigned int nr_vcpus, uint32_t dirty_ring_entries, char *why, size_t whylen)
{
	if (disabled_by_env()) {
		set_why(why, whylen, "disabled by KMIG_BPF=0");
		return -ECANCELED;
	}
	if (!KMIG_BPF_BUILT) {
		set_why(why, whylen, "kmig was built without eBPF: %s", KMIG_BPF_WHY_NOT);
		return -EOPNOTSUPP;
	}
	if (!nr_vcpus || !dirty_ring_entries || (dirty_ring_entries & (dirty_ring_entries - 1))) {
		set_why(why, whylen, "bad geometry: %u vCPUs, %u ring entries (a power of two)",
			nr_vcpus, dirty_ring_entries);
		return -EINVAL;
	}
	if ((uint64_t)nr_vcpus * dirty_ring_entries > MAX_SHADOW_ENTRIES) {
		set_why(why, whylen, "%u vCPUs x %u ring entries: too many to shadow (max %u)",
			nr_vcpus, dirty_ring_entries, MAX_SHADOW_ENTRIES);
		return -E2BIG;
	}
	if (!privileged()) {
		set_why(why, whylen, "not running as root (CAP_BPF/CAP_PERFMON needed)");
		return -EPERM;
	}
	if (access(BTF_PATH, R_OK)) {
		set_why(why, whylen, "no kernel BTF at " BTF_PATH);
		return -ENOENT;
	}
	return 0;
}

#if !KMIG_BPF_BUILT

int kmig_bpf_open(pid_t tgid, unsigned int nr_vcpus, uint32_t dirty_ring_entries,
		  struct kmig_bpf **out, char *why, size_t whylen)
{
	int r;

	if (!out) {
		set_why(why, whylen, "no place to return the handle");
		return -EINVAL;
	}
	*out = NULL;
	r = precheck(nr_vcpus, dirty_ring_entries, why, whylen);
	return r ? r : -EOPNOTSUPP;
}

int kmig_bpf_read_vcpu(struct kmig_bpf *b, unsigned int vcpu, struct kmig_bpf_vcpu_stats *st)
{
	return -EOPNOTSUPP;
}

int kmig_bpf_drain_lost(struct kmig_bpf *b,
			void (*fn)(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset),
			void *opaque, bool *incomplete)
{
	return -EOPNOTSUPP;
}

void kmig_bpf_close(struct kmig_bpf *b)
{
}

#else /* KMIG_BPF_BUILT */

struct kmig_bpf {
	struct kmig_dirty *skel;
	struct ring_buffer *rb;
	int stats_fd;
	int dropped_fd;
	unsigned int nr_vcpus;
	int ncpus;			/* possible CPUs: per-CPU value count */
	uint64_t dropped_seen;		/* kernel-side drops already reported */
	/* the drain in progress, for on_lost() (one drain at a time) */
	void (*fn)(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset);
	void *opaque;
	int drained;
	bool unknown;
};

/* libbpf's print callback is process-wide: we install ours once and keep
 * it.  During an open (serialised by open_lock) it keeps the first warning,
 * which names the cause better than the later "failed to load object". */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t print_once = PTHREAD_ONCE_INIT;
static char log_first[256];
static bool log_capturing;

static int capture_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[sizeof(log_first)];
	char *nl;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	nl = strchr(line, '\n');
	if (nl)
		*nl = 0;
	pthread_mutex_lock(&log_lock);
	if (log_capturing && !log_first[0] && line[0])
		memcpy(log_first, line, sizeof(line));
	pthread_mutex_unlock(&log_lock);
	return 0;
}

static void install_print(void)
{
	libbpf_set_print(capture_print);
}

static void capture_start(void)
{
	pthread_once(&print_once, install_print);
	pthread_mutex_lock(&log_lock);
	log_first[0] = 0;
	log_capturing = true;
	pthread_mutex_unlock(&log_lock);
}

static void capture_stop(char *buf, size_t len)
{
	pthread_mutex_lock(&log_lock);
	log_capturing = false;
	snprintf(buf, len, "%s", log_first);
	pthread_mutex_unlock(&log_lock);
}

/* libbpf calls return NULL or -errno; with NULL the code is in errno, the
 * one place we have to read it. */
static int ptr_err(void)
{
	return errno ? -errno : -EINVAL;
}

static int libbpf_fail(int err, const char *what, char *why, size_t whylen)
{
	char msg[128], log[sizeof(log_first)];

	capture_stop(log, sizeof(log));
	libbpf_strerror(err, msg, sizeof(msg));
	if (log[0])
		set_why(why, whylen, "libbpf: %s: %s (%s)", what, msg, log);
	else
		set_why(why, whylen, "libbpf: %s: %s", what, msg);
	return err;
}

/* Is tracepoint tp in btf (vmlinux's, or a module's split on it)? */
static bool has_btf_tracepoint(const struct btf *btf, const char *tp)
{
	char name[64];

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	return btf && btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) >= 0;
}

/* The programs attach to these BTF tracepoints; a kernel without KVM's
 * dirty ring tracepoints would only fail later, less clearly.  They are
 * vmlinux's where KVM is built in, the kvm module's where it is a module
 * (Debian's kernels): libbpf attaches to, and relocates against, either. */
static int check_tracepoints(char *why, size_t whylen)
{
	static const char *const tps[] = {
		"kvm_dirty_ring_push", "kvm_dirty_ring_reset", "kvm_dirty_ring_exit",
	};
	struct btf *vmlinux, *kvm = NULL;
	int r = 0;

	errno = 0;
	vmlinux = btf__load_vmlinux_btf();
	if (!vmlinux)
		return libbpf_fail(ptr_err(), "reading kernel BTF", why, whylen);
	if (!has_btf_tracepoint(vmlinux, tps[0]))
		kvm = btf__load_module_btf("kvm", vmlinux);	/* NULL: no such module BTF */
	for (size_t i = 0; i < sizeof(tps) / sizeof(tps[0]) && !r; i++) {
		if (!has_btf_tracepoint(vmlinux, tps[i]) && !has_btf_tracepoint(kvm, tps[i])) {
			set_why(why, whylen, "tracepoint kvm:%s not found (in the BTF of vmlinux%s)", tps[i],
				kvm ? " and of the kvm module" : "; no kvm module BTF");
			r = -ENOENT;
		}
	}
	btf__free(kvm);
	btf__free(vmlinux);
	return r;
}

static uint32_t pow2_at_least(uint64_t v)
{
	uint32_t p = 1;

	while (p < v && p < (1u << 31))
		p <<= 1;
	return p;
}

/* Room for one full ring of lost records per vCPU (each 24 bytes plus an
 * 8-byte header), within sane bounds; the harvester drains every 1 ms. */
static uint32_t lost_buf_bytes(unsigned int nr_vcpus, uint32_t dirty_ring_entries)
{
	uint32_t bytes = pow2_at_least((uint64_t)nr_vcpus * dirty_ring_entries * 32);

	if (bytes < (256u << 10))
		bytes = 256u << 10;
	if (bytes > (16u << 20))
		bytes = 16u << 20;
	return bytes;
}

static int size_maps(struct kmig_dirty *skel, unsigned int nr_vcpus, uint32_t dirty_ring_entries)
{
	int r;

	r = bpf_map__set_max_entries(skel->maps.stats, nr_vcpus);
	if (!r)
		r = bpf_map__set_max_entries(skel->maps.shadow, nr_vcpus * dirty_ring_entries);
	if (!r)
		r = bpf_map__set_max_entries(skel->maps.lost, lost_buf_bytes(nr_vcpus, dirty_ring_entries));
	return r;
}

static int on_lost(void *ctx, void *data, size_t size)
{
	struct kmig_bpf *b = ctx;
	const struct kmig_dirty_lost *l = data;

	if (size < sizeof(*l) || (l->flags & KMIG_DIRTY_LOST_UNKNOWN)) {
		b->unknown = true;
		return 0;
	}
	if (b->fn)
		b->fn(b->opaque, l->vcpu, l->slot, l->offset);
	if (b->drained < INT_MAX)
		b->drained++;
	return 0;
}

static int load_and_attach(struct kmig_bpf *b, pid_t tgid, uint32_t dirty_ring_entries,
			   char *why, size_t whylen)
{
	struct kmig_dirty *skel;
	int r;

	errno = 0;
	skel = kmig_dirty__open();
	if (!skel)
		return libbpf_fail(ptr_err(), "opening the programs", why, whylen);
	b->skel = skel;
	skel->rodata->target_tgid = (__u32)tgid;
	skel->rodata->nr_vcpus = b->nr_vcpus;
	skel->rodata->dirty_ring_entries = dirty_ring_entries;
	r = size_maps(skel, b->nr_vcpus, dirty_ring_entries);
	if (r)
		return libbpf_fail(r, "sizing the maps", why, whylen);
	r = kmig_dirty__load(skel);
	if (r)
		return libbpf_fail(r, "loading the programs", why, whylen);
	r = kmig_dirty__attach(skel);
	if (r)
		return libbpf_fail(r, "attaching to the kvm tracepoints", why, whylen);
	errno = 0;
	b->rb = ring_buffer__new(bpf_map__fd(skel->maps.lost), on_lost, b, NULL);
	if (!b->rb)
		return libbpf_fail(ptr_err(), "opening the lost-entry ring buffer", why, whylen);
	b->stats_fd = bpf_map__fd(skel->maps.stats);
	b->dropped_fd = bpf_map__fd(skel->maps.dropped);
	return 0;
}

int kmig_bpf_open(pid_t tgid, unsigned int nr_vcpus, uint32_t dirty_ring_entries,
		  struct kmig_bpf **out, char *why, size_t whylen)
{
	struct kmig_bpf *b;
	int r;

	if (!out) {
		set_why(why, whylen, "no place to return the handle");
		return -EINVAL;
	}
	*out = NULL;
	r = precheck(nr_vcpus, dirty_ring_entries, why, whylen);
	if (r)
		return r;
	b = calloc(1, sizeof(*b));
	if (!b) {
		set_why(why, whylen, "out of memory");
		return -ENOMEM;
	}
	b->nr_vcpus = nr_vcpus;
	b->ncpus = libbpf_num_possible_cpus();
	if (b->ncpus <= 0) {
		r = b->ncpus ? b->ncpus : -EINVAL;
		set_why(why, whylen, "cannot read the possible CPUs: %s", strerror(-r));
		free(b);
		return r;
	}
	pthread_mutex_lock(&open_lock);
	capture_start();
	r = check_tracepoints(why, whylen);
	if (!r)
		r = load_and_attach(b, tgid, dirty_ring_entries, why, whylen);
	capture_stop(NULL, 0);
	pthread_mutex_unlock(&open_lock);
	if (r) {
		kmig_bpf_close(b);
		return r;
	}
	*out = b;
	return 0;
}

int kmig_bpf_read_vcpu(struct kmig_bpf *b, unsigned int vcpu, struct kmig_bpf_vcpu_stats *st)
{
	struct kmig_dirty_stats *v;
	__u32 key = vcpu;
	int r;

	if (!b || !st)
		return -EINVAL;
	if (vcpu >= b->nr_vcpus)
		return -ERANGE;
	v = calloc(b->ncpus, sizeof(*v));
	if (!v)
		return -ENOMEM;
	r = bpf_map_lookup_elem(b->stats_fd, &key, v);
	if (r) {
		free(v);
		return r < 0 ? r : -EIO;
	}
	memset(st, 0, sizeof(*st));
	for (int c = 0; c < b->ncpus; c++) {
		st->pushes += v[c].pushes;
		st->full_exits += v[c].full_exits;
		st->resets += v[c].resets;
		st->overwrites += v[c].overwrites;
		if (v[c].max_used > st->max_used)
			st->max_used = v[c].max_used;
	}
	free(v);
	return 0;
}

/* Did the programs fail to queue records since we last looked? */
static int check_dropped(struct kmig_bpf *b, bool *dropped)
{
	__u32 key = 0;
	__u64 n = 0;
	int r;

	r = bpf_map_lookup_elem(b->dropped_fd, &key, &n);
	if (r)
		return r < 0 ? r : -EIO;
	*dropped = n != b->dropped_seen;
	b->dropped_seen = n;
	return 0;
}

int kmig_bpf_drain_lost(struct kmig_bpf *b,
			void (*fn)(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset),
			void *opaque, bool *incomplete)
{
	bool dropped = false;
	int r;

	if (!b || !incomplete)
		return -EINVAL;
	*incomplete = false;
	b->fn = fn;
	b->opaque = opaque;
	b->drained = 0;
	b->unknown = false;
	r = ring_buffer__consume(b->rb);
	b->fn = NULL;
	b->opaque = NULL;
	if (r < 0)
		return r;
	/* after the records: a drop counted now is reported now or next time,
	 * never missed */
	r = check_dropped(b, &dropped);
	if (r)
		return r;
	*incomplete = b->unknown || dropped;
	return b->drained;
}

void kmig_bpf_close(struct kmig_bpf *b)
{
	if (!b)
		return;
	ring_buffer__free(b->rb);
	kmig_dirty__destroy(b->skel);
	free(b);
}

#endif /* KMIG_BPF_BUILT */
