/* Built-in test guests, embedded into kmig at build time (kvm/guests/).
 * Each is a 32-bit multiboot v1 ELF; the guest <-> VMM contract (ports,
 * parameters, memory map, output lines, exit codes) is in docs/guests.md. */
#ifndef KMIG_KVM_GUESTS_BUILTIN_H
#define KMIG_KVM_GUESTS_BUILTIN_H

#include <stddef.h>

struct kvm_builtin_guest {
	const char *name;		/* "idle", "dirty", "verify" */
	const char *summary;		/* one line, for --help / listings */
	const char *params_help;	/* "key=value" parameters with defaults */
	const unsigned char *elf;	/* the multiboot ELF image */
	size_t elf_size;
};

/* The guest called name, or NULL if there is none. */
const struct kvm_builtin_guest *kvm_builtin_guest_find(const char *name);

/* Check a built-in guest's command line ("ws=64 rate=0"): every key one
 * of its parameters, every value a decimal number.  -EINVAL with the
 * reason in err: a guest would silently ignore a word it does not know. */
int kvm_builtin_guest_check_params(const struct kvm_builtin_guest *g, const char *cmdline, char *err,
				   size_t errlen);

/* All built-in guests; *count receives their number (count may be NULL). */
const struct kvm_builtin_guest *kvm_builtin_guests(size_t *count);

#endif
