# ---------------------------------------------------------------------------
# dirty - a paced page-dirtying workload.
#
# Parameters: ws=MiB (64, total, split evenly between the writing CPUs)
#             rate=MiB/s per writing CPU (0 = as fast as possible)
#             fill=MiB (0: none; else at least ws)
#             compute=K (0: every CPU writes; else the last K CPUs compute)
#             report=ms (1000)  cpus=N (all)
#             lm=0|1 (0: work in 32-bit ring 0, paging off; 1: 64-bit ring 3)
#
# With fill=F the CPUs first write every page of [4 MiB, 4 MiB + F) once,
# between them, as the idle guest does (every dword of the page at P holds
# P ^ FILL_XOR), wait for each other, and CPU 0 prints
#     dirty: filled F MiB
# before the working-set rewriting below starts.  That gives a migration
# a large, written-once RAM plus a small hot working set (the first ws MiB
# of the filled area).  No progress line is printed during the fill, and
# the progress clock (t=) starts when the rewriting does.
#
# Each CPU rewrites one dword (offset 0) in every page of its slice with the
# current pass number, pass after pass, paced on the TSC to `rate`.  Every
# `report` ms CPU 0 prints
#     dirty: t=Ns passes=P0,P1,... MiB/s=R
# where R is the total rate (all CPUs, pages dirtied * 4 KiB) measured over
# the last interval.  Runs until the VMM stops it.
#
# With compute=K (1 <= K < CPUs) the last K CPUs do not write the working
# set: the first CPUs - K ("writers") split it between them, and the others
# run a compute loop: COMPUTE_ITERS iterations of register-only arithmetic
# (imul/add/xor, no memory operands, no calls) per chunk, then one store
# (their chunk counter) and one work_poll call (its return address is the
# only other write) per chunk.  A chunk takes about 14 ms on a 2.6 GHz CPU
# running it natively.  The start line then ends in " compute=K", a
# compute CPU's passes= entry stays 0, and the progress line gains
#     ... MiB/s=R work=W
# where W is the chunks completed by all compute CPUs per second over the
# same interval as R.  With fill=F the compute CPUs still fill their share.
# ---------------------------------------------------------------------------
# COMPUTE_ITERS can be overridden when assembling (as --defsym
# COMPUTE_ITERS=N), e.g. to see lm=0 compute on a host that emulates 32-bit
# code (kvm_pvm: about 1.3 us per instruction, some 80 s per default chunk).
# ---------------------------------------------------------------------------
        .include "common.inc"

        .section .rodata.str, "a"
guest_name:     .asciz "dirty"
name_ws:        .asciz "ws"
name_fill:      .asciz "fill"

        .set FILL_XOR,          0xDEADBEEF      # as idle's: never 0 (odd)
        .ifndef COMPUTE_ITERS
        .set COMPUTE_ITERS,     12000000        # a chunk: ~14 ms at 2.6 GHz (measured)
        .endif

        .bss
ws_mib:         .long 0
ws_pages:       .long 0
rate_mib:       .long 0
last_pages:     .long 0                         # page total at the previous report
fill_mib:       .long 0
fill_pages:     .long 0
fill_done:      .long 0                         # set by CPU 0 once every CPU has filled
report_ms:      .long 0
compute_cpus:   .long 0                         # compute= parameter
writers:        .long 0                         # ncpus - compute_cpus: cpus 0..writers-1 write
last_chunks:    .long 0                         # chunk total at the previous report
        .balign 8
last_tsc:       .quad 0                         # TSC at the previous report
fill_report_ticks: .quad 0                      # report_ticks, held back during the fill
        .balign 64
chunks:         .skip MAX_CPUS * PC_SIZE        # compute chunks done, one line per cpu

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
        GET_PARAM fill, 0
        mov     %eax, fill_mib
        test    %eax, %eax                      # fill=0: no fill, as before
        jz      2f
        mov     $name_fill, %esi
        call    ws_check
        cmp     ws_mib, %eax                    # the working set lies inside the fill
        jae     1f
        LINE_BEGIN
        PRINT   "error: fill="
        call    put_dec
        PRINT   " MiB is smaller than ws="
        mov     ws_mib, %eax
        call    put_dec
        PRINT   " MiB (fill must be 0 or at least ws)"
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit
1:      shl     $PAGES_PER_MIB_SHIFT, %eax
        mov     %eax, fill_pages
2:      GET_PARAM compute, 0
        mov     %eax, compute_cpus
        cmp     ncpus, %eax                     # at least one CPU must write
        jb      1f
        LINE_BEGIN
        PRINT   "error: compute="
        call    put_dec
        PRINT   " leaves no CPU to write the working set: it must be less than cpus="
        mov     ncpus, %eax
        call    put_dec
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit
1:      mov     ncpus, %edx
        sub     %eax, %edx
        mov     %edx, writers
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
        cmpl    $0, fill_mib
        je      1f
        PRINT   " fill="
        mov     fill_mib, %eax
        call    put_dec
        PRINT   " MiB"
1:      cmpl    $0, compute_cpus
        je      1f
        PRINT   " compute="
        mov     compute_cpus, %eax
        call    put_dec
1:      LINE_END

        movl    $dirty_report, report_fn
        movl    $dirty_report64, report_fn64
        GET_PARAM report, 1000
        mov     %eax, report_ms
        call    report_init
        mov     work_t0, %eax
        mov     %eax, last_tsc
        mov     work_t0 + 4, %eax
        mov     %eax, last_tsc + 4
        cmpl    $0, fill_pages                  # no progress lines while filling:
        je      1f                              # CPU 0 restores report_ticks after
        mov     report_ticks, %eax
        mov     %eax, fill_report_ticks
        mov     report_ticks + 4, %eax
        mov     %eax, fill_report_ticks + 4
        movl    $0, report_ticks
        movl    $0, report_ticks + 4
1:      jmp     work_begin

# guest_work32: EAX = cpu.  32-bit ring 0, paging off.
# EBX = percpu, ECX = pass, ESI = page index, EDI = page address.
guest_work32:
        call    percpu_init
        cmpl    $0, fill_pages
        je      1f
        call    fill32
1:      mov     PC_CPU(%ebx), %eax
        cmp     writers, %eax
        jae     compute32
        mov     ws_pages, %ecx
        call    ws_slice
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

# ws_slice: EBX = percpu of a writer, ECX = total pages.  As slice_init,
# but split between the writers only: [cpu*total/writers,
# (cpu+1)*total/writers).  Clobbers EAX, EDX.
ws_slice:
        mov     PC_CPU(%ebx), %eax
        mul     %ecx
        divl    writers
        mov     %eax, PC_FIRST(%ebx)
        mov     PC_CPU(%ebx), %eax
        inc     %eax
        mul     %ecx
        divl    writers
        mov     %eax, PC_END(%ebx)
        ret

# compute32: EBX = percpu of a compute CPU.  Never returns.  Chunk after
# chunk of COMPUTE_ITERS register-only iterations; the only memory write
# is the chunk counter (EDI), once per chunk, followed by work_poll.
compute32:
        mov     PC_CPU(%ebx), %edi
        shl     $PC_SHIFT, %edi
        add     $chunks, %edi
        mov     $0x9E3779B1, %eax
        mov     $0x85EBCA6B, %edx
        mov     $0x6D2B79F5, %esi
1:      mov     $COMPUTE_ITERS, %ecx
2:      imul    %edx, %eax                      # one dependent chain
        add     %esi, %eax
        xor     %eax, %edx
        dec     %ecx
        jnz     2b
        incl    (%edi)                          # one store per chunk
        call    work_poll
        jmp     1b

# compute_rate: EDI = ms since the last report -> EAX = chunks completed by
# all compute CPUs per second since then (0 if EDI = 0).  Clobbers ECX, EDX.
compute_rate:
        xor     %ecx, %ecx
        mov     writers, %eax
1:      cmp     ncpus, %eax
        jae     2f
        mov     %eax, %edx
        shl     $PC_SHIFT, %edx
        add     chunks(%edx), %ecx
        inc     %eax
        jmp     1b
2:      mov     %ecx, %eax
        sub     last_chunks, %eax
        mov     %ecx, last_chunks
        test    %edi, %edi
        jz      3f
        mov     $1000, %edx
        mul     %edx
        cmp     %edi, %edx                      # would overflow: report 0
        jae     3f
        div     %edi
        ret
3:      xor     %eax, %eax
        ret

# fill32: EBX = percpu.  Fill this CPU's slice of the fill area once, then
# meet the other CPUs: CPU 0 waits for all, restarts the progress clock,
# prints the "filled" line and releases the others, who wait for that.
# Clobbers EAX, ECX, EDX, ESI, EDI.
fill32:
        mov     fill_pages, %ecx
        call    slice_init
        mov     PC_FIRST(%ebx), %esi
1:      cmp     PC_END(%ebx), %esi
        jae     2f
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %edi
        add     $WS_BASE, %edi
        mov     %edi, %eax
        xor     $FILL_XOR, %eax
        mov     $PAGE_DWORDS, %ecx
        rep stosl
        inc     %esi
        jmp     1b
2:      lock incl cpus_finished
        cmpl    $0, PC_CPU(%ebx)
        jne     4f
        call    wait_all_finished
        mov     report_ms, %eax                 # the clock starts with the rewriting
        call    report_init
        mov     work_t0, %eax
        mov     %eax, last_tsc
        mov     work_t0 + 4, %eax
        mov     %eax, last_tsc + 4
        LINE_BEGIN
        PRINT   "filled "
        mov     fill_mib, %eax
        call    put_dec
        PRINT   " MiB"
        LINE_END
        movl    $1, fill_done
        ret
4:      cmpl    $0, fill_done
        jne     5f
        call    work_poll
        pause
        jmp     4b
5:      ret

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
3:      cmpl    $0, compute_cpus                # ESI = compute chunks per second
        je      4f
        mov     %eax, %ebp
        call    compute_rate
        mov     %eax, %esi
        mov     %ebp, %eax
4:      LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s
        PRINT   "s passes="
        call    put_passes
        PRINT   " MiB/s="
        call    put_dec
        cmpl    $0, compute_cpus
        je      5f
        PRINT   " work="
        mov     %esi, %eax
        call    put_dec
5:      LINE_END
        popal
        ret

# ---------------------------------------------------------------------------
# lm=1: the same in 64-bit code at CPL 3 (see common64.inc).
# ---------------------------------------------------------------------------
        CODE64
guest_work64:                                   # EDI = cpu
        call    percpu_init64
        cmpl    $0, fill_pages(%rip)
        je      1f
        call    fill64
1:      mov     PC_CPU(%rbx), %eax
        cmp     writers(%rip), %eax
        jae     compute64
        mov     ws_pages(%rip), %ecx
        call    ws_slice64
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

# ws_slice64: RBX = percpu, ECX = total pages.  As ws_slice.
# Clobbers EAX, EDX.
ws_slice64:
        mov     PC_CPU(%rbx), %eax
        mul     %ecx
        divl    writers(%rip)
        mov     %eax, PC_FIRST(%rbx)
        mov     PC_CPU(%rbx), %eax
        inc     %eax
        mul     %ecx
        divl    writers(%rip)
        mov     %eax, PC_END(%rbx)
        ret

# compute64: RBX = percpu of a compute CPU.  As compute32 (the same chain).
compute64:
        mov     PC_CPU(%rbx), %edi
        shl     $PC_SHIFT, %edi
        lea     chunks(%rip), %rax
        add     %rax, %rdi
        mov     $0x9E3779B1, %eax
        mov     $0x85EBCA6B, %edx
        mov     $0x6D2B79F5, %esi
1:      mov     $COMPUTE_ITERS, %ecx
2:      imul    %edx, %eax                      # one dependent chain
        add     %esi, %eax
        xor     %eax, %edx
        dec     %ecx
        jnz     2b
        incl    (%rdi)                          # one store per chunk
        call    work_poll64
        jmp     1b

# compute_rate64: RDI = ms since the last report -> RAX = compute chunks
# per second since then (0 if RDI = 0).  Clobbers RCX, RDX.
compute_rate64:
        xor     %ecx, %ecx
        mov     writers(%rip), %eax
        push    %rsi
        lea     chunks(%rip), %rsi
1:      cmp     ncpus(%rip), %eax
        jae     2f
        mov     %eax, %edx
        shl     $PC_SHIFT, %edx
        add     (%rsi,%rdx), %ecx
        inc     %eax
        jmp     1b
2:      pop     %rsi
        mov     %ecx, %eax
        sub     last_chunks(%rip), %eax
        mov     %ecx, last_chunks(%rip)
        test    %rdi, %rdi
        jz      3f
        imul    $1000, %rax, %rax
        xor     %edx, %edx
        div     %rdi
        ret
3:      xor     %eax, %eax
        ret

# fill64: RBX = percpu.  As fill32; CPU 0 puts report_ticks back, and
# guest_work64 then restarts the progress clock (report_restart64).
# Clobbers RAX, RCX, RDX, RSI, RDI.
fill64:
        mov     fill_pages(%rip), %ecx
        call    slice_init64
        mov     PC_FIRST(%rbx), %esi
1:      cmp     PC_END(%rbx), %esi
        jae     2f
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %rdi
        add     $WS_BASE, %rdi
        mov     %edi, %eax                      # P ^ FILL_XOR in both halves
        xor     $FILL_XOR, %eax
        mov     %eax, %edx
        shl     $32, %rdx
        or      %rdx, %rax
        mov     $PAGE_SIZE / 8, %ecx
        rep stosq
        inc     %esi
        jmp     1b
2:      lock incl cpus_finished(%rip)
        cmpl    $0, PC_CPU(%rbx)
        jne     4f
        call    wait_all_finished64
        mov     fill_report_ticks(%rip), %rax
        mov     %rax, report_ticks(%rip)
        LINE_BEGIN
        PRINT   "filled "
        mov     fill_mib(%rip), %eax
        call    put_dec64
        PRINT   " MiB"
        LINE_END
        movl    $1, fill_done(%rip)
        ret
4:      cmpl    $0, fill_done(%rip)
        jne     5f
        call    work_poll64
        pause
        jmp     4b
5:      ret

# dirty_report64 (CPU 0): as dirty_report.
dirty_report64:
        push    %rax
        push    %rbx
        push    %rcx
        push    %rdx
        push    %rdi
        push    %rsi
        push    %rbp
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
3:      cmpl    $0, compute_cpus(%rip)          # RSI = compute chunks per second
        je      4f
        mov     %rax, %rbp
        call    compute_rate64
        mov     %rax, %rsi
        mov     %rbp, %rax
4:      LINE_BEGIN
        PRINT   "t="
        call    put_elapsed_s64
        PRINT   "s passes="
        call    put_passes64
        PRINT   " MiB/s="
        call    put_dec64
        cmpl    $0, compute_cpus(%rip)
        je      5f
        PRINT   " work="
        mov     %rsi, %rax
        call    put_dec64
5:      LINE_END
        pop     %rbp
        pop     %rsi
        pop     %rdi
        pop     %rdx
        pop     %rcx
        pop     %rbx
        pop     %rax
        ret
        CODE32
