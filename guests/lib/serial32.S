# lib/serial32.S - console output for 32-bit protected-mode code (flat DS).
#
# Each character is one IN from the LSR (repeated while THRE is clear) and one
# OUT to the THR. Every routine preserves all registers except EFLAGS.
#
#   putc32      AL = character
#   puts32      ESI = address of a NUL-terminated string
#   hex32_32    EAX, printed as 8 uppercase hex digits (no "0x")
#
# The file switches to .code32; the includer sets the mode it needs afterwards.

        .code32
putc32:
        pushl   %edx
        pushl   %eax
        movw    $COM1_LSR, %dx
1:      inb     %dx, %al
        testb   $LSR_THRE, %al
        jz      1b
        popl    %eax
        movw    $COM1_THR, %dx
        outb    %al, %dx
        popl    %edx
        ret

puts32:
        pushl   %esi
        pushl   %eax
        cld
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc32
        jmp     1b
2:      popl    %eax
        popl    %esi
        ret

hex32_32:
        pushl   %eax
        pushl   %ecx
        pushl   %edx
        movl    %eax, %edx
        movl    $8, %ecx
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
