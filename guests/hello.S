# hello.S - the smallest guest: one 512-byte boot sector.
#
# Prints "Hello from the guest\n" on COM1 and ends the run with status 0
# through the debug-exit port. Runs in real mode from 0000:7C00 and makes no
# BIOS call, so it behaves the same on vmmtui and behind SeaBIOS on QEMU.

        .include "common.S"

        .code16
        .text
        .globl  _start
_start:
        BOOT_START
        movw    $hello_msg, %si
        call    puts16
        DEBUG_EXIT 0

hello_msg:
        .asciz  "Hello from the guest\n"

        .include "serial16.S"

        .org    510, 0
        .word   0xAA55                          # boot signature
