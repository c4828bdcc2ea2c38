# cpuid.S - identify the machine: CPUID, MSRs and the time-stamp counter.
#
# Real mode throughout, using 32-bit registers (operand-size prefixes).
#   1. CPUID leaf 0: prints the vendor string.
#   2. CPUID leaf 1: prints whether ECX bit 31 (hypervisor present) is set.
#   3. If it is, CPUID leaf 0x40000000: if the signature is "vmmtuivmmtui",
#      prints it and the maximum hypervisor leaf, then CPUID leaf 0x40000001
#      (hypercall ABI version); otherwise prints "hypervisor: none".
#   4. RDMSR IA32_APIC_BASE (0x1B): prints the value.
#   5. WRMSR IA32_SYSENTER_CS (0x174) = 0x10, RDMSR it back: must read 0x10.
#   6. RDTSC, a short delay loop, RDTSC: the second value must be larger.
# Ends with status 0 if the checks of steps 5 and 6 passed, 1 otherwise.

        .include "common.S"
        .include "boot16.S"

        .set    VENDOR_BUF, 0x5000              # 12 bytes + NUL, away from the image's pages
        .set    SIG_EBX, 0x746D6D76             # "vmmt"
        .set    SIG_ECX, 0x6D766975             # "uivm"
        .set    SIG_EDX, 0x6975746D             # "mtui"
        .set    HV_LEAF_BASE, 0x40000000
        .set    MSR_APIC_BASE, 0x1B
        .set    MSR_SYSENTER_CS, 0x174
        .set    SYSENTER_CS_VALUE, 0x10

        .code16
main:
        xorw    %bp, %bp                        # BP = number of failed checks

        # 1. vendor
        xorl    %eax, %eax
        cpuid
        movl    %ebx, VENDOR_BUF
        movl    %edx, VENDOR_BUF + 4
        movl    %ecx, VENDOR_BUF + 8
        movb    $0, VENDOR_BUF + 12
        PRINT16 "cpuid: vendor "
        movw    $VENDOR_BUF, %si
        call    puts16
        PRINT16 "\n"

        # 2. hypervisor-present bit
        movl    $1, %eax
        cpuid
        btl     $31, %ecx
        jc      1f
        PRINT16 "cpuid: leaf 1 ecx bit 31 (hypervisor present) clear\n"
        jmp     hv_none
1:      PRINT16 "cpuid: leaf 1 ecx bit 31 (hypervisor present) set\n"

        # 3. hypervisor leaves
        movl    $HV_LEAF_BASE, %eax
        cpuid
        cmpl    $SIG_EBX, %ebx
        jne     hv_none
        cmpl    $SIG_ECX, %ecx
        jne     hv_none
        cmpl    $SIG_EDX, %edx
        jne     hv_none
        PRINT16 "hypervisor: vmmtuivmmtui max leaf 0x"
        call    hex32_16
        PRINT16 "\n"
        cmpl    $(HV_LEAF_BASE + 1), %eax
        jb      msrs
        movl    $(HV_LEAF_BASE + 1), %eax
        cpuid
        PRINT16 "hypervisor: leaf 0x40000001 eax 0x"
        call    hex32_16
        PRINT16 "\n"
        jmp     msrs
hv_none:
        PRINT16 "hypervisor: none\n"

        # 4. APIC base MSR
msrs:
        movl    $MSR_APIC_BASE, %ecx
        rdmsr
        PRINT16 "msr: apic base 0x"
        call    hex64_16
        PRINT16 "\n"

        # 5. SYSENTER_CS write and read back
        movl    $MSR_SYSENTER_CS, %ecx
        movl    $SYSENTER_CS_VALUE, %eax
        xorl    %edx, %edx
        wrmsr
        movl    $0xFFFFFFFF, %eax               # so that a RDMSR that changes nothing fails
        movl    %eax, %edx
        rdmsr
        PRINT16 "msr: sysenter_cs reads back 0x"
        call    hex64_16
        cmpl    $SYSENTER_CS_VALUE, %eax
        jne     1f
        testl   %edx, %edx
        jne     1f
        PRINT16 " ok\n"
        jmp     tsc
1:      PRINT16 " FAIL (expected 0x0000000000000010)\n"
        incw    %bp

        # 6. the time-stamp counter moves forward
tsc:
        rdtsc
        movl    %eax, %esi
        movl    %edx, %edi
        movw    $1000, %cx                      # a little work between the two reads
1:      loop    1b
        rdtsc
        cmpl    %edi, %edx
        ja      2f
        jb      1f
        cmpl    %esi, %eax
        ja      2f
1:      PRINT16 "rdtsc: does not increase FAIL\n"
        incw    %bp
        jmp     done
2:      PRINT16 "rdtsc: increases\n"

done:
        testw   %bp, %bp
        jnz     1f
        PRINT16 "cpuid: ok\n"
        DEBUG_EXIT 0
1:      PRINT16 "cpuid: FAIL\n"
        DEBUG_EXIT 1

        IMAGE_END
