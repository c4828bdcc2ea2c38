"""Hypothesis strategies for hostile guest code, per code size (16, 32, 64 bits).

Two kinds of code: plain random bytes (1-64), and "biased" code built from snippets
that favour what a VMM must get right: port I/O and string I/O with REP and huge
counts, CPUID, HLT, RDMSR / WRMSR with chosen and random ECX, MOV to / from CRn,
CLTS, LMSW, INVLPG, VMCALL / VMMCALL, INT n, UD2, far jumps and calls, segment and
descriptor-table loads, writes to the code itself (self-modifying code), MMIO
(local APIC, the legacy hole, unknown MMIO, the edges of RAM), odd flags (TF, AC),
and other instructions Unicorn may not model. Each snippet carries its own
register set-up, so the sensitive instruction sees the operands it was meant to.

A case is a dict (JSON-ready) that `child.run_case` understands; see `case()`.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from .images import BITS, code_address

U32 = st.integers(0, 0xFFFF_FFFF)
U64 = st.integers(0, (1 << 64) - 1)

# -- encoders -----------------------------------------------------------------------

_REGS = {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6, "edi": 7}


def mov_imm(reg: str, value: int, bits: int) -> bytes:
    """mov e<reg>, imm32 (r<reg>, imm64 in 64-bit code when the value needs it)."""
    r = _REGS[reg]
    if bits == 64 and value > 0xFFFF_FFFF:
        return bytes([0x48, 0xB8 + r]) + struct.pack("<Q", value & ((1 << 64) - 1))
    op = bytes([0xB8 + r]) + struct.pack("<I", value & 0xFFFF_FFFF)
    return (b"\x66" + op) if bits == 16 else op


def mov_imm16(reg: str, value: int, bits: int) -> bytes:
    """mov <reg16>, imm16."""
    op = bytes([0xB8 + _REGS[reg]]) + struct.pack("<H", value & 0xFFFF)
    return op if bits == 16 else (b"\x66" + op)


def mem_ebx(op: bytes, modrm_reg: int, bits: int, opsize16: bool = False) -> bytes:
    """`op` with a ModRM naming [ebx] / [rbx] as the memory operand (and `modrm_reg`)."""
    prefix = b""
    if bits == 16:
        prefix = b"\x67"  # 32-bit addressing in real mode: [ebx]
    if opsize16 and bits != 16:
        prefix += b"\x66"
    return prefix + op + bytes([(modrm_reg << 3) | 3])


def abs_mem(op: bytes, modrm_reg: int, addr: int, bits: int) -> bytes:
    """`op` with an absolute memory operand [addr] (disp16 / disp32; SIB form in 64-bit)."""
    if bits == 16:
        return op + bytes([(modrm_reg << 3) | 6]) + struct.pack("<H", addr & 0xFFFF)
    if bits == 32:
        return op + bytes([(modrm_reg << 3) | 5]) + struct.pack("<I", addr & 0xFFFF_FFFF)
    return op + bytes([(modrm_reg << 3) | 4, 0x25]) + struct.pack("<I", addr & 0x7FFF_FFFF)


# -- interesting values ------------------------------------------------------------------

PORTS = st.one_of(
    st.sampled_from([0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0xF4, 0xF5, 0xF6, 0xF7,
                     0x20, 0x21, 0x40, 0x43, 0x60, 0x64, 0x70, 0x71, 0x80, 0x92, 0xCF8, 0xCFC,
                     0x0, 0xFF, 0x7FFF, 0x8000, 0xFFFC, 0xFFFE, 0xFFFF]),
    st.integers(0, 0xFFFF),
)
MSRS = st.one_of(
    st.sampled_from([0x10, 0x1B, 0x3A, 0x48, 0x8B, 0xFE, 0x174, 0x175, 0x176, 0x1A0, 0x1D9, 0x277, 0x2FF,
                     0x6E0, 0x802, 0x830, 0xC000_0080, 0xC000_0081, 0xC000_0082, 0xC000_0083,
                     0xC000_0084, 0xC000_0100, 0xC000_0101, 0xC000_0102, 0xC000_0103, 0xC001_0114,
                     0xC001_0117, 0x4000_0000, 0x4000_0001, 0x1FFF, 0x2000, 0xC000_1FFF, 0xC000_2000,
                     0xFFFF_FFFF]),
    U32,
)
LEAVES = st.one_of(
    st.sampled_from([0, 1, 2, 4, 7, 0xB, 0xD, 0x14, 0x4000_0000, 0x4000_0001, 0x4000_0010, 0x8000_0000,
                     0x8000_0001, 0x8000_0008, 0x8000_000A, 0x8000_001F, 0xFFFF_FFFF]),
    U32,
)
MMIO = st.one_of(
    st.sampled_from([0xFEE0_0000, 0xFEE0_0020, 0xFEE0_0030, 0xFEE0_0080, 0xFEE0_00B0, 0xFEE0_00F0,
                     0xFEE0_0300, 0xFEE0_0310, 0xFEE0_0320, 0xFEE0_0380, 0xFEE0_03E0, 0xFEE0_0FFC,
                     0xFEE0_0FFE, 0xFEE0_0FFF, 0xFEDF_FFFE, 0xA_0000, 0xA_0001, 0xB_8000, 0xF_FFF0,
                     0x9_FFFE, 0x9_FFFF, 0xFEC0_0000, 0xC000_0000, 0xFFFF_F000, 0xFFFF_FFFC,
                     0xFFFF_FFFF, 0x100_0000 - 2, 0x100_0000, 0x20_0000 - 2, 0x400_0000 - 1, 0x7FFF_FFFF]),
    st.integers(0xA_0000, 0xF_FFFF),
    st.integers(0xFEE0_0000, 0xFEE0_0FFF),
    U32,
)
CR_VALUES = st.one_of(
    st.sampled_from([0, 1, 0x11, 0x8000_0011, 0x8000_0001, 0x6000_0011, 0xE000_0011, 0x8001_0033,
                     0x20, 0x80, 0x2000, 0x3000, 0x1000, 0x10_0000, 0xFFFF_FFFF, 0x40000, 0x100, 0x200]),
    U32,
)
COUNTS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 0xFF, 0x1000, 0xFFFF, 0x1_0000, 0x10_0000, 0x7FFF_FFFF, 0xFFFF_FFFF]),
    U32,
)


# -- snippets -----------------------------------------------------------------------------

@st.composite
def port_io(draw, bits: int, code: int) -> bytes:
    port = draw(PORTS)
    kind = draw(st.sampled_from(["imm_in", "imm_out", "dx_in", "dx_out"]))
    size = draw(st.sampled_from([1, 2, 4]))
    pre = b"" if size == 1 or (size == 4) == (bits != 16) else b"\x66"
    wide = 0 if size == 1 else 1
    out = mov_imm("eax", draw(U32), bits)
    if kind.startswith("imm"):
        op = (0xE4 if kind == "imm_in" else 0xE6) + wide
        return out + pre + bytes([op, port & 0xFF])
    op = (0xEC if kind == "dx_in" else 0xEE) + wide
    return out + mov_imm16("edx", port, bits) + pre + bytes([op])


@st.composite
def string_io(draw, bits: int, code: int) -> bytes:
    count = draw(COUNTS)
    pointer = draw(st.one_of(MMIO, st.sampled_from([code, code + 0x20, 0, 0x7000, 0x9_F000]), U32))
    set_up = (mov_imm("ecx", count, bits) + mov_imm("esi", pointer, bits) + mov_imm("edi", pointer, bits)
              + mov_imm16("edx", draw(PORTS), bits))
    flags = draw(st.sampled_from([b"", b"\xfc", b"\xfd"]))  # -, cld, std
    prefixes = b"".join(draw(st.lists(st.sampled_from([b"\xf3", b"\xf2", b"\x66", b"\x67", b"\x2e", b"\x26",
                                                       b"\x64"]), max_size=3)))
    op = draw(st.sampled_from([0x6C, 0x6D, 0x6E, 0x6F]))
    return set_up + flags + prefixes + bytes([op])


@st.composite
def cpuid(draw, bits: int, code: int) -> bytes:
    return mov_imm("eax", draw(LEAVES), bits) + mov_imm("ecx", draw(U32), bits) + b"\x0f\xa2"


@st.composite
def hlt(draw, bits: int, code: int) -> bytes:
    return draw(st.sampled_from([b"", b"\xfa", b"\xfb"])) + b"\xf4"


@st.composite
def msr(draw, bits: int, code: int) -> bytes:
    out = mov_imm("ecx", draw(MSRS), bits)
    if draw(st.booleans()):
        return out + b"\x0f\x32"  # rdmsr
    value = draw(U64)
    out += mov_imm("eax", value & 0xFFFF_FFFF, bits) + mov_imm("edx", value >> 32, bits)
    if draw(st.booleans()):  # read-modify-write: flip bits of what is there
        out += b"\x0f\x32" + draw(st.sampled_from([b"\x35", b"\x0d"])) + struct.pack("<I", value & 0xFFFF_FFFF)
        if bits == 16:
            out = out[:-5] + b"\x66" + out[-5:]
    return out + b"\x0f\x30"  # wrmsr


@st.composite
def mov_cr(draw, bits: int, code: int) -> bytes:
    cr = draw(st.sampled_from([0, 0, 2, 3, 3, 4, 4, 1, 5, 6, 7, 8]))
    reg = draw(st.integers(0, 7))
    value = draw(CR_VALUES)
    rex = b""
    if cr == 8:
        if bits != 64:
            rex = b"\xf0"  # lock mov cr0 = mov cr8 on AMD (or #UD)
            cr = 0
        else:
            rex = b"\x44"
            cr = 0
    kind = draw(st.sampled_from(["to", "to", "from", "rmw", "clts", "lmsw"]))
    if kind == "clts":
        return b"\x0f\x06"
    if kind == "lmsw":
        return mov_imm("eax", value, bits) + b"\x0f\x01\xf0"
    if kind == "from":
        return rex + b"\x0f\x20" + bytes([0xC0 | (cr << 3) | reg])
    out = b""
    if kind == "rmw":  # mov eax, crN; xor eax, value; mov crN, eax
        out = rex + b"\x0f\x20" + bytes([0xC0 | (cr << 3)])
        xor = b"\x35" + struct.pack("<I", value)
        out += (b"\x66" + xor) if bits == 16 else xor
        reg = 0
    else:
        out = mov_imm(list(_REGS)[reg], value, bits)
    return out + rex + b"\x0f\x22" + bytes([0xC0 | (cr << 3) | reg])


@st.composite
def invlpg(draw, bits: int, code: int) -> bytes:
    form = draw(st.sampled_from(["reg", "abs", "modrm"]))
    if form == "reg":
        return mov_imm("eax", draw(U32), bits) + (b"\x67" if bits == 16 else b"") + b"\x0f\x01\x38"
    if form == "abs":
        return abs_mem(b"\x0f\x01", 7, draw(U32), bits)
    return b"\x0f\x01" + bytes([(draw(st.integers(0, 2)) << 6) | (7 << 3) | draw(st.integers(0, 7))]) \
        + draw(st.binary(min_size=0, max_size=5))


@st.composite
def hypercall(draw, bits: int, code: int) -> bytes:
    fn = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4, 0xFFFF_FFFF]), U32))
    arg1 = draw(st.one_of(st.sampled_from([code, 0, 0xA_0000, 0xFEE0_0000, 0xFFFF_FFFF]), U32))
    arg2 = draw(st.one_of(st.sampled_from([0, 1, 16, 4096, 4097, 0xFFFF_FFFF]), U32))
    op = draw(st.sampled_from([b"\x0f\x01\xc1", b"\x0f\x01\xd9"]))  # vmcall, vmmcall
    return mov_imm("eax", fn, bits) + mov_imm("ebx", arg1, bits) + mov_imm("ecx", arg2, bits) + op


@st.composite
def interrupt(draw, bits: int, code: int) -> bytes:
    return draw(st.one_of(st.builds(lambda n: bytes([0xCD, n]), st.integers(0, 255)),
                          st.sampled_from([b"\xcc", b"\xf1", b"\xce", b"\x0f\x0b", b"\x0f\xb9\x00",
                                           b"\xd4\x00", b"\x31\xc0\xf7\xf0"])))  # aam 0, div by zero


@st.composite
def far_transfer(draw, bits: int, code: int) -> bytes:
    sel = draw(st.one_of(st.sampled_from([0, 8, 0x10, 0x18, 0x1B, 0x20, 0x23, 0xFFFF]), st.integers(0, 0xFFFF)))
    off = draw(st.one_of(st.sampled_from([code, code + 0x10, 0, 0x7C00, 0xFFFF_FFF0]), U32))
    kind = draw(st.sampled_from(["jmp", "call", "mem", "retf", "iret", "sysret"]))
    if kind in ("jmp", "call") and bits != 64:
        op = 0xEA if kind == "jmp" else 0x9A
        return bytes([op]) + (struct.pack("<HH", off & 0xFFFF, sel) if bits == 16 else struct.pack("<IH", off, sel))
    if kind == "retf":  # push sel; push off; retf
        return mov_imm("eax", sel, bits) + b"\x50" + mov_imm("eax", off, bits) + b"\x50" + \
            draw(st.sampled_from([b"\xcb", b"\x48\xcb", b"\x66\xcb"]))
    if kind == "iret":
        return mov_imm("eax", draw(U32), bits) + b"\x50" + mov_imm("eax", sel, bits) + b"\x50" + \
            mov_imm("eax", off, bits) + b"\x50" + draw(st.sampled_from([b"\xcf", b"\x48\xcf", b"\x66\xcf"]))
    if kind == "sysret":
        return draw(st.sampled_from([b"\x0f\x05", b"\x0f\x07", b"\x0f\x34", b"\x0f\x35", b"\x48\x0f\x07"]))
    # jmp / call far [ebx] with the pointer just written there
    target = draw(st.sampled_from([0x5000, code + 0x80, 0xFEE0_0000]))
    return (mov_imm("ebx", target, bits) + mov_imm("eax", off, bits) + mem_ebx(b"\x89", 0, bits)
            + mov_imm("eax", sel, bits) + b"\x67\x89\x43\x04"[(0 if bits == 16 else 1):]
            + (b"\x48" if bits == 64 and draw(st.booleans()) else b"")
            + mem_ebx(b"\xff", draw(st.sampled_from([3, 5])), bits))


@st.composite
def segments(draw, bits: int, code: int) -> bytes:
    kind = draw(st.sampled_from(["mov_sreg", "lgdt", "lidt", "lldt", "ltr", "pop_sreg"]))
    value = draw(st.one_of(st.sampled_from([0, 8, 0x10, 0x18, 0x1B, 0x23, 0x28, 0xFFFF, 0x7C00]), U32))
    if kind == "mov_sreg":
        sreg = draw(st.integers(0, 5))
        return mov_imm("eax", value, bits) + bytes([0x8E, 0xC0 | (sreg << 3)])
    if kind == "pop_sreg":
        return mov_imm("eax", value, bits) + b"\x50" + draw(st.sampled_from([b"\x1f", b"\x07", b"\x17",
                                                                             b"\x0f\xa1", b"\x0f\xa9"]))
    if kind in ("lldt", "ltr"):
        return mov_imm("eax", value, bits) + (b"\x0f\x00\xd0" if kind == "lldt" else b"\x0f\x00\xd8")
    pointer = draw(st.sampled_from([code, 0x5000, 0xFEE0_0000, 0xA_0000, 0]))
    return mov_imm("ebx", pointer, bits) + mem_ebx(b"\x0f\x01", 2 if kind == "lgdt" else 3, bits)


_PLANTED = [b"\xf4", b"\x0f\xa2", b"\x0f\x32", b"\x0f\x30", b"\x0f\x31", b"\x0f\x01\xc1", b"\x0f\x01\xd9",
            b"\xe6\xf4", b"\xee", b"\xec", b"\x0f\x22\xc0", b"\x0f\x20\xd8", b"\x0f\x01\x38", b"\xcc", b"\xeb\xfe",
            b"\x0f\x0b", b"\x90\x90\x90\x90"]


@st.composite
def self_modify(draw, bits: int, code: int) -> bytes:
    """Store instruction bytes into the code (ahead of or behind the store)."""
    target = code + draw(st.integers(-16, 200))
    planted = draw(st.sampled_from(_PLANTED)).ljust(4, b"\x90")[:4]
    form = draw(st.sampled_from(["abs", "ebx", "stos"]))
    imm = struct.unpack("<I", planted)[0]
    if form == "abs":
        op = abs_mem(b"\xc7", 0, target, bits) + planted
        return (b"\x66" + op) if bits == 16 else op
    if form == "ebx":
        return mov_imm("ebx", target, bits) + mov_imm("eax", imm, bits) + mem_ebx(b"\x89", 0, bits)
    return (mov_imm("edi", target, bits) + mov_imm("ecx", draw(st.integers(1, 64)), bits)
            + mov_imm("eax", imm, bits) + (b"\x67" if bits == 16 else b"") + b"\xf3\xaa")


@st.composite
def mmio(draw, bits: int, code: int) -> bytes:
    addr = draw(MMIO)
    value = draw(U32)
    op = draw(st.sampled_from([
        (b"\x89", 0, False),  # mov [ebx], eax
        (b"\x8b", 0, False),  # mov eax, [ebx]
        (b"\x88", 0, False),  # mov [ebx], al
        (b"\x89", 0, True),  # mov [ebx], ax
        (b"\x01", 0, False),  # add [ebx], eax (read-modify-write)
        (b"\x87", 0, False),  # xchg [ebx], eax
        (b"\xf0\x0f\xb1", 1, False),  # lock cmpxchg [ebx], ecx
        (b"\xff", 6, False),  # push dword [ebx]
        (b"\x8f", 0, False),  # pop dword [ebx]
        (b"\x0f\xae", 7, False),  # clflush [ebx]
        (b"\x0f\x01", 7, False),  # invlpg [ebx]
        (b"\xd9", 7, False),  # fnstcw [ebx]
        (b"\x0f\xae", 0, False),  # fxsave [ebx]
    ]))
    out = mov_imm("ebx", addr, bits) + mov_imm("eax", value, bits)
    if bits == 64 and draw(st.booleans()):
        out += b"\x48" + op[0] + bytes([(op[1] << 3) | 3])  # 64-bit operand
        return out
    return out + mem_ebx(op[0], op[1], bits, op[2])


@st.composite
def huge_rep(draw, bits: int, code: int) -> bytes:
    start = draw(st.one_of(MMIO, st.sampled_from([code, 0, 0x7000, 0x10_0000, 0x9_F000]), U32))
    out = (mov_imm("ecx", draw(COUNTS), bits) + mov_imm("edi", start, bits) + mov_imm("esi", draw(MMIO), bits)
           + mov_imm("eax", draw(U32), bits))
    out += draw(st.sampled_from([b"", b"\xfc", b"\xfd"]))
    prefix = draw(st.sampled_from([b"\xf3", b"\xf2"])) + (b"\x67" if bits == 16 and draw(st.booleans()) else b"")
    op = draw(st.sampled_from([b"\xaa", b"\xab", b"\xa4", b"\xa5", b"\xac", b"\xa6", b"\xae", b"\x48\xab",
                               b"\x66\xa5"]))
    if op.startswith(b"\x48") and bits != 64:
        op = op[1:]
    return out + prefix + op


@st.composite
def flags(draw, bits: int, code: int) -> bytes:
    value = draw(st.one_of(st.sampled_from([0x100, 0x200, 0x40000, 0x4000, 0x3000, 0x20000, 0x302, 0x40302,
                                            0x200000, 0]), U32))
    popf = b"\x66\x9d" if bits == 16 else b"\x9d"
    return mov_imm("eax", value, bits) + (b"\x50" if bits != 16 else b"\x66\x50") + popf


@st.composite
def stack(draw, bits: int, code: int) -> bytes:
    sp = draw(st.one_of(MMIO, st.sampled_from([0, 2, code + 8, 0x10, 0x7C00, 0x9_F000]), U32))
    tail = draw(st.sampled_from([b"\x50", b"\x58", b"\x60", b"\x61", b"\xe8\x00\x00\x00\x00", b"\xc3",
                                 b"\x9c", b"\xc8\x10\x00\x05", b"\xc9", b"\xff\x34\x24"]))
    if bits == 64 and tail in (b"\x60", b"\x61"):
        tail = b"\x50"
    return mov_imm("esp", sp, bits) + tail


@st.composite
def misc_insn(draw, bits: int, code: int) -> bytes:
    return draw(st.sampled_from([
        b"\x0f\x31", b"\x0f\x01\xf9", b"\x0f\x33", b"\x0f\xc7\xf0", b"\x0f\x01\xd0", b"\x0f\x09", b"\x0f\x08",
        b"\x0f\x01\xc8", b"\x0f\x01\xc9", b"\xf3\x90", b"\xf3\x0f\xc7\x33", b"\x0f\x01\xc2", b"\x0f\x01\xc3",
        b"\x0f\x01\xc4", b"\x0f\x78\xc0", b"\x0f\x79\xc0", b"\x66\x0f\xc7\x33", b"\x0f\x01\xd8", b"\x0f\x01\xda",
        b"\x0f\x01\xdb", b"\x0f\x01\xdc", b"\x0f\x01\xdd", b"\x0f\x01\xde", b"\x0f\x01\xdf", b"\x0f\x37",
        b"\x0f\xaa", b"\x0f\x01\xf8", b"\x0f\x01\xd1", b"\x0f\x00\xc0", b"\x0f\x01\xc0", b"\x0f\x01\xca",
        b"\x0f\x01\xcb", b"\x0f\x01\xfa", b"\x0f\x01\xfb", b"\x0f\xae\xe8", b"\x0f\x18\x00", b"\x9b", b"\xdb\xe3",
        b"\x0f\x23\xc0", b"\x0f\x21\xc0", b"\x0f\x23\xf8", b"\x0f\x26\xc0", b"\x0f\x24\xc0",
    ]))


@st.composite
def mode_flip(draw, bits: int, code: int) -> bytes:
    """Paging or protection switched on or off under the running code, EFER bits flipped."""
    kind = draw(st.sampled_from(["pe", "pg", "efer", "cr4", "cr3"]))
    if kind == "pe":
        return b"\x0f\x20\xc0" + (b"\x66" if bits == 16 else b"") + b"\x35\x01\x00\x00\x00" + b"\x0f\x22\xc0"
    if kind == "pg":
        return (mov_imm("eax", draw(st.sampled_from([0x10000, 0x1000, 0x7C00, 0])), bits) + b"\x0f\x22\xd8"
                + b"\x0f\x20\xc0" + (b"\x66" if bits == 16 else b"") + b"\x35\x00\x00\x00\x80" + b"\x0f\x22\xc0")
    if kind == "efer":
        bit = draw(st.sampled_from([0x1, 0x100, 0x400, 0x800, 0x1000, 0x2000, 0x4000, 0x8000]))
        return (mov_imm("ecx", 0xC000_0080, bits) + b"\x0f\x32" + (b"\x66" if bits == 16 else b"") + b"\x35"
                + struct.pack("<I", bit) + b"\x0f\x30")
    if kind == "cr4":
        bit = draw(st.sampled_from([0x20, 0x10, 0x80, 0x200, 0x400, 0x1000, 0x2000, 0x10000, 0x20000, 0x100000,
                                    0x200000, 0x400000]))
        return b"\x0f\x20\xe0" + (b"\x66" if bits == 16 else b"") + b"\x35" + struct.pack("<I", bit) + b"\x0f\x22\xe0"
    return mov_imm("eax", draw(U32), bits) + b"\x0f\x22\xd8"


@st.composite
def scramble(draw, bits: int, code: int) -> bytes:
    """Random values in every general register (random code uses them as pointers)."""
    values = draw(st.lists(st.one_of(MMIO, U32, st.just(code)) if bits != 64 else st.one_of(MMIO, U64),
                           min_size=7, max_size=7))
    return b"".join(mov_imm(r, v, bits) for r, v in zip(["eax", "ecx", "edx", "ebx", "ebp", "esi", "edi"], values))


def _random_bytes(bits: int, code: int):
    return st.binary(min_size=1, max_size=16)


SNIPPETS = {
    "port_io": port_io, "string_io": string_io, "cpuid": cpuid, "hlt": hlt, "msr": msr, "mov_cr": mov_cr,
    "invlpg": invlpg, "hypercall": hypercall, "interrupt": interrupt, "far_transfer": far_transfer,
    "segments": segments, "self_modify": self_modify, "mmio": mmio, "huge_rep": huge_rep, "flags": flags,
    "stack": stack, "misc_insn": misc_insn, "mode_flip": mode_flip, "scramble": scramble,
    "random": _random_bytes,
}

TRAILERS = {
    "none": lambda bits: b"",  # fall through into the zeros after the code
    "exit": lambda bits: b"\xb0\x07\xe6\xf4",  # mov al,7; out 0xf4,al
    "hlt": lambda bits: b"\xfa\xf4",  # cli; hlt
    "ud2": lambda bits: b"\x0f\x0b",
}


@st.composite
def biased_code(draw, bits: int, code: int) -> bytes:
    """1-8 snippets (sensitive instructions with their set-up, or random bytes) and a trailer."""
    names = draw(st.lists(st.sampled_from(sorted(SNIPPETS)), min_size=1, max_size=8))
    out = b"".join(draw(SNIPPETS[name](bits, code)) for name in names)
    return out + TRAILERS[draw(st.sampled_from(sorted(TRAILERS)))](bits)


def code_bytes(mode: str, base: int | None = None):
    """Random code for `mode`: plain random bytes (1-64) or biased snippets."""
    bits = BITS[mode]
    code = code_address(mode, base)
    return st.one_of(st.binary(min_size=1, max_size=64), biased_code(bits, code), biased_code(bits, code))


@st.composite
def case(draw, mode: str, vendor: str, *, max_exits: int = 10_000, timeout: float = 2.0) -> dict:
    """One robustness case: the machine, where the code goes, and the code.

    One case in four runs with no exit budget (`max_exits` None): only the timeout
    stops it, as `vmmtui run` without --max-exits does (Unicorn's uncounted mode).
    """
    if draw(st.integers(0, 3)) == 0:
        max_exits = None
    page_size = draw(st.sampled_from([2 << 20, 2 << 20, 2 << 20, 4 << 10]))
    mem = draw(st.sampled_from([16, 16, 16, 4, 64]))
    base = None
    if mode != "real":
        # 1 MiB, or so that the code runs across a 4 KiB page or a 2 MiB large page boundary
        bases = [0x10_0000, 0x10_0000, 0x10_0FC8, 0x1F_FFD0] + ([0x3F_FFE0] if mem > 4 else [])
        base = draw(st.sampled_from(bases))
    exits = draw(st.lists(st.sampled_from(["io=off", "msr=off", "hlt=off", "invlpg=off", "rdtsc=off", "cr0=off",
                                           "cr3=off", "cr4=off", "ud=on", "gp=on", "pf=on", "bp=on", "db=on",
                                           "de=on", "df=on"]
                                          + (["cpuid=off", "hypercall=off"] if vendor == "amd" else [])),
                          max_size=3, unique=True)) if draw(st.integers(0, 3)) == 0 else []
    return {
        "mode": mode, "vendor": vendor, "code": draw(code_bytes(mode, base)).hex(), "base": base,
        "mem": mem, "page_size": page_size, "exits": exits, "max_exits": max_exits, "timeout": timeout,
    }
