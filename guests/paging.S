# paging.S - real mode -> 32-bit protected mode -> 64-bit long mode.
#
#   real mode       prints "paging: real mode", loads its own GDT, sets CR0.PE
#   protected mode  prints "paging: protected mode"; writes the magic quadword
#                   0xFEEDFACECAFEBEEF at physical 0x2000 and a decoy
#                   0x0BAD0BAD0BAD0BAD at physical 0x1000; builds 4-level
#                   page tables at 0x10000-0x13FFF identity-mapping the first
#                   2 MiB with 4 KiB pages, except virtual page 0x1000 ->
#                   physical 0x2000; sets CR4.PAE, CR3, EFER.LME, CR0.PG
#   long mode       reads virtual 0x1000: must give the magic, not the decoy
# Ends with status 0 if it does, 1 otherwise.

        .include "common.S"
        .include "modes.S"
        .include "boot16.S"

        .set    PML4, 0x10000
        .set    PDPT, 0x11000
        .set    PD,   0x12000
        .set    PT,   0x13000
        .set    PTE_P_RW, 0x3                   # present, writable
        .set    MAGIC_LO, 0xCAFEBEEF
        .set    MAGIC_HI, 0xFEEDFACE
        .set    DECOY, 0x0BAD0BAD
        .set    MSR_EFER, 0xC0000080
        .set    EFER_LME, 0x100
        .set    CR0_PE, 0x1
        .set    CR0_PG, 0x80000000
        .set    CR4_PAE, 0x20
        .set    SEL_CODE32, 0x08
        .set    SEL_DATA, 0x10
        .set    SEL_CODE64, 0x18                # FLAT_GDT code64=1

        .code16
main:
        PRINT16 "paging: real mode\n"
        ENTER_PROTECTED_MODE pm32

        .code32
pm32:
        FLAT_SEGMENTS STACK_TOP
        PRINT32 "paging: protected mode\n"

        # the data: the magic at physical 0x2000, a decoy at physical 0x1000
        movl    $MAGIC_LO, 0x2000
        movl    $MAGIC_HI, 0x2004
        movl    $DECOY, 0x1000
        movl    $DECOY, 0x1004

        # the page tables, zeroed, then one entry per level
        movl    $PML4, %edi
        xorl    %eax, %eax
        movl    $(4 * 4096 / 4), %ecx
        cld
        rep stosl
        IDENTITY_MAP_2M PML4, PDPT, PD, PT
        movl    $(0x2000 | PTE_P_RW), PT + 8 * 1  # except virtual 0x1000 -> physical 0x2000

        # into long mode
        ENTER_LONG_MODE PML4, lm64

        .code64
lm64:
        movq    $STACK_TOP, %rsp
        movq    0x1000, %rbx                    # virtual 0x1000
        PRINT64 "paging: long mode, 0x1000 -> 0x2000 reads 0x"
        movq    %rbx, %rax
        call    hex64_64
        PRINT64 "\n"
        movabsq $((MAGIC_HI << 32) | MAGIC_LO), %rax
        cmpq    %rax, %rbx
        jne     1f
        PRINT64 "paging: ok\n"
        DEBUG_EXIT 0
1:      PRINT64 "paging: FAIL (expected 0xFEEDFACECAFEBEEF)\n"
        DEBUG_EXIT 1

        FLAT_GDT code64=1

        .include "serial32.S"
        .include "serial64.S"

        IMAGE_END
