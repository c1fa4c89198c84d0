/* The VM: /dev/kvm, memfd-backed RAM in one or two memslots, the in-kernel
 * irqchip and PIT, vCPU creation and the vCPU threads' run loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kvm/kvm-int.h"

#define TSS_ADDR 0xfffbd000ul
#define IDENTITY_MAP_ADDR 0xfffbc000ul

unsigned int kvm_vm_nr_vcpus(const struct kvm_vm *vm) { return vm->nr_vcpus; }
struct kvm_mem *kvm_vm_mem(const struct kvm_vm *vm) { return vm->mem; }
uint64_t kvm_vm_ram_size(const struct kvm_vm *vm) { return kvm_mem_size(vm->mem); }
uint64_t kvm_vm_nr_pages(const struct kvm_vm *vm) { return kvm_mem_nr_pages(vm->mem); }
uint8_t *kvm_vm_ram_base(struct kvm_vm *vm) { return kvm_mem_base(vm->mem); }
int kvm_vm_memfd(const struct kvm_vm *vm) { return kvm_mem_fd(vm->mem); }
bool kvm_vm_prealloc(const struct kvm_vm *vm) { return kvm_mem_prealloc(vm->mem); }

int kvm_vm_gpa_to_offset(const struct kvm_vm *vm, uint64_t gpa, uint64_t *offset)
{
	return kvm_mem_gpa_to_offset(vm->mem, gpa, offset);
}

uint64_t kvm_vm_offset_to_gpa(const struct kvm_vm *vm, uint64_t offset)
{
	return kvm_mem_offset_to_gpa(vm->mem, offset);
}

void *kvm_vm_gpa_ptr(struct kvm_vm *vm, uint64_t gpa, uint64_t len)
{
	return kvm_mem_gpa_ptr(vm->mem, gpa, len);
}

int kvm_set_slot_flags(struct kvm_vm *vm, const struct kvm_slot *s, uint32_t flags)
{
	struct kvm_userspace_memory_region r = {
		.slot = s->id, .flags = flags, .guest_phys_addr = s->gpa,
		.memory_size = s->size, .userspace_addr = (uintptr_t)(kvm_mem_base(vm->mem) + s->offset),
	};
	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

/* Guest RAM (kvm/mem.c), registered as one KVM slot per region. */
static int setup_memory(struct kvm_vm *vm, char *err, size_t errlen)
{
	int r = kvm_mem_create(vm->cfg.mem_bytes, vm->cfg.prealloc, &vm->mem, err, errlen);

	if (r)
		return r;
	vm->nr_slots = kvm_mem_nr_regions(vm->mem);
	for (unsigned int i = 0; i < vm->nr_slots; i++) {
		const struct kvm_mem_region *g = kvm_mem_region(vm->mem, i);

		vm->slots[i] = (struct kvm_slot){ .id = i, .gpa = g->gpa, .size = g->size, .offset = g->offset };
		r = kvm_set_slot_flags(vm, &vm->slots[i], 0);
		if (r) {
			kmig_set_err(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-r));
			return r;
		}
	}
	return 0;
}

static int setup_cpuid(struct kvm_vm *vm, char *err, size_t errlen)
{
	for (int n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			return -ENOMEM;
		c->nent = (uint32_t)n;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			vm->cpuid = c;
			return 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG) {
			kmig_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
			return -e;
		}
	}
	kmig_set_err(err, errlen, "KVM_GET_SUPPORTED_CPUID: too many entries");
	return -E2BIG;
}

/* Each vCPU gets its own APIC ID in the CPUID leaves that report it. */
static int set_vcpu_cpuid(struct kvm_vm *vm, struct kvm_vcpu *v)
{
	size_t sz = sizeof(*vm->cpuid) + vm->cpuid->nent * sizeof(vm->cpuid->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);

	if (!c)
		return -ENOMEM;
	memcpy(c, vm->cpuid, sz);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (v->idx << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->idx;
	}
	int r = ioctl(v->fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	free(c);
	return r;
}

/* Keep only the MSRs this host lets us read back one by one, so a save
 * never stops half-way through the list. */
static int probe_msrs(struct kvm_vm *vm, int vcpu_fd)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };

	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return -errno;
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));

	if (!l)
		return -ENOMEM;
	l->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(l);
		return -errno;
	}
	vm->msr_list = calloc(l->nmsrs, sizeof(uint32_t));
	if (!vm->msr_list) {
		free(l);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < l->nmsrs; i++) {
		struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = { .h.nmsrs = 1 };

		m.e.index = l->indices[i];
		if (m.e.index == 0x6e0)	/* TSC deadline: saved with the LAPIC */
			continue;
		if (ioctl(vcpu_fd, KVM_GET_MSRS, &m) == 1)
			vm->msr_list[vm->nr_msrs++] = m.e.index;
	}
	free(l);
	return 0;
}

/* The architectural FPU/SSE reset state (FCW 0x37f, MXCSR 0x1f80), set
 * explicitly as QEMU does: KVM leaves it to userspace. */
static int reset_fpu(struct kvm_vcpu *v)
{
	struct kvm_fpu fpu;

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	return ioctl(v->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

static int create_vcpu(struct kvm_vm *vm, unsigned int idx, char *err, size_t errlen)
{
	struct kvm_vcpu *v = &vm->vcpus[idx];

	v->vm = vm;
	v->idx = idx;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)idx);
	if (v->fd < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "KVM_CREATE_VCPU %u: %s", idx, strerror(e));
		return -e;
	}
	int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

	if (sz < 0)
		return -errno;
	v->run_size = (size_t)sz;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		kmig_set_err(err, errlen, "mmap kvm_run: %s", strerror(errno));
		return -ENOMEM;
	}
	if (vm->cfg.dirty_backend == KMIG_DIRTY_RING) {
		size_t bytes = vm->cfg.dirty_ring_entries * sizeof(struct kvm_dirty_gfn);
		void *g = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd,
			       KVM_DIRTY_LOG_PAGE_OFFSET * (off_t)getpagesize());

		if (g == MAP_FAILED) {
			kmig_set_err(err, errlen, "mmap dirty ring: %s", strerror(errno));
			return -ENOMEM;
		}
		dirty_ring_init(&v->ring, g, vm->cfg.dirty_ring_entries);
	}
	int r = set_vcpu_cpuid(vm, v);

	if (!r)
		r = reset_fpu(v);
	if (r) {
		kmig_set_err(err, errlen, "KVM_SET_CPUID2: %s", strerror(-r));
		return r;
	}
	if (idx == 0 && (r = probe_msrs(vm, v->fd))) {
		kmig_set_err(err, errlen, "cannot list MSRs: %s", strerror(-r));
		return r;
	}
	return 0;
}

static int enable_dirty_ring(struct kvm_vm *vm, char *err, size_t errlen)
{
	uint32_t n = vm->cfg.dirty_ring_entries;
	int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);

	if (max <= 0) {
		kmig_set_err(err, errlen, "this kernel has no KVM dirty ring with acquire/release "
			     "(KVM_CAP_DIRTY_LOG_RING_ACQ_REL); use --dirty-bitmap");
		return -ENOTSUP;
	}
	if (n < 256 || (n & (n - 1)) || n * sizeof(struct kvm_dirty_gfn) > (uint32_t)max) {
		kmig_set_err(err, errlen, "--dirty-ring %u: must be a power of two between 256 and %zu",
			     n, (size_t)max / sizeof(struct kvm_dirty_gfn));
		return -EINVAL;
	}
	struct kvm_enable_cap cap = { .cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
				      .args = { n * sizeof(struct kvm_dirty_gfn) } };
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "cannot enable the dirty ring: %s", strerror(e));
		return -e;
	}
	return 0;
}

static int enable_manual_protect(struct kvm_vm *vm, char *err, size_t errlen)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
				      .args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE } };
	if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 unavailable: %s", strerror(e));
		return -e;
	}
	return 0;
}

static int setup_vm(struct kvm_vm *vm, char *err, size_t errlen)
{
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "cannot open /dev/kvm: %s%s", strerror(e),
			     e == ENOENT ? " (is KVM enabled on this host?)" :
			     e == EACCES ? " (are you root or in the kvm group?)" : "");
		return -e;
	}
	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		kmig_set_err(err, errlen, "unexpected KVM API version");
		return -ENOTSUP;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "KVM_CREATE_VM: %s", strerror(e));
		return -e;
	}
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &(uint64_t){ IDENTITY_MAP_ADDR }) < 0 ||
	    ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "cannot set up the in-kernel irqchip: %s", strerror(e));
		return -e;
	}
	struct kvm_pit_config pit = { .flags = 0 };
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		int e = errno;
		kmig_set_err(err, errlen, "KVM_CREATE_PIT2: %s", strerror(e));
		return -e;
	}
	if (vm->cfg.dirty_backend == KMIG_DIRTY_AUTO) {
		vm->cfg.dirty_backend = kvm_dirty_backend_auto(vm->cfg.mem_bytes, vm->cfg.nr_vcpus);
		/* auto asks for the cheaper backend, not for rings: a kernel
		 * without them gets the bitmap rather than an error */
		if (vm->cfg.dirty_backend == KMIG_DIRTY_RING &&
		    ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) <= 0)
			vm->cfg.dirty_backend = KMIG_DIRTY_BITMAP;
		if (!vm->cfg.dirty_ring_entries)
			vm->cfg.dirty_ring_entries = 4096;
	}
	int r = vm->cfg.dirty_backend == KMIG_DIRTY_RING ? enable_dirty_ring(vm, err, errlen)
							 : enable_manual_protect(vm, err, errlen);
	if (r)
		return r;
	vm->xsave_size = 4096;
	return 0;
}

int kvm_vm_create(const struct kvm_vm_config *cfg, const struct kvm_vm_callbacks *cb,
		  struct kvm_vm **out, char *err, size_t errlen)
{
	if (cfg->dirty_backend > KMIG_DIRTY_AUTO) {
		kmig_set_err(err, errlen, "unknown dirty tracking backend %d", (int)cfg->dirty_backend);
		return -EINVAL;
	}
	if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > KMIG_MAX_VCPUS) {
		kmig_set_err(err, errlen, "vcpus must be between 1 and %d", KMIG_MAX_VCPUS);
		return -EINVAL;
	}
	/* checked before /dev/kvm is opened, as the other values are */
	if (kvm_mem_check_size(cfg->mem_bytes, err, errlen))
		return -EINVAL;
	struct kvm_vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	if (cb)
		vm->cb = *cb;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->trace_io = getenv("KMIG_TRACE_IO") != NULL;
	vm->trace_dirty = getenv("KMIG_TRACE_DIRTY") != NULL;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_t ca;

	/* monotonic: throttled vCPUs wait on it with a deadline */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&vm->users_lock, NULL);
	pthread_mutex_init(&vm->serial_lock, NULL);
	pthread_mutex_init(&vm->dirty_lock, NULL);
	serial_reset(&vm->serial);
	for (unsigned int i = 0; i < KMIG_MAX_VCPUS; i++)
		vm->vcpus[i].fd = -1;

	int r = setup_vm(vm, err, errlen);

	if (!r)
		r = setup_memory(vm, err, errlen);
	if (!r)
		r = setup_cpuid(vm, err, errlen);
	for (unsigned int i = 0; !r && i < cfg->nr_vcpus; i++) {
		r = create_vcpu(vm, i, err, errlen);
		if (!r)
			vm->nr_vcpus = i + 1;
	}
	if (!r)
		r = kvm_dirty_init(vm, err, errlen);
	if (r) {
		kvm_vm_destroy(vm);
		return r;
	}
	*out = vm;
	return 0;
}

void kvm_vm_destroy(struct kvm_vm *vm)
{
	if (!vm)
		return;
	kvm_vm_shutdown(vm);
	kvm_dirty_stop(vm);
	for (unsigned int i = 0; i < KMIG_MAX_VCPUS; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];

		if (v->ring.gfns)
			munmap(v->ring.gfns, v->ring.size * sizeof(struct kvm_dirty_gfn));
		if (v->run)
			munmap(v->run, v->run_size);
		if (v->fd >= 0)
			close(v->fd);
	}
	kvm_dirty_fini(vm);
	/* KVM drops its references to RAM with the VM */
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	vm->vm_fd = -1;
	kvm_mem_destroy(vm->mem);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm->cpuid);
	free(vm->msr_list);
	free(vm);
}

/* ---- run loop ---- */

static void kick_handler(int sig) { (void)sig; }

static void vm_stop_for_good(struct kvm_vm *vm, enum kvm_stop_reason why, int code, const char *detail)
{
	pthread_mutex_lock(&vm->lock);
	bool first = vm->stop_reason == KVM_STOP_NONE;

	if (first) {
		vm->stop_reason = why;
		vm->stop_code = code;
		vm->quit_req = true;
	}
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	if (first) {
		/* the other vCPUs must leave KVM_RUN too */
		for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
			struct kvm_vcpu *v = &vm->vcpus[i];

			if (v->thread_started && !pthread_equal(v->thread, pthread_self())) {
				v->run->immediate_exit = 1;
				pthread_kill(v->thread, SIGUSR1);
			}
		}
		if (vm->cb.stopped)
			vm->cb.stopped(vm->cb.opaque, why, code, detail);
	}
}

static void handle_io(struct kvm_vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool wr = run->io.direction == KVM_EXIT_IO_OUT;

	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		uint16_t port = run->io.port;

		if (port >= SERIAL_PORT && port < SERIAL_PORT + 8) {
			serial_io(v->vm, port, wr, data);
		} else if (port == DEBUG_EXIT_PORT && wr) {
			char d[64];
			snprintf(d, sizeof(d), "guest wrote exit code %u to port 0x%x", data[0], port);
			vm_stop_for_good(v->vm, KVM_STOP_GUEST_EXIT, data[0], d);
		} else {
			if (!wr)
				memset(data, 0xff, run->io.size);	/* nothing there */
			if (v->vm->trace_io)
				fprintf(stderr, "io %s port 0x%x size %u\n", wr ? "out" : "in", port, run->io.size);
		}
	}
}

static void fatal_exit(struct kvm_vcpu *v, const char *what)
{
	char regs[1024], d[1280];

	kvm_vcpu_dump(v->vm, v->idx, regs, sizeof(regs));
	snprintf(d, sizeof(d), "vCPU %u: %s\n%s", v->idx, what, regs);
	vm_stop_for_good(v->vm, v->run->exit_reason == KVM_EXIT_SHUTDOWN ? KVM_STOP_SHUTDOWN
								       : KVM_STOP_ERROR, -1, d);
}

/* Returns false when the thread should end. */
static bool handle_exit(struct kvm_vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[128];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		return true;
	case KVM_EXIT_MMIO:
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return true;
	case KVM_EXIT_DIRTY_RING_FULL:
		kvm_dirty_ring_full(v);
		return true;
	case KVM_EXIT_HLT:
		return true;
	case KVM_EXIT_SHUTDOWN:
		fatal_exit(v, "guest shut down (triple fault)");
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(what, sizeof(what), "VM entry failed, hardware reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		fatal_exit(v, what);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(what, sizeof(what), "KVM internal error, suberror %u", run->internal.suberror);
		fatal_exit(v, what);
		return false;
	default:
		snprintf(what, sizeof(what), "unhandled exit reason %u", run->exit_reason);
		fatal_exit(v, what);
		return false;
	}
}

static bool throttled(struct kvm_vcpu *v, uint64_t now)
{
	return __atomic_load_n(&v->throttle_until_ns, __ATOMIC_ACQUIRE) > now;
}

/* Sleep out the throttle (dirty limit), woken early by a pause, quit or a
 * new deadline.  Called with vm->lock held, counted as outside KVM_RUN so
 * a pause does not wait for it. */
static void throttle_wait(struct kvm_vm *vm, struct kvm_vcpu *v)
{
	uint64_t t0 = kmig_now_ns(), until = __atomic_load_n(&v->throttle_until_ns, __ATOMIC_ACQUIRE);
	struct timespec ts = { .tv_sec = (time_t)(until / 1000000000u), .tv_nsec = (long)(until % 1000000000u) };

	pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
	__atomic_add_fetch(&v->throttled_ns, kmig_now_ns() - t0, __ATOMIC_RELAXED);
}

/* Park outside KVM_RUN while a pause is requested or the vCPU is
 * throttled; false = quit. */
static bool wait_runnable(struct kvm_vm *vm, struct kvm_vcpu *v)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->pause_req || vm->quit_req || throttled(v, kmig_now_ns())) {
		vm->nr_outside++;
		pthread_cond_broadcast(&vm->cond);
		while (!vm->quit_req) {
			if (vm->pause_req)
				pthread_cond_wait(&vm->cond, &vm->lock);
			else if (throttled(v, kmig_now_ns()))
				throttle_wait(vm, v);
			else
				break;
		}
		vm->nr_outside--;
	}
	bool quit = vm->quit_req;
	/* cleared under the lock: a pauser sets it under the lock too */
	v->run->immediate_exit = 0;
	pthread_mutex_unlock(&vm->lock);
	return !quit;
}

static void *vcpu_main(void *arg)
{
	struct kvm_vcpu *v = arg;
	struct kvm_vm *vm = v->vm;

	for (;;) {
		if (!wait_runnable(vm, v))
			break;
		int r = ioctl(v->fd, KVM_RUN, 0);

		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char what[96];
			snprintf(what, sizeof(what), "KVM_RUN failed: %s", strerror(errno));
			fatal_exit(v, what);
			break;
		}
		if (!handle_exit(v))
			break;
	}
	pthread_mutex_lock(&vm->lock);
	vm->nr_outside++;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

static int set_boot_state(struct kvm_vcpu *v)
{
	if (!v->has_boot_state)
		return 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &v->boot_sregs) < 0)
		return -errno;
	if (ioctl(v->fd, KVM_SET_REGS, &v->boot_regs) < 0)
		return -errno;
	v->has_boot_state = false;
	return 0;
}

int kvm_vm_start(struct kvm_vm *vm)
{
	struct sigaction sa = { .sa_handler = kick_handler };

	if (vm->started)
		return -EALREADY;
	/* no SA_RESTART: the kick must make KVM_RUN return EINTR */
	sigaction(SIGUSR1, &sa, NULL);
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		int r = set_boot_state(&vm->vcpus[i]);

		if (r)
			return r;
	}
	vm->started = true;
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];
		int r = pthread_create(&v->thread, NULL, vcpu_main, v);

		if (r) {
			kvm_vm_shutdown(vm);
			return -r;
		}
		v->thread_started = true;
		vm->nr_threads++;
	}
	return 0;
}

void kvm_vm_pause(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->pause_req = true;
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];

		if (!v->thread_started)
			continue;
		/* immediate_exit covers a thread between its check and
		 * KVM_RUN; the signal covers one already inside */
		v->run->immediate_exit = 1;
		pthread_kill(v->thread, SIGUSR1);
	}
	while (vm->nr_outside < vm->nr_threads)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
}

void kvm_vcpu_throttle(struct kvm_vm *vm, unsigned int idx, uint64_t until_ns)
{
	if (idx >= vm->nr_vcpus)
		return;
	struct kvm_vcpu *v = &vm->vcpus[idx];

	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&v->throttle_until_ns, until_ns, __ATOMIC_RELEASE);
	/* out of KVM_RUN now (as a pause does); a lifted or shortened
	 * throttle wakes the sleeper */
	if (until_ns > kmig_now_ns() && v->thread_started && !vm->pause_req) {
		v->run->immediate_exit = 1;
		pthread_kill(v->thread, SIGUSR1);
	}
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

uint64_t kvm_vcpu_throttled_ns(struct kvm_vm *vm, unsigned int idx)
{
	return idx < vm->nr_vcpus ? __atomic_load_n(&vm->vcpus[idx].throttled_ns, __ATOMIC_RELAXED) : 0;
}

void kvm_vm_resume(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->pause_req = false;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

bool kvm_vm_paused(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	bool p = vm->pause_req || !vm->started;
	pthread_mutex_unlock(&vm->lock);
	return p;
}

void kvm_vm_shutdown(struct kvm_vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->quit_req = true;
	pthread_cond_broadcast(&vm->cond);
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];

		if (v->thread_started) {
			v->run->immediate_exit = 1;
			pthread_kill(v->thread, SIGUSR1);
		}
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned int i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu *v = &vm->vcpus[i];

		if (v->thread_started) {
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
}

enum kvm_stop_reason kvm_vm_stop_reason(struct kvm_vm *vm, int *code)
{
	pthread_mutex_lock(&vm->lock);
	enum kvm_stop_reason r = vm->stop_reason;

	if (code)
		*code = vm->stop_code;
	pthread_mutex_unlock(&vm->lock);
	return r;
}

void kvm_vcpu_dump(struct kvm_vm *vm, unsigned int idx, char *buf, size_t len)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	int fd = vm->vcpus[idx].fd;

	if (ioctl(fd, KVM_GET_REGS, &r) < 0 || ioctl(fd, KVM_GET_SREGS, &s) < 0) {
		snprintf(buf, len, "  (registers unavailable: %s)", strerror(errno));
		return;
	}
	snprintf(buf, len,
		 "  rip=%016llx rflags=%08llx rsp=%016llx rbp=%016llx\n"
		 "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
		 "  rsi=%016llx rdi=%016llx\n"
		 "  cs=%04x(base %llx) ds=%04x ss=%04x cr0=%llx cr3=%llx cr4=%llx efer=%llx",
		 r.rip, r.rflags, r.rsp, r.rbp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
		 s.cs.selector, s.cs.base, s.ds.selector, s.ss.selector, s.cr0, s.cr3, s.cr4, s.efer);
}
