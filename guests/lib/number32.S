# lib/number32.S - numbers for 32-bit protected-mode code (flat DS), beside
# serial32.S.
#
# Every routine preserves all registers except EFLAGS.
#
#   hexn_32     EAX, CL = digit count (1..8): prints the low CL hex digits of
#               EAX, uppercase, no "0x" (CL = 2 for a byte, 4 for a word)
#   dec32_32    EAX, printed as an unsigned decimal number (no padding)
#
# The file switches to .code32; the includer sets the mode it needs afterwards.

        .code32
hexn_32:
        pushl   %eax
        pushl   %ecx
        pushl   %edx
        movl    %eax, %edx
        movzbl  %cl, %ecx
        pushl   %ecx
        negb    %cl                             # skip the 8 - CL high digits:
        addb    $8, %cl
        shlb    $2, %cl
        roll    %cl, %edx                       # rotate them out first
        popl    %ecx
1:      roll    $4, %edx
        movb    %dl, %al
        andb    $0x0F, %al
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     2f
        addb    $('A' - '9' - 1), %al
2:      call    putc32
        loop    1b
        popl    %edx
        popl    %ecx
        popl    %eax
        ret

dec32_32:
        pushal
        xorl    %ecx, %ecx                      # digits pushed
        movl    $10, %ebx
1:      xorl    %edx, %edx
        divl    %ebx
        pushl   %edx
        incl    %ecx
        testl   %eax, %eax
        jnz     1b
2:      popl    %eax
        addb    $'0', %al
        call    putc32
        loop    2b
        popal
        ret
