# memory.S - touch 16 MiB of guest RAM, then read the local APIC.
#
# Real mode -> 32-bit flat protected mode (no paging).
#   pass 1  writes (address XOR 0x5AA5C33C) at every 64 KiB from 0x200000 up
#           to, not including, 0x1200000: 256 dwords over 16 MiB. Under
#           vmmtui each first touch of a 2 MiB piece is an EPT violation /
#           nested page fault (8 pieces).
#   pass 2  reads the 256 dwords back and checks them.
#   then    reads the local APIC version register (0xFEE00030) and prints it;
#           all ones (no device there) counts as a failure.
# If the A20 gate is found closed (possible behind a BIOS), it is opened
# through port 0x92 first; under vmmtui it is open and the port is not used.
# Ends with status 0 if every check passed, 1 otherwise.

        .include "common.S"
        .include "modes.S"
        .include "boot16.S"

        .set    MEM_START, 0x200000
        .set    MEM_END,   0x1200000
        .set    MEM_STEP,  0x10000
        .set    PATTERN,   0x5AA5C33C
        .set    APIC_VERSION, 0xFEE00030
        .set    CR0_PE, 0x1
        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10

        .code16
main:
        call    a20_open
        ENTER_PROTECTED_MODE pm32

# a20_open: if the word at 0000:7DFE (the boot signature) also shows at
# FFFF:7E0E (physical 0x107DFE), addresses wrap at 1 MiB: open the gate.
a20_open:
        pushw   %es
        movw    $0xFFFF, %ax
        movw    %ax, %es
        movw    0x7DFE, %ax
        cmpw    %es:0x7E0E, %ax
        jne     1f                              # different: A20 is open
        notw    0x7DFE                          # same: change one side and look again
        movw    0x7DFE, %ax
        cmpw    %es:0x7E0E, %ax
        notw    0x7DFE
        jne     1f
        inb     $0x92, %al                      # "fast A20": system control port A, bit 1
        orb     $0x02, %al
        andb    $0xFE, %al                      # never bit 0 (it resets the machine)
        outb    %al, $0x92
1:      popw    %es
        ret

        .code32
pm32:
        FLAT_SEGMENTS STACK_TOP
        PRINT32 "memory: protected mode\n"
        PRINT32 "memory: writing every 64 KiB from 0x00200000 to 0x01200000\n"

        # pass 1: write
        movl    $MEM_START, %edi
1:      movl    %edi, %eax
        xorl    $PATTERN, %eax
        movl    %eax, (%edi)
        addl    $MEM_STEP, %edi
        cmpl    $MEM_END, %edi
        jb      1b

        # pass 2: read back
        movl    $MEM_START, %edi
1:      movl    %edi, %eax
        xorl    $PATTERN, %eax
        cmpl    %eax, (%edi)
        jne     mem_bad
        addl    $MEM_STEP, %edi
        cmpl    $MEM_END, %edi
        jb      1b
        PRINT32 "memory: 256 pages ok\n"

        # the local APIC
        movl    APIC_VERSION, %eax
        PRINT32 "memory: apic version 0x"
        call    hex32_32
        PRINT32 "\n"
        cmpl    $0xFFFFFFFF, %eax
        je      1f
        PRINT32 "memory: ok\n"
        DEBUG_EXIT 0
1:      PRINT32 "memory: FAIL (no local APIC at 0xFEE00000)\n"
        DEBUG_EXIT 1

mem_bad:
        PRINT32 "memory: FAIL at 0x"
        movl    %edi, %eax
        call    hex32_32
        PRINT32 ": read 0x"
        movl    (%edi), %eax
        call    hex32_32
        PRINT32 ", expected 0x"
        movl    %edi, %eax
        xorl    $PATTERN, %eax
        call    hex32_32
        PRINT32 "\n"
        DEBUG_EXIT 1

        FLAT_GDT

        .include "serial32.S"

        IMAGE_END
