/* builtin.S - embed the built-in guest ELFs into kmig (host x86-64 code).
 *
 * Each guest NAME.elf from the guests' build directory (found through the
 * assembler's -I path, see meson.build) becomes a read-only blob between
 * kvm_guest_elf_NAME and kvm_guest_elf_NAME_end.  builtin.c turns these into
 * the kvm_builtin_guest table.  No preprocessor: plain GNU as. */

	.macro	GUEST_BLOB name
	.section .rodata.kvm_guest_\name, "a", @progbits
	.balign	64
	.globl	kvm_guest_elf_\name
	.hidden	kvm_guest_elf_\name
	.type	kvm_guest_elf_\name, @object
kvm_guest_elf_\name:
	.incbin	"\name\().elf"
	.globl	kvm_guest_elf_\name\()_end
	.hidden	kvm_guest_elf_\name\()_end
kvm_guest_elf_\name\()_end:
	.size	kvm_guest_elf_\name, kvm_guest_elf_\name\()_end - kvm_guest_elf_\name
	.endm

	GUEST_BLOB idle
	GUEST_BLOB dirty
	GUEST_BLOB verify

	.section .note.GNU-stack, "", @progbits
