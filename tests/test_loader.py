"""Loading images: the hand-over state, and one clear error for each bad image."""

import struct

import pytest

from conftest import GUESTS
from engine.config import MachineConfig
from engine.errors import ImageError
from engine.loader import load
from engine.machine import Machine


def _load(path, **config):
    m = Machine(MachineConfig(**config))
    return m, load(m, path)


def test_raw_image_hand_over():
    m, image = _load(GUESTS / "hello.img")
    r = m.registers()
    assert (image.kind, image.entry) == ("raw", 0x7C00)
    assert (r["cs"], r["rip"], r["rdx"] & 0xFF, r["cr0"] & 1) == (0, 0x7C00, 0x80, 0)
    assert (r["ds"], r["es"], r["ss"]) == (0, 0, 0)
    assert m.read_gpa(0x7C00, 512) == (GUESTS / "hello.img").read_bytes()
    assert m.mem.is_backed(0x7C00)  # filled by the loader, backed before entry


def test_multiboot_hand_over():
    m, image = _load(GUESTS / "hello32.elf")
    r = m.registers()
    assert image.kind == "multiboot" and r["rip"] == image.entry == 0x10000C
    assert r["rax"] == 0x2BADB002 and r["cr0"] & 1 and not r["efer"] & 0x400
    flags, mem_lower, mem_upper = struct.unpack("<III", m.read_gpa(r["rbx"], 12))
    assert (flags & 1, mem_lower, mem_upper) == (1, 640, (64 << 20) - (1 << 20) >> 10)


def test_elf64_hand_over():
    m, image = _load(GUESTS / "hello64.elf")
    r = m.registers()
    assert image.kind == "elf64" and r["rip"] == image.entry
    assert r["efer"] & 0x500 == 0x500 and r["cr0"] >> 31 and r["cr4"] & 0x20
    walk = m.translate(0x20_1234)
    assert walk.gpa == 0x20_1234  # identity mapping built by the loader


def _file(path, data):
    path.write_bytes(data)
    return path


def _elf32(tmp_path, *, machine=3, multiboot=True, paddr=0x100000, memsz=0x200):
    """A minimal ELF32 with one PT_LOAD segment."""
    body = bytearray(0x200)
    if multiboot:
        struct.pack_into("<III", body, 0, 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, machine, 1, paddr, 52, 0, 0,
                       52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, 0x100, paddr, paddr, len(body), memsz, 5, 0x1000)
    data = ehdr + phdr
    data = data.ljust(0x100, b"\0") + bytes(body)
    path = tmp_path / "t.elf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda t: t / "absent.img", "no such file"),
    (lambda t: _file(t / "empty.img", b""), "the image is empty"),
    (lambda t: t, "is a directory"),
    (lambda t: _file(t / "x.txt", b"hello"), "unknown image format"),
    (lambda t: _file(t / "big.img", b"\x90" * 0x98401), "do not fit between 0x7C00 and 0xA0000"),
    (lambda t: _file(t / "cut.elf", b"\x7fELF\x01\x01\x01" + bytes(20)), "ELF"),
    (lambda t: _elf32(t, machine=40), "ELF for EM_ARM, not x86"),
    (lambda t: _elf32(t, multiboot=False), "needs a multiboot header"),
    (lambda t: _elf32(t, paddr=0x3F00000, memsz=0x200000), "does not fit in 64 MiB of guest memory"),
    (lambda t: _elf32(t, paddr=0xA0000), "overlaps the legacy hole"),
])
def test_bad_images(tmp_path, make, message):
    path = make(tmp_path)
    m = Machine(MachineConfig())
    with pytest.raises(ImageError) as info:
        load(m, path)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_truncated_guest_elf_is_refused(tmp_path):
    data = (GUESTS / "hello32.elf").read_bytes()
    for cut in (16, 60, 200, len(data) // 2):
        path = tmp_path / f"cut{cut}.elf"
        path.write_bytes(data[:cut])
        with pytest.raises(ImageError):
            load(Machine(MachineConfig()), path)


def test_a_raw_image_may_start_with_the_elf_magic(tmp_path):
    """Found by the robustness suite: a *.img is loaded as raw code, not sniffed as ELF."""
    path = tmp_path / "elfish.img"
    path.write_bytes(b"\x7fELF" + bytes.fromhex("b000e6f4"))
    m, image = _load(path)
    assert image.kind == "raw" and m.read_gpa(0x7C00, 4) == b"\x7fELF"
