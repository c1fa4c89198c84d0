/* The table of built-in guests.  The ELF bytes come from builtin.S; their
 * sizes are only known at link time, so they are filled in by a constructor
 * before main() (the table is never written after that). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
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
		.params_help = "fill=MiB (16) scatter=0|1 (0) cpus=N (all) lm=0|1 (1) dots=ms (0, needs lm=0)",
		.elf = kvm_guest_elf_idle,
	},
	{
		.name = "dirty",
		.summary = "rewrites one dword in every page of a working set, paced per CPU",
		.params_help = "ws=MiB (64) rate=MiB/s per cpu (0 = max) fill=MiB (0) report=ms (1000) cpus=N (all) "
			       "compute=K (0) lm=0|1 (1)",
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

/* Is key one of g's parameters?  params_help is the one list of them: a
 * parameter is a word of lower-case letters followed by '='. */
static bool guest_has_param(const struct kvm_builtin_guest *g, const char *key, size_t keylen)
{
	for (const char *p = g->params_help; *p;) {
		size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz");

		if (n && p[n] == '=' && n == keylen && !memcmp(p, key, n))
			return true;
		p += strcspn(p, " ");
		p += strspn(p, " ");
	}
	return false;
}

int kvm_builtin_guest_check_params(const struct kvm_builtin_guest *g, const char *cmdline, char *err,
				   size_t errlen)
{
	for (const char *p = cmdline ? cmdline : ""; *p;) {
		size_t len = strcspn(p, " ");
		const char *eq = memchr(p, '=', len);
		size_t keylen = eq ? (size_t)(eq - p) : len;
		size_t vlen = eq ? len - keylen - 1 : 0;

		if (!guest_has_param(g, p, keylen)) {
			snprintf(err, errlen, "guest '%s' has no parameter '%.*s' (it has: %s)", g->name,
				 (int)keylen, p, g->params_help);
			return -EINVAL;
		}
		if (!vlen || vlen > 9 || strspn(eq + 1, "0123456789") < vlen) {
			snprintf(err, errlen, "guest '%s': parameter '%.*s' needs a number of at most 9 digits",
				 g->name, (int)len, p);
			return -EINVAL;
		}
		p += len;
		p += strspn(p, " ");
	}
	return 0;
}
