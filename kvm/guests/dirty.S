# ---------------------------------------------------------------------------
# dirty - a paced page-dirtying workload.
#
# Parameters: ws=MiB (64, total, split evenly between CPUs)
#             rate=MiB/s per CPU (0 = as fast as possible)
#             report=ms (1000)  cpus=N (all)
#             lm=0|1 (0: work in 32-bit ring 0, paging off; 1: 64-bit ring 3)
#
# Each CPU rewrites one dword (offset 0) in every page of its slice with the
# current pass number, pass after pass, paced on the TSC to `rate`.  Every
# `report` ms CPU 0 prints
#     dirty: t=Ns passes=P0,P1,... MiB/s=R
# where R is the total rate (all CPUs, pages dirtied * 4 KiB) measured over
# the last interval.  Runs until the VMM stops it.
# ---------------------------------------------------------------------------
        .include "common.inc"

        .section .rodata.str, "a"
guest_name:     .asciz "dirty"
name_ws:        .asciz "ws"

        .bss
ws_mib:         .long 0
ws_pages:       .long 0
rate_mib:       .long 0
last_pages:     .long 0                         # page total at the previous report
        .balign 8
last_tsc:       .quad 0                         # TSC at the previous report

        .text
# BSP: parameters, banner, release the APs, then work as cpu 0.
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

        movl    $dirty_report, report_fn
        movl    $dirty_report64, report_fn64
        GET_PARAM report, 1000
        call    report_init
        mov     work_t0, %eax
        mov     %eax, last_tsc
        mov     work_t0 + 4, %eax
        mov     %eax, last_tsc + 4
        jmp     work_begin

# guest_work32: EAX = cpu.  32-bit ring 0, paging off.
# EBX = percpu, ECX = pass, ESI = page index, EDI = page address.
guest_work32:
        call    percpu_init
        mov     ws_pages, %ecx
        call    slice_init
        mov     rate_mib, %eax
        call    pace_init
        movl    $1, PC_PASS(%ebx)
.Lpass:
        mov     PC_PASS(%ebx), %ecx
        mov     PC_FIRST(%ebx), %esi
.Lpage:
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %edi
        add     $WS_BASE, %edi
        mov     %ecx, (%edi)                    # dirty the page
        incl    PC_PAGES(%ebx)
        call    work_poll
        call    pace_wait
        inc     %esi
        cmp     PC_END(%ebx), %esi
        jb      .Lpage
        mov     %ecx, PC_DONE(%ebx)
        incl    PC_PASS(%ebx)
        jmp     .Lpass

# dirty_report (CPU 0): progress line with the total rate since the last one.
dirty_report:
        pushal
        mov     $percpu, %ebx                   # ECX = pages written by all CPUs
        xor     %ecx, %ecx
        xor     %edi, %edi
1:      add     PC_PAGES(%ebx), %ecx
        add     $PC_SIZE, %ebx
        inc     %edi
        cmp     ncpus, %edi
        jb      1b
        rdtsc                                   # EDI = ms since the last report
        mov     %eax, %esi
        mov     %edx, %ebp
        sub     last_tsc, %eax
        sbb     last_tsc + 4, %edx
        mov     %esi, last_tsc
        mov     %ebp, last_tsc + 4
        divl    tsc_khz
        mov     %eax, %edi
        mov     %ecx, %eax                      # EAX = pages since the last report
        sub     last_pages, %eax
        mov     %ecx, last_pages
        test    %edi, %edi
        jz      2f
        mov     $1000, %edx
        mul     %edx
        cmp     %edi, %edx                      # pages/s would overflow: report 0
        jae     2f
        div     %edi                            # pages per second
        shr     $PAGES_PER_MIB_SHIFT, %eax      # MiB per second
        jmp     3f
2:      xor     %eax, %eax
3:      LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s
        PRINT   "s passes="
        call    put_passes
        PRINT   " MiB/s="
        call    put_dec
        LINE_END
        popal
        ret

# ---------------------------------------------------------------------------
# lm=1: the same in 64-bit code at CPL 3 (see common64.inc).
# ---------------------------------------------------------------------------
        CODE64
guest_work64:                                   # EDI = cpu
        call    percpu_init64
        mov     ws_pages(%rip), %ecx
        call    slice_init64
        mov     rate_mib(%rip), %eax
        call    pace_init64
        cmpl    $0, PC_CPU(%rbx)
        jne     1f
        call    report_restart64
        mov     work_t0(%rip), %rax
        mov     %rax, last_tsc(%rip)
1:      movl    $1, PC_PASS(%rbx)
.Lpass64:
        mov     PC_PASS(%rbx), %ecx
        mov     PC_FIRST(%rbx), %esi
.Lpage64:
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %rdi
        add     $WS_BASE, %rdi
        mov     %ecx, (%rdi)                    # dirty the page
        incl    PC_PAGES(%rbx)
        call    work_poll64
        call    pace_wait64
        inc     %esi
        cmp     PC_END(%rbx), %esi
        jb      .Lpage64
        mov     %ecx, PC_DONE(%rbx)
        incl    PC_PASS(%rbx)
        jmp     .Lpass64

# dirty_report64 (CPU 0): as dirty_report.
dirty_report64:
        push    %rax
        push    %rbx
        push    %rcx
        push    %rdx
        push    %rdi
        lea     percpu(%rip), %rbx              # ECX = pages written by all CPUs
        xor     %ecx, %ecx
        xor     %edi, %edi
1:      add     PC_PAGES(%rbx), %ecx
        add     $PC_SIZE, %rbx
        inc     %edi
        cmp     ncpus(%rip), %edi
        jb      1b
        rdtsc                                   # RDI = ms since the last report
        shl     $32, %rdx
        or      %rdx, %rax
        mov     %rax, %rdx
        xchg    %rdx, last_tsc(%rip)
        sub     %rdx, %rax
        xor     %edx, %edx
        mov     tsc_khz(%rip), %edi
        div     %rdi
        mov     %rax, %rdi
        mov     %ecx, %eax                      # RAX = pages since the last report
        sub     last_pages(%rip), %eax
        mov     %ecx, last_pages(%rip)
        test    %rdi, %rdi
        jz      2f
        imul    $1000, %rax, %rax
        xor     %edx, %edx
        div     %rdi                            # pages per second
        shr     $PAGES_PER_MIB_SHIFT, %rax      # MiB per second
        jmp     3f
2:      xor     %eax, %eax
3:      LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s64
        PRINT   "s passes="
        call    put_passes64
        PRINT   " MiB/s="
        call    put_dec64
        LINE_END
        pop     %rdi
        pop     %rdx
        pop     %rcx
        pop     %rbx
        pop     %rax
        ret
        CODE32
