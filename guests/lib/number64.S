# lib/number64.S - numbers for 64-bit long-mode code, beside serial64.S.
#
# Every routine preserves all registers except RFLAGS.
#
#   hexn_64     RAX, CL = digit count (1..16): prints the low CL hex digits of
#               RAX, uppercase, no "0x" (CL = 2 for a byte, 8 for a dword)
#   dec64_64    RAX, printed as an unsigned decimal number (no padding)
#
# The file switches to .code64; the includer sets the mode it needs afterwards.

        .code64
hexn_64:
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        movq    %rax, %rdx
        movzbl  %cl, %ecx
        pushq   %rcx
        negb    %cl                             # skip the 16 - CL high digits:
        addb    $16, %cl
        shlb    $2, %cl
        rolq    %cl, %rdx                       # rotate them out first
        popq    %rcx
1:      rolq    $4, %rdx
        movb    %dl, %al
        andb    $0x0F, %al
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     2f
        addb    $('A' - '9' - 1), %al
2:      call    putc64
        loop    1b
        popq    %rdx
        popq    %rcx
        popq    %rax
        ret

dec64_64:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        xorl    %ecx, %ecx                      # digits pushed
        movl    $10, %ebx
1:      xorl    %edx, %edx
        divq    %rbx
        pushq   %rdx
        incl    %ecx
        testq   %rax, %rax
        jnz     1b
2:      popq    %rax
        addb    $'0', %al
        call    putc64
        loop    2b
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        ret
