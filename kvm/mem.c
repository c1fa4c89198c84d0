/* Guest RAM: a memfd, its one mapping, its regions in guest physical space,
 * the published dirty bitmap, and the destination's writes into it. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kvm/kvm-int.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* process_vm_writev takes at most this many iovecs a side (UIO_MAXIOV) */
#define WRITE_MAX_RUNS 1024u

struct kvm_mem {
	int fd;
	uint8_t *base;
	void *reserved;		/* base with its guard pages around */
	size_t reserved_len;
	uint64_t size;
	bool prealloc;
	struct kvm_mem_region regions[KVM_MEM_MAX_REGIONS];
	unsigned int nr_regions;
	struct dirty_bitmap dirty;
	pid_t pid;
	_Atomic bool kernel_refused;	/* kvm_mem_write goes through the mapping */
};

uint64_t kvm_mem_size(const struct kvm_mem *m) { return m->size; }
uint64_t kvm_mem_nr_pages(const struct kvm_mem *m) { return m->size / KVM_PAGE_SIZE; }
uint8_t *kvm_mem_base(const struct kvm_mem *m) { return m->base; }
int kvm_mem_fd(const struct kvm_mem *m) { return m->fd; }
bool kvm_mem_prealloc(const struct kvm_mem *m) { return m->prealloc; }
unsigned int kvm_mem_nr_regions(const struct kvm_mem *m) { return m->nr_regions; }
struct dirty_bitmap *kvm_mem_dirty(struct kvm_mem *m) { return &m->dirty; }

const struct kvm_mem_region *kvm_mem_region(const struct kvm_mem *m, unsigned int i)
{
	return i < m->nr_regions ? &m->regions[i] : NULL;
}

int kvm_mem_gpa_to_offset(const struct kvm_mem *m, uint64_t gpa, uint64_t *offset)
{
	for (unsigned int i = 0; i < m->nr_regions; i++) {
		const struct kvm_mem_region *r = &m->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size) {
			*offset = r->offset + (gpa - r->gpa);
			return 0;
		}
	}
	return -ERANGE;
}

uint64_t kvm_mem_offset_to_gpa(const struct kvm_mem *m, uint64_t offset)
{
	for (unsigned int i = 0; i < m->nr_regions; i++) {
		const struct kvm_mem_region *r = &m->regions[i];

		if (offset >= r->offset && offset - r->offset < r->size)
			return r->gpa + (offset - r->offset);
	}
	return UINT64_MAX;
}

void *kvm_mem_gpa_ptr(const struct kvm_mem *m, uint64_t gpa, uint64_t len)
{
	uint64_t off;

	if (kvm_mem_gpa_to_offset(m, gpa, &off))
		return NULL;
	/* the whole range must sit in the same region */
	if (len && kvm_mem_offset_to_gpa(m, off + len - 1) != gpa + len - 1)
		return NULL;
	if (len > m->size || off > m->size - len)
		return NULL;
	return m->base + off;
}

/* MemAvailable of /proc/meminfo, in bytes; 0 when it cannot be read */
static uint64_t host_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long kib = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
			break;
	fclose(f);
	return (uint64_t)kib << 10;
}

/* Fault all of RAM in now, so that neither the guest nor an incoming
 * migration pays for first touches later.  Checked against MemAvailable
 * first: populating more than the host has would end in the OOM killer,
 * not in an error message. */
static int prealloc_ram(struct kvm_mem *m, char *err, size_t errlen)
{
	uint64_t avail = host_mem_available();

	if (avail && m->size > avail) {
		kmig_set_err(err, errlen, "cannot preallocate %llu MiB of guest RAM: the host has %llu MiB available",
			     (unsigned long long)(m->size >> 20), (unsigned long long)(avail >> 20));
		return -ENOMEM;
	}
	if (!madvise(m->base, m->size, MADV_POPULATE_WRITE))
		return 0;
	if (errno != EINVAL) {
		int e = errno;

		kmig_set_err(err, errlen, "cannot preallocate %llu MiB of guest RAM: %s",
			     (unsigned long long)(m->size >> 20), strerror(e));
		return -e;
	}
	/* kernels before 5.14: touch each page (RAM is all zero here) */
	for (uint64_t off = 0; off < m->size; off += KVM_PAGE_SIZE)
		((volatile uint8_t *)m->base)[off] = 0;
	return 0;
}

static void lay_out(struct kvm_mem *m)
{
	uint64_t low = m->size < KVM_LOW_RAM_END ? m->size : KVM_LOW_RAM_END;

	m->regions[0] = (struct kvm_mem_region){ .gpa = 0, .size = low, .offset = 0 };
	m->nr_regions = 1;
	if (m->size > low) {
		m->regions[1] = (struct kvm_mem_region){ .gpa = KVM_HIGH_RAM_START, .size = m->size - low,
							 .offset = low };
		m->nr_regions = 2;
	}
}

#define RAM_ALIGN (2ul << 20)
#define RAM_GUARD_MIN 4096ul
/* room for the alignment and at least RAM_GUARD_MIN on each side */
#define RAM_GUARD_RESERVE (2 * RAM_ALIGN)

static int map_ram(struct kvm_mem *m, char *err, size_t errlen)
{
	m->fd = memfd_create("kmig-guest-ram", MFD_CLOEXEC);
	if (m->fd < 0) {
		int e = errno;

		kmig_set_err(err, errlen, "memfd_create: %s", strerror(e));
		return -e;
	}
	if (ftruncate(m->fd, (off_t)m->size) < 0) {
		int e = errno;

		kmig_set_err(err, errlen, "cannot size guest RAM to %llu MiB: %s", (unsigned long long)(m->size >> 20),
			     strerror(e));
		return -e;
	}
	/* Guard pages on both sides, so that a write past either end faults
	 * instead of landing in whatever is mapped next; the RAM itself starts
	 * on a 2 MiB boundary, as THP and KVM's large pages want. */
	m->reserved_len = m->size + RAM_GUARD_RESERVE;
	m->reserved = mmap(NULL, m->reserved_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m->reserved == MAP_FAILED) {
		int e = errno;

		m->reserved = NULL;
		kmig_set_err(err, errlen, "cannot reserve %llu MiB of address space for guest RAM: %s",
			     (unsigned long long)(m->size >> 20), strerror(e));
		return -e;
	}
	uintptr_t at = ((uintptr_t)m->reserved + RAM_GUARD_MIN + RAM_ALIGN - 1) & ~(uintptr_t)(RAM_ALIGN - 1);
	void *p = mmap((void *)at, m->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, m->fd, 0);

	if (p == MAP_FAILED) {
		int e = errno;

		kmig_set_err(err, errlen, "cannot map %llu MiB of guest RAM: %s", (unsigned long long)(m->size >> 20),
			     strerror(e));
		return -e;
	}
	m->base = p;
	madvise(m->base, m->size, MADV_MERGEABLE);
	return 0;
}

int kvm_mem_check_size(uint64_t bytes, char *err, size_t errlen)
{
	/* 2 MiB multiples keep every slot a whole number of the 64-page
	 * words KVM_CLEAR_DIRTY_LOG needs */
	if (bytes < (16ull << 20) || bytes % (2ull << 20)) {
		kmig_set_err(err, errlen, "guest memory must be at least 16 MiB and a multiple of 2 MiB");
		return -EINVAL;
	}
	return 0;
}

int kvm_mem_create(uint64_t bytes, bool prealloc, struct kvm_mem **out, char *err, size_t errlen)
{
	int r = kvm_mem_check_size(bytes, err, errlen);

	if (r)
		return r;
	struct kvm_mem *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->fd = -1;
	m->size = bytes;
	m->prealloc = prealloc;
	m->pid = getpid();
	lay_out(m);
	r = map_ram(m, err, errlen);

	if (!r && dirty_bitmap_init(&m->dirty, kvm_mem_nr_pages(m))) {
		kmig_set_err(err, errlen, "out of memory for the dirty bitmap");
		r = -ENOMEM;
	}
	if (!r && prealloc)
		r = prealloc_ram(m, err, errlen);
	if (r) {
		kvm_mem_destroy(m);
		return r;
	}
	*out = m;
	return 0;
}

void kvm_mem_destroy(struct kvm_mem *m)
{
	if (!m)
		return;
	if (m->dirty.words)
		dirty_bitmap_fini(&m->dirty);
	if (m->reserved)
		munmap(m->reserved, m->reserved_len);
	if (m->fd >= 0)
		close(m->fd);
	free(m);
}

void kvm_mem_for_each_populated(const struct kvm_mem *m, kvm_mem_range_fn fn, void *ctx)
{
	off_t end = (off_t)m->size, pos = 0;

	while (pos < end) {
		off_t data = lseek(m->fd, pos, SEEK_DATA);

		if (data < 0)
			break;	/* ENXIO: only holes from here on */
		off_t hole = lseek(m->fd, data, SEEK_HOLE);

		if (hole < 0 || hole > end)
			hole = end;
		/* round outwards to whole pages */
		fn(ctx, (uint64_t)data / KVM_PAGE_SIZE, ((uint64_t)hole + KVM_PAGE_SIZE - 1) / KVM_PAGE_SIZE);
		pos = hole;
	}
}

static void mark_range(void *dirty, uint64_t first, uint64_t end)
{
	dirty_bitmap_set_range(dirty, first, end);
}

void kvm_mem_mark_populated(struct kvm_mem *m)
{
	kvm_mem_for_each_populated(m, mark_range, &m->dirty);
}

/* ---------------------------------------------------- incoming pages */

static int check_runs(const struct kvm_mem *m, const struct kvm_mem_run *runs, unsigned int nruns)
{
	for (unsigned int i = 0; i < nruns; i++)
		if (runs[i].len > m->size || runs[i].offset > m->size - runs[i].len)
			return -ERANGE;
	return 0;
}

static void write_mapping(struct kvm_mem *m, const uint8_t *buf, const struct kvm_mem_run *runs,
			  unsigned int nruns)
{
	for (unsigned int i = 0; i < nruns; i++) {
		memcpy(m->base + runs[i].offset, buf, runs[i].len);
		buf += runs[i].len;
	}
}

/* One process_vm_writev per WRITE_MAX_RUNS runs; the kernel may stop
 * short (a fault it cannot serve), so the rest is resumed from where it
 * stopped.  Returns 0, or -errno of a refusal before any byte moved. */
static int write_kernel(struct kvm_mem *m, const uint8_t *buf, const struct kvm_mem_run *runs,
			unsigned int nruns)
{
	struct iovec remote[WRITE_MAX_RUNS];

	while (nruns) {
		unsigned int n = nruns < WRITE_MAX_RUNS ? nruns : WRITE_MAX_RUNS;
		size_t len = 0;

		for (unsigned int i = 0; i < n; i++) {
			remote[i] = (struct iovec){ m->base + runs[i].offset, runs[i].len };
			len += runs[i].len;
		}
		struct iovec local = { (void *)buf, len };
		ssize_t w = process_vm_writev(m->pid, &local, 1, remote, n, 0);

		if (w < 0)
			return -errno;
		if ((size_t)w < len) {
			/* finish this batch through the mapping: a short write
			 * means the kernel met a page it would not fault in,
			 * and the mapping reports that the usual way */
			size_t done = (size_t)w;
			unsigned int i = 0;

			while (done >= runs[i].len)
				done -= runs[i++].len;
			memcpy(m->base + runs[i].offset + done, buf + (size_t)w, runs[i].len - done);
			write_mapping(m, buf + (size_t)w + (runs[i].len - done), runs + i + 1, n - i - 1);
		}
		buf += len;
		runs += n;
		nruns -= n;
	}
	return 0;
}

int kvm_mem_write(struct kvm_mem *m, const void *buf, const struct kvm_mem_run *runs, unsigned int nruns)
{
	int r = check_runs(m, runs, nruns);

	if (r)
		return r;
	if (!atomic_load_explicit(&m->kernel_refused, memory_order_relaxed)) {
		r = write_kernel(m, buf, runs, nruns);
		if (!r)
			return 0;
		/* ENOSYS (no CONFIG_CROSS_MEMORY_ATTACH), EPERM (a seccomp
		 * or LSM policy): the mapping is slower here, not wrong.
		 * Nothing was written, so the whole call goes that way. */
		atomic_store(&m->kernel_refused, true);
	}
	write_mapping(m, buf, runs, nruns);
	return 0;
}

int kvm_mem_zero(struct kvm_mem *m, uint64_t offset, uint64_t len)
{
	static const uint8_t zero[KVM_PAGE_SIZE];

	if (len > m->size || offset > m->size - len)
		return -ERANGE;
	if (!m->prealloc)
		return fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len)
			       ? -errno : 0;
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < sizeof(zero) ? (size_t)(len - done) : sizeof(zero);
		ssize_t w = pwrite(m->fd, zero, n, (off_t)(offset + done));

		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		done += (uint64_t)w;
	}
	return 0;
}
