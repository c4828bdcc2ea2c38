# ipi.S - one vCPU sends fixed IPIs to another, end to end.
#
# Needs two logical processors (vmmtui --vcpus 2; QEMU -smp 2).
#
# The bootstrap processor (BSP):
#   1. CPUID leaf 1: the number of logical processors is EBX bits 23:16 when
#      EDX bit 28 (HTT) is set, 1 otherwise; fewer than 2 is a failure.
#   2. Copies the AP trampoline (real-mode code) to the page at 0x1000, clears
#      the shared state and enters 32-bit flat protected mode.
#   3. Reads its own APIC ID (0xFEE00020 bits 31:24), prints the plan and
#      software-enables its local APIC (SVR 0xFEE000F0: bit 8, vector 0xFF).
#   4. Starts APIC ID 1 (physical destination, ICR high = 1 << 24) with INIT
#      (ICR low 0x00004500) and twice SIPI (0x00004601: vector 0x01, the
#      trampoline's page); after each, waits for the delivery-status bit
#      (12) to clear and runs a fixed delay loop.
#   5. Waits (bounded) for the AP's "ready" flag and checks that the AP read
#      back SVR bit 8 set.
#   6. Sends a fixed IPI to the AP's APIC ID: ICR high = ID << 24, ICR low
#      0x00004040 (vector 0x40, delivery mode 000 fixed, bit 11 = 0 physical,
#      bit 14 = 1 assert, edge, no shorthand); waits (bounded) for the
#      handler's counter to reach 1 and checks the vector its handler logged.
#   7. The same with vector 0x41 (its own handler): counter 2, second log slot.
#   8. Status 0, or a `ipi: FAIL, ...` line and status 1 at the first failure.
# The application processor (AP) starts in real mode at 0100:0000 (physical
# 0x1000), loads the GDT, enters protected mode, sets up a stack, loads the
# IDT (at 0x3000: 32-bit interrupt gates for vectors 0x40 and 0x41 only),
# stores its APIC ID, software-enables its local APIC (SVR = 0x1FF), sets
# TPR = 0, stores the SVR it reads back, sets the ready flag, then `sti` and
# `hlt` in a loop. Each handler logs its vector in the next log slot, writes
# EOI (0xFEE000B0 = 0), then publishes the incremented counter and IRETs.
# Only the BSP prints.

        .include "common.S"
        .include "modes.S"
        .include "mp.S"
        .include "boot16.S"

        .set    TRAMPOLINE, 0x1000              # the AP's entry page (SIPI vector 0x01)
        .set    IDT, 0x3000                     # the AP's IDT: 256 gates, 0x40 and 0x41 present
        .set    READY, 0x5000                   # dword: the AP set up its APIC and IDT
        .set    AP_ID, 0x5004                   # dword: the AP's APIC ID
        .set    AP_SVR, 0x5008                  # dword: the SVR as the AP read it back
        .set    COUNTER, 0x5040                 # dword: IPIs the AP handled (its own cache line)
        .set    LOG, 0x5080                     # bytes: the vectors, in the order handled
        .set    AP_STACK_TOP, 0x6800            # the AP's stack (the BSP's is below 0x7000)
        .set    APIC_ID, 0xFEE00020
        .set    APIC_TPR, 0xFEE00080
        .set    APIC_EOI, 0xFEE000B0
        .set    APIC_SVR, 0xFEE000F0
        .set    APIC_ICR_LO, 0xFEE00300
        .set    APIC_ICR_HI, 0xFEE00310
        .set    SVR_ENABLE, 0x100
        .set    SPURIOUS, 0xFF
        .set    ICR_BUSY, 0x1000                # delivery status: send pending
        .set    ICR_ASSERT, 0x4000              # level: assert
        .set    ICR_FIXED, 0x000                # delivery mode 000
        .set    ICR_INIT, 0x500                 # delivery mode 101
        .set    ICR_STARTUP, 0x600              # delivery mode 110
        .set    AP_APIC_ID, 1                   # the AP this guest starts
        .set    VECTOR_A, 0x40
        .set    VECTOR_B, 0x41
        .set    WAIT_SPINS, 0x400000            # every bounded wait (PAUSE rounds)
        .set    DELAY_LOOPS, 0x10000            # after INIT and each SIPI
        .set    CR0_PE, 0x1
        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10

        .code16
main:
        # 1. how many logical processors
        LOGICAL_PROCESSORS %ebp                 # EBP = logical processors

        # 2. the trampoline, the shared state, protected mode
        COPY_TRAMPOLINE TRAMPOLINE
        movl    $0, READY
        movl    $0xFFFFFFFF, AP_ID
        movl    $0, AP_SVR
        movl    $0, COUNTER
        movl    $0, LOG
        ENTER_PROTECTED_MODE pm32

# The AP trampoline, copied to TRAMPOLINE: SIPI vector 0x01, CS:IP = 0100:0000.
        AP_TRAMPOLINE ap_pm32

        .code32
pm32:
        FLAT_SEGMENTS STACK_TOP

        # 3. the plan (EBP = logical processors)
        movl    APIC_ID, %ebx
        shrl    $24, %ebx                       # EBX = the BSP's APIC ID
        PRINT32 "ipi: BSP APIC ID "
        movl    %ebx, %eax
        call    dec32_32
        PRINT32 ", "
        movl    %ebp, %eax
        call    dec32_32
        PRINT32 " logical processors (CPUID leaf 1), starting APIC ID "
        movl    $AP_APIC_ID, %eax
        call    dec32_32
        PRINT32 "\n"
        cmpl    $2, %ebp
        jae     1f
        PRINT32 "ipi: FAIL, needs 2 logical processors\n"
        DEBUG_EXIT 1
1:      movl    APIC_SVR, %eax
        orl     $(SVR_ENABLE | SPURIOUS), %eax
        movl    %eax, APIC_SVR

        # 4. INIT-SIPI-SIPI to APIC ID 1
        movl    $(AP_APIC_ID << 24), %edx
        movl    $(ICR_ASSERT | ICR_INIT), %eax
        call    send_ipi
        call    delay
        movl    $(ICR_ASSERT | ICR_STARTUP | (TRAMPOLINE >> 12)), %eax
        call    send_ipi
        call    delay
        call    send_ipi                        # the second SIPI (ignored by an AP that is up)
        call    delay

        # 5. wait for the AP, bounded
        movl    $WAIT_SPINS, %ecx
1:      cmpl    $0, READY
        jne     2f
        pause
        loop    1b
        PRINT32 "ipi: FAIL, APIC ID 1 did not start\n"
        DEBUG_EXIT 1
2:      movl    AP_ID, %edi                     # EDI = the AP's APIC ID from now on
        PRINT32 "ipi: AP "
        movl    %edi, %eax
        call    dec32_32
        testl   $SVR_ENABLE, AP_SVR
        jnz     1f
        PRINT32 " up, FAIL, its SVR reads 0x"
        movl    AP_SVR, %eax
        call    hex32_32
        PRINT32 "\n"
        DEBUG_EXIT 1
1:      PRINT32 " up, APIC enabled\n"

        # 6. and 7. the two fixed IPIs, one at a time
        movl    $VECTOR_A, %eax
        movl    $1, %ecx
        call    fixed_ipi
        movl    $VECTOR_B, %eax
        movl    $2, %ecx
        call    fixed_ipi

        # 8. the verdict (every failure above ends the run at once)
        PRINT32 "ipi: "
        movl    COUNTER, %eax
        call    dec32_32
        PRINT32 " IPIs delivered, ok\n"
        DEBUG_EXIT 0

# fixed_ipi: EAX = vector, ECX = the counter it must bring, EDI = the AP's APIC
# ID. Prints the ICR, sends the IPI, waits (bounded) for the AP's handler and
# checks the vector it logged. Returns only if all went well.
fixed_ipi:
        pushl   %ebx
        pushl   %ecx
        movl    %eax, %ebx                      # EBX = vector
        movl    %edi, %edx
        shll    $24, %edx                       # EDX = ICR high: physical destination
        PRINT32 "ipi: ICR 0x"
        movl    %edx, %eax
        call    hex32_32
        PRINT32 " 0x"
        movl    %ebx, %eax
        orl     $(ICR_ASSERT | ICR_FIXED), %eax # EAX = ICR low
        call    hex32_32
        PRINT32 " (fixed, physical, vector 0x"
        pushl   %ecx
        movl    %ebx, %eax
        movb    $2, %cl
        call    hexn_32
        popl    %ecx
        PRINT32 ")\n"
        movl    %ebx, %eax
        orl     $(ICR_ASSERT | ICR_FIXED), %eax
        call    send_ipi
        pushl   %ecx                            # ECX = the counter expected
        movl    $WAIT_SPINS, %ecx
1:      movl    COUNTER, %eax
        cmpl    (%esp), %eax
        jae     2f
        pause
        loop    1b
2:      popl    %ecx
        cmpl    %ecx, %eax
        je      3f
        movl    %ecx, %edx                      # EDX = the counter expected
        PRINT32 "ipi: FAIL, vector 0x"
        movl    %ebx, %eax
        movb    $2, %cl
        call    hexn_32
        PRINT32 ": counter "
        movl    COUNTER, %eax
        call    dec32_32
        PRINT32 ", expected "
        movl    %edx, %eax
        call    dec32_32
        PRINT32 "\n"
        DEBUG_EXIT 1
3:      movzbl  LOG - 1(%ecx), %eax             # the vector the handler logged
        cmpl    %ebx, %eax
        je      4f
        PRINT32 "ipi: FAIL, AP handler logged vector 0x"
        movb    $2, %cl
        call    hexn_32
        PRINT32 ", expected 0x"
        movl    %ebx, %eax
        call    hexn_32
        PRINT32 "\n"
        DEBUG_EXIT 1
4:      PRINT32 "ipi: AP "
        movl    %edi, %eax
        call    dec32_32
        PRINT32 " took vector 0x"
        movl    %ebx, %eax
        movb    $2, %cl
        call    hexn_32
        PRINT32 "\n"
        popl    %ecx
        popl    %ebx
        ret

# send_ipi: EAX = ICR low dword, EDX = ICR high dword (the destination).
# Writes the ICR (high first: the write to the low dword sends) and waits,
# bounded, for the delivery-status bit to clear.
send_ipi:
        pushl   %ecx
        movl    %edx, APIC_ICR_HI
        movl    %eax, APIC_ICR_LO
        movl    $DELAY_LOOPS, %ecx
1:      testl   $ICR_BUSY, APIC_ICR_LO
        jz      2f
        loop    1b
2:      popl    %ecx
        ret

# delay: the fixed wait after INIT and each SIPI.
delay:
        pushl   %ecx
        movl    $DELAY_LOOPS, %ecx
1:      loop    1b
        popl    %ecx
        ret

# The AP, in protected mode, interrupts off.
ap_pm32:
        movw    $SEL_DATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    $AP_STACK_TOP, %esp
        # The IDT: every gate not present but 0x40 and 0x41 (32-bit interrupt
        # gates, selector 0x08, DPL 0).
        movl    $IDT, %edi
        xorl    %eax, %eax
        movl    $(256 * 8 / 4), %ecx
        cld
        rep stosl
        movl    $ap_handler_a, %eax
        movl    $(IDT + VECTOR_A * 8), %edi
        call    set_gate
        movl    $ap_handler_b, %eax
        movl    $(IDT + VECTOR_B * 8), %edi
        call    set_gate
        lidtl   idt_desc
        # The local APIC.
        movl    APIC_ID, %eax
        shrl    $24, %eax
        movl    %eax, AP_ID
        movl    $(SVR_ENABLE | SPURIOUS), APIC_SVR
        movl    $0, APIC_TPR
        movl    APIC_SVR, %eax
        movl    %eax, AP_SVR
        movl    $1, READY
        sti
1:      hlt
        jmp     1b

# set_gate: EAX = handler, EDI = the gate's address.
set_gate:
        movw    %ax, (%edi)                     # offset 15:0
        movw    $SEL_CODE32, 2(%edi)
        movw    $0x8E00, 4(%edi)                # present, DPL 0, 32-bit interrupt gate
        shrl    $16, %eax
        movw    %ax, 6(%edi)                    # offset 31:16
        ret

# The handlers: log the vector in the next slot, EOI, then publish the count
# (last, so the BSP sees it only once the vector is logged and retired).
        .macro  AP_HANDLER vector
        pushl   %eax
        movl    COUNTER, %eax
        movb    $\vector, LOG(%eax)
        movl    $0, APIC_EOI
        incl    %eax
        movl    %eax, COUNTER
        popl    %eax
        iret
        .endm
ap_handler_a:
        AP_HANDLER VECTOR_A
ap_handler_b:
        AP_HANDLER VECTOR_B

        FLAT_GDT
idt_desc:
        .word   256 * 8 - 1
        .long   IDT

        .include "serial32.S"
        .include "number32.S"

        IMAGE_END
