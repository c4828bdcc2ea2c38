# lib/serial16.S - console output for real-mode code (DS = 0 expected).
#
# Each character is one IN from the LSR (repeated while THRE is clear) and one
# OUT to the THR, so on vmmtui a character costs exactly two port-I/O exits.
# Every routine preserves all registers except FLAGS.
#
#   putc16      AL = character
#   puts16      DS:SI = NUL-terminated string
#   hex32_16    EAX, printed as 8 uppercase hex digits (no "0x")
#   hex64_16    EDX:EAX, printed as 16 uppercase hex digits (no "0x")
#
# The file switches to .code16; the includer sets the mode it needs afterwards.

        .code16
putc16:
        pushw   %dx
        pushw   %ax
        movw    $COM1_LSR, %dx
1:      inb     %dx, %al
        testb   $LSR_THRE, %al
        jz      1b
        popw    %ax
        movw    $COM1_THR, %dx
        outb    %al, %dx
        popw    %dx
        ret

puts16:
        pushw   %si
        pushw   %ax
        cld
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc16
        jmp     1b
2:      popw    %ax
        popw    %si
        ret

hex32_16:
        pushl   %eax
        pushl   %ecx
        pushl   %edx
        movl    %eax, %edx
        movw    $8, %cx
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

hex64_16:
        pushl   %eax
        movl    %edx, %eax
        call    hex32_16
        popl    %eax
        jmp     hex32_16
