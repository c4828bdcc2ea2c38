# hypercall.S - exercise vmmtui's hypercall ABI from real mode.
#
# Checks the CPU vendor (CPUID leaf 0), the hypervisor-present bit (leaf 1
# ECX bit 31) and the hypervisor signature (leaf 0x40000000). Without
# vmmtui's signature it prints "hypercall: no vmmtui hypervisor" and ends
# with status 0 through the debug-exit port (this is what QEMU shows).
# Under vmmtui it uses VMCALL (GenuineIntel) or VMMCALL (AuthenticAMD):
#   function 0  ping: must return 0x766D6D74 ("vmmt")
#   function 1  print "hypercall: printed by the VMM\n" by guest-physical
#               address and length: must return the length (30)
#   function 2  virtual time, twice: the second EDX:EAX must not be smaller
#   function 0x7F (unknown): must return 0xFFFFFFFF in EAX
#   function 3  exit with status 0 (EBX); status 1 through the debug-exit
#               port if a check failed or if function 3 returns.

        .include "common.S"
        .include "boot16.S"

        .set    VENDOR_KIND, 0x5000             # byte: 1 = Intel, 2 = AMD, 0 = other
        .set    HC_PING, 0
        .set    HC_PRINT, 1
        .set    HC_TIME, 2
        .set    HC_EXIT, 3
        .set    HC_UNKNOWN, 0x7F
        .set    PING_REPLY, 0x766D6D74          # "vmmt" as a little-endian dword

        .code16
main:
        xorw    %bp, %bp                        # BP = number of failed checks

        # CPU vendor: which instruction makes a hypercall
        movb    $0, VENDOR_KIND
        xorl    %eax, %eax
        cpuid
        cmpl    $0x756E6547, %ebx               # "Genu"
        jne     1f
        cmpl    $0x49656E69, %edx               # "ineI"
        jne     1f
        cmpl    $0x6C65746E, %ecx               # "ntel"
        jne     1f
        movb    $1, VENDOR_KIND
        jmp     2f
1:      cmpl    $0x68747541, %ebx               # "Auth"
        jne     2f
        cmpl    $0x69746E65, %edx               # "enti"
        jne     2f
        cmpl    $0x444D4163, %ecx               # "cAMD"
        jne     2f
        movb    $2, VENDOR_KIND
2:
        # Is vmmtui the hypervisor?
        movl    $1, %eax
        cpuid
        btl     $31, %ecx
        jnc     no_vmmtui
        movl    $0x40000000, %eax
        cpuid
        cmpl    $0x746D6D76, %ebx               # "vmmt"
        jne     no_vmmtui
        cmpl    $0x6D766975, %ecx               # "uivm"
        jne     no_vmmtui
        cmpl    $0x6975746D, %edx               # "mtui"
        jne     no_vmmtui

        cmpb    $1, VENDOR_KIND
        jne     1f
        PRINT16 "hypercall: vendor GenuineIntel, using vmcall\n"
        jmp     ping
1:      cmpb    $2, VENDOR_KIND
        jne     1f
        PRINT16 "hypercall: vendor AuthenticAMD, using vmmcall\n"
        jmp     ping
1:      PRINT16 "hypercall: unknown CPU vendor FAIL\n"
        DEBUG_EXIT 1

        # function 0: ping
ping:
        movl    $HC_PING, %eax
        call    hypercall
        PRINT16 "hypercall: ping returned 0x"
        call    hex32_16
        cmpl    $PING_REPLY, %eax
        jne     1f
        PRINT16 " ok\n"
        jmp     print
1:      PRINT16 " FAIL (expected 0x766D6D74)\n"
        incw    %bp

        # function 1: print a string from guest-physical memory
print:
        movl    $HC_PRINT, %eax
        movl    $vmm_msg, %ebx                  # DS = 0: the offset is the physical address
        movl    $(vmm_msg_end - vmm_msg), %ecx
        call    hypercall
        cmpl    $(vmm_msg_end - vmm_msg), %eax
        je      time
        PRINT16 "hypercall: print returned 0x"
        call    hex32_16
        PRINT16 " FAIL (expected 0x0000001E)\n"
        incw    %bp

        # function 2: virtual time, twice
time:
        movl    $HC_TIME, %eax
        call    hypercall
        movl    %eax, %esi
        movl    %edx, %edi
        movw    $1000, %cx                      # a little work between the two reads
1:      loop    1b
        movl    $HC_TIME, %eax
        call    hypercall
        cmpl    %edi, %edx
        ja      2f
        jb      1f
        cmpl    %esi, %eax
        jae     2f
1:      PRINT16 "hypercall: virtual time went backwards FAIL\n"
        incw    %bp
        jmp     unknown
2:      PRINT16 "hypercall: virtual time does not go backwards\n"

        # an unknown function
unknown:
        movl    $HC_UNKNOWN, %eax
        call    hypercall
        PRINT16 "hypercall: unknown function 0x7F returned 0x"
        call    hex32_16
        cmpl    $0xFFFFFFFF, %eax
        jne     1f
        PRINT16 " ok\n"
        jmp     finish
1:      PRINT16 " FAIL (expected 0xFFFFFFFF)\n"
        incw    %bp

        # function 3: exit
finish:
        testw   %bp, %bp
        jz      1f
        PRINT16 "hypercall: FAIL\n"
        DEBUG_EXIT 1
1:      PRINT16 "hypercall: ok\n"
        movl    $HC_EXIT, %eax
        xorl    %ebx, %ebx                      # status 0
        call    hypercall
        PRINT16 "hypercall: exit returned FAIL\n"
        DEBUG_EXIT 1

no_vmmtui:
        PRINT16 "hypercall: no vmmtui hypervisor\n"
        DEBUG_EXIT 0

# hypercall: EAX = function, EBX, ECX = arguments; result in EAX (EDX).
# VMCALL on Intel, VMMCALL on AMD.
hypercall:
        cmpb    $2, VENDOR_KIND
        je      1f
        vmcall
        ret
1:      vmmcall
        ret

vmm_msg:
        .ascii  "hypercall: printed by the VMM\n"
vmm_msg_end:

        IMAGE_END
