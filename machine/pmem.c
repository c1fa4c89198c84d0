/* machine/pmem.c — QEMU's pmemsave: guest physical memory to a file.
 *
 * Guest RAM is one memfd mapped into one or more memslots (low RAM below
 * KVM_LOW_RAM_END, the rest from 4 GiB), so a guest physical range may
 * cross a gap that is not RAM.  The whole range is checked before the file
 * is created: a range with any byte outside RAM is refused and leaves no
 * file behind, unlike QEMU, which writes what unassigned memory reads as.
 *
 * The bytes are read from the memfd with pread(), not through the guest
 * mapping: a read fault on a shmem hole allocates a page, a pread() of one
 * returns zeros and allocates nothing.  So saving memory changes nothing a
 * migration, or a test of what a migration populated, can see.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "machine/machine-int.h"

/* bytes per pread/write: large enough to amortise the calls, small enough
 * not to matter next to the guest's RAM */
#define PMEM_CHUNK (1u << 20)
/* memslots are few (low RAM and high RAM today) */
#define PMEM_MAX_RANGES 8

struct pmem_range {
	uint64_t gpa, size, offset;
};

/* The RAM ranges in guest physical terms, from the offset <-> gpa helpers:
 * RAM offsets [0, ram_size) are linear within each slot, so each range is
 * the longest run of offsets whose gpa moves with the offset.  Returns how
 * many ranges were found. */
static unsigned int ram_ranges(const struct kvm_vm *vm, struct pmem_range *r, unsigned int max)
{
	uint64_t ram = kvm_vm_ram_size(vm), off = 0;
	unsigned int n = 0;

	while (off < ram && n < max) {
		uint64_t gpa = kvm_vm_offset_to_gpa(vm, off);
		/* lo: known linear with off; hi: known not to be (or the end) */
		uint64_t lo = off, hi = ram;

		if (gpa == UINT64_MAX)
			break;
		while (hi - lo > 1) {
			uint64_t mid = lo + (hi - lo) / 2;

			if (kvm_vm_offset_to_gpa(vm, mid) == gpa + (mid - off))
				lo = mid;
			else
				hi = mid;
		}
		r[n++] = (struct pmem_range){ gpa, hi - off, off };
		off = hi;
	}
	return n;
}

static void describe_ram(const struct pmem_range *r, unsigned int n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned int i = 0; i < n && used < len; i++) {
		int w = snprintf(buf + used, len - used, "%s0x%" PRIx64 "-0x%" PRIx64, i ? ", " : "",
				 r[i].gpa, r[i].gpa + r[i].size - 1);

		if (w < 0)
			break;
		used += (size_t)w;
	}
}

/* The range that holds gpa, or NULL. */
static const struct pmem_range *range_of(const struct kvm_vm *vm, const struct pmem_range *r,
					 unsigned int n, uint64_t gpa)
{
	uint64_t off;

	if (kvm_vm_gpa_to_offset(vm, gpa, &off))
		return NULL;
	for (unsigned int i = 0; i < n; i++)
		if (off >= r[i].offset && off - r[i].offset < r[i].size)
			return &r[i];
	return NULL;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t got = pread(fd, p, len, (off_t)off);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0)
			return -EIO;	/* the memfd is shorter than RAM: cannot be */
		p += got;
		len -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path, char *err,
		     size_t errlen)
{
	struct kvm_vm *vm = m->vm;
	struct pmem_range ranges[PMEM_MAX_RANGES];
	unsigned int nr = ram_ranges(vm, ranges, PMEM_MAX_RANGES);
	char ram_desc[256];
	uint64_t pos;
	uint8_t *buf;
	int fd, r = 0;

	describe_ram(ranges, nr, ram_desc, sizeof(ram_desc));
	if (size && gpa + size - 1 < gpa) {
		snprintf(err, errlen,
			 "Invalid guest physical range: 0x%" PRIx64 " + %" PRIu64 " bytes goes past 2^64",
			 gpa, size);
		return -EINVAL;
	}
	/* every byte must be RAM before the file is touched */
	for (pos = gpa; size && pos - gpa < size;) {
		const struct pmem_range *rg = range_of(vm, ranges, nr, pos);

		if (!rg) {
			snprintf(err, errlen,
				 "Invalid guest physical range 0x%" PRIx64 "-0x%" PRIx64
				 ": address 0x%" PRIx64 " is not guest RAM (RAM is %s)",
				 gpa, gpa + size - 1, pos, ram_desc);
			return -EINVAL;
		}
		pos = rg->gpa + rg->size;
		if (pos == 0)
			break;	/* a slot ending at 2^64: nothing beyond */
	}

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "Could not open '%s': %s", path, strerror(-r));
		return r;
	}
	buf = size ? malloc(size < PMEM_CHUNK ? size : PMEM_CHUNK) : NULL;
	if (size && !buf) {
		close(fd);
		snprintf(err, errlen, "pmemsave: out of memory for a %u byte buffer", PMEM_CHUNK);
		return -ENOMEM;
	}
	for (pos = gpa; !r && pos - gpa < size;) {
		const struct pmem_range *rg = range_of(vm, ranges, nr, pos);
		uint64_t in_range = rg->gpa + rg->size - pos;
		uint64_t left = size - (pos - gpa);
		size_t n = (size_t)(left < in_range ? left : in_range);

		if (n > PMEM_CHUNK)
			n = PMEM_CHUNK;
		r = read_all(kvm_vm_memfd(vm), buf, n, rg->offset + (pos - rg->gpa));
		if (r) {
			snprintf(err, errlen, "pmemsave: reading guest RAM at 0x%" PRIx64 ": %s", pos,
				 strerror(-r));
			break;
		}
		r = write_all(fd, buf, n);
		if (r)
			snprintf(err, errlen, "Could not write '%s': %s", path, strerror(-r));
		pos += n;
	}
	/* a full disk may only show at close (NFS, some FUSE file systems) */
	if (close(fd) < 0 && !r) {
		r = -errno;
		snprintf(err, errlen, "Could not write '%s': %s", path, strerror(-r));
	}
	free(buf);
	return r;
}
