# exceptions.S - install handlers, then raise exceptions and software
# interrupts in real mode, 32-bit protected mode and 64-bit long mode.
#
#   real mode       IVT entries for vectors 0x00-0x1F and 0x40, then
#                   #DE (div by zero), #UD (ud2), #GP (int $0x40 while the
#                   IVT limit, set with LIDT, is 0xFF: the vector is beyond
#                   it), #BP (int3), INT 0x40
#   protected mode  flat GDT (copied to 0x5000), IDT at 0x3000 with 32-bit
#                   interrupt gates (0x40 has DPL 3), a TSS at 0x5100
#                   (SS0:ESP0 = 0x10:0x7000); #DE, #UD, #GP (mov to DS of
#                   selector 0x58, beyond the GDT limit: error code 0x58),
#                   #PF (paging on, write to the unmapped 0x40000ABC: error
#                   code 2, CR2 0x40000ABC), #BP, INT 0x40; then IRET to
#                   ring 3 (ESP 0x6800) for INT 0x40 from ring 3 (stack
#                   switch to ESP0, IRET back to ring 3) and CLI from ring 3
#                   (#GP, error code 0; the handler resumes in ring 0)
#   long mode       IDT at 0x4000 with 64-bit interrupt gates; #DE, #UD,
#                   #GP (read through the non-canonical 0x8000000000000000:
#                   error code 0), #PF (CR0.WP set, write to the read-only
#                   page 0x100000: error code 3, CR2 0x100ABC), #BP, INT 0x40
#
# Every handler prints one line: the mode, the event's name and vector, the
# error code where the CPU pushes one, CR2 for #PF, where it came from (ring 3
# events: the ring-3 ESP and the ESP0 the frame was pushed below), and where it
# returns. Faults are resumed after the faulting instruction: the handler
# replaces the saved IP with the "resume" address of the expected event.
#
# The expected events are a table (`events`, one 24-byte entry per event, in
# order). Each handler compares the event with the next entry: a different
# vector, or an event after the last one, prints a FAIL line and ends the run
# with status 1 at once; a different saved IP, error code, CR2 or ring prints a
# FAIL line and counts a failure. Ends with status 0 when all 19 handlers ran,
# in order, and every check passed; 1 otherwise.

        .include "common.S"
        .include "modes.S"
        .include "boot16.S"

        .set    IDT32, 0x3000                   # 0x41 gates of 8 bytes
        .set    IDT64, 0x4000                   # 0x41 gates of 16 bytes
        .set    GDT_COPY, 0x5000                # the GDT in use: LTR writes the busy bit
        .set    TSS32, 0x5100                   # 104 bytes
        .set    EV_NEXT, 0x5200                 # dword: address of the next expected event
        .set    EV_COUNT, 0x5204                # dword: handlers run
        .set    EV_FAIL, 0x5208                 # dword: failed checks
        .set    USER_STACK, 0x6800              # ESP in ring 3
        .set    PD32, 0x10000                   # protected mode: page directory
        .set    PT32, 0x11000                   #   one page table: 0-4 MiB
        .set    PML4, 0x12000                   # long mode
        .set    PDPT, 0x13000
        .set    PD64, 0x14000
        .set    PT64, 0x15000                   #   one page table: 0-2 MiB
        .set    PAGING_END, 0x16000

        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10
        .set    SEL_UCODE, 0x18 | 3             # ring-3 code, RPL 3
        .set    SEL_UDATA, 0x20 | 3             # ring-3 data, RPL 3
        .set    SEL_TSS, 0x28
        .set    SEL_CODE64, 0x30
        .set    BAD_SEL, 0x58                   # beyond the GDT limit (0x37)

        .set    CR0_PE, 0x1
        .set    CR0_WP, 0x10000
        .set    CR0_PG, 0x80000000
        .set    CR4_PAE, 0x20
        .set    MSR_EFER, 0xC0000080
        .set    EFER_LME, 0x100
        .set    PTE_P, 0x1
        .set    PTE_P_RW, 0x3
        .set    PTE_P_RW_U, 0x7

        .set    GATE_INT, 0x8E                  # present, DPL 0, interrupt gate
        .set    GATE_INT_DPL3, 0xEE             # present, DPL 3, interrupt gate
        .set    INT_VECTOR, 0x40                # the INT n of every mode
        .set    ERR_VECTORS, 0x60227D00         # exceptions that push an error code: 8, 10-14, 17, 21, 29, 30

        .set    PF32_ADDR, 0x40000ABC           # not mapped in protected mode
        .set    RO_PAGE, 0x100000               # read-only in long mode
        .set    PF64_ADDR, RO_PAGE + 0xABC

# An expected event: 6 dwords. saved = the IP the CPU must push (the faulting
# instruction for a fault, the next one for a trap), resume = where the
# handler makes it return.
        .set    EV_VECTOR, 0
        .set    EV_FLAGS, 4
        .set    EV_SAVED, 8
        .set    EV_RESUME, 12
        .set    EV_ERR, 16
        .set    EV_CR2, 20
        .set    EV_SIZE, 24
        .set    F_RING3, 1                      # raised in ring 3
        .set    F_TO_RING0, 2                   # the handler resumes in ring 0
        .macro  EVENT vector, saved, resume, err=0, cr2=0, flags=0
        .long   \vector, \flags, \saved, \resume, \err, \cr2
        .endm

#------------------------------------------------------------------ real mode
        .code16
main:
        movl    $events, EV_NEXT
        movl    $0, EV_COUNT
        movl    $0, EV_FAIL
        PRINT16 "exceptions: real mode (IVT at 0x00000000)\n"

        # the IVT: vectors 0x00-0x1F and 0x40 (segment 0)
        xorw    %bx, %bx                        # BX = vector * 4
        movw    $rm_stubs, %ax
1:      movw    %ax, (%bx)
        movw    $0, 2(%bx)
        addw    $RM_STUB_SIZE, %ax
        addw    $4, %bx
        cmpw    $32 * 4, %bx
        jb      1b
        movw    $rm_stub_int, INT_VECTOR * 4
        movw    $0, INT_VECTOR * 4 + 2

        xorw    %cx, %cx
rm_de:  divw    %cx                             # #DE
rm_de_end:
rm_ud:  ud2                                     # #UD
rm_ud_end:
        lidtw   ivt_short
rm_gp:  int     $INT_VECTOR                     # #GP: 0x40 * 4 + 3 is beyond the limit
rm_gp_end:
        lidtw   ivt_full
rm_bp:  int3                                    # #BP
rm_bp_end:
rm_int: int     $INT_VECTOR                     # INT 0x40
rm_int_end:

        # to protected mode, with the GDT in a data page
        movw    $gdt, %si
        movw    $GDT_COPY, %di
        movw    $(gdt_end - gdt), %cx
        cld
        rep movsb
        ENTER_PROTECTED_MODE pm32

# The real-mode handler. Stack: vector (pushed by the stub), IP, CS, FLAGS.
rm_common:
        pushal
        movw    %sp, %bp                        # 32(%bp) vector, 34 IP, 36 CS, 38 FLAGS
        movw    EV_NEXT, %bx
        PRINT16 "real: "
        movw    32(%bp), %ax
        call    name16
        cmpw    $events_end, %bx
        jae     rm_unexpected
        cmpw    EV_VECTOR(%bx), %ax
        jne     rm_unexpected
        call    is_trap
        jnc     1f
        PRINT16 " returns to 0x"
        movw    34(%bp), %ax
        movb    $4, %cl
        call    hexn_16
        jmp     2f
1:      PRINT16 " at 0x"
        movw    34(%bp), %ax
        movb    $4, %cl
        call    hexn_16
        PRINT16 ", resumes at 0x"
        movw    EV_RESUME(%bx), %ax
        call    hexn_16
2:      PRINT16 "\n"
        movw    34(%bp), %ax                    # check: the saved IP
        cmpw    EV_SAVED(%bx), %ax
        je      1f
        PRINT16 "exceptions: FAIL, expected the saved IP 0x"
        movw    EV_SAVED(%bx), %ax
        movb    $4, %cl
        call    hexn_16
        PRINT16 "\n"
        incl    EV_FAIL
1:      movw    EV_RESUME(%bx), %ax             # resume
        movw    %ax, 34(%bp)
        addw    $EV_SIZE, EV_NEXT
        incl    EV_COUNT
        popal
        addw    $2, %sp
        iret

rm_unexpected:
        PRINT16 " at 0x"
        movw    34(%bp), %ax
        movb    $4, %cl
        call    hexn_16
        PRINT16 "\n"
        movl    %ebx, %eax
        jmp     unexpected16

# unexpected16: EAX = the expected event (events_end: none left). Fails.
unexpected16:
        cmpl    $events_end, %eax
        jb      1f
        PRINT16 "exceptions: FAIL, no more events were expected\n"
        DEBUG_EXIT 1
1:      movw    %ax, %bx
        PRINT16 "exceptions: FAIL, unexpected event; expected vector 0x"
        movw    EV_VECTOR(%bx), %ax
        movb    $2, %cl
        call    hexn_16
        PRINT16 "\n"
        DEBUG_EXIT 1

# name16: AL = vector; prints "#DE", "#GP", ... below 32, "INT 0xNN" from 32,
# then " (vector 0xNN)".
name16:
        pushal
        movzbl  %al, %eax
        cmpb    $32, %al
        jae     1f
        leaw    exc_names(,%eax,4), %si
        call    puts16
        jmp     2f
1:      PRINT16 "INT 0x"
        movb    $2, %cl
        call    hexn_16
2:      PRINT16 " (vector 0x"
        movb    $2, %cl
        call    hexn_16
        PRINT16 ")"
        popal
        ret

# is_trap: AL = vector; CF = 1 if the CPU pushes the address of the next
# instruction (#BP, #OF, INT n), CF = 0 for a fault. Preserves AX.
is_trap:
        cmpb    $3, %al
        je      1f
        cmpb    $4, %al
        je      1f
        cmpb    $32, %al
        cmc                                     # CF = (vector >= 32)
        ret
1:      stc
        ret

# The real-mode stubs, RM_STUB_SIZE bytes apart: push the vector, go on.
        .set    RM_STUB_SIZE, 8
        .balign RM_STUB_SIZE
rm_stubs:
        .set    vec, 0
        .rept   32
        .balign RM_STUB_SIZE
        pushw   $vec
        jmp     rm_common
        .set    vec, vec + 1
        .endr
rm_stub_int:
        pushw   $INT_VECTOR
        jmp     rm_common

#------------------------------------------------------------- protected mode
        .code32
pm32:
        FLAT_SEGMENTS STACK_TOP
        PRINT32 "exceptions: protected mode (IDT at 0x00003000, TSS at 0x00005100)\n"

        # the IDT: 0x41 gates, those of 0x20-0x3F not present
        movl    $IDT32, %edi
        xorl    %eax, %eax
        movl    $(0x41 * 8 / 4), %ecx
        cld
        rep stosl
        xorl    %ecx, %ecx
        movl    $pm_stubs, %eax
        movb    $GATE_INT, %dl
1:      call    set_gate32
        addl    $PM_STUB_SIZE, %eax
        incl    %ecx
        cmpl    $32, %ecx
        jb      1b
        movl    $pm_stub_int, %eax
        movl    $INT_VECTOR, %ecx
        movb    $GATE_INT_DPL3, %dl             # INT 0x40 is allowed from ring 3
        call    set_gate32
        lidtl   idt32_desc

        # the TSS: the ring-0 stack for events from ring 3; no I/O bitmap
        movl    $TSS32, %edi
        xorl    %eax, %eax
        movl    $(104 / 4), %ecx
        rep stosl
        movl    $STACK_TOP, TSS32 + 4           # ESP0
        movl    $SEL_DATA, TSS32 + 8            # SS0
        movw    $104, TSS32 + 102               # I/O map base: beyond the limit
        movw    $SEL_TSS, %ax
        ltr     %ax

        xorl    %ecx, %ecx
pm_de:  divl    %ecx                            # #DE
pm_de_end:
pm_ud:  ud2                                     # #UD
pm_ud_end:
        movw    $BAD_SEL, %ax
pm_gp:  movw    %ax, %ds                        # #GP(0x58)
pm_gp_end:

        # paging: 0-4 MiB identity-mapped (user, writable), nothing else
        movl    $PD32, %edi
        xorl    %eax, %eax
        movl    $((PAGING_END - PD32) / 4), %ecx
        rep stosl
        movl    $(PT32 | PTE_P_RW_U), PD32
        movl    $PT32, %edi
        movl    $PTE_P_RW_U, %eax
        movl    $1024, %ecx
1:      movl    %eax, (%edi)
        addl    $4096, %eax
        addl    $4, %edi
        loop    1b
        movl    $PD32, %eax
        movl    %eax, %cr3
        movl    %cr0, %eax
        orl     $CR0_PG, %eax
        movl    %eax, %cr0

pm_pf:  movl    %eax, PF32_ADDR                 # #PF(2), CR2 = 0x40000ABC
pm_pf_end:
pm_bp:  int3                                    # #BP
pm_bp_end:
pm_int: int     $INT_VECTOR                     # INT 0x40
pm_int_end:

        # to ring 3
        movw    $SEL_UDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        pushl   $SEL_UDATA                      # SS
        pushl   $USER_STACK                     # ESP
        pushfl                                  # EFLAGS: IF = 0, IOPL = 0
        pushl   $SEL_UCODE                      # CS
        pushl   $pm_user                        # EIP
        iretl
pm_user:                                        # ring 3
pm_uint: int    $INT_VECTOR                     # INT 0x40 from ring 3: stack switch to ESP0
pm_uint_end:
pm_ugp: cli                                     # #GP(0): CPL 3 > IOPL 0
pm_ugp_end:                                     # the #GP handler resumes here in ring 0
        FLAT_SEGMENTS STACK_TOP

        # to long mode: paging off, 4-level tables, PAE, LME, paging and WP on
        movl    %cr0, %eax
        andl    $~CR0_PG, %eax
        movl    %eax, %cr0
        IDENTITY_MAP_2M PML4, PDPT, PD64, PT64  # 0-2 MiB identity-mapped, writable
        movl    $(RO_PAGE | PTE_P), PT64 + 8 * (RO_PAGE >> 12)  # except 0x100000: read-only
        ENTER_LONG_MODE PML4, lm64, cr0=CR0_PG|CR0_WP

# set_gate32: EAX = handler, ECX = vector, DL = type and DPL byte.
set_gate32:
        pushl   %eax
        movw    %ax, IDT32(,%ecx,8)
        movw    $SEL_CODE32, IDT32 + 2(,%ecx,8)
        movb    $0, IDT32 + 4(,%ecx,8)
        movb    %dl, IDT32 + 5(,%ecx,8)
        shrl    $16, %eax
        movw    %ax, IDT32 + 6(,%ecx,8)
        popl    %eax
        ret

# The protected-mode handler. Stack: vector and error code (pushed by the
# stub, 0 where the CPU pushes none), EIP, CS, EFLAGS, and from ring 3 ESP, SS.
pm_common:
        pushal
        movl    %esp, %ebp                      # 32(%ebp) vector, 36 error, 40 EIP, 44 CS,
                                                # 48 EFLAGS, 52 ESP, 56 SS; from ring 3 the
                                                # frame ends at 60(%ebp), which must be ESP0
        movl    EV_NEXT, %ebx
        PRINT32 "protected: "
        movl    32(%ebp), %eax
        call    name32
        call    has_error_code
        jnc     1f
        PRINT32 " error 0x"
        movl    36(%ebp), %eax
        call    hex32_32
1:      cmpl    $14, 32(%ebp)
        jne     1f
        PRINT32 " cr2 0x"
        movl    %cr2, %eax
        call    hex32_32
1:      testb   $3, 44(%ebp)
        jz      1f
        PRINT32 " from ring 3 (esp 0x"
        movl    52(%ebp), %eax
        call    hex32_32
        PRINT32 ", esp0 0x"
        leal    60(%ebp), %eax
        call    hex32_32
        PRINT32 ")"
1:      cmpl    $events_end, %ebx
        jae     pm_unexpected
        movl    32(%ebp), %eax
        cmpl    EV_VECTOR(%ebx), %eax
        jne     pm_unexpected
        call    is_trap32
        jnc     1f
        PRINT32 " returns to 0x"
        movl    40(%ebp), %eax
        call    hex32_32
        jmp     3f
1:      PRINT32 " at 0x"
        movl    40(%ebp), %eax
        call    hex32_32
        testb   $F_TO_RING0, EV_FLAGS(%ebx)
        jz      2f
        PRINT32 ", resumes in ring 0 at 0x"
        jmp     1f
2:      PRINT32 ", resumes at 0x"
1:      movl    EV_RESUME(%ebx), %eax
        call    hex32_32
3:      PRINT32 "\n"

        # the checks
        movl    40(%ebp), %eax
        cmpl    EV_SAVED(%ebx), %eax
        je      1f
        PRINT32 "exceptions: FAIL, expected the saved EIP 0x"
        movl    EV_SAVED(%ebx), %eax
        call    pm_fail
1:      movl    32(%ebp), %eax
        call    has_error_code
        jnc     1f
        movl    36(%ebp), %eax
        cmpl    EV_ERR(%ebx), %eax
        je      1f
        PRINT32 "exceptions: FAIL, expected the error code 0x"
        movl    EV_ERR(%ebx), %eax
        call    pm_fail
1:      cmpl    $14, 32(%ebp)
        jne     1f
        movl    %cr2, %eax
        cmpl    EV_CR2(%ebx), %eax
        je      1f
        PRINT32 "exceptions: FAIL, expected CR2 0x"
        movl    EV_CR2(%ebx), %eax
        call    pm_fail
1:      movl    44(%ebp), %eax                  # ring 3 exactly when the entry says so
        andl    $3, %eax
        setnz   %al
        movb    EV_FLAGS(%ebx), %ah
        andb    $F_RING3, %ah
        cmpb    %ah, %al
        je      1f
        PRINT32 "exceptions: FAIL, expected the saved CS 0x"
        movl    $SEL_UCODE, %eax
        testb   $F_RING3, EV_FLAGS(%ebx)
        jnz     2f
        movl    $SEL_CODE32, %eax
2:      call    pm_fail
        jmp     2f
1:      testb   $F_RING3, EV_FLAGS(%ebx)
        jz      2f
        cmpl    $USER_STACK, 52(%ebp)
        je      1f
        PRINT32 "exceptions: FAIL, expected the saved ESP 0x"
        movl    $USER_STACK, %eax
        call    pm_fail
1:      leal    60(%ebp), %eax
        cmpl    $STACK_TOP, %eax
        je      2f
        PRINT32 "exceptions: FAIL, expected ESP0 0x"
        movl    $STACK_TOP, %eax
        call    pm_fail

2:      movl    EV_RESUME(%ebx), %eax           # resume
        movl    %eax, 40(%ebp)
        testb   $F_TO_RING0, EV_FLAGS(%ebx)
        jz      1f
        movl    $SEL_CODE32, 44(%ebp)           # IRET to ring 0: pops EIP, CS, EFLAGS only
1:      addl    $EV_SIZE, EV_NEXT
        incl    EV_COUNT
        popal
        addl    $8, %esp
        iretl

# pm_fail: EAX = the expected value; ends the FAIL line, counts the failure.
pm_fail:
        call    hex32_32
        PRINT32 "\n"
        incl    EV_FAIL
        ret

pm_unexpected:
        PRINT32 " at 0x"
        movl    40(%ebp), %eax
        call    hex32_32
        PRINT32 "\n"
        movl    %ebx, %eax
        call    fail_expected32
        DEBUG_EXIT 1

# fail_expected32: EAX = the expected event (events_end: none left); prints
# the FAIL line.
fail_expected32:
        cmpl    $events_end, %eax
        jb      1f
        PRINT32 "exceptions: FAIL, no more events were expected\n"
        ret
1:      PRINT32 "exceptions: FAIL, unexpected event; expected vector 0x"
        movl    EV_VECTOR(%eax), %eax
        movb    $2, %cl
        call    hexn_32
        PRINT32 "\n"
        ret

# name32: as name16, from 32-bit code. EAX = vector.
name32:
        pushal
        cmpl    $32, %eax
        jae     1f
        leal    exc_names(,%eax,4), %esi
        call    puts32
        jmp     2f
1:      PRINT32 "INT 0x"
        movb    $2, %cl
        call    hexn_32
2:      PRINT32 " (vector 0x"
        movb    $2, %cl
        call    hexn_32
        PRINT32 ")"
        popal
        ret

# is_trap32: as is_trap, from 32-bit code (AL = vector).
is_trap32:
        cmpb    $3, %al
        je      1f
        cmpb    $4, %al
        je      1f
        cmpb    $32, %al
        cmc
        ret
1:      stc
        ret

# has_error_code: EAX = vector; CF = 1 if the CPU pushes an error code.
# Preserves every register. Same bytes in 32- and 64-bit code.
has_error_code:
        cmpl    $32, %eax
        jae     1f                              # CF = 0
        pushl   %edx
        movl    $ERR_VECTORS, %edx
        btl     %eax, %edx
        popl    %edx
1:      ret

# The protected-mode stubs, PM_STUB_SIZE bytes apart: push a zero where the
# CPU pushes no error code, push the vector, go on.
        .set    PM_STUB_SIZE, 16
        .balign PM_STUB_SIZE
pm_stubs:
        .set    vec, 0
        .rept   32
        .balign PM_STUB_SIZE
        .if     ((ERR_VECTORS >> vec) & 1) == 0
        pushl   $0
        .endif
        pushl   $vec
        jmp     pm_common
        .set    vec, vec + 1
        .endr
pm_stub_int:
        pushl   $0
        pushl   $INT_VECTOR
        jmp     pm_common

#------------------------------------------------------------------ long mode
        .code64
lm64:
        movq    $STACK_TOP, %rsp
        # the IDT: 0x41 gates, those of 0x20-0x3F not present
        movl    $IDT64, %edi
        xorl    %eax, %eax
        movl    $(0x41 * 16 / 4), %ecx
        cld
        rep stosl
        xorl    %ecx, %ecx
        movl    $lm_stubs, %eax
1:      call    set_gate64
        addl    $LM_STUB_SIZE, %eax
        incl    %ecx
        cmpl    $32, %ecx
        jb      1b
        movl    $lm_stub_int, %eax
        movl    $INT_VECTOR, %ecx
        call    set_gate64
        movl    $idt64_desc, %eax               # (a label as a 64-bit displacement
        lidt    (%rax)                          #  has no relocation in an ELF32 object)
        PRINT64 "exceptions: long mode (IDT at 0x0000000000004000)\n"

        xorl    %ecx, %ecx
lm_de:  divl    %ecx                            # #DE
lm_de_end:
lm_ud:  ud2                                     # #UD
lm_ud_end:
        movabsq $0x8000000000000000, %rbx
lm_gp:  movq    (%rbx), %rax                    # #GP(0): not canonical
lm_gp_end:
lm_pf:  movl    %eax, PF64_ADDR                 # #PF(3), CR2 = 0x100ABC: read-only page
lm_pf_end:
lm_bp:  int3                                    # #BP
lm_bp_end:
lm_int: int     $INT_VECTOR                     # INT 0x40
lm_int_end:

        PRINT64 "exceptions: "
        movl    EV_COUNT, %eax
        call    dec64_64
        PRINT64 " handlers ran in order\n"
        cmpl    $events_end, EV_NEXT
        jne     1f
        cmpl    $0, EV_FAIL
        jne     1f
        PRINT64 "exceptions: ok\n"
        DEBUG_EXIT 0
1:      PRINT64 "exceptions: FAIL\n"
        DEBUG_EXIT 1

# set_gate64: EAX = handler (below 4 GiB), ECX = vector; a DPL 0 interrupt gate.
set_gate64:
        pushq   %rax
        pushq   %rdi
        movl    %ecx, %edi
        shll    $4, %edi
        addl    $IDT64, %edi
        movw    %ax, (%rdi)                     # offset bits 15:0
        movw    $SEL_CODE64, 2(%rdi)
        movw    $(GATE_INT << 8), 4(%rdi)       # IST 0, type and DPL
        shrl    $16, %eax
        movw    %ax, 6(%rdi)                    # offset bits 31:16
        movl    $0, 8(%rdi)                     # offset bits 63:32
        movl    $0, 12(%rdi)
        popq    %rdi
        popq    %rax
        ret

# The long-mode handler. Stack: vector and error code (from the stub or the
# CPU), RIP, CS, RFLAGS, RSP, SS.
lm_common:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        pushq   %rbp
        movq    %rsp, %rbp                      # 40(%rbp) vector, 48 error, 56 RIP, 64 CS,
                                                # 72 RFLAGS, 80 RSP, 88 SS
        movl    EV_NEXT, %ebx
        PRINT64 "long: "
        movq    40(%rbp), %rax
        call    name64
        call    has_error_code
        jnc     1f
        PRINT64 " error 0x"
        movq    48(%rbp), %rax
        call    hex64_64
1:      cmpq    $14, 40(%rbp)
        jne     1f
        PRINT64 " cr2 0x"
        movq    %cr2, %rax
        call    hex64_64
1:      cmpl    $events_end, %ebx
        jae     lm_unexpected
        movq    40(%rbp), %rax
        cmpl    EV_VECTOR(%rbx), %eax
        jne     lm_unexpected
        call    is_trap64
        jnc     1f
        PRINT64 " returns to 0x"
        movq    56(%rbp), %rax
        call    hex64_64
        jmp     2f
1:      PRINT64 " at 0x"
        movq    56(%rbp), %rax
        call    hex64_64
        PRINT64 ", resumes at 0x"
        movl    EV_RESUME(%rbx), %eax
        call    hex64_64
2:      PRINT64 "\n"

        # the checks
        movl    EV_SAVED(%rbx), %eax
        cmpq    %rax, 56(%rbp)
        je      1f
        PRINT64 "exceptions: FAIL, expected the saved RIP 0x"
        call    lm_fail
1:      movq    40(%rbp), %rax
        call    has_error_code
        jnc     1f
        movl    EV_ERR(%rbx), %eax
        cmpq    %rax, 48(%rbp)
        je      1f
        PRINT64 "exceptions: FAIL, expected the error code 0x"
        call    lm_fail
1:      cmpq    $14, 40(%rbp)
        jne     1f
        movq    %cr2, %rax
        movl    EV_CR2(%rbx), %ecx
        cmpq    %rcx, %rax
        je      1f
        PRINT64 "exceptions: FAIL, expected CR2 0x"
        movq    %rcx, %rax
        call    lm_fail

1:      movl    EV_RESUME(%rbx), %eax           # resume
        movq    %rax, 56(%rbp)
        addl    $EV_SIZE, EV_NEXT
        incl    EV_COUNT
        popq    %rbp
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        addq    $16, %rsp
        iretq

# lm_fail: RAX = the expected value; ends the FAIL line, counts the failure.
lm_fail:
        call    hex64_64
        PRINT64 "\n"
        incl    EV_FAIL
        ret

lm_unexpected:
        PRINT64 " at 0x"
        movq    56(%rbp), %rax
        call    hex64_64
        PRINT64 "\n"
        cmpl    $events_end, %ebx
        jb      1f
        PRINT64 "exceptions: FAIL, no more events were expected\n"
        DEBUG_EXIT 1
1:      PRINT64 "exceptions: FAIL, unexpected event; expected vector 0x"
        movl    EV_VECTOR(%rbx), %eax
        movb    $2, %cl
        call    hexn_64
        PRINT64 "\n"
        DEBUG_EXIT 1

# name64: as name16, from 64-bit code. RAX = vector.
name64:
        pushq   %rax
        pushq   %rcx
        pushq   %rsi
        cmpq    $32, %rax
        jae     1f
        movl    $exc_names, %esi
        leaq    (%rsi,%rax,4), %rsi
        call    puts64
        jmp     2f
1:      PRINT64 "INT 0x"
        movb    $2, %cl
        call    hexn_64
2:      PRINT64 " (vector 0x"
        movb    $2, %cl
        call    hexn_64
        PRINT64 ")"
        popq    %rsi
        popq    %rcx
        popq    %rax
        ret

# is_trap64: as is_trap, from 64-bit code (AL = vector).
is_trap64:
        cmpb    $3, %al
        je      1f
        cmpb    $4, %al
        je      1f
        cmpb    $32, %al
        cmc
        ret
1:      stc
        ret

# The long-mode stubs, LM_STUB_SIZE bytes apart (as the protected-mode ones).
        .set    LM_STUB_SIZE, 16
        .balign LM_STUB_SIZE
lm_stubs:
        .set    vec, 0
        .rept   32
        .balign LM_STUB_SIZE
        .if     ((ERR_VECTORS >> vec) & 1) == 0
        pushq   $0
        .endif
        pushq   $vec
        jmp     lm_common
        .set    vec, vec + 1
        .endr
lm_stub_int:
        pushq   $0
        pushq   $INT_VECTOR
        jmp     lm_common

#----------------------------------------------------------------------- data
# The expected events, in order.
        .balign 4
events:
        EVENT   0x00, rm_de, rm_de_end
        EVENT   0x06, rm_ud, rm_ud_end
        EVENT   0x0D, rm_gp, rm_gp_end
        EVENT   0x03, rm_bp_end, rm_bp_end
        EVENT   0x40, rm_int_end, rm_int_end
        EVENT   0x00, pm_de, pm_de_end
        EVENT   0x06, pm_ud, pm_ud_end
        EVENT   0x0D, pm_gp, pm_gp_end, err=BAD_SEL
        EVENT   0x0E, pm_pf, pm_pf_end, err=0x2, cr2=PF32_ADDR
        EVENT   0x03, pm_bp_end, pm_bp_end
        EVENT   0x40, pm_int_end, pm_int_end
        EVENT   0x40, pm_uint_end, pm_uint_end, flags=F_RING3
        EVENT   0x0D, pm_ugp, pm_ugp_end, err=0, flags=F_RING3|F_TO_RING0
        EVENT   0x00, lm_de, lm_de_end
        EVENT   0x06, lm_ud, lm_ud_end
        EVENT   0x0D, lm_gp, lm_gp_end, err=0
        EVENT   0x0E, lm_pf, lm_pf_end, err=0x3, cr2=PF64_ADDR
        EVENT   0x03, lm_bp_end, lm_bp_end
        EVENT   0x40, lm_int_end, lm_int_end
events_end:

# Exception names, 4 bytes each (NUL-terminated), by vector.
exc_names:
        .ascii  "#DE\0#DB\0NMI\0#BP\0#OF\0#BR\0#UD\0#NM\0"
        .ascii  "#DF\0#09\0#TS\0#NP\0#SS\0#GP\0#PF\0#15\0"
        .ascii  "#MF\0#AC\0#MC\0#XM\0#VE\0#CP\0#22\0#23\0"
        .ascii  "#24\0#25\0#26\0#27\0#HV\0#VC\0#SX\0#31\0"

ivt_short:                                      # the IVT with room for vectors 0x00-0x3F only
        .word   0x00FF
        .long   0
ivt_full:
        .word   0x03FF
        .long   0

# Copied to GDT_COPY before use. Descriptors have the accessed bit set.
        .balign 8
gdt:
        .quad   0                               # 0x00 null
        .quad   0x00CF9B000000FFFF              # 0x08 32-bit code, flat, ring 0
        .quad   0x00CF93000000FFFF              # 0x10 data, flat, ring 0
        .quad   0x00CFFB000000FFFF              # 0x18 32-bit code, flat, ring 3
        .quad   0x00CFF3000000FFFF              # 0x20 data, flat, ring 3
        .quad   0x0000890051000067              # 0x28 32-bit TSS at 0x5100, limit 0x67
        .quad   0x00AF9B000000FFFF              # 0x30 64-bit code
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   GDT_COPY
idt32_desc:
        .word   0x41 * 8 - 1
        .long   IDT32
idt64_desc:
        .word   0x41 * 16 - 1
        .quad   IDT64

        .include "number16.S"                   # serial16.S is in the boot sector
        .include "serial32.S"
        .include "number32.S"
        .include "serial64.S"
        .include "number64.S"

        IMAGE_END
