# hello64.S - an ELF64 guest entered in 64-bit long mode, linked at 2 MiB.
#
# vmmtui's ELF64 loader starts it in long mode with identity-mapped page
# tables and a 64-bit code segment; RSP may be anything, so the guest sets
# its own stack (in .bss) first. Prints "Hello from an ELF64 long-mode guest"
# and ends with status 0. (QEMU's -kernel cannot load an ELF64 image.)

        .include "common.S"

        .code64
        .text
        .globl  _start
_start:
        cli
        cld
        movq    $stack_top, %rsp
        PRINT64 "Hello from an ELF64 long-mode guest\n"
        DEBUG_EXIT 0

        .include "serial64.S"

        .bss
        .balign 16
stack:
        .skip   4096
stack_top:
