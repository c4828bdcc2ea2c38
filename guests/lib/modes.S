# lib/modes.S - macros that take a guest from real mode to 32-bit flat
# protected mode and on to 64-bit long mode, and the flat GDT they load.
#
# Included (with .include) after common.S. It emits no bytes and defines no
# symbols (an ELF guest's symbol table stays as its source makes it); the
# macros use these constants, which the including guest defines:
#
#   CR0_PE, SEL_CODE32 (0x08), SEL_DATA (0x10)   ENTER_PROTECTED_MODE, FLAT_SEGMENTS
#   CR0_PG, CR4_PAE, MSR_EFER, EFER_LME,         ENTER_LONG_MODE
#   SEL_CODE64
#   PTE_P_RW                                     IDENTITY_MAP_2M

# ENTER_PROTECTED_MODE target: from real mode with interrupts off, load the GDT
# (gdt_desc, with its 32-bit base), set CR0.PE and far-jump to target, 32-bit
# code at SEL_CODE32 (SDM "Switching to Protected Mode"). The other segment
# registers keep their real-mode values until FLAT_SEGMENTS. Clobbers EAX.
        .macro  ENTER_PROTECTED_MODE target
        lgdtl   gdt_desc
        movl    %cr0, %eax
        orl     $CR0_PE, %eax
        movl    %eax, %cr0
        ljmpl   $SEL_CODE32, $\target
        .endm

# FLAT_SEGMENTS stack: from 32-bit code, load DS, ES, FS, GS and SS with the
# flat data selector SEL_DATA and ESP with stack. Clobbers AX.
        .macro  FLAT_SEGMENTS stack
        movw    $SEL_DATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movw    %ax, %ss
        movl    $\stack, %esp
        .endm

# FLAT_GDT [code64=1]: the GDT (gdt .. gdt_end) and its descriptor gdt_desc
# (limit, 32-bit base). 0x00 null, 0x08 32-bit code and 0x10 data, both base 0
# and limit 4 GiB; with code64=1 also 0x18, 64-bit code. Descriptors have the
# accessed bit set, so loading them writes nothing.
        .macro  FLAT_GDT code64=0
        .balign 8
gdt:
        .quad   0                               # 0x00 null
        .quad   0x00CF9B000000FFFF              # 0x08 32-bit code, flat
        .quad   0x00CF93000000FFFF              # 0x10 data, flat
        .if     \code64
        .quad   0x00AF9B000000FFFF              # 0x18 64-bit code
        .endif
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
        .endm

# IDENTITY_MAP_2M pml4, pdpt, pd, pt: 4-level page tables that map the first
# 2 MiB to themselves in 4 KiB pages, present and writable: entry 0 of pml4,
# pdpt and pd, and the 512 PTEs of pt. The four pages must already be zero.
# From 32-bit code; clobbers EAX, ECX, EDI.
        .macro  IDENTITY_MAP_2M pml4, pdpt, pd, pt
        movl    $(\pdpt | PTE_P_RW), \pml4
        movl    $(\pd | PTE_P_RW), \pdpt
        movl    $(\pt | PTE_P_RW), \pd
        movl    $\pt, %edi                      # PTE i: virtual page i -> physical page i
        movl    $PTE_P_RW, %eax
        movl    $512, %ecx
1:      movl    %eax, (%edi)
        addl    $4096, %eax
        addl    $8, %edi
        loop    1b
        .endm

# ENTER_LONG_MODE pml4, target[, cr0=bits]: from 32-bit protected mode with
# paging off, set CR4.PAE, CR3 = pml4 and EFER.LME, then the CR0 bits cr0
# (CR0_PG unless the guest names more), which activates IA-32e mode, and
# far-jump to target, 64-bit code at SEL_CODE64 (SDM "Initializing IA-32e
# Mode"). Clobbers EAX, ECX, EDX.
        .macro  ENTER_LONG_MODE pml4, target, cr0=CR0_PG
        movl    %cr4, %eax
        orl     $CR4_PAE, %eax
        movl    %eax, %cr4
        movl    $\pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $(\cr0), %eax
        movl    %eax, %cr0
        ljmp    $SEL_CODE64, $\target
        .endm
