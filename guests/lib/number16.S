# lib/number16.S - numbers for real-mode code (DS = 0 expected), beside serial16.S.
#
# Every routine preserves all registers except FLAGS.
#
#   hexn_16     EAX, CL = digit count (1..8): prints the low CL hex digits of
#               EAX, uppercase, no "0x" (CL = 2 for a byte, 4 for a word)
#   dec32_16    EAX, printed as an unsigned decimal number (no padding)
#
# The file switches to .code16; the includer sets the mode it needs afterwards.

        .code16
hexn_16:
        pushl   %eax
        pushl   %ecx
        pushl   %edx
        movl    %eax, %edx
        movzbl  %cl, %ecx
        pushw   %cx
        negb    %cl                             # skip the 8 - CL high digits:
        addb    $8, %cl
        shlb    $2, %cl
        roll    %cl, %edx                       # rotate them out first
        popw    %cx
1:      roll    $4, %edx
        movb    %dl, %al
        andb    $0x0F, %al
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     2f
        addb    $('A' - '9' - 1), %al
2:      call    putc16
        loop    1b
        popl    %edx
        popl    %ecx
        popl    %eax
        ret

dec32_16:
        pushal
        xorw    %cx, %cx                        # digits pushed
        movl    $10, %ebx
1:      xorl    %edx, %edx
        divl    %ebx
        pushw   %dx
        incw    %cx
        testl   %eax, %eax
        jnz     1b
2:      popw    %ax
        addb    $'0', %al
        call    putc16
        loop    2b
        popal
        ret
