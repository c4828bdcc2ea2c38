# lib/serial64.S - console output for 64-bit long-mode code.
#
# Each character is one IN from the LSR (repeated while THRE is clear) and one
# OUT to the THR. Every routine preserves all registers except RFLAGS.
#
#   putc64      AL = character
#   puts64      RSI = address of a NUL-terminated string
#   hex64_64    RAX, printed as 16 uppercase hex digits (no "0x")
#
# The file switches to .code64; the includer sets the mode it needs afterwards.

        .code64
putc64:
        pushq   %rdx
        pushq   %rax
        movw    $COM1_LSR, %dx
1:      inb     %dx, %al
        testb   $LSR_THRE, %al
        jz      1b
        popq    %rax
        movw    $COM1_THR, %dx
        outb    %al, %dx
        popq    %rdx
        ret

puts64:
        pushq   %rsi
        pushq   %rax
        cld
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc64
        jmp     1b
2:      popq    %rax
        popq    %rsi
        ret

hex64_64:
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        movq    %rax, %rdx
        movl    $16, %ecx
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
