# lib/boot16.S - sector 0 of a raw image that is longer than 512 bytes.
#
# The image is linked at 0x7C00. vmmtui loads the WHOLE image there and starts
# it at 0000:7C00; a PC BIOS (SeaBIOS on QEMU) loads only this first sector.
# So the boot sector looks for a magic dword at image offset 512 (0x7E00): if
# it is there, the rest of the image is already in memory and no BIOS call is
# made (the vmmtui case); if not, it reads the remaining sectors from the boot
# drive in DL with INT 13h AH=02 (cylinder 0, head 0, sectors 2..N) to 0x7E00,
# checks the magic again and jumps to `main`.
#
# Contract with the including guest, whose source must be:
#
#       .include "common.S"
#       .include "boot16.S"     # bytes 0..515: this sector, then the magic dword
#   main:                       # real mode, DS = ES = SS = 0, SP = STACK_TOP, IF = 0
#       ...
#       .balign 512, 0
#   image_end:
#
# This sector also carries the real-mode console helpers (serial16.S), so
# `main` can call putc16 / puts16 / hex32_16 / hex64_16.

        .set    STAGE2_MAGIC, 0x324D4D56        # "VMM2" as a little-endian dword
        .set    STAGE2_ADDR,  0x7E00

        .code16
        .text
        .globl  _start
_start:
        BOOT_START
        cld
        cmpl    $STAGE2_MAGIC, stage2_magic
        je      boot_done                       # vmmtui: the whole image is in memory

        # Only on a BIOS: read the rest of the image from the boot drive.
        movb    $3, %bl                         # attempts
boot_read:
        pushw   %bx
        pushw   %dx
        movw    $STAGE2_ADDR, %bx
        movb    $2, %ah                         # INT 13h AH=02: read sectors
        movb    $((image_end - stage2_magic) / 512), %al
        movw    $0x0002, %cx                    # cylinder 0, sector 2
        xorb    %dh, %dh                        # head 0 (DL = drive, from the BIOS)
        sti
        int     $0x13
        cli
        popw    %dx
        popw    %bx
        jnc     boot_check
        xorb    %ah, %ah                        # INT 13h AH=00: reset the drive, then retry
        sti
        int     $0x13
        cli
        decb    %bl
        jnz     boot_read
boot_check:
        cmpl    $STAGE2_MAGIC, stage2_magic
        je      boot_done
        movw    $boot_fail_msg, %si
        call    puts16
        DEBUG_EXIT 1
boot_done:
        jmp     main

boot_fail_msg:
        .asciz  "boot: could not load the rest of the image\n"

        .include "serial16.S"

        .org    510, 0
        .word   0xAA55                          # boot signature (offset 510)
stage2_magic:
        .long   STAGE2_MAGIC                    # offset 512 = 0x7E00
