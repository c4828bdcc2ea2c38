# lib/common.S - constants and macros shared by every vmmtui guest.
#
# Included (with .include) at the top of each guest source. It emits no bytes.

        .set    COM1_THR,        0x3F8          # 16550 transmit holding register
        .set    COM1_LSR,        0x3FD          # 16550 line status register
        .set    LSR_THRE,        0x20           # LSR bit 5: transmit holding register empty
        .set    DEBUG_EXIT_PORT, 0xF4           # a write ends the run with that value as status

        .set    STACK_TOP,       0x7000         # stack of the raw images: grows down, in its own page,
                                                # never in the pages that hold the image's code

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
