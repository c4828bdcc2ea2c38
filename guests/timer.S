# timer.S - count 10 ticks of the 8254 PIT through the 8259A PIC, in real mode.
#
#   1. IVT: vector 0x20 -> irq0 (the tick handler); every other vector from
#      0x00 to 0x2F -> a catch-all that reports the vector and fails.
#   2. PIC pair remapped (ICW1-ICW4): master IRQ0-7 -> vectors 0x20-0x27,
#      slave IRQ8-15 -> 0x28-0x2F; every IRQ masked but IRQ0.
#   3. PIT channel 0: mode 2 (rate generator), binary, divisor 11932
#      (1193182 Hz / 11932 = about 100 Hz).
#   4. Main loop, with interrupts off between checks: while fewer than 10 ticks
#      were counted, STI; HLT (the STI shadow keeps the tick from slipping in
#      between). The handler counts the tick, masks IRQ0 at the PIC once the
#      count reaches 10 (so no later tick is ever counted), and sends a
#      non-specific EOI.
#   5. Prints the count: "timer: 10 ticks".
# The output never depends on how fast time passes. Ends with status 0 if the
# count is 10, 1 otherwise (or on any unexpected vector).

        .include "common.S"
        .include "boot16.S"

        .set    PIC1_CMD,  0x20
        .set    PIC1_DATA, 0x21
        .set    PIC2_CMD,  0xA0
        .set    PIC2_DATA, 0xA1
        .set    PIT_CH0,   0x40
        .set    PIT_MODE,  0x43
        .set    PIT_DIVISOR, 11932
        .set    IRQ_BASE,  0x20                 # master: vectors 0x20-0x27
        .set    IRQ_BASE2, 0x28                 # slave:  vectors 0x28-0x2F
        .set    ICW1_INIT_ICW4, 0x11            # edge triggered, cascade, ICW4 follows
        .set    ICW4_8086, 0x01
        .set    EOI, 0x20                       # OCW2: non-specific EOI
        .set    TICKS_WANTED, 10
        .set    LAST_VECTOR, 0x2F               # the catch-all covers 0x00..0x2F
        .set    TICKS, 0x5000                   # the tick count (a word), away from the image's pages

        .code16
main:
        movw    $0, TICKS

        # 1. the IVT (segment 0 for every entry)
        xorw    %bx, %bx                        # BX = vector * 4
        movw    $catch_stubs, %ax
1:      movw    %ax, (%bx)
        movw    $0, 2(%bx)
        addw    $CATCH_STUB_SIZE, %ax
        addw    $4, %bx
        cmpw    $(LAST_VECTOR + 1) * 4, %bx
        jb      1b
        movw    $irq0, IRQ_BASE * 4

        # 2. the PIC pair
        movb    $ICW1_INIT_ICW4, %al
        outb    %al, $PIC1_CMD
        outb    %al, $PIC2_CMD
        movb    $IRQ_BASE, %al                  # ICW2: vector base
        outb    %al, $PIC1_DATA
        movb    $IRQ_BASE2, %al
        outb    %al, $PIC2_DATA
        movb    $0x04, %al                      # ICW3: the slave is on master IRQ2
        outb    %al, $PIC1_DATA
        movb    $0x02, %al                      #       the slave's cascade identity
        outb    %al, $PIC2_DATA
        movb    $ICW4_8086, %al                 # ICW4: 8086 mode, normal EOI
        outb    %al, $PIC1_DATA
        outb    %al, $PIC2_DATA
        movb    $0xFE, %al                      # OCW1: only IRQ0 unmasked
        outb    %al, $PIC1_DATA
        movb    $0xFF, %al
        outb    %al, $PIC2_DATA

        # 3. the PIT
        movb    $0x34, %al                      # channel 0, low then high byte, mode 2, binary
        outb    %al, $PIT_MODE
        movb    $(PIT_DIVISOR & 0xFF), %al
        outb    %al, $PIT_CH0
        movb    $(PIT_DIVISOR >> 8), %al
        outb    %al, $PIT_CH0
        PRINT16 "timer: PIT channel 0 mode 2, divisor 11932; PIC IRQ0 -> vector 0x20\n"

        # 4. wait for the ticks
wait_tick:
        cli
        cmpw    $TICKS_WANTED, TICKS
        jae     counted
        sti
        hlt                                     # woken by the next interrupt
        jmp     wait_tick

        # 5. the count (interrupts off)
counted:
        PRINT16 "timer: "
        movzwl  TICKS, %eax
        call    dec32_16
        PRINT16 " ticks\n"
        cmpw    $TICKS_WANTED, TICKS
        jne     1f
        DEBUG_EXIT 0
1:      PRINT16 "timer: FAIL (expected 10 ticks)\n"
        DEBUG_EXIT 1

# IRQ0: count the tick; at the 10th, mask IRQ0 so no later tick is counted; EOI.
# The interrupted code always runs with DS = 0.
irq0:
        pushw   %ax
        incw    TICKS
        cmpw    $TICKS_WANTED, TICKS
        jb      1f
        inb     $PIC1_DATA, %al
        orb     $0x01, %al
        outb    %al, $PIC1_DATA
1:      movb    $EOI, %al
        outb    %al, $PIC1_CMD
        popw    %ax
        iret

# Catch-all stubs, one per vector 0x00..0x2F, CATCH_STUB_SIZE bytes apart:
# push the vector, report it, fail.
        .set    CATCH_STUB_SIZE, 8
        .balign CATCH_STUB_SIZE
catch_stubs:
        .set    vec, 0
        .rept   LAST_VECTOR + 1
        .balign CATCH_STUB_SIZE
        pushw   $vec
        jmp     unexpected
        .set    vec, vec + 1
        .endr

unexpected:
        cli
        PRINT16 "timer: FAIL, unexpected interrupt or exception, vector 0x"
        popw    %ax
        movb    $2, %cl
        call    hexn_16
        PRINT16 "\n"
        DEBUG_EXIT 1

        .include "number16.S"

        IMAGE_END
