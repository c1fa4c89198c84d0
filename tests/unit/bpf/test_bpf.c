/* bpf/: the loader and the eBPF programs, against the real kernel.
 *
 * One executable, one group per meson test (argv[1] names it), so a group
 * whose needs are not met exits 77 (meson: SKIP) with a printed reason
 * instead of passing without testing anything:
 *   disabled      KMIG_BPF=0, bad geometry, NULL handles      (anyone)
 *   unprivileged  a child that dropped to uid 65534 is refused (root)
 *   attached      the programs load for this process           (root, eBPF)
 *   ring          a real VM writes N pages: N pushes, N entries (+ /dev/kvm)
 *   overflow      the kernel laps an unharvested ring: the lost queue names
 *                 exactly the overwritten pages; a wrong ring size is
 *                 reported as incomplete
 *   live          a harvester resets the ring while the guest rewrites
 *                 memory; after an overflow, the pages the harvester missed
 *                 are exactly covered by the lost queue
 *
 * The VMs are raw ioctls, set up like shared/tools/ring-overflow-repro.c:
 * one vCPU in 32-bit flat protected mode (no GDT needed, KVM_SET_SREGS
 * loads the hidden segment state), code in slot 0 (not logged) and the
 * pages it writes in slot 1 (logged), so every push is a write of ours.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <linux/kvm.h>

#include <cmocka.h>

#include "bpf/telemetry.h"

#define SKIP 77
#define PAGE 4096u
#define CODE_SIZE (1u << 20)		/* slot 0 at GPA 0: the code, at 0x1000 */
#define DATA_GPA 0x200000u		/* slot 1: the pages the guest writes */

static void skip_unless(bool ok, const char *why)
{
	if (ok)
		return;
	printf("SKIP: %s\n", why);
	fflush(stdout);
	exit(SKIP);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a minimal VM ---- */

struct tvm {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	struct kvm_dirty_gfn *ring;
	uint32_t entries;
	uint8_t *code, *data;
	size_t npages;
};

static void tvm_destroy(struct tvm *v)
{
	if (v->ring && v->ring != MAP_FAILED)
		munmap(v->ring, v->entries * sizeof(struct kvm_dirty_gfn));
	if (v->run && v->run != MAP_FAILED)
		munmap(v->run, v->run_size);
	if (v->code && v->code != MAP_FAILED)
		munmap(v->code, CODE_SIZE);
	if (v->data && v->data != MAP_FAILED)
		munmap(v->data, v->npages * PAGE);
	if (v->vcpu > 0)
		close(v->vcpu);
	if (v->vm > 0)
		close(v->vm);
	if (v->kvm > 0)
		close(v->kvm);
	memset(v, 0, sizeof(*v));
}

static int enable_ring(struct tvm *v)
{
	struct kvm_enable_cap ec = { .args = { v->entries * sizeof(struct kvm_dirty_gfn) } };

	ec.cap = ioctl(v->vm, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 ?
		 KVM_CAP_DIRTY_LOG_RING_ACQ_REL : KVM_CAP_DIRTY_LOG_RING;
	return ioctl(v->vm, KVM_ENABLE_CAP, &ec) ? -errno : 0;
}

static int add_slots(struct tvm *v)
{
	struct kvm_userspace_memory_region code = {
		.slot = 0, .memory_size = CODE_SIZE, .userspace_addr = (uintptr_t)v->code,
	};
	struct kvm_userspace_memory_region data = {
		.slot = 1, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = DATA_GPA,
		.memory_size = v->npages * PAGE, .userspace_addr = (uintptr_t)v->data,
	};

	if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &code) ||
	    ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &data))
		return -errno;
	return 0;
}

/* 32-bit flat segments, protection on, paging off, rip at the code */
static int flat_mode(struct tvm *v)
{
	struct kvm_segment seg = {
		.limit = 0xffffffff, .selector = 0x10, .present = 1, .type = 3,
		.db = 1, .s = 1, .g = 1,
	};
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
	struct kvm_sregs s;

	if (ioctl(v->vcpu, KVM_GET_SREGS, &s))
		return -errno;
	s.ds = s.es = s.fs = s.gs = s.ss = seg;
	seg.type = 11;
	seg.selector = 0x8;
	s.cs = seg;
	s.cr0 |= 1;
	if (ioctl(v->vcpu, KVM_SET_SREGS, &s) || ioctl(v->vcpu, KVM_SET_REGS, &regs))
		return -errno;
	return 0;
}

static int map_vcpu(struct tvm *v)
{
	int sz = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);

	if (sz <= 0)
		return -EINVAL;
	v->run_size = (size_t)sz;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	v->ring = mmap(NULL, v->entries * sizeof(struct kvm_dirty_gfn), PROT_READ | PROT_WRITE,
		       MAP_SHARED, v->vcpu, (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
	if (v->run == MAP_FAILED || v->ring == MAP_FAILED)
		return -errno;
	return 0;
}

/* Returns 0, or -errno with *step naming what failed. */
static int tvm_create(struct tvm *v, uint32_t entries, size_t npages, const void *code,
		      size_t len, const char **step)
{
	int r;

	memset(v, 0, sizeof(*v));
	v->kvm = v->vm = v->vcpu = -1;
	v->entries = entries;
	v->npages = npages;
	*step = "open /dev/kvm";
	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0)
		return -errno;
	*step = "KVM_CREATE_VM";
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->vm < 0)
		return -errno;
	*step = "enable the dirty ring";
	r = enable_ring(v);
	if (r)
		return r;
	*step = "guest memory";
	v->code = mmap(NULL, CODE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	v->data = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (v->code == MAP_FAILED || v->data == MAP_FAILED)
		return -ENOMEM;
	memcpy(v->code + 0x1000, code, len);
	*step = "memslots";
	r = add_slots(v);
	if (r)
		return r;
	*step = "KVM_CREATE_VCPU";
	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	if (v->vcpu < 0)
		return -errno;
	*step = "map the vCPU";
	r = map_vcpu(v);
	if (r)
		return r;
	*step = "vCPU registers";
	return flat_mode(v);
}

/* mov edi,DATA_GPA; mov ecx,N; 1: mov byte [edi],1; add edi,4096;
 * dec ecx; jnz 1b; hlt.  One write, so one push, per page, in order. */
static size_t code_write_pages(uint8_t *buf, uint32_t n)
{
	static const uint8_t code[] = {
		0xbf, 0x00, 0x00, 0x20, 0x00,		/* mov edi, 0x200000 */
		0xb9, 0x00, 0x00, 0x00, 0x00,		/* mov ecx, N */
		0xc6, 0x07, 0x01,			/* 1: mov byte [edi], 1 */
		0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,	/* add edi, 4096 */
		0x49,					/* dec ecx */
		0x75, 0xf4,				/* jnz 1b */
		0xf4,					/* hlt */
	};

	memcpy(buf, code, sizeof(code));
	memcpy(buf + 6, &n, 4);
	return sizeof(code);
}

/* ebx=1; forever: for each page p: [p+4] = ebx; then ebx++ (the repro's
 * guest).  A page's value says which pass last wrote it. */
static size_t code_rewrite_forever(uint8_t *buf, uint32_t npages)
{
	static const uint8_t code[] = {
		0xbb, 0x01, 0x00, 0x00, 0x00,		/* mov ebx, 1 */
		0xbf, 0x00, 0x00, 0x20, 0x00,		/* 1: mov edi, 0x200000 */
		0x89, 0x5f, 0x04,			/* 2: mov [edi+4], ebx */
		0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,	/* add edi, 4096 */
		0x81, 0xff, 0x00, 0x00, 0x00, 0x00,	/* cmp edi, END */
		0x72, 0xef,				/* jb 2b */
		0x43,					/* inc ebx */
		0xeb, 0xe7,				/* jmp 1b */
	};
	uint32_t end = DATA_GPA + npages * PAGE;

	memcpy(buf, code, sizeof(code));
	memcpy(buf + 21, &end, 4);
	return sizeof(code);
}

static void require_kvm_ring(uint32_t entries)
{
	uint8_t code[64];
	const char *step;
	struct tvm v;
	char why[200];
	int r;

	skip_unless(access("/dev/kvm", R_OK | W_OK) == 0, "no usable /dev/kvm");
	r = tvm_create(&v, entries, 16, code, code_write_pages(code, 1), &step);
	tvm_destroy(&v);
	snprintf(why, sizeof(why), "cannot set up a dirty-ring VM: %s: %s", step, strerror(-r));
	skip_unless(r == 0, why);
}

static struct kmig_bpf *open_bpf(unsigned int nr_vcpus, uint32_t entries)
{
	struct kmig_bpf *b = NULL;
	char why[512] = "";
	int r;

	r = kmig_bpf_open(getpid(), nr_vcpus, entries, &b, why, sizeof(why));
	if (r)
		print_error("kmig_bpf_open: %d: %s\n", r, why);
	assert_int_equal(r, 0);
	assert_non_null(b);
	return b;
}

static struct kmig_bpf_vcpu_stats read_stats(struct kmig_bpf *b, unsigned int vcpu)
{
	struct kmig_bpf_vcpu_stats st;

	assert_int_equal(kmig_bpf_read_vcpu(b, vcpu, &st), 0);
	return st;
}

/* ---- disabled ---- */

static void fail_lost(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset)
{
	fail_msg("unexpected lost entry: vcpu %u slot %u offset %llu", vcpu, slot,
		 (unsigned long long)offset);
}

static void test_disabled_by_env(void **state)
{
	struct kmig_bpf *b = (struct kmig_bpf *)&b;	/* must be cleared */
	char why[256] = "";
	int r;

	setenv("KMIG_BPF", "0", 1);
	r = kmig_bpf_open(getpid(), 2, 4096, &b, why, sizeof(why));
	unsetenv("KMIG_BPF");
	assert_true(r < 0);
	assert_null(b);
	assert_non_null(strstr(why, "KMIG_BPF=0"));
}

static void test_bad_arguments(void **state)
{
	struct kmig_bpf *b = NULL;
	bool inc = true;
	char why[256] = "";
	int r;

	if (!kmig_bpf_built()) {
		r = kmig_bpf_open(getpid(), 2, 4096, &b, why, sizeof(why));
		assert_int_equal(r, -EOPNOTSUPP);
		assert_null(b);
		assert_non_null(strstr(why, "kmig was built without eBPF: "));
	} else {
		r = kmig_bpf_open(getpid(), 2, 1000, &b, why, sizeof(why));
		assert_int_equal(r, -EINVAL);
		assert_null(b);
		assert_non_null(strstr(why, "power of two"));
		assert_int_equal(kmig_bpf_open(getpid(), 0, 4096, &b, why, sizeof(why)), -EINVAL);
	}
	/* no place for a reason, or for the handle: still no crash */
	assert_true(kmig_bpf_open(getpid(), 2, 3, &b, NULL, 0) < 0);
	assert_null(b);
	assert_int_equal(kmig_bpf_open(getpid(), 2, 4096, NULL, why, sizeof(why)), -EINVAL);
	assert_true(kmig_bpf_read_vcpu(NULL, 0, &(struct kmig_bpf_vcpu_stats){ 0 }) < 0);
	assert_true(kmig_bpf_drain_lost(NULL, fail_lost, NULL, &inc) < 0);
	kmig_bpf_close(NULL);
}

/* ---- unprivileged ---- */

struct child_result {
	int r;
	bool handle;
	char why[256];
};

static void child_open(int fd)
{
	struct child_result res = { 0 };
	struct kmig_bpf *b = NULL;

	if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
		_exit(3);
	if (setuid(0) == 0)	/* really dropped? */
		_exit(4);
	res.r = kmig_bpf_open(getppid(), 2, 4096, &b, res.why, sizeof(res.why));
	res.handle = b != NULL;
	kmig_bpf_close(b);
	if (write(fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(5);
	_exit(0);
}

static void test_unprivileged(void **state)
{
	struct child_result res;
	int p[2], status;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		child_open(p[1]);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &res, sizeof(res)), (ssize_t)sizeof(res));
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(res.r, -EPERM);
	assert_false(res.handle);
	assert_non_null(strstr(res.why, "root"));
	assert_non_null(strstr(res.why, "CAP_BPF"));
}

/* ---- attached ---- */

static void test_attached(void **state)
{
	struct kmig_bpf *b = open_bpf(2, 4096);
	struct kmig_bpf_vcpu_stats st;
	bool inc = true;

	for (unsigned int i = 0; i < 2; i++) {
		st = read_stats(b, i);
		/* this process has no VM: nothing may have been counted */
		assert_int_equal(st.pushes, 0);
		assert_int_equal(st.full_exits, 0);
		assert_int_equal(st.resets, 0);
		assert_int_equal(st.overwrites, 0);
		assert_int_equal(st.max_used, 0);
	}
	assert_int_equal(kmig_bpf_read_vcpu(b, 2, &st), -ERANGE);
	assert_int_equal(kmig_bpf_drain_lost(b, fail_lost, NULL, &inc), 0);
	assert_false(inc);
	kmig_bpf_close(b);

	/* a second handle after the first is gone, and two at once */
	struct kmig_bpf *b1 = open_bpf(1, 1024), *b2 = open_bpf(4, 65536);

	kmig_bpf_close(b1);
	kmig_bpf_close(b2);
}

/* ---- ring ---- */

/* Run until hlt; ring-full exits are counted, at most max_full of them. */
static int run_to_hlt(struct tvm *v, int max_full, int *fulls)
{
	for (*fulls = 0;;) {
		if (ioctl(v->vcpu, KVM_RUN, 0))
			return -errno;
		if (v->run->exit_reason == KVM_EXIT_HLT)
			return 0;
		if (v->run->exit_reason != KVM_EXIT_DIRTY_RING_FULL)
			return -(int)v->run->exit_reason - 1000;
		if (++*fulls > max_full)
			return -EBUSY;
	}
}

#define RING_N 200
#define RING_ENTRIES 1024

static void test_ring_counts(void **state)
{
	struct kmig_bpf_vcpu_stats st;
	struct kmig_bpf *b;
	uint8_t code[64];
	const char *step;
	struct tvm v;
	int fulls, r;
	uint32_t n;
	bool inc;

	b = open_bpf(1, RING_ENTRIES);
	assert_int_equal(tvm_create(&v, RING_ENTRIES, RING_N + 8, code,
				    code_write_pages(code, RING_N), &step), 0);
	r = run_to_hlt(&v, 0, &fulls);
	if (r)
		print_error("vCPU: %d (exit reason %u)\n", r, v.run->exit_reason);
	assert_int_equal(r, 0);

	/* the ring: entry i is page i of slot 1, DIRTY, and no more */
	for (n = 0; n < RING_ENTRIES; n++) {
		struct kvm_dirty_gfn *e = &v.ring[n];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			break;
		assert_int_equal(e->slot, 1);
		assert_int_equal(e->offset, n);
	}
	assert_int_equal(n, RING_N);
	for (uint32_t p = 0; p < RING_N + 8; p++)
		assert_int_equal(v.data[p * PAGE], p < RING_N);

	st = read_stats(b, 0);
	assert_int_equal(st.pushes, RING_N);
	assert_int_equal(st.max_used, RING_N);
	assert_int_equal(st.overwrites, 0);
	assert_int_equal(st.full_exits, 0);
	assert_int_equal(st.resets, 0);

	/* harvest: one reset walk of this ring, which resets all N */
	for (n = 0; n < RING_N; n++)
		__atomic_store_n(&v.ring[n].flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
	assert_int_equal(ioctl(v.vm, KVM_RESET_DIRTY_RINGS, 0), RING_N);
	st = read_stats(b, 0);
	assert_int_equal(st.resets, 1);
	assert_int_equal(st.pushes, RING_N);
	assert_int_equal(kmig_bpf_drain_lost(b, fail_lost, NULL, &inc), 0);
	assert_false(inc);
	tvm_destroy(&v);
	kmig_bpf_close(b);
}

/* ---- overflow ---- */

#define OVF_ENTRIES 1024
#define OVF_PAGES 2048		/* the guest would write 2 rings' worth */
#define OVF_TRIES 100
/* ... or as many as fit in this long: a try takes a millisecond on
 * hardware, most of a second on an emulated CPU (scripts/kvm-vm.sh), and
 * both tests must end inside meson's 60 s */
#define OVF_BUDGET_MS 20000

/* Another try at an overflow, unless the budget is spent. */
static bool another_try(int tries, int64_t t0)
{
	return tries < OVF_TRIES && now_ms() - t0 < OVF_BUDGET_MS;
}

struct lost_log {
	uint32_t n;
	uint32_t vcpu[OVF_PAGES], slot[OVF_PAGES];
	uint64_t offset[OVF_PAGES];
};

static void log_lost(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset)
{
	struct lost_log *l = opaque;

	if (l->n < OVF_PAGES) {
		l->vcpu[l->n] = vcpu;
		l->slot[l->n] = slot;
		l->offset[l->n] = offset;
	}
	l->n++;
}

/* Write pages until the vCPU stops on ring-full exits, never harvesting.
 * This kernel sometimes pushes past the ring's capacity before it stops
 * the vCPU; that is the overflow.  Returns the pages written. */
static uint32_t run_unharvested(struct tvm *v)
{
	uint8_t code[64];
	const char *step;
	int fulls, r;
	uint32_t w = 0;

	assert_int_equal(tvm_create(v, OVF_ENTRIES, OVF_PAGES, code,
				    code_write_pages(code, OVF_PAGES), &step), 0);
	/* a few re-entries: each may push a little more */
	r = run_to_hlt(v, 8, &fulls);
	assert_true(r == -EBUSY || r == 0);
	for (uint32_t p = 0; p < OVF_PAGES; p++)
		w += v->data[p * PAGE];
	return w;
}

/* Pages 0..w-1 were pushed as ring indexes 0..w-1 (one write each, in
 * order).  The ring keeps the newest entry of each slot; the entries
 * w - size pushes overwrote are pages 0..w-size-1, and the lost queue
 * must name exactly those, in order. */
static void check_lapped(struct tvm *v, struct kmig_bpf *b, uint32_t w)
{
	struct kmig_bpf_vcpu_stats st = read_stats(b, 0);
	uint32_t over = w - OVF_ENTRIES;
	struct lost_log *l = calloc(1, sizeof(*l));
	bool inc = true;

	assert_non_null(l);
	assert_int_equal(st.pushes, w);
	assert_int_equal(st.max_used, w);
	assert_int_equal(st.overwrites, over);
	assert_true(st.full_exits >= 1);
	for (uint32_t s = 0; s < OVF_ENTRIES; s++) {
		assert_true(v->ring[s].flags & KVM_DIRTY_GFN_F_DIRTY);
		assert_int_equal(v->ring[s].offset, s < over ? s + OVF_ENTRIES : s);
	}
	assert_int_equal(kmig_bpf_drain_lost(b, log_lost, l, &inc), over);
	assert_false(inc);
	assert_int_equal(l->n, over);
	for (uint32_t i = 0; i < over; i++) {
		assert_int_equal(l->vcpu[i], 0);
		assert_int_equal(l->slot[i], 1);
		assert_int_equal(l->offset[i], i);
		assert_int_equal(v->data[l->offset[i] * PAGE], 1);	/* the guest wrote it */
	}
	/* drained: nothing the second time */
	assert_int_equal(kmig_bpf_drain_lost(b, fail_lost, NULL, &inc), 0);
	assert_false(inc);
	free(l);
}

static void test_overflow_names_lost_pages(void **state)
{
	int tries, no_overflow = 0;
	int64_t t0 = now_ms();

	for (tries = 0; another_try(tries, t0); tries++) {
		struct kmig_bpf *b = open_bpf(1, OVF_ENTRIES);
		struct tvm v;
		uint32_t w = run_unharvested(&v);

		if (w > OVF_ENTRIES) {
			print_message("overflow after %d clean runs: %u pages written into a ring of %u\n",
				      no_overflow, w, OVF_ENTRIES);
			check_lapped(&v, b, w);
			tvm_destroy(&v);
			kmig_bpf_close(b);
			return;
		}
		/* stopped in time: nothing lost, nothing reported */
		bool inc = true;

		assert_int_equal(read_stats(b, 0).overwrites, 0);
		assert_int_equal(kmig_bpf_drain_lost(b, fail_lost, NULL, &inc), 0);
		assert_false(inc);
		no_overflow++;
		tvm_destroy(&v);
		kmig_bpf_close(b);
	}
	print_message("%d tries in %lld ms\n", tries, (long long)(now_ms() - t0));
	skip_unless(false, "the kernel stopped the vCPU at the ring's capacity every time");
}

/* Told the wrong ring size, the programs cannot name the page: every
 * overwrite must come out as "incomplete", never as a wrong page. */
static void test_overflow_wrong_size_is_incomplete(void **state)
{
	int tries;
	int64_t t0 = now_ms();

	for (tries = 0; another_try(tries, t0); tries++) {
		struct kmig_bpf *b = open_bpf(1, 2 * OVF_ENTRIES);
		bool inc = false;
		struct tvm v;
		uint32_t w = run_unharvested(&v);
		int n = kmig_bpf_drain_lost(b, fail_lost, NULL, &inc);

		assert_int_equal(n, 0);
		assert_int_equal(read_stats(b, 0).overwrites, w > OVF_ENTRIES ? w - OVF_ENTRIES : 0);
		assert_int_equal(inc, w > OVF_ENTRIES);
		tvm_destroy(&v);
		kmig_bpf_close(b);
		if (w > OVF_ENTRIES)
			return;
	}
	print_message("%d tries in %lld ms\n", tries, (long long)(now_ms() - t0));
	skip_unless(false, "the kernel stopped the vCPU at the ring's capacity every time");
}

/* ---- ring-probe ---- */

/* Does this kernel run past a full dirty ring at all?  Some do (the PVM
 * hosts kmig was first developed on, on the emulated 32-bit path); a
 * kernel that stops the vCPU at the ring's capacity has no overflow for
 * the migrate-ring-overflow tests to provoke.  No eBPF needed; one line
 * for them to read. */
static void test_ring_probe(void **state)
{
	int64_t t0 = now_ms();
	int tries;

	(void)state;
	for (tries = 0; another_try(tries, t0); tries++) {
		struct tvm v;
		uint32_t w = run_unharvested(&v);

		tvm_destroy(&v);
		if (w > OVF_ENTRIES) {
			printf("ring-probe: overflows: %u pages pushed into a ring of %u (try %d)\n", w, OVF_ENTRIES,
			       tries + 1);
			return;
		}
	}
	printf("ring-probe: stops at capacity: no overflow in %d tries (%lld ms)\n", tries,
	       (long long)(now_ms() - t0));
}

/* ---- live ---- */

#define LIVE_ENTRIES 1024
#define LIVE_PAGES 4096		/* 16 MiB rewritten over and over */
#define LIVE_MAX_MS 3000
#define LIVE_AFTER_MS 200	/* keep going this long after the overflow */

/* The vCPU thread harvests its own ring on ring-full exits, the way the
 * repro does (in order while DIRTY, mark RESET, reset, then copy), so
 * nothing is pushed between marking and resetting.  The main thread
 * drains the lost queue every millisecond and checks each record. */
struct live {
	struct tvm v;
	struct kmig_bpf *b;
	uint8_t *copy;		/* what a migration would have sent */
	uint8_t *lost;		/* pages the lost queue named */
	uint32_t fetch;
	uint64_t harvested, full_exits, reported, bad;
	int run_err;
	atomic_bool stop;
};

static void live_harvest(struct live *lv)
{
	static uint64_t gfn[LIVE_ENTRIES];
	uint32_t n = 0;

	for (; n < LIVE_ENTRIES; n++) {
		struct kvm_dirty_gfn *e = &lv->v.ring[lv->fetch & (LIVE_ENTRIES - 1)];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			break;
		gfn[n] = e->offset;
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		lv->fetch++;
	}
	if (n)
		ioctl(lv->v.vm, KVM_RESET_DIRTY_RINGS, 0);
	for (uint32_t i = 0; i < n; i++)
		if (gfn[i] < LIVE_PAGES)
			memcpy(lv->copy + gfn[i] * PAGE, lv->v.data + gfn[i] * PAGE, PAGE);
	lv->harvested += n;
}

static void on_sigusr1(int sig)
{
}

static void *live_vcpu(void *arg)
{
	struct live *lv = arg;

	for (;;) {
		if (lv->stop)
			lv->v.run->immediate_exit = 1;
		if (ioctl(lv->v.vcpu, KVM_RUN, 0)) {
			if (errno == EINTR) {
				if (lv->stop)
					return NULL;
				continue;
			}
			lv->run_err = -errno;
			return NULL;
		}
		if (lv->v.run->exit_reason != KVM_EXIT_DIRTY_RING_FULL) {
			lv->run_err = -(int)lv->v.run->exit_reason - 1000;
			return NULL;
		}
		lv->full_exits++;
		live_harvest(lv);
	}
}

static void live_lost(void *opaque, uint32_t vcpu, uint32_t slot, uint64_t offset)
{
	struct live *lv = opaque;

	lv->reported++;
	/* a page of ours, that the guest has written (pass numbers start at 1) */
	if (vcpu || slot != 1 || offset >= LIVE_PAGES ||
	    !__atomic_load_n((uint32_t *)(lv->v.data + offset * PAGE + 4), __ATOMIC_RELAXED)) {
		lv->bad++;
		return;
	}
	lv->lost[offset] = 1;
}

static size_t count_stale(struct live *lv)
{
	size_t stale = 0;

	for (size_t p = 0; p < LIVE_PAGES; p++)
		stale += memcmp(lv->copy + p * PAGE, lv->v.data + p * PAGE, PAGE) != 0;
	return stale;
}

/* Returns the overwrites seen; 0: the kernel never overflowed. */
static uint64_t live_run(struct live *lv)
{
	struct kmig_bpf_vcpu_stats st = { 0 };
	int64_t t0 = now_ms(), seen = 0;
	uint8_t code[64];
	const char *step;
	bool inc, any_inc = false;
	pthread_t t;

	lv->b = open_bpf(1, LIVE_ENTRIES);
	assert_int_equal(tvm_create(&lv->v, LIVE_ENTRIES, LIVE_PAGES, code,
				    code_rewrite_forever(code, LIVE_PAGES), &step), 0);
	assert_int_equal(pthread_create(&t, NULL, live_vcpu, lv), 0);
	while (now_ms() - t0 < LIVE_MAX_MS && !(seen && now_ms() - seen > LIVE_AFTER_MS)) {
		usleep(1000);
		assert_true(kmig_bpf_drain_lost(lv->b, live_lost, lv, &inc) >= 0);
		any_inc |= inc;
		st = read_stats(lv->b, 0);	/* concurrently with the vCPU */
		if (st.overwrites && !seen)
			seen = now_ms();
	}
	lv->stop = true;
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	assert_int_equal(lv->run_err, 0);
	live_harvest(lv);
	assert_true(kmig_bpf_drain_lost(lv->b, live_lost, lv, &inc) >= 0);
	any_inc |= inc;
	st = read_stats(lv->b, 0);
	print_message("%llu ms: %llu pushes, %llu harvested, %llu resets, %llu ring-full exits, "
		      "%llu overwrites (max used %u of %u), %llu reported lost\n",
		      (unsigned long long)(now_ms() - t0), (unsigned long long)st.pushes,
		      (unsigned long long)lv->harvested, (unsigned long long)st.resets,
		      (unsigned long long)st.full_exits, (unsigned long long)st.overwrites,
		      st.max_used, LIVE_ENTRIES, (unsigned long long)lv->reported);
	assert_false(any_inc);
	assert_int_equal(lv->bad, 0);
	assert_int_equal(lv->reported, st.overwrites);
	assert_int_equal(st.full_exits, lv->full_exits);
	return st.overwrites;
}

/* After the run (vCPU stopped): copy what is still in the ring, the way a
 * final harvest would even past a hole, then the lost pages.  Only the
 * lost pages may have been missing, and with them nothing is. */
static void live_check(struct live *lv)
{
	size_t before, after;

	for (uint32_t s = 0; s < LIVE_ENTRIES; s++) {
		struct kvm_dirty_gfn *e = &lv->v.ring[s];

		if ((e->flags & KVM_DIRTY_GFN_F_DIRTY) && e->offset < LIVE_PAGES)
			memcpy(lv->copy + e->offset * PAGE, lv->v.data + e->offset * PAGE, PAGE);
	}
	before = count_stale(lv);
	for (size_t p = 0; p < LIVE_PAGES; p++)
		if (lv->lost[p])
			memcpy(lv->copy + p * PAGE, lv->v.data + p * PAGE, PAGE);
	after = count_stale(lv);
	print_message("pages stale without the lost queue: %zu, with it: %zu\n", before, after);
	assert_int_equal(after, 0);
}

static void test_live_overflow(void **state)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };	/* no SA_RESTART */

	sigaction(SIGUSR1, &sa, NULL);
	for (int tries = 0; tries < 3; tries++) {
		struct live *lv = calloc(1, sizeof(*lv));
		uint64_t over;

		assert_non_null(lv);
		lv->copy = calloc(LIVE_PAGES, PAGE);
		lv->lost = calloc(LIVE_PAGES, 1);
		assert_non_null(lv->copy);
		assert_non_null(lv->lost);
		over = live_run(lv);
		if (over)
			live_check(lv);
		tvm_destroy(&lv->v);
		kmig_bpf_close(lv->b);
		free(lv->copy);
		free(lv->lost);
		free(lv);
		if (over)
			return;
	}
	skip_unless(false, "no ring overflow in 3 runs of the live guest");
}

/* ---- main ---- */

static void require_root_bpf(void)
{
	skip_unless(kmig_bpf_built(), "kmig was built without eBPF");
	skip_unless(geteuid() == 0, "not root");
}

int main(int argc, char **argv)
{
	const char *group = argc > 1 ? argv[1] : "disabled";

	unsetenv("KMIG_BPF");
	if (!strcmp(group, "disabled")) {
		const struct CMUnitTest t[] = {
			cmocka_unit_test(test_disabled_by_env),
			cmocka_unit_test(test_bad_arguments),
		};
		return cmocka_run_group_tests_name("bpf-disabled", t, NULL, NULL);
	}
	if (!strcmp(group, "ring-probe")) {
		skip_unless(geteuid() == 0, "not root");
		require_kvm_ring(OVF_ENTRIES);
		const struct CMUnitTest t[] = { cmocka_unit_test(test_ring_probe) };
		return cmocka_run_group_tests_name("ring-probe", t, NULL, NULL);
	}
	require_root_bpf();
	if (!strcmp(group, "unprivileged")) {
		const struct CMUnitTest t[] = { cmocka_unit_test(test_unprivileged) };
		return cmocka_run_group_tests_name("bpf-unprivileged", t, NULL, NULL);
	}
	if (!strcmp(group, "attached")) {
		const struct CMUnitTest t[] = { cmocka_unit_test(test_attached) };
		return cmocka_run_group_tests_name("bpf-attached", t, NULL, NULL);
	}
	if (!strcmp(group, "ring")) {
		require_kvm_ring(RING_ENTRIES);
		const struct CMUnitTest t[] = { cmocka_unit_test(test_ring_counts) };
		return cmocka_run_group_tests_name("bpf-ring", t, NULL, NULL);
	}
	if (!strcmp(group, "overflow")) {
		require_kvm_ring(OVF_ENTRIES);
		const struct CMUnitTest t[] = {
			cmocka_unit_test(test_overflow_names_lost_pages),
			cmocka_unit_test(test_overflow_wrong_size_is_incomplete),
		};
		return cmocka_run_group_tests_name("bpf-overflow", t, NULL, NULL);
	}
	if (!strcmp(group, "live")) {
		require_kvm_ring(LIVE_ENTRIES);
		const struct CMUnitTest t[] = { cmocka_unit_test(test_live_overflow) };
		return cmocka_run_group_tests_name("bpf-live", t, NULL, NULL);
	}
	fprintf(stderr, "unknown group %s\n", group);
	return 2;
}
