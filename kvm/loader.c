/* Guest loader: multiboot v1 (ELF, or the a.out kludge) and flat binaries,
 * started the way QEMU's -kernel starts a multiboot kernel: 32-bit protected
 * mode, flat segments, paging off, EAX=0x2BADB002, EBX=multiboot info. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kvm/kvm-int.h"

#define MB_HEADER_MAGIC 0x1BADB002u
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_SEARCH 8192u
#define MB_AOUT_KLUDGE (1u << 16)
#define MB_INFO_MEM (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)
#define MB_INFO_MMAP (1u << 6)

/* Low memory the loader owns; guests must not load over it. */
#define MBI_ADDR 0x9000u
#define MBI_MMAP_ADDR 0x9080u
#define MBI_CMDLINE_ADDR 0x9200u
#define MBI_END 0xa000u

struct mb_header {
	uint32_t magic, flags, checksum;
	uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
};

struct mb_mmap_entry {
	uint32_t size;
	uint64_t base, len;
	uint32_t type;
} __attribute__((packed));

static bool overlaps_mbi(uint64_t addr, uint64_t len)
{
	return addr < MBI_END && addr + len > MBI_ADDR;
}

/* Copy filesz bytes and zero the rest up to memsz, all inside guest RAM. */
static int load_segment(struct kvm_vm *vm, uint64_t paddr, const uint8_t *src, uint64_t filesz,
			uint64_t memsz, char *err, size_t errlen)
{
	uint8_t *dst = kvm_vm_gpa_ptr(vm, paddr, memsz);

	if (!dst || memsz < filesz) {
		kmig_set_err(err, errlen, "segment at 0x%llx (%llu bytes) does not fit in guest RAM",
			     (unsigned long long)paddr, (unsigned long long)memsz);
		return -ERANGE;
	}
	if (overlaps_mbi(paddr, memsz)) {
		kmig_set_err(err, errlen, "segment at 0x%llx overlaps the multiboot info area "
			     "0x%x-0x%x", (unsigned long long)paddr, MBI_ADDR, MBI_END);
		return -ERANGE;
	}
	memcpy(dst, src, filesz);
	memset(dst + filesz, 0, memsz - filesz);
	return 0;
}

static int load_elf32(struct kvm_vm *vm, const uint8_t *img, size_t size, uint32_t *entry,
		      char *err, size_t errlen)
{
	const Elf32_Ehdr *eh = (const Elf32_Ehdr *)img;

	if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG)) {
		kmig_set_err(err, errlen, "not an ELF file and no a.out kludge in the multiboot header");
		return -ENOEXEC;
	}
	if (eh->e_ident[EI_CLASS] != ELFCLASS32 || eh->e_machine != EM_386) {
		kmig_set_err(err, errlen, "multiboot ELF must be 32-bit i386 (as for QEMU's -kernel)");
		return -ENOEXEC;
	}
	if (eh->e_phentsize != sizeof(Elf32_Phdr) || eh->e_phnum == 0 ||
	    eh->e_phoff > size || (size - eh->e_phoff) / sizeof(Elf32_Phdr) < eh->e_phnum) {
		kmig_set_err(err, errlen, "ELF program headers are missing or truncated");
		return -ENOEXEC;
	}
	unsigned int loaded = 0;

	for (unsigned int i = 0; i < eh->e_phnum; i++) {
		const Elf32_Phdr *ph = (const Elf32_Phdr *)(img + eh->e_phoff) + i;

		if (ph->p_type != PT_LOAD || !ph->p_memsz)
			continue;
		if (ph->p_offset > size || size - ph->p_offset < ph->p_filesz) {
			kmig_set_err(err, errlen, "ELF segment %u lies outside the file", i);
			return -ENOEXEC;
		}
		int r = load_segment(vm, ph->p_paddr, img + ph->p_offset, ph->p_filesz, ph->p_memsz,
				     err, errlen);
		if (r)
			return r;
		loaded++;
	}
	if (!loaded) {
		kmig_set_err(err, errlen, "ELF file has nothing to load");
		return -ENOEXEC;
	}
	*entry = eh->e_entry;
	return 0;
}

/* Multiboot header flag 16: load the file image at the header's addresses. */
static int load_aout(struct kvm_vm *vm, const uint8_t *img, size_t size, size_t hdr_off,
		     const struct mb_header *h, uint32_t *entry, char *err, size_t errlen)
{
	if (h->header_addr < h->load_addr || h->header_addr - h->load_addr > hdr_off) {
		kmig_set_err(err, errlen, "multiboot a.out header addresses are inconsistent");
		return -ENOEXEC;
	}
	size_t file_start = hdr_off - (h->header_addr - h->load_addr);
	uint64_t filesz = h->load_end_addr ? (uint64_t)h->load_end_addr - h->load_addr
					   : size - file_start;
	uint64_t memsz = h->bss_end_addr ? (uint64_t)h->bss_end_addr - h->load_addr : filesz;

	if (h->load_end_addr && h->load_end_addr < h->load_addr)
		filesz = UINT64_MAX;
	if (filesz > size - file_start || memsz < filesz) {
		kmig_set_err(err, errlen, "multiboot a.out load range exceeds the file");
		return -ENOEXEC;
	}
	*entry = h->entry_addr;
	return load_segment(vm, h->load_addr, img + file_start, filesz, memsz, err, errlen);
}

static int find_mb_header(const uint8_t *img, size_t size, size_t *off, struct mb_header *h)
{
	for (size_t o = 0; o + 12 <= size && o < MB_SEARCH; o += 4) {
		memcpy(h, img + o, size - o < sizeof(*h) ? 12 : sizeof(*h));
		if (h->magic == MB_HEADER_MAGIC && h->magic + h->flags + h->checksum == 0) {
			if ((h->flags & MB_AOUT_KLUDGE) && size - o < sizeof(*h))
				return -ENOEXEC;
			*off = o;
			return 0;
		}
	}
	return -ENOEXEC;
}

static void add_mmap(struct mb_mmap_entry *m, unsigned int *n, uint64_t base, uint64_t len, uint32_t type)
{
	m[*n] = (struct mb_mmap_entry){ .size = 20, .base = base, .len = len, .type = type };
	(*n)++;
}

static int write_mbi(struct kvm_vm *vm, const char *cmdline, char *err, size_t errlen)
{
	uint64_t low_end = vm->slots[0].size;
	size_t clen = cmdline ? strlen(cmdline) : 0;

	if (clen + 1 > MBI_END - MBI_CMDLINE_ADDR) {
		kmig_set_err(err, errlen, "guest command line too long (max %u bytes)",
			     MBI_END - MBI_CMDLINE_ADDR - 1);
		return -E2BIG;
	}
	struct mb_mmap_entry *mm = kvm_vm_gpa_ptr(vm, MBI_MMAP_ADDR, 8 * sizeof(*mm));
	unsigned int n = 0;

	add_mmap(mm, &n, 0, 0x9fc00, 1);
	add_mmap(mm, &n, 0x9fc00, 0x400, 2);
	add_mmap(mm, &n, 0xf0000, 0x10000, 2);
	add_mmap(mm, &n, 0x100000, low_end - 0x100000, 1);
	if (vm->nr_slots > 1)
		add_mmap(mm, &n, vm->slots[1].gpa, vm->slots[1].size, 1);

	uint32_t *mbi = kvm_vm_gpa_ptr(vm, MBI_ADDR, 88);
	memset(mbi, 0, 88);
	mbi[0] = MB_INFO_MEM | MB_INFO_CMDLINE | MB_INFO_MMAP;
	mbi[1] = 639;					/* mem_lower, KiB */
	mbi[2] = (uint32_t)((low_end - 0x100000) >> 10);	/* mem_upper, KiB above 1 MiB */
	mbi[4] = MBI_CMDLINE_ADDR;
	mbi[11] = n * (uint32_t)sizeof(*mm);		/* mmap_length */
	mbi[12] = MBI_MMAP_ADDR;			/* mmap_addr */
	char *cl = kvm_vm_gpa_ptr(vm, MBI_CMDLINE_ADDR, clen + 1);
	memcpy(cl, cmdline ? cmdline : "", clen + 1);
	return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	*s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
				   .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
}

/* The BSP's registers at entry; applied when the vCPUs start. */
static int set_entry_state(struct kvm_vm *vm, uint32_t entry)
{
	struct kvm_vcpu *v = &vm->vcpus[0];
	struct kvm_sregs *s = &v->boot_sregs;

	if (ioctl(v->fd, KVM_GET_SREGS, s) < 0)
		return -errno;
	flat_segment(&s->cs, 0x10, 0xb);
	flat_segment(&s->ds, 0x18, 0x3);
	s->es = s->fs = s->gs = s->ss = s->ds;
	s->cr0 = 0x11;		/* PE, ET; paging off */
	s->cr4 = 0;
	s->efer = 0;
	v->boot_regs = (struct kvm_regs){ .rip = entry, .rflags = 0x2, .rax = MB_BOOT_MAGIC,
					  .rbx = MBI_ADDR };
	v->has_boot_state = true;
	return 0;
}

int kvm_load_multiboot(struct kvm_vm *vm, const void *image, size_t size, const char *cmdline,
		       char *err, size_t errlen)
{
	const uint8_t *img = image;
	struct mb_header h;
	size_t off;
	uint32_t entry;

	if (find_mb_header(img, size, &off, &h)) {
		kmig_set_err(err, errlen, "no multiboot header in the first %u bytes "
			     "(kmig boots multiboot v1 kernels; use --flat for raw binaries)", MB_SEARCH);
		return -ENOEXEC;
	}
	int r = (h.flags & MB_AOUT_KLUDGE) ? load_aout(vm, img, size, off, &h, &entry, err, errlen)
					   : load_elf32(vm, img, size, &entry, err, errlen);
	if (!r)
		r = write_mbi(vm, cmdline, err, errlen);
	if (!r && !kvm_vm_gpa_ptr(vm, entry, 1)) {
		kmig_set_err(err, errlen, "entry point 0x%x is outside guest RAM", entry);
		r = -ENOEXEC;
	}
	if (!r)
		r = set_entry_state(vm, entry);
	return r;
}

int kvm_load_flat(struct kvm_vm *vm, const void *image, size_t size, uint64_t addr,
		  char *err, size_t errlen)
{
	if (!size) {
		kmig_set_err(err, errlen, "flat binary is empty");
		return -ENOEXEC;
	}
	if (addr > 0xffffffffull - size) {
		kmig_set_err(err, errlen, "flat binary must load below 4 GiB");
		return -ERANGE;
	}
	int r = load_segment(vm, addr, image, size, size, err, errlen);

	if (!r)
		r = write_mbi(vm, "", err, errlen);
	if (!r)
		r = set_entry_state(vm, (uint32_t)addr);
	return r;
}
