# lib/common.S - constants and macros shared by every vmmtui guest.
#
# Included (with .include) at the top of each guest source. It emits no bytes.

        .set    COM1_THR,        0x3F8          # 16550 transmit holding register
        .set    COM1_LSR,        0x3FD          # 16550 line status register
        .set    LSR_THRE,        0x20           # LSR bit 5: transmit holding register empty
        .set    DEBUG_EXIT_PORT, 0xF4           # a write ends the run with that value as status

        .set    STACK_TOP,       0x7000         # stack of the raw images: grows down, in its own page,
                                                # never in the pages that hold the image's code

# BOOT_START: the first instructions of a raw image, started in real mode at
# physical 0x7C00 (as 0000:7C00 or 07C0:0000, as the loader likes): interrupts
# off, DS = ES = SS = 0, SP = STACK_TOP, then a far jump to the next
# instruction so that CS = 0 too.
        .macro  BOOT_START
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $STACK_TOP, %sp
        ljmp    $0, $.Lboot_cs\@
.Lboot_cs\@:
        .endm

# DEBUG_EXIT status: end the run with an 8-bit status through the debug-exit port,
# then stop for good if the port did not end the run. Same bytes in 16-, 32- and
# 64-bit code.
        .macro  DEBUG_EXIT status
        movb    $\status, %al
        outb    %al, $DEBUG_EXIT_PORT
9999:   cli
        hlt
        jmp     9999b
        .endm

# PRINT16 / PRINT32 / PRINT64 "text": print a string literal on the console from
# real-mode, 32-bit or 64-bit code. The text goes to subsection 1 of .text (after
# all the code, inside the image); every register except FLAGS is preserved.
        .macro  PRINT16 text
        pushw   %si
        movw    $.Lstr\@, %si
        call    puts16
        popw    %si
        .pushsection .text, 1
.Lstr\@: .asciz "\text"
        .popsection
        .endm

        .macro  PRINT32 text
        pushl   %esi
        movl    $.Lstr\@, %esi
        call    puts32
        popl    %esi
        .pushsection .text, 1
.Lstr\@: .asciz "\text"
        .popsection
        .endm

        .macro  PRINT64 text
        pushq   %rsi
        movl    $.Lstr\@, %esi
        call    puts64
        popq    %rsi
        .pushsection .text, 1
.Lstr\@: .asciz "\text"
        .popsection
        .endm

# IMAGE_END: last line of a multi-sector raw image. Pads the image to a whole
# number of 512-byte sectors (after the strings in subsection 1) and defines
# image_end, from which the boot sector computes how many sectors to read.
        .macro  IMAGE_END
        .pushsection .text, 2
        .balign 512, 0
image_end:
        .popsection
        .endm
