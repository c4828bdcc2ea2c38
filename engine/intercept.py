"""Finding and decoding the guest instructions that must exit.

Unicorn reports IN, OUT and CPUID through instruction hooks, but executes HLT,
RDMSR, WRMSR, RDTSC, MOV CR, INVLPG and friends by itself with no hook
(DESIGN.md, "What Unicorn gives you"). The engine therefore maps guest pages
without execute permission, and the first fetch from a page has it scanned here
for those opcodes at every offset (and at every run of legal prefixes in front);
a per-address code hook then fires before each candidate that turns out to be an
instruction start. False candidates cost nothing: a code hook only fires at the
start of an instruction.

`decode()` reads one sensitive instruction (prefixes included) and says what the
exit needs: kind, length, operand and address size, REP, the immediate port, the
control register and general register of a MOV CR.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """The instructions the engine intercepts."""

    IN = "in"
    OUT = "out"
    INS = "ins"
    OUTS = "outs"
    HLT = "hlt"
    CPUID = "cpuid"
    RDTSC = "rdtsc"
    RDMSR = "rdmsr"
    WRMSR = "wrmsr"
    MOV_TO_CR = "mov-to-cr"
    MOV_FROM_CR = "mov-from-cr"
    CLTS = "clts"
    LMSW = "lmsw"
    INVLPG = "invlpg"
    VMCALL = "vmcall"
    VMMCALL = "vmmcall"
    PAUSE = "pause"


#: Kinds reached through per-address code hooks (Unicorn has no hook of its own for them).
CODE_HOOKED = frozenset(
    {Kind.HLT, Kind.RDTSC, Kind.RDMSR, Kind.WRMSR, Kind.MOV_TO_CR, Kind.MOV_FROM_CR,
     Kind.CLTS, Kind.LMSW, Kind.INVLPG, Kind.VMCALL, Kind.VMMCALL, Kind.PAUSE}
)

_LEGACY_PREFIXES = frozenset({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65})
_SEGMENT_PREFIX = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}  # ES CS SS DS FS GS
_MAX_PREFIXES = 4
GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


@dataclass(frozen=True, slots=True)
class Insn:
    """One decoded sensitive instruction."""

    kind: Kind
    length: int
    operand_size: int = 0  # bytes, for I/O
    address_size: int = 16  # bits
    rep: bool = False
    port: int | None = None  # immediate port of IN/OUT imm8
    cr: int = 0
    gpr: int = 0  # general register number (0 RAX ... 15 R15)
    segment: int = 3  # effective segment of a string I/O source (DS unless overridden)
    lock: bool = False
    string: bool = False  # INS or OUTS


def decode(code: bytes, bits: int) -> Insn | None:
    """Decode the sensitive instruction at the start of `code` in a `bits`-bit code segment.

    Returns None when the bytes are not one of the intercepted instructions.
    """
    i = 0
    opsize_prefix = addrsize_prefix = rep = lock = False
    segment = 3
    while i < len(code) and code[i] in _LEGACY_PREFIXES and i < 14:
        b = code[i]
        if b == 0x66:
            opsize_prefix = True
        elif b == 0x67:
            addrsize_prefix = True
        elif b in (0xF3, 0xF2):
            rep = True
        elif b == 0xF0:
            lock = True
        else:
            segment = _SEGMENT_PREFIX[b]
        i += 1
    rex = 0
    if bits == 64 and i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    if i >= len(code):
        return None
    if bits == 16:
        opsize = 4 if opsize_prefix else 2
        asize = 32 if addrsize_prefix else 16
    else:
        opsize = 2 if opsize_prefix else 4
        asize = (32 if addrsize_prefix else 64) if bits == 64 else (16 if addrsize_prefix else 32)
    op = code[i]
    common = {"address_size": asize, "segment": segment}
    if op in (0xE4, 0xE5, 0xE6, 0xE7):
        if i + 1 >= len(code):
            return None
        kind = Kind.IN if op < 0xE6 else Kind.OUT
        size = 1 if op in (0xE4, 0xE6) else opsize
        return Insn(kind, i + 2, size, port=code[i + 1], **common)
    if op in (0xEC, 0xED, 0xEE, 0xEF):
        kind = Kind.IN if op < 0xEE else Kind.OUT
        size = 1 if op in (0xEC, 0xEE) else opsize
        return Insn(kind, i + 1, size, **common)
    if op in (0x6C, 0x6D, 0x6E, 0x6F):
        kind = Kind.INS if op < 0x6E else Kind.OUTS
        size = 1 if op in (0x6C, 0x6E) else opsize
        return Insn(kind, i + 1, size, rep=rep, string=True, **common)
    if op == 0xF4:
        return Insn(Kind.HLT, i + 1, **common)
    if op == 0x90 and code[i - 1:i] == b"\xf3" and not rex:
        return Insn(Kind.PAUSE, i + 1, **common)  # F3 90: PAUSE is REP NOP
    if op != 0x0F or i + 1 >= len(code):
        return None
    op2 = code[i + 1]
    simple = {0xA2: Kind.CPUID, 0x31: Kind.RDTSC, 0x32: Kind.RDMSR, 0x30: Kind.WRMSR, 0x06: Kind.CLTS}
    if op2 in simple:
        return Insn(simple[op2], i + 2, **common)
    if op2 in (0x20, 0x22):
        if i + 2 >= len(code):
            return None
        modrm = code[i + 2]
        cr = ((modrm >> 3) & 7) | (8 if rex & 0x4 else 0)
        if lock and cr == 0:
            cr = 8  # AMD: LOCK MOV CR0 is the 32-bit mode alias of CR8
        gpr = (modrm & 7) | (8 if rex & 0x1 else 0)
        kind = Kind.MOV_TO_CR if op2 == 0x22 else Kind.MOV_FROM_CR
        return Insn(kind, i + 3, cr=cr, gpr=gpr, lock=lock, **common)
    if op2 == 0x01 and i + 2 < len(code):
        modrm = code[i + 2]
        if modrm == 0xC1:
            return Insn(Kind.VMCALL, i + 3, **common)
        if modrm == 0xD9:
            return Insn(Kind.VMMCALL, i + 3, **common)
        reg = (modrm >> 3) & 7
        if reg == 7 and modrm >> 6 != 3:
            length = _modrm_length(code, i + 2, asize)
            return None if length is None else Insn(Kind.INVLPG, i + 2 + length, **common)
        if reg == 6:
            length = _modrm_length(code, i + 2, asize)
            if length is None:
                return None
            return Insn(Kind.LMSW, i + 2 + length, cr=0, gpr=modrm & 7, **common)
    return None


def _modrm_length(code: bytes, at: int, address_size: int) -> int | None:
    """Bytes taken by the ModRM byte at `at` and what follows it (SIB, displacement)."""
    if at >= len(code):
        return None
    modrm = code[at]
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 1
    if address_size == 16:
        disp = {0: 2 if rm == 6 else 0, 1: 1, 2: 2}[mod]
        return 1 + disp
    n = 1
    if rm == 4:
        if at + 1 >= len(code):
            return None
        n += 1
        if mod == 0 and (code[at + 1] & 7) == 5:
            return n + 4
    if mod == 0:
        return n + (4 if rm == 5 else 0)
    return n + (1 if mod == 1 else 4)


def scan(page: bytes, pause: bool = False) -> list[int]:
    """Offsets in `page` where a code-hooked instruction may start (prefixes included);
    PAUSE too when `pause` (it is hooked only while PAUSE exiting is on)."""
    starts: set[int] = set()
    n = len(page)
    for off in range(n):
        b = page[off]
        hit = False
        if b == 0xF4 or (pause and b == 0x90 and off > 0 and page[off - 1] == 0xF3):
            hit = True
        elif b == 0x0F and off + 1 < n:
            b2 = page[off + 1]
            if b2 in (0x31, 0x32, 0x30, 0x20, 0x22, 0x06):
                hit = True
            elif b2 == 0x01 and off + 2 < n:
                modrm = page[off + 2]
                reg = (modrm >> 3) & 7
                hit = modrm in (0xC1, 0xD9) or reg == 6 or (reg == 7 and modrm >> 6 != 3)
        if not hit:
            continue
        starts.add(off)
        j = off
        # A REX prefix may sit right before the opcode, legacy prefixes before that.
        if j > 0 and 0x40 <= page[j - 1] <= 0x4F:
            j -= 1
            starts.add(j)
        for _ in range(_MAX_PREFIXES):
            if j == 0 or page[j - 1] not in _LEGACY_PREFIXES:
                break
            j -= 1
            starts.add(j)
    return sorted(starts)
