# hello32.S - a multiboot (version 1) ELF32 guest, linked at 1 MiB.
#
# Entered in 32-bit protected mode by a multiboot loader (QEMU -kernel, or
# vmmtui's loader) with EAX = 0x2BADB002 and EBX = the multiboot information.
# Loads its own GDT and stack (it trusts the loader's segments only for the
# first instructions), checks EAX, prints "hello32: multiboot ok" and
# "Hello from a multiboot ELF32 guest", and ends with status 0 (1 if EAX is
# not the multiboot magic).

        .include "common.S"
        .include "modes.S"

        .set    MB_MAGIC, 0x1BADB002            # multiboot header magic
        .set    MB_FLAGS, 0x00000000            # asks the loader for nothing
        .set    MB_BOOT_MAGIC, 0x2BADB002       # EAX at entry
        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10

        .section .multiboot, "a"
        .balign 4
mb_header:
        .long   MB_MAGIC
        .long   MB_FLAGS
        .long   -(MB_MAGIC + MB_FLAGS)          # the three dwords sum to 0

        .code32
        .text
        .globl  _start
_start:
        cli
        cld
        movl    %eax, %ebp                      # keep the boot magic
        lgdt    gdt_desc
        ljmp    $SEL_CODE32, $1f
1:      FLAT_SEGMENTS stack_top

        cmpl    $MB_BOOT_MAGIC, %ebp
        jne     1f
        PRINT32 "hello32: multiboot ok\n"
        PRINT32 "Hello from a multiboot ELF32 guest\n"
        DEBUG_EXIT 0
1:      PRINT32 "hello32: FAIL, EAX at entry was 0x"
        movl    %ebp, %eax
        call    hex32_32
        PRINT32 ", not 0x2BADB002\n"
        DEBUG_EXIT 1

        .include "serial32.S"

        .section .rodata
        FLAT_GDT

        .bss
        .balign 16
stack:
        .skip   4096
stack_top:
