# lib/mp.S - macros for the guests that start application processors (APs):
# how many logical processors there are, and the real-mode code an AP starts in.
#
# Included (with .include) after common.S and modes.S (AP_TRAMPOLINE enters
# protected mode with ENTER_PROTECTED_MODE). It emits no bytes and defines no
# symbols.

# LOGICAL_PROCESSORS reg: reg = the number of logical processors, from CPUID
# leaf 1: EBX bits 23:16 when EDX bit 28 (HTT) is set, 1 otherwise (and 1 if
# that field reads 0). Clobbers EAX, EBX, ECX, EDX.
        .macro  LOGICAL_PROCESSORS reg
        movl    $1, %eax
        cpuid
        movl    $1, \reg
        btl     $28, %edx                       # HTT: EBX bits 23:16 are valid
        jnc     1f
        movl    %ebx, \reg
        shrl    $16, \reg
        andl    $0xFF, \reg
        jnz     1f
        movl    $1, \reg
1:
        .endm

# AP_TRAMPOLINE target: the real-mode start of an application processor, in
# .code16 between the labels trampoline and trampoline_end. COPY_TRAMPOLINE
# puts it in the page that the start-up IPI names, where the AP starts at
# CS:IP = VV00:0000 for SIPI vector VV (SDM "MP Initialization"). Every address
# in it is absolute (DS = 0), so it runs wherever it is copied below 1 MiB. It
# enters protected mode at target, with the guest's GDT.
        .macro  AP_TRAMPOLINE target
trampoline:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        ENTER_PROTECTED_MODE \target
trampoline_end:
        .endm

# COPY_TRAMPOLINE dest: from real mode (DS = ES = 0), copy AP_TRAMPOLINE's
# bytes to dest. Clears DF; clobbers CX, SI, DI.
        .macro  COPY_TRAMPOLINE dest
        movw    $trampoline, %si
        movw    $\dest, %di
        movw    $(trampoline_end - trampoline), %cx
        cld
        rep movsb
        .endm
