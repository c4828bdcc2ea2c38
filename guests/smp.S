# smp.S - wake every application processor with INIT-SIPI-SIPI and count them.
#
# The bootstrap processor (BSP):
#   1. CPUID leaf 1: the number of logical processors is EBX bits 23:16 when
#      EDX bit 28 (HTT) is set, 1 otherwise; the APs expected are one fewer.
#   2. Copies the AP trampoline (real-mode code) to the page at 0x1000 and
#      enters 32-bit flat protected mode.
#   3. Clears the lock, the counter and the 256 per-APIC-ID slots; reads its
#      own APIC ID (0xFEE00020 bits 31:24) and prints the plan.
#   4. Software-enables its local APIC (SVR 0xFEE000F0: bit 8, spurious vector
#      0xFF), then through the ICR (0xFEE00310, 0xFEE00300), to all but itself:
#      INIT, and twice SIPI with vector 0x01 (the trampoline's page number).
#      After each: waits for the delivery-status bit to clear, then a short
#      fixed delay loop.
#   5. Spins with PAUSE (at most WAIT_SPINS rounds) until the counter equals
#      the number of APs expected.
#   6. Prints one line per APIC ID that checked in, in APIC ID order (so the
#      output does not depend on which AP ran first), then the verdict.
# Each application processor (AP) starts in real mode at 0100:0000 (physical
# 0x1000), loads the GDT, enters protected mode, reads its APIC ID, takes the
# spinlock (lock xchg), counts itself in its slot and, with a plain
# read-modify-write that only the lock makes safe, in the shared counter,
# releases the lock and halts with interrupts off. The APs use no stack.
# Ends with status 0 if the counter equals the APs expected and every slot was
# taken once by an AP other than the BSP; 1 otherwise.

        .include "common.S"
        .include "modes.S"
        .include "mp.S"
        .include "boot16.S"

        .set    TRAMPOLINE, 0x1000              # the APs' entry page (SIPI vector 0x01)
        .set    LOCK, 0x5000                    # dword: 0 free, 1 taken
        .set    COUNTER, 0x5040                 # dword: APs counted (its own cache line)
        .set    EXPECTED, 0x5080                # dword: APs expected
        .set    SLOTS, 0x5100                   # 256 bytes: check-ins per APIC ID
        .set    APIC_ID, 0xFEE00020
        .set    APIC_SVR, 0xFEE000F0
        .set    APIC_ICR_LO, 0xFEE00300
        .set    APIC_ICR_HI, 0xFEE00310
        .set    SVR_ENABLE, 0x100
        .set    ICR_BUSY, 0x1000                # delivery status: send pending
        .set    ICR_ALL_BUT_SELF, 0xC0000       # destination shorthand 11
        .set    ICR_ASSERT, 0x4000              # level: assert
        .set    ICR_INIT, 0x500                 # delivery mode 101
        .set    ICR_STARTUP, 0x600              # delivery mode 110
        .set    WAIT_SPINS, 0x400000            # the bounded wait for the APs (PAUSE rounds)
        .set    DELAY_LOOPS, 0x10000            # after each IPI
        .set    CR0_PE, 0x1
        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10

        .code16
main:
        # 1. how many APs to expect
        LOGICAL_PROCESSORS %esi                 # logical processors
        decl    %esi
        movl    %esi, EXPECTED

        # 2. the trampoline, then protected mode
        COPY_TRAMPOLINE TRAMPOLINE
        ENTER_PROTECTED_MODE pm32

# The AP trampoline, copied to TRAMPOLINE: SIPI vector 0x01, CS:IP = 0100:0000.
        AP_TRAMPOLINE ap_pm32

        .code32
pm32:
        FLAT_SEGMENTS STACK_TOP

        # 3. shared state, the plan
        movl    $0, LOCK
        movl    $0, COUNTER
        movl    $SLOTS, %edi
        xorl    %eax, %eax
        movl    $(256 / 4), %ecx
        rep stosl
        movl    APIC_ID, %ebx
        shrl    $24, %ebx                       # EBX = the BSP's APIC ID
        PRINT32 "smp: BSP APIC ID "
        movl    %ebx, %eax
        call    dec32_32
        PRINT32 ", "
        movl    EXPECTED, %eax
        incl    %eax
        call    dec32_32
        PRINT32 " logical processors (CPUID leaf 1), waking "
        movl    EXPECTED, %eax
        call    dec32_32
        PRINT32 " APs\n"

        # 4. INIT-SIPI-SIPI to all but self
        movl    APIC_SVR, %eax
        orl     $(SVR_ENABLE | 0xFF), %eax
        movl    %eax, APIC_SVR
        movl    $(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_INIT), %eax
        call    send_ipi
        movl    $(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_STARTUP | (TRAMPOLINE >> 12)), %eax
        call    send_ipi
        call    send_ipi                        # the second SIPI (ignored by an AP that is up)

        # 5. wait for the APs, bounded
        movl    $WAIT_SPINS, %ecx
1:      movl    COUNTER, %eax
        cmpl    EXPECTED, %eax
        je      2f
        pause
        loop    1b

        # 6. the APs, in APIC ID order, and the verdict
2:      xorl    %ebp, %ebp                      # EBP = failures
        xorl    %edx, %edx                      # EDX = APIC ID
1:      movzbl  SLOTS(%edx), %ecx
        testl   %ecx, %ecx
        jz      3f
        PRINT32 "smp: AP "
        movl    %edx, %eax
        call    dec32_32
        PRINT32 " up\n"
        cmpl    $1, %ecx
        je      2f
        PRINT32 "smp: FAIL, APIC ID "
        call    dec32_32
        PRINT32 " checked in "
        movl    %ecx, %eax
        call    dec32_32
        PRINT32 " times\n"
        incl    %ebp
2:      cmpl    %ebx, %edx
        jne     3f
        PRINT32 "smp: FAIL, that is the BSP's APIC ID\n"
        incl    %ebp
3:      incl    %edx
        cmpl    $256, %edx
        jb      1b

        movl    COUNTER, %eax
        cmpl    EXPECTED, %eax
        jne     1f
        testl   %ebp, %ebp
        jnz     1f
        PRINT32 "smp: "
        call    dec32_32
        PRINT32 " APs, counter "
        call    dec32_32
        PRINT32 " ok\n"
        DEBUG_EXIT 0
1:      PRINT32 "smp: FAIL, "
        pushl   %eax
        movl    EXPECTED, %eax
        call    dec32_32
        PRINT32 " APs expected, counter "
        popl    %eax
        call    dec32_32
        PRINT32 "\n"
        DEBUG_EXIT 1

# send_ipi: EAX = ICR low dword (the destination is in the shorthand). Writes
# the ICR, waits (bounded) for the delivery-status bit to clear, then delays.
send_ipi:
        pushl   %ecx
        movl    $0, APIC_ICR_HI
        movl    %eax, APIC_ICR_LO
        movl    $DELAY_LOOPS, %ecx
1:      testl   $ICR_BUSY, APIC_ICR_LO
        jz      2f
        loop    1b
2:      movl    $DELAY_LOOPS, %ecx
3:      loop    3b
        popl    %ecx
        ret

# An AP, in protected mode. No stack, interrupts off.
ap_pm32:
        movw    $SEL_DATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    APIC_ID, %edx
        shrl    $24, %edx                       # EDX = this AP's APIC ID
1:      movl    $1, %eax                        # take the lock
        lock xchgl %eax, LOCK
        testl   %eax, %eax
        jz      3f
2:      pause                                   # taken: wait until it looks free, retry
        cmpl    $0, LOCK
        jne     2b
        jmp     1b
3:      incb    SLOTS(%edx)                     # the critical section
        movl    COUNTER, %eax
        incl    %eax
        movl    %eax, COUNTER
        movl    $0, LOCK                        # release
4:      cli
        hlt
        jmp     4b

        FLAT_GDT

        .include "serial32.S"
        .include "number32.S"

        IMAGE_END
