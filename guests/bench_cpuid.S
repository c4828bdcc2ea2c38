# bench_cpuid.S - exit-throughput benchmark: N CPUIDs (leaf 0).
#
# Executes CPUID leaf 0 N times in a tight 4-instruction loop (every CPUID is
# one CPUID exit on vmmtui; KVM answers CPUID inside the kernel), then ends
# the run with status 0 through the debug-exit port. Real mode. The counter
# lives in ESI because CPUID overwrites EAX, EBX, ECX and EDX.
#
# N is the little-endian dword at image offset 0x1F8 (physical 0x7DF8), read
# once at start: the bench patches it. Default 1,000,000; N must be at least 1.
# Exits: N x CPUID (leaf 0), then OUT 0xF4.

        .include "common.S"

        .set    COUNT_OFFSET, 0x1F8

        .code16
        .text
        .globl  _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        ljmp    $0, $1f                         # CS:IP = 0000:7Cxx
1:      movl    (0x7C00 + COUNT_OFFSET), %esi   # N
loop:
        xorl    %eax, %eax                      # leaf 0
        cpuid                                   # one CPUID exit
        decl    %esi
        jnz     loop
        DEBUG_EXIT 0

        .org    COUNT_OFFSET, 0
count:
        .long   1000000

        .org    510, 0
        .word   0xAA55                          # boot signature
