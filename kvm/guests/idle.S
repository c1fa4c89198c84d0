# ---------------------------------------------------------------------------
# idle - fill some memory with a known pattern, then halt.
#
# Parameters: fill=MiB (16)  scatter=0|1 (0)  cpus=N (all)
#             lm=0|1 (0: work in 32-bit ring 0, paging off; 1: 64-bit ring 3)
#             dots=ms (0): after "ready", CPU 0 prints a '.' every ms
#             milliseconds (1..999) for ever, never a newline (needs lm=0): a
#             check that serial output is written as the guest writes it
#
# The CPUs fill [4 MiB, 4 MiB + fill) between them, every dword of the page
# at physical address P with
#     P ^ IDLE_XOR                             (never 0: IDLE_XOR is odd)
# (one value per page, so REP STOS does it: cheap even where the guest is
# emulated), then CPU 0 prints "idle: filled N MiB on K cpus" and
# "idle: ready", and every CPU halts with interrupts off.  After that the
# guest never touches memory again: a migration of it has nothing to re-send.
#
# scatter=1 gives every kind of page a RAM path must tell apart, by global
# page index i of the fill area:
#     i%4 == 0   the pattern above                  (sent whole)
#     i%4 == 1   written with zeros                 (populated, but a zero page)
#     i%4 == 2   never touched                      (a hole: not sent, not read)
#     i%4 == 3   zeros, but its last dword = P ^ IDLE_XOR
#                                  (not zero: a check of the start alone drops it)
# ---------------------------------------------------------------------------
        .include "common.inc"

        .set IDLE_XOR,          0xDEADBEEF

        .section .rodata.str, "a"
guest_name:     .asciz "idle"
name_fill:      .asciz "fill"

        .bss
fill_mib:       .long 0
fill_pages:     .long 0
scatter:        .long 0
dots_ms:        .long 0

        .text
# BSP: parameters, release the APs, then fill as cpu 0.
        .globl  guest_main
guest_main:
        GET_PARAM fill, 16
        mov     %eax, fill_mib
        test    %eax, %eax                      # fill=0 is allowed: nothing to do
        jz      1f
        mov     $name_fill, %esi
        call    ws_check
1:      shl     $PAGES_PER_MIB_SHIFT, %eax
        mov     %eax, fill_pages
        GET_PARAM scatter, 0
        mov     %eax, scatter
        cmp     $1, %eax
        jbe     2f
        LINE_BEGIN
        PRINT   "error: scatter="
        call    put_dec
        PRINT   ": must be 0 or 1"
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit
2:      GET_PARAM dots, 0
        mov     %eax, dots_ms
        cmp     $999, %eax
        ja      5f
        test    %eax, %eax
        jz      6f
        cmpl    $0, use_lm
        je      6f
5:      LINE_BEGIN
        PRINT   "error: dots="
        mov     dots_ms, %eax
        call    put_dec
        PRINT   ": must be 0..999, and needs lm=0"
        LINE_END
        mov     $EXIT_FAIL, %al
        jmp     guest_exit
6:      LINE_BEGIN
        PRINT   "start cpus="
        mov     ncpus, %eax
        call    put_dec
        PRINT   " fill="
        mov     fill_mib, %eax
        call    put_dec
        PRINT   " MiB"
        cmpl    $0, scatter                     # scatter=0 prints what it always did
        je      3f
        PRINT   " scatter=1"
3:      LINE_END
        jmp     work_begin

# guest_work32: EAX = cpu.  Fill this CPU's slice, report in, halt.
guest_work32:
        call    percpu_init
        mov     fill_pages, %ecx
        call    slice_init
        mov     PC_FIRST(%ebx), %esi
1:      cmp     PC_END(%ebx), %esi
        jae     3f
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %edi
        add     $WS_BASE, %edi
        mov     %edi, %eax
        xor     $IDLE_XOR, %eax
        cmpl    $0, scatter
        je      2f
        test    $3, %esi
        jz      2f                              # i%4 == 0: the pattern
        mov     %esi, %edx
        and     $3, %edx
        cmp     $2, %edx
        je      4f                              # i%4 == 2: never touched
        mov     %eax, %edx                      # i%4 == 1, 3: zeros first
        xor     %eax, %eax
        mov     $PAGE_DWORDS, %ecx
        rep stosl                               # EDI = end of the page
        test    $2, %esi
        jz      4f
        mov     %edx, -4(%edi)                  # i%4 == 3: then its last dword
        jmp     4f
2:      mov     $PAGE_DWORDS, %ecx
        rep stosl
4:      incl    PC_PAGES(%ebx)
        inc     %esi
        jmp     1b
3:      lock incl cpus_finished
        cmpl    $0, PC_CPU(%ebx)
        jne     park
        call    wait_all_finished
        LINE_BEGIN
        PRINT   "filled "
        mov     fill_mib, %eax
        call    put_dec
        PRINT   " MiB on "
        mov     ncpus, %eax
        call    put_dec
        PRINT   " cpus"
        LINE_END
        LINE_BEGIN
        PRINT   "ready"
        LINE_END
        cmpl    $0, dots_ms
        je      park
5:      mov     $'.', %al                       # dots=: no newline, ever
        call    putc
        mov     dots_ms, %eax
        imul    $1000, %eax
        call    delay_us
        jmp     5b

# ---------------------------------------------------------------------------
# lm=1: the same in 64-bit code at CPL 3 (see common64.inc).
# ---------------------------------------------------------------------------
        CODE64
guest_work64:                                   # EDI = cpu
        call    percpu_init64
        mov     fill_pages(%rip), %ecx
        call    slice_init64
        mov     PC_FIRST(%rbx), %esi
1:      cmp     PC_END(%rbx), %esi
        jae     3f
        mov     %esi, %edi
        shl     $PAGE_SHIFT, %rdi
        add     $WS_BASE, %rdi
        mov     %edi, %eax                      # P ^ IDLE_XOR in both halves
        xor     $IDLE_XOR, %eax
        cmpl    $0, scatter(%rip)
        je      2f
        test    $3, %esi
        jz      2f                              # i%4 == 0: the pattern
        mov     %esi, %edx
        and     $3, %edx
        cmp     $2, %edx
        je      4f                              # i%4 == 2: never touched
        mov     %eax, %edx                      # i%4 == 1, 3: zeros first
        xor     %eax, %eax
        mov     $PAGE_SIZE / 8, %ecx
        rep stosq                               # RDI = end of the page
        test    $2, %esi
        jz      4f
        mov     %edx, -4(%rdi)                  # i%4 == 3: then its last dword
        jmp     4f
2:      mov     %eax, %edx
        shl     $32, %rdx
        or      %rdx, %rax
        mov     $PAGE_SIZE / 8, %ecx
        rep stosq
4:      incl    PC_PAGES(%rbx)
        inc     %esi
        jmp     1b
3:      lock incl cpus_finished(%rip)
        cmpl    $0, PC_CPU(%rbx)
        jne     park64
        call    wait_all_finished64
        LINE_BEGIN
        PRINT   "filled "
        mov     fill_mib(%rip), %eax
        call    put_dec64
        PRINT   " MiB on "
        mov     ncpus(%rip), %eax
        call    put_dec64
        PRINT   " cpus"
        LINE_END
        LINE_BEGIN
        PRINT   "ready"
        LINE_END
        jmp     park64
        CODE32
