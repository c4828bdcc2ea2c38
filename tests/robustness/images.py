"""Guest images built in the test from code bytes: one per CPU mode the loader enters.

- real mode: a raw boot image (`*.img`), loaded at 0x7C00, CS:IP = 0000:7C00;
- 32-bit protected mode: an ELF32 with a multiboot v1 header (flat segments);
- 64-bit long mode: an ELF64 (the loader identity-maps the first 4 GiB).

The ELF files are written by hand with `struct` (one PT_LOAD segment), as
tests/test_loader.py does, so nothing but the loader decides what runs.
"""

from __future__ import annotations

import struct

MODES = ("real", "protected", "long")
BITS = {"real": 16, "protected": 32, "long": 64}
SUFFIX = {"real": ".img", "protected": ".elf", "long": ".elf"}
RAW_BASE = 0x7C00
ELF_BASE = 0x10_0000  # 1 MiB, where multiboot kernels live
MULTIBOOT_MAGIC = 0x1BAD_B002
_HEADER_ROOM = 0x40  # the multiboot header sits at the start of the segment, the code after it


def code_address(mode: str, base: int | None = None) -> int:
    """The guest-physical (= linear) address the first code byte lands at."""
    if mode == "real":
        return RAW_BASE
    return (ELF_BASE if base is None else base) + _HEADER_ROOM


def raw_image(code: bytes) -> bytes:
    """A boot sector (or more) holding `code` at its start, with the 0x55AA signature."""
    if len(code) <= 510:
        return code.ljust(510, b"\0") + b"\x55\xaa"
    return code


def _segment_body(code: bytes) -> bytes:
    body = bytearray(_HEADER_ROOM)
    struct.pack_into("<III", body, 0, MULTIBOOT_MAGIC, 0, (-MULTIBOOT_MAGIC) & 0xFFFF_FFFF)
    return bytes(body) + code


def elf32_image(code: bytes, base: int = ELF_BASE, memsz: int | None = None) -> bytes:
    """ELF32 (EM_386) multiboot image: one PT_LOAD segment at physical `base`,
    the multiboot header at its start and `code` at base + 0x40 (the entry)."""
    body = _segment_body(code)
    memsz = len(body) if memsz is None else memsz
    entry = base + _HEADER_ROOM
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1, entry, 52, 0, 0,
                       52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0x100, base, base, len(body), memsz, 7, 0x1000)
    return (ehdr + phdr).ljust(0x100, b"\0") + body


def elf64_image(code: bytes, base: int = ELF_BASE, memsz: int | None = None) -> bytes:
    """ELF64 (EM_X86_64) image: one PT_LOAD segment at physical `base`, `code` at
    base + 0x40 (the entry; the segment starts with a multiboot header too, harmless)."""
    body = _segment_body(code)
    memsz = len(body) if memsz is None else memsz
    entry = base + _HEADER_ROOM
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 2, 62, 1, entry, 64, 0, 0,
                       64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0x100, base, base, len(body), memsz, 0x1000)
    return (ehdr + phdr).ljust(0x100, b"\0") + body


def image(mode: str, code: bytes, base: int | None = None) -> bytes:
    """The image that runs `code` in `mode` ("real", "protected", "long")."""
    if mode == "real":
        return raw_image(code)
    if mode == "protected":
        return elf32_image(code, ELF_BASE if base is None else base)
    if mode == "long":
        return elf64_image(code, ELF_BASE if base is None else base)
    raise ValueError(f"unknown mode {mode!r}")
