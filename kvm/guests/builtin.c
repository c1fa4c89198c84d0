/* The table of built-in guests.  The ELF bytes come from builtin.S; their
 * sizes are only known at link time, so they are filled in by a constructor
 * before main() (the table is never written after that). */
#include <string.h>

#include "builtin.h"

#define GUEST_BLOB(n)                                                                   \
	extern const unsigned char kvm_guest_elf_##n[] __attribute__((visibility("hidden")));     \
	extern const unsigned char kvm_guest_elf_##n##_end[] __attribute__((visibility("hidden")))

GUEST_BLOB(idle);
GUEST_BLOB(dirty);
GUEST_BLOB(verify);

static struct kvm_builtin_guest guests[] = {
	{
		.name = "idle",
		.summary = "fills memory with a known pattern, then halts all CPUs",
		.params_help = "fill=MiB (16) scatter=0|1 (0) cpus=N (all) lm=0|1 (1)",
		.elf = kvm_guest_elf_idle,
	},
	{
		.name = "dirty",
		.summary = "rewrites one dword in every page of a working set, paced per CPU",
		.params_help = "ws=MiB (64) rate=MiB/s per cpu (0 = max) fill=MiB (0) report=ms (1000) cpus=N (all) "
			       "lm=0|1 (1)",
		.elf = kvm_guest_elf_dirty,
	},
	{
		.name = "verify",
		.summary = "self-checking memory and register workload; prints FAIL and exits 3 on corruption",
		.params_help = "ws=MiB (64) rate=MiB/s per cpu (0 = max) report=ms (1000) "
			       "passes=N (0 = forever) cpus=N (all) lm=0|1 (1)",
		.elf = kvm_guest_elf_verify,
	},
};

static const unsigned char *const guest_ends[] = {
	kvm_guest_elf_idle_end,
	kvm_guest_elf_dirty_end,
	kvm_guest_elf_verify_end,
};

#define NR_GUESTS (sizeof(guests) / sizeof(guests[0]))

_Static_assert(sizeof(guest_ends) / sizeof(guest_ends[0]) == NR_GUESTS,
	       "one end marker per built-in guest");

__attribute__((constructor)) static void builtin_guests_init(void)
{
	for (size_t i = 0; i < NR_GUESTS; i++)
		guests[i].elf_size = (size_t)(guest_ends[i] - guests[i].elf);
}

const struct kvm_builtin_guest *kvm_builtin_guests(size_t *count)
{
	if (count)
		*count = NR_GUESTS;
	return guests;
}

const struct kvm_builtin_guest *kvm_builtin_guest_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < NR_GUESTS; i++)
		if (!strcmp(guests[i].name, name))
			return &guests[i];
	return NULL;
}
