"""Loading a guest image and handing over to it as firmware would.

- `*.img` (a raw boot image): loaded whole at 0x7C00, real mode, CS:IP =
  0000:7C00, DL = 0x80 (the boot drive), as a BIOS hands over. It must fit below
  the legacy hole at 0xA0000.
- ELF32 with a multiboot (v1) header: its PT_LOAD segments at their physical
  addresses, 32-bit protected mode with flat 4 GiB segments, EAX = 0x2BADB002,
  EBX = the multiboot information structure (Multiboot Specification 0.6.96,
  "Machine state").
- ELF64: its segments at their physical addresses, 64-bit long mode with page
  tables built by the loader that identity-map the first 4 GiB with 2 MiB pages.

Every page the loader fills is backed before entry, as a VMM does when it loads
an image. Bad images raise ImageError with one clear line.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from unicorn import UcError
from unicorn import x86_const as X

from .errors import ImageError
from .guestmem import LEGACY_HOLE

if TYPE_CHECKING:
    from .machine import Machine

RAW_LOAD_ADDRESS = 0x7C00
BOOT_DRIVE = 0x80
MULTIBOOT_MAGIC = 0x1BAD_B002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BAD_B002
MULTIBOOT_SEARCH = 8192
MULTIBOOT_INFO_GPA = 0x9000
BOOT_GDT_GPA = 0x500
BOOT_PML4_GPA = 0x1000  # ELF64: PML4, PDPT, then four page directories (4 GiB)
BOOT_STACK_TOP = 0x7000
_GDT_FLAT = (
    0,
    0x00CF_9A00_0000_FFFF,  # 0x08: 32-bit code, base 0, limit 4 GiB
    0x00CF_9200_0000_FFFF,  # 0x10: data, base 0, limit 4 GiB
    0x00AF_9A00_0000_FFFF,  # 0x18: 64-bit code
)


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """What was loaded and where execution starts."""

    path: str
    kind: str  # "raw", "multiboot", "elf64"
    entry: int
    size: int
    sha256: str
    data: bytes = field(default=b"", repr=False, compare=False)  # the image itself, as loaded


def load(machine: Machine, path: str | Path) -> LoadedImage:
    """Load the image at `path` into `machine` and set its vCPU 0 at the entry point."""
    return load_bytes(machine, read_image(path), path)


def read_image(path: str | Path) -> bytes:
    """The bytes of the image file at `path` (ImageError with one clear line if unreadable)."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read: {e.strerror}") from None


def load_bytes(machine: Machine, data: bytes, path: str | Path) -> LoadedImage:
    """Load image `data` (named `path`: a raw image is told by its suffix) as `load` does."""
    import hashlib

    p = Path(path)
    if not data:
        raise ImageError(f"{p}: the image is empty")
    digest = hashlib.sha256(data).hexdigest()
    if p.suffix.lower() in (".img", ".bin", ".raw"):
        # A raw image is code, whatever its first bytes happen to be.
        kind, entry = "raw", _load_raw(machine, p, data)
    elif data[:4] == b"\x7fELF":
        kind, entry = _load_elf(machine, p, data)
    else:
        raise ImageError(f"{p}: unknown image format (expected a raw *.img boot image or an ELF file)")
    machine.launch()
    return LoadedImage(str(p), kind, entry, len(data), digest, data)


def _load_raw(machine: Machine, p: Path, data: bytes) -> int:
    limit = LEGACY_HOLE[0] - RAW_LOAD_ADDRESS
    if len(data) > limit:
        raise ImageError(f"{p}: {len(data)} bytes do not fit between 0x7C00 and 0xA0000 ({limit} bytes)")
    machine.mem.write(RAW_LOAD_ADDRESS, data)
    v = machine.vcpus[0]
    v.reset_to_real_mode(0, RAW_LOAD_ADDRESS, machine.host.alloc_frame())
    v.uc.reg_write(X.UC_X86_REG_RDX, BOOT_DRIVE)
    return RAW_LOAD_ADDRESS


def _load_elf(machine: Machine, p: Path, data: bytes) -> tuple[str, int]:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf["e_machine"] not in ("EM_386", "EM_X86_64"):
            raise ImageError(f"{p}: ELF for {elf['e_machine']}, not x86")
        segments = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        loads = [(s["p_paddr"], s.data(), s["p_memsz"]) for s in segments]
        if any(len(body) > memsz for _paddr, body, memsz in loads):
            raise ImageError(f"{p}: damaged ELF file (a segment's file size exceeds its memory size)")
        entry = elf["e_entry"]
        is64 = elf.elfclass == 64
    except ELFError as e:
        raise ImageError(f"{p}: not a valid ELF file ({e})") from None
    except (struct.error, ValueError, EOFError, OverflowError, MemoryError) as e:
        raise ImageError(f"{p}: truncated or damaged ELF file ({type(e).__name__}: {e})") from None
    if not loads:
        raise ImageError(f"{p}: the ELF file has no loadable segment")
    for paddr, body, memsz in loads:
        if len(body) < min(memsz, len(body)) or paddr + memsz > machine.mem.ram_size:
            raise ImageError(f"{p}: a segment at {paddr:#x}+{memsz:#x} does not fit in "
                             f"{machine.mem.ram_size >> 20} MiB of guest memory")
        if not machine.mem.is_ram(paddr) or not machine.mem.is_ram(paddr + max(memsz, 1) - 1):
            raise ImageError(f"{p}: a segment at {paddr:#x} overlaps the legacy hole 0xA0000-0xFFFFF")
    for paddr, body, memsz in loads:
        machine.mem.write(paddr, body + bytes(memsz - len(body)))
    if is64:
        _enter_long_mode(machine, entry)
        return "elf64", entry
    if not _has_multiboot_header(data):
        raise ImageError(f"{p}: an ELF32 image needs a multiboot header in its first 8 KiB")
    _enter_protected_mode(machine, entry)
    return "multiboot", entry


def _has_multiboot_header(data: bytes) -> bool:
    for off in range(0, min(len(data), MULTIBOOT_SEARCH) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFF_FFFF == 0:
            return True
    return False


def _write_gdt(machine: Machine) -> None:
    machine.mem.write(BOOT_GDT_GPA, b"".join(struct.pack("<Q", d) for d in _GDT_FLAT))


def _enter_protected_mode(machine: Machine, entry: int) -> None:
    v = machine.vcpus[0]
    uc = v.uc
    _write_gdt(machine)
    # Multiboot information: flags bit 0 = mem_lower / mem_upper valid (in KiB).
    mem_upper = (machine.mem.ram_size - 0x10_0000) >> 10
    machine.mem.write(MULTIBOOT_INFO_GPA, struct.pack("<III", 1, 640, mem_upper) + bytes(104))
    uc.reg_write(X.UC_X86_REG_CR0, (1 << 31) | 0x11)  # the PG 1->0 edge leaves long mode
    uc.reg_write(X.UC_X86_REG_CR0, 0x11)
    v.write_efer(0)
    machine.msrs[0].efer = 0
    uc.reg_write(X.UC_X86_REG_CR4, 0)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, BOOT_GDT_GPA, 8 * len(_GDT_FLAT) - 1, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
    try:
        for reg in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(reg, 0x10)
        uc.reg_write(X.UC_X86_REG_CS, 0x08)
    except UcError as e:  # pragma: no cover - the GDT above is valid
        raise ImageError(f"cannot enter protected mode: {e}") from None
    uc.reg_write(X.UC_X86_REG_RAX, MULTIBOOT_BOOTLOADER_MAGIC)
    uc.reg_write(X.UC_X86_REG_RBX, MULTIBOOT_INFO_GPA)
    uc.reg_write(X.UC_X86_REG_RSP, BOOT_STACK_TOP)
    uc.reg_write(X.UC_X86_REG_RFLAGS, 0x2)
    uc.reg_write(X.UC_X86_REG_RIP, entry)


def _enter_long_mode(machine: Machine, entry: int) -> None:
    v = machine.vcpus[0]
    uc = v.uc
    _write_gdt(machine)
    pml4, pdpt, pd0 = BOOT_PML4_GPA, BOOT_PML4_GPA + 0x1000, BOOT_PML4_GPA + 0x2000
    tables = bytearray(6 * 0x1000)
    struct.pack_into("<Q", tables, 0, pdpt | 0x3)
    for i in range(4):  # PDPT entries -> four page directories
        struct.pack_into("<Q", tables, 0x1000 + 8 * i, (pd0 + 0x1000 * i) | 0x3)
    for i in range(4 * 512):  # 2 MiB pages: present, writable, PS
        struct.pack_into("<Q", tables, 0x2000 + 8 * i, (i << 21) | 0x83)
    machine.mem.write(pml4, bytes(tables))
    efer = (1 << 8) | (1 << 10) | (1 << 11)  # LME, LMA, NXE
    uc.reg_write(X.UC_X86_REG_CR3, pml4)
    uc.reg_write(X.UC_X86_REG_CR4, 1 << 5)  # PAE
    v.write_efer(efer)
    machine.msrs[0].efer = efer
    uc.reg_write(X.UC_X86_REG_CR0, (1 << 31) | (1 << 16) | 0x11)  # PG, WP, ET, PE
    uc.reg_write(X.UC_X86_REG_GDTR, (0, BOOT_GDT_GPA, 8 * len(_GDT_FLAT) - 1, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
    uc.reg_write(X.UC_X86_REG_CS, 0x18)
    for reg in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS):
        uc.reg_write(reg, 0x10)
    uc.reg_write(X.UC_X86_REG_RSP, BOOT_STACK_TOP)
    uc.reg_write(X.UC_X86_REG_RFLAGS, 0x2)
    uc.reg_write(X.UC_X86_REG_RIP, entry)
