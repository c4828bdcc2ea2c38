# bench_out.S - exit-throughput benchmark: N OUTs to an unclaimed port.
#
# Executes `outb %al, $0x80` N times in a tight 3-instruction loop (port 0x80,
# the PC's POST-code port, has no device on vmmtui: every OUT is one I/O exit
# that the VMM answers by dropping the write), then ends the run with status 0
# through the debug-exit port. Real mode.
#
# N is the little-endian dword at image offset 0x1F8 (physical 0x7DF8), read
# once at start: the bench patches it. Default 1,000,000; N must be at least 1.
# Exits: N x OUT 0x80, then OUT 0xF4.

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
1:      movl    (0x7C00 + COUNT_OFFSET), %ecx   # N
loop:
        outb    %al, $0x80                      # one I/O exit
        decl    %ecx
        jnz     loop
        DEBUG_EXIT 0

        .org    COUNT_OFFSET, 0
count:
        .long   1000000

        .org    510, 0
        .word   0xAA55                          # boot signature
