# ---------------------------------------------------------------------------
# verify - the self-checking guest.
#
# Parameters: ws=MiB (64)  rate=MiB/s per CPU (0 = unlimited)
#             report=ms (1000)  passes=N (0 = forever)  cpus=N (all)
#             lm=0|1 (0: work in 32-bit ring 0, paging off; 1: 64-bit ring 3)
#
# Each CPU owns a slice of the working set at WS_BASE and sweeps it pass
# after pass.  For global page index i in pass p it first checks that all
# 1024 dwords hold E(p-1, i), then writes E(p, i) to all of them:
#
#     E(0, i) = 0                       (RAM the guest never wrote is zero)
#     E(p, i) = ((p * 0x9E3779B1) ^ (i * 0x85EBCA6B)) | 1     for p >= 1
#
# so a page that comes back stale, zeroed, from another page, or only partly
# written after a migration is caught on the next pass.  Invariant registers
# (EBP, XMM0, XMM1, the stack canary, DS/ES/SS/CS, CR0.PE/PG, EFLAGS.IF/DF;
# with lm=1 RBP and R15, XMM0/1, the canary, DS/ES = 0, the RPL of CS/SS,
# EFLAGS.DF and CR0.PE via SMSW) are checked along the way.  Any mismatch prints one FAIL line and exits 3.
# With passes=N every CPU stops after pass N, re-checks its slice read-only
# against E(N, i), and CPU 0 prints "verify: done ..." and exits 0.
# ---------------------------------------------------------------------------
        .include "common.inc"

        .set MIX_P,             0x9E3779B1
        .set MIX_I,             0x85EBCA6B
        .set INV_EBP,           0x5AFE0000      # EBP = INV_EBP + cpu
        .set INV_RBP_HIGH,      0x5AFE5AFE      # lm=1: RBP = INV_RBP_HIGH:INV_EBP + cpu, R15 = ~RBP
        .set XMM_CHECK_MASK,    63              # check XMM0/1 every 64 pages

        .section .rodata.str, "a"
guest_name:     .asciz "verify"
name_ws:        .asciz "ws"
reg_ebp:        .asciz "ebp"
reg_canary:     .asciz "stack-canary"
reg_ds:         .asciz "ds"
reg_es:         .asciz "es"
reg_ss:         .asciz "ss"
reg_cs:         .asciz "cs"
reg_cr0:        .asciz "cr0"
reg_eflags:     .asciz "eflags"
reg_rbp:        .asciz "rbp"
reg_r15:        .asciz "r15"

        .bss
ws_mib:         .long 0
ws_pages:       .long 0
rate_mib:       .long 0
report_ms:      .long 0
passes_limit:   .long 0

        .text
# ---------------------------------------------------------------------------
# BSP: parameters, banner, release the APs, then work as cpu 0.
# ---------------------------------------------------------------------------
        .globl  guest_main
guest_main:
        GET_PARAM ws, 64
        mov     %eax, ws_mib
        mov     $name_ws, %esi
        call    ws_check
        shl     $PAGES_PER_MIB_SHIFT, %eax
        mov     %eax, ws_pages
        GET_PARAM rate, 0
        mov     %eax, rate_mib
        GET_PARAM report, 1000
        mov     %eax, report_ms
        GET_PARAM passes, 0
        mov     %eax, passes_limit

        LINE_BEGIN
        PRINT   "start cpus="
        mov     ncpus, %eax
        call    put_dec
        PRINT   " ws="
        mov     ws_mib, %eax
        call    put_dec
        PRINT   " MiB rate="
        mov     rate_mib, %eax
        call    put_dec
        PRINT   " MiB/s"
        LINE_END

        movl    $verify_report, report_fn
        movl    $verify_report64, report_fn64
        mov     report_ms, %eax
        call    report_init
        jmp     work_begin

# mix body, expanded into the 32- and the 64-bit code:
# EAX = pass p, EDX = page index i -> EAX = E(p, i).  Clobbers EDX.
.macro MIX_BODY
        test    %eax, %eax
        jz      1f
        imul    $MIX_P, %eax, %eax
        imul    $MIX_I, %edx, %edx
        xor     %edx, %eax
        or      $1, %eax
1:      ret
.endm

# xmm_expected body: EAX = cpu, (E/R)DI -> 32 bytes: what XMM0 (first 16
# bytes) and XMM1 (next 16) must hold.  Clobbers EDX.
.macro XMM_EXPECTED_BODY di
        lea     0xC0DE0000(%eax), %edx
        mov     %edx, 0(\di)
        not     %edx
        mov     %edx, 4(\di)
        lea     0x13579B00(%eax), %edx
        mov     %edx, 8(\di)
        lea     0x2468AC00(%eax), %edx
        mov     %edx, 12(\di)
        lea     0xFEED0000(%eax), %edx
        mov     %edx, 16(\di)
        not     %edx
        mov     %edx, 20(\di)
        lea     0x0BADF000(%eax), %edx
        mov     %edx, 24(\di)
        lea     0x5EED5E00(%eax), %edx
        mov     %edx, 28(\di)
        ret
.endm

# ---------------------------------------------------------------------------
# guest_work32: EAX = cpu.  The check/write loop, 32-bit ring 0, paging off.
#   EBX = &percpu[cpu]   ESI = page index i   EDI = page address
#   EBP = INV_EBP + cpu (invariant)   XMM0/XMM1 = per-CPU patterns (invariant)
# ---------------------------------------------------------------------------
guest_work32:
        call    percpu_init
        mov     ws_pages, %ecx
        call    slice_init
        mov     rate_mib, %eax
        call    pace_init
        mov     PC_CPU(%ebx), %eax
        call    xmm_load
        lea     INV_EBP(%eax), %ebp
        movl    $1, PC_PASS(%ebx)

.Lpass:
        mov     PC_FIRST(%ebx), %esi
.Lpage:
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %edi
        add     $WS_BASE, %edi
        # Check: every dword must still hold E(p-1, i).
        mov     PC_PASS(%ebx), %eax
        dec     %eax
        mov     %esi, %edx
        call    mix
        mov     $PAGE_DWORDS, %ecx
        repe scasl
        jne     verify_fail_page
        # Write E(p, i), except in the read-only final sweep.
        cmpl    $0, PC_FINAL(%ebx)
        jne     1f
        sub     $PAGE_SIZE, %edi
        mov     PC_PASS(%ebx), %eax
        mov     %esi, %edx
        call    mix
        mov     $PAGE_DWORDS, %ecx
        rep stosl
        incl    PC_PAGES(%ebx)
1:      call    verify_regs
        call    work_poll
        call    pace_wait
        inc     %esi
        cmp     PC_END(%ebx), %esi
        jb      .Lpage

        # End of a sweep.
        cmpl    $0, PC_FINAL(%ebx)
        jne     .Lfinished
        mov     PC_PASS(%ebx), %eax
        mov     %eax, PC_DONE(%ebx)             # publish for the progress line
.ifdef VERIFY_SELFTEST
        call    verify_selftest
.endif
        incl    PC_PASS(%ebx)
        mov     passes_limit, %ecx
        test    %ecx, %ecx
        jz      .Lpass
        cmp     %ecx, %eax
        jb      .Lpass
        movl    $1, PC_FINAL(%ebx)              # last pass written: re-check only
        jmp     .Lpass

.Lfinished:
        lock incl cpus_finished
        cmpl    $0, PC_CPU(%ebx)
        jne     park
        call    wait_all_finished
        call    claim_stop
        jnz     park
        LINE_BEGIN
        PRINT   "done t="
        call    put_elapsed_s
        PRINT   "s passes="
        call    put_passes
        PRINT   " ok"
        LINE_END
        mov     $EXIT_OK, %al
        jmp     guest_exit

# mix: EAX = pass p, EDX = page index i -> EAX = E(p, i).  Clobbers EDX.
mix:
        MIX_BODY

# xmm_expected: EAX = cpu, EDI -> 32 bytes: what XMM0 (first 16 bytes) and
# XMM1 (next 16) must hold.  Integer code only (see "Instruction set" in
# docs/guests.md: no SSE arithmetic, the VMM may emulate this guest).
# Clobbers EDX.
xmm_expected:
        XMM_EXPECTED_BODY %edi

# xmm_load: EAX = cpu.  Load the invariant patterns into XMM0 and XMM1.
xmm_load:
        push    %edi
        push    %edx
        sub     $32, %esp
        mov     %esp, %edi
        call    xmm_expected
        movdqu  0(%esp), %xmm0
        movdqu  16(%esp), %xmm1
        add     $32, %esp
        pop     %edx
        pop     %edi
        ret

# verify_regs: EBX = percpu, ESI = page index.  Check the invariants; jumps
# to verify_fail_reg (ESI = name, EAX = expected, EDX = found) on mismatch.
verify_regs:
        push    %eax
        push    %edx
        push    %esi
        mov     PC_CPU(%ebx), %eax
        lea     INV_EBP(%eax), %eax
        mov     %ebp, %edx
        cmp     %eax, %edx
        mov     $reg_ebp, %esi
        jne     verify_fail_reg

        mov     PC_CPU(%ebx), %eax              # canary at the top of our stack
        lea     1(%eax), %edx
        shl     $STACK_SHIFT, %edx
        mov     stacks - 4(%edx), %edx
        add     $STACK_CANARY, %eax
        cmp     %eax, %edx
        mov     $reg_canary, %esi
        jne     verify_fail_reg

        mov     $DATA_SEL, %eax
        mov     %ds, %dx
        movzwl  %dx, %edx
        cmp     %eax, %edx
        mov     $reg_ds, %esi
        jne     verify_fail_reg
        mov     %es, %dx
        movzwl  %dx, %edx
        cmp     %eax, %edx
        mov     $reg_es, %esi
        jne     verify_fail_reg
        mov     %ss, %dx
        movzwl  %dx, %edx
        cmp     %eax, %edx
        mov     $reg_ss, %esi
        jne     verify_fail_reg
        mov     $CODE_SEL, %eax
        mov     %cs, %dx
        movzwl  %dx, %edx
        cmp     %eax, %edx
        mov     $reg_cs, %esi
        jne     verify_fail_reg

        mov     %cr0, %edx                      # protected mode, paging off
        and     $(CR0_PE | CR0_PG), %edx
        mov     $CR0_PE, %eax
        cmp     %eax, %edx
        mov     $reg_cr0, %esi
        jne     verify_fail_reg

        pushf                                   # interrupts off, direction up
        pop     %edx
        and     $(EFLAGS_IF | EFLAGS_DF), %edx
        xor     %eax, %eax
        cmp     %eax, %edx
        mov     $reg_eflags, %esi
        jne     verify_fail_reg

        testl   $XMM_CHECK_MASK, 0(%esp)        # saved ESI = page index
        jnz     1f
        call    xmm_check
1:      pop     %esi
        pop     %edx
        pop     %eax
        ret

# xmm_check: EBX = percpu.  Compare XMM0/XMM1 with the expected patterns.
        .set XMM_DUMP,          0               # stack frame: actual XMM0, XMM1
        .set XMM_WANT,          32              # expected XMM0, XMM1
xmm_check:
        pushal
        sub     $64, %esp
        movdqu  %xmm0, XMM_DUMP(%esp)
        movdqu  %xmm1, XMM_DUMP + 16(%esp)
        lea     XMM_WANT(%esp), %edi
        mov     PC_CPU(%ebx), %eax
        call    xmm_expected
        lea     XMM_DUMP(%esp), %esi
        lea     XMM_WANT(%esp), %edi
        mov     $8, %ecx
        repe cmpsl
        jne     verify_fail_xmm
        add     $64, %esp
        popal
        ret

# verify_fail_page: REPE SCASD stopped at a mismatch.  EDI = one past the
# bad dword, EAX = expected, EBX = percpu.
verify_fail_page:
        call    claim_stop
        jnz     park
        lea     -4(%edi), %edx                  # EDX = address of the bad dword
        LINE_BEGIN
        PRINT   "FAIL cpu="
        push    %eax
        mov     PC_CPU(%ebx), %eax
        call    put_dec
        PRINT   " pass="
        mov     PC_PASS(%ebx), %eax
        call    put_dec
        PRINT   " page="
        mov     %edx, %eax
        and     $~(PAGE_SIZE - 1), %eax
        call    put_hex
        PRINT   " offset="
        mov     %edx, %eax
        and     $PAGE_SIZE - 1, %eax
        call    put_dec
        PRINT   " expected="
        pop     %eax
        call    put_hex
        PRINT   " found="
        mov     (%edx), %eax
        call    put_hex
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit

# verify_fail_reg: ESI = register name, EAX = expected, EDX = found.
verify_fail_reg:
        call    claim_stop
        jnz     park
        LINE_BEGIN
        PRINT   "FAIL cpu="
        push    %eax
        mov     PC_CPU(%ebx), %eax
        call    put_dec
        PRINT   " register="
        call    puts
        PRINT   " expected="
        pop     %eax
        call    put_hex
        PRINT   " found="
        mov     %edx, %eax
        call    put_hex
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit

# verify_fail_xmm: from xmm_check; ESI = one dword past the first differing
# dword of the dump (8 dwords at ESP: XMM0, XMM1; expected ones follow).
verify_fail_xmm:
        call    claim_stop
        jnz     park
        mov     $0, %ecx                        # ECX = offset of the bad register
        lea     XMM_DUMP + 16(%esp), %eax
        cmp     %eax, %esi
        jbe     1f
        mov     $16, %ecx
1:      LINE_BEGIN
        PRINT   "FAIL cpu="
        mov     PC_CPU(%ebx), %eax
        call    put_dec
        PRINT   " register=xmm"
        mov     %ecx, %eax
        shr     $4, %eax
        call    put_dec
        PRINT   " expected="
        lea     XMM_WANT(%esp, %ecx), %esi
        call    put_hex128
        PRINT   " found="
        lea     XMM_DUMP(%esp, %ecx), %esi
        call    put_hex128
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit

# verify_report (CPU 0, every report ms): "verify: t=Ns passes=P0,P1,... ok".
verify_report:
        LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s
        PRINT   "s passes="
        call    put_passes
        PRINT   " ok"
        LINE_END
        ret

# ---------------------------------------------------------------------------
# lm=1: the same loop in 64-bit code at CPL 3 (see common64.inc).
#   RBX = &percpu[cpu]   ESI = page index i   RDI = page address
#   RBP = INV_RBP_HIGH:INV_EBP + cpu, R15 = ~RBP   XMM0/XMM1 as above
# Pages are checked and written a qword at a time with both halves E(p, i).
# ---------------------------------------------------------------------------
        CODE64
guest_work64:
        xor     %eax, %eax                      # null DS/ES (unused in 64-bit mode)
        mov     %ax, %ds
        mov     %ax, %es
        call    percpu_init64
        mov     ws_pages(%rip), %ecx
        call    slice_init64
        mov     rate_mib(%rip), %eax
        call    pace_init64
        mov     PC_CPU(%rbx), %eax
        call    xmm_load64
        call    inv_rbp64
        mov     %rax, %rbp
        not     %rax
        mov     %rax, %r15
        movl    $1, PC_PASS(%rbx)
        cmpl    $0, PC_CPU(%rbx)
        jne     .Lpass64
        call    report_restart64

.Lpass64:
        mov     PC_FIRST(%rbx), %esi
.Lpage64:
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %rdi
        add     $WS_BASE, %rdi
        mov     PC_PASS(%rbx), %eax             # check E(p-1, i)
        dec     %eax
        mov     %esi, %edx
        call    mix64
        mov     $PAGE_SIZE / 8, %ecx
        repe scasq
        jne     verify_fail_page64
        cmpl    $0, PC_FINAL(%rbx)              # write E(p, i)
        jne     1f
        sub     $PAGE_SIZE, %rdi
        mov     PC_PASS(%rbx), %eax
        mov     %esi, %edx
        call    mix64
        mov     $PAGE_SIZE / 8, %ecx
        rep stosq
        incl    PC_PAGES(%rbx)
1:      call    verify_regs64
        call    work_poll64
        call    pace_wait64
        inc     %esi
        cmp     PC_END(%rbx), %esi
        jb      .Lpage64

        cmpl    $0, PC_FINAL(%rbx)
        jne     .Lfinished64
        mov     PC_PASS(%rbx), %eax
        mov     %eax, PC_DONE(%rbx)
.ifdef VERIFY_SELFTEST
        call    verify_selftest64
.endif
        incl    PC_PASS(%rbx)
        mov     passes_limit(%rip), %ecx
        test    %ecx, %ecx
        jz      .Lpass64
        cmp     %ecx, %eax
        jb      .Lpass64
        movl    $1, PC_FINAL(%rbx)
        jmp     .Lpass64

.Lfinished64:
        lock incl cpus_finished(%rip)
        cmpl    $0, PC_CPU(%rbx)
        jne     park64
        call    wait_all_finished64
        call    claim_stop64
        jnz     park64
        LINE_BEGIN
        PRINT   "done t="
        call    put_elapsed_s64
        PRINT   "s passes="
        call    put_passes64
        PRINT   " ok"
        LINE_END
        mov     $EXIT_OK, %al
        jmp     guest_exit64

# mix64: as mix, but RAX = E(p, i) in both halves.  Clobbers RDX.
mix64:
        call    mix64_dword
        mov     %eax, %edx
        shl     $32, %rdx
        or      %rdx, %rax
        ret
mix64_dword:
        MIX_BODY

# inv_rbp64: EAX = cpu -> RAX = the RBP invariant.
inv_rbp64:
        push    %rdx
        lea     INV_EBP(%eax), %eax
        mov     $INV_RBP_HIGH, %edx
        shl     $32, %rdx
        or      %rdx, %rax
        pop     %rdx
        ret

xmm_expected64:
        XMM_EXPECTED_BODY %rdi

# xmm_load64: EAX = cpu.  Load the invariant patterns into XMM0 and XMM1.
xmm_load64:
        push    %rdi
        push    %rdx
        sub     $32, %rsp
        mov     %rsp, %rdi
        call    xmm_expected64
        movdqu  0(%rsp), %xmm0
        movdqu  16(%rsp), %xmm1
        add     $32, %rsp
        pop     %rdx
        pop     %rdi
        ret

# verify_regs64: RBX = percpu, ESI = page index.  Jumps to
# verify_fail_reg64 (RSI = name, RAX = expected, RDX = found) on mismatch.
verify_regs64:
        push    %rax
        push    %rdx
        push    %rsi
        mov     PC_CPU(%rbx), %eax
        call    inv_rbp64
        mov     %rbp, %rdx
        cmp     %rax, %rdx
        lea     reg_rbp(%rip), %rsi
        jne     verify_fail_reg64
        not     %rax
        mov     %r15, %rdx
        cmp     %rax, %rdx
        lea     reg_r15(%rip), %rsi
        jne     verify_fail_reg64

        mov     PC_CPU(%rbx), %eax              # canary: top of the ring-3 stack
        mov     %eax, %edx
        shl     $STACK_SHIFT, %edx
        lea     stacks + STACK_SIZE / 2 - 4(%rip), %rsi
        mov     (%rsi, %rdx), %edx
        add     $STACK_CANARY, %eax
        cmp     %rax, %rdx
        lea     reg_canary(%rip), %rsi
        jne     verify_fail_reg64

        xor     %eax, %eax                      # DS, ES: null, see guest_work64
        mov     %ds, %edx
        movzwl  %dx, %edx
        cmp     %rax, %rdx
        lea     reg_ds(%rip), %rsi
        jne     verify_fail_reg64
        mov     %es, %edx
        movzwl  %dx, %edx
        cmp     %rax, %rdx
        lea     reg_es(%rip), %rsi
        jne     verify_fail_reg64
        # CS, SS: only their RPL.  A hypervisor that runs ring 3 natively
        # (kvm_pvm) shows its own selectors here, and its own IF and IOPL
        # in RFLAGS, so of RFLAGS only DF is checked.
        mov     $3, %eax
        mov     %ss, %edx
        and     $3, %edx
        cmp     %rax, %rdx
        lea     reg_ss(%rip), %rsi
        jne     verify_fail_reg64
        mov     %cs, %edx
        and     $3, %edx
        cmp     %rax, %rdx
        lea     reg_cs(%rip), %rsi
        jne     verify_fail_reg64

        pushfq                                  # DF 0
        pop     %rdx
        and     $EFLAGS_DF, %edx
        xor     %eax, %eax
        cmp     %rax, %rdx
        lea     reg_eflags(%rip), %rsi
        jne     verify_fail_reg64

        testl   $XMM_CHECK_MASK, 0(%rsp)        # saved RSI = page index
        jnz     1f
        smsw    %edx                            # CR0.PE, read from ring 3
        and     $(CR0_PE | CR0_EM | CR0_TS), %edx
        mov     $CR0_PE, %eax
        cmp     %rax, %rdx
        lea     reg_cr0(%rip), %rsi
        jne     verify_fail_reg64
        call    xmm_check64
1:      pop     %rsi
        pop     %rdx
        pop     %rax
        ret

# xmm_check64: RBX = percpu.  Compare XMM0/XMM1 with the expected patterns.
xmm_check64:
        push    %rax
        push    %rcx
        push    %rdx
        push    %rsi
        push    %rdi
        sub     $64, %rsp
        movdqu  %xmm0, XMM_DUMP(%rsp)
        movdqu  %xmm1, XMM_DUMP + 16(%rsp)
        lea     XMM_WANT(%rsp), %rdi
        mov     PC_CPU(%rbx), %eax
        call    xmm_expected64
        lea     XMM_DUMP(%rsp), %rsi
        lea     XMM_WANT(%rsp), %rdi
        mov     $8, %ecx
        repe cmpsl
        jne     verify_fail_xmm64
        add     $64, %rsp
        pop     %rdi
        pop     %rsi
        pop     %rdx
        pop     %rcx
        pop     %rax
        ret

# verify_fail_page64: REPE SCASQ stopped at a mismatch.  RDI = one past the
# bad qword, RAX = expected (both halves), RBX = percpu.
verify_fail_page64:
        call    claim_stop64
        jnz     park64
        lea     -8(%rdi), %rdx                  # RDX = address of the bad dword
        cmp     %eax, (%rdx)
        jne     1f
        add     $4, %rdx
1:      LINE_BEGIN
        PRINT   "FAIL cpu="
        push    %rax
        mov     PC_CPU(%rbx), %eax
        call    put_dec64
        PRINT   " pass="
        mov     PC_PASS(%rbx), %eax
        call    put_dec64
        PRINT   " page="
        mov     %edx, %eax
        and     $~(PAGE_SIZE - 1), %eax
        call    put_hex64
        PRINT   " offset="
        mov     %edx, %eax
        and     $PAGE_SIZE - 1, %eax
        call    put_dec64
        PRINT   " expected="
        pop     %rax
        call    put_hex64
        PRINT   " found="
        mov     (%rdx), %eax
        call    put_hex64
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit64

# verify_fail_reg64: RSI = register name, RAX = expected, RDX = found.
# 64-bit values are printed with 16 digits, others with 8.
verify_fail_reg64:
        call    claim_stop64
        jnz     park64
        LINE_BEGIN
        PRINT   "FAIL cpu="
        push    %rax
        mov     PC_CPU(%rbx), %eax
        call    put_dec64
        PRINT   " register="
        call    puts64
        PRINT   " expected="
        pop     %rax
        mov     %rax, %rcx
        or      %rdx, %rcx
        shr     $32, %rcx
        jnz     1f
        call    put_hex64
        PRINT   " found="
        mov     %edx, %eax
        call    put_hex64
        jmp     2f
1:      call    put_hexq64
        PRINT   " found="
        mov     %rdx, %rax
        call    put_hexq64
2:      LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit64

# verify_fail_xmm64: as verify_fail_xmm.
verify_fail_xmm64:
        call    claim_stop64
        jnz     park64
        mov     $0, %ecx
        lea     XMM_DUMP + 16(%rsp), %rax
        cmp     %rax, %rsi
        jbe     1f
        mov     $16, %ecx
1:      LINE_BEGIN
        PRINT   "FAIL cpu="
        mov     PC_CPU(%rbx), %eax
        call    put_dec64
        PRINT   " register=xmm"
        mov     %ecx, %eax
        shr     $4, %eax
        call    put_dec64
        PRINT   " expected="
        lea     XMM_WANT(%rsp, %rcx), %rsi
        call    put_hex128_64
        PRINT   " found="
        lea     XMM_DUMP(%rsp, %rcx), %rsi
        call    put_hex128_64
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit64

# verify_report64 (CPU 0): "verify: t=Ns passes=P0,P1,... ok".
verify_report64:
        LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s64
        PRINT   "s passes="
        call    put_passes64
        PRINT   " ok"
        LINE_END
        ret

.ifdef VERIFY_SELFTEST
verify_selftest64:                              # RBX = percpu, EAX = pass just done
        cmp     $3, %eax
        jne     1f
        cmpl    $0, PC_CPU(%rbx)
        jne     1f
.if VERIFY_SELFTEST == 1
        mov     PC_FIRST(%rbx), %edx
        shl     $PAGE_SHIFT, %edx
        xorl    $0x00010000, WS_BASE + 400(%rdx)
.elseif VERIFY_SELFTEST == 2
        sub     $16, %rsp
        movdqu  %xmm1, (%rsp)
        xorl    $1, 12(%rsp)
        movdqu  (%rsp), %xmm1
        add     $16, %rsp
.else
        ud2
.endif
1:      ret
.endif
        CODE32

# ---------------------------------------------------------------------------
# Self-test hooks, not in the normal build.  Assemble with
#   as --32 --defsym VERIFY_SELFTEST=1 ...   corrupt a dword after pass 3
#   as --32 --defsym VERIFY_SELFTEST=2 ...   corrupt XMM1 after pass 3
#   as --32 --defsym VERIFY_SELFTEST=3 ...   raise #UD after pass 3
# to see the failure paths (see docs/guests.md).
# ---------------------------------------------------------------------------
.ifdef VERIFY_SELFTEST
verify_selftest:                                # EBX = percpu, EAX = pass just done
        cmp     $3, %eax
        jne     1f
        cmpl    $0, PC_CPU(%ebx)
        jne     1f
.if VERIFY_SELFTEST == 1
        mov     PC_FIRST(%ebx), %edx            # first page of cpu 0, dword 100
        shl     $PAGE_SHIFT, %edx
        xorl    $0x00010000, WS_BASE + 400(%edx)
.elseif VERIFY_SELFTEST == 2
        sub     $16, %esp                       # flip bit 0 of XMM1's top dword
        movdqu  %xmm1, (%esp)
        xorl    $1, 12(%esp)
        movdqu  (%esp), %xmm1
        add     $16, %esp
.else
        ud2
.endif
1:      ret
.endif
