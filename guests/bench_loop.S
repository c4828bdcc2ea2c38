# bench_loop.S - guest-speed benchmark: a register-only compute loop.
#
# Runs ITERATIONS rounds of a 10-instruction integer hash (an LCG step mixed
# into two more registers) with no memory access, no I/O and no sensitive
# instruction inside the loop, then ends the run with status 0 through the
# debug-exit port. Real mode, 32-bit registers (operand-size prefixes).
#
# The iteration count is the little-endian dword at image offset 0x1F8
# (physical 0x7DF8), read once at start: the bench patches it (--quick).
# Instructions executed: 10 x ITERATIONS + 10 (8 before the loop, the
# DEBUG_EXIT's movb and outb). Default: 20,000,000 iterations,
# 200,000,010 instructions. ITERATIONS must be at least 1.

        .include "common.S"

        .set    COUNT_OFFSET, 0x1F8

        .code16
        .text
        .globl  _start
_start:
        cli                                     # 1
        xorw    %ax, %ax                        # 2
        movw    %ax, %ds                        # 3
        ljmp    $0, $1f                         # 4  CS:IP = 0000:7Cxx
1:      movl    (0x7C00 + COUNT_OFFSET), %ecx   # 5  ITERATIONS
        movl    $0x12345678, %eax               # 6  LCG state
        movl    $0x9E3779B9, %ebx               # 7
        xorl    %edx, %edx                      # 8
loop:
        imull   $1664525, %eax, %eax            # 1  x = x * a + c (Numerical Recipes LCG)
        addl    $1013904223, %eax               # 2
        xorl    %eax, %ebx                      # 3  mix into ebx
        roll    $13, %ebx                       # 4
        addl    %ebx, %edx                      # 5  accumulate into edx
        movl    %edx, %edi                      # 6
        shrl    $7, %edi                        # 7
        xorl    %edi, %esi                      # 8  and into esi
        decl    %ecx                            # 9
        jnz     loop                            # 10
        DEBUG_EXIT 0                            # movb + outb: the run ends here

        .org    COUNT_OFFSET, 0
iterations:
        .long   20000000

        .org    510, 0
        .word   0xAA55                          # boot signature
