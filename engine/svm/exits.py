"""SVM exit codes, EXITINFO1 encodings and event injection.

AMD APM Vol. 2, Appendix C "SVM Intercept Exit Codes" for EXITCODE (VMCB 0x070),
and chapter 15 "Secure Virtual Machine" for what the #VMEXIT leaves in EXITINFO1:
"IOIO Intercepts" (15.10.2), "Nested Page Faults" (15.25.6), "Decode Assists"
for MOV CRn (15.33.1), and "Event Injection" (15.20) for the EVENTINJ format,
which EXITINTINFO shares.

The encoders build what the emulated hardware stores in the VMCB; the decoders
turn it into plain dicts (ints, bools, short strings) for the UI and the JSON output.
"""

from __future__ import annotations

from enum import IntEnum

CODES: dict[int, str] = {
    0x000: "READ_CR0",
    0x003: "READ_CR3",
    0x004: "READ_CR4",
    0x008: "READ_CR8",
    0x010: "WRITE_CR0",
    0x013: "WRITE_CR3",
    0x014: "WRITE_CR4",
    0x018: "WRITE_CR8",
    **{0x020 + n: f"READ_DR{n}" for n in range(8)},
    **{0x030 + n: f"WRITE_DR{n}" for n in range(8)},
    **{0x040 + n: f"EXCP_{n}" for n in range(32)},
    0x060: "INTR",
    0x061: "NMI",
    0x062: "SMI",
    0x063: "INIT",
    0x064: "VINTR",
    0x065: "CR0_SEL_WRITE",
    0x066: "IDTR_READ",
    0x067: "GDTR_READ",
    0x068: "LDTR_READ",
    0x069: "TR_READ",
    0x06A: "IDTR_WRITE",
    0x06B: "GDTR_WRITE",
    0x06C: "LDTR_WRITE",
    0x06D: "TR_WRITE",
    0x06E: "RDTSC",
    0x06F: "RDPMC",
    0x070: "PUSHF",
    0x071: "POPF",
    0x072: "CPUID",
    0x073: "RSM",
    0x074: "IRET",
    0x075: "SWINT",
    0x076: "INVD",
    0x077: "PAUSE",
    0x078: "HLT",
    0x079: "INVLPG",
    0x07A: "INVLPGA",
    0x07B: "IOIO",
    0x07C: "MSR",
    0x07D: "TASK_SWITCH",
    0x07E: "FERR_FREEZE",
    0x07F: "SHUTDOWN",
    0x080: "VMRUN",
    0x081: "VMMCALL",
    0x082: "VMLOAD",
    0x083: "VMSAVE",
    0x084: "STGI",
    0x085: "CLGI",
    0x086: "SKINIT",
    0x087: "RDTSCP",
    0x088: "ICEBP",
    0x089: "WBINVD",
    0x08A: "MONITOR",
    0x08B: "MWAIT",
    0x08C: "MWAIT_COND",
    0x08D: "XSETBV",
    0x08E: "RDPRU",
    0x0A2: "INVPCID",
    0x400: "NPF",
}
"""The exit codes the engine knows, EXITCODE -> name."""

# The exit codes the engine raises or handles by name.
READ_CR0 = 0x000
READ_CR3 = 0x003
READ_CR4 = 0x004
READ_CR8 = 0x008
WRITE_CR0 = 0x010
WRITE_CR3 = 0x013
WRITE_CR4 = 0x014
WRITE_CR8 = 0x018
EXCP_BASE = 0x040
"""EXITCODE of exception vector n is EXCP_BASE + n."""
INTR = 0x060
NMI = 0x061
SMI = 0x062
INIT = 0x063
VINTR = 0x064
CR0_SEL_WRITE = 0x065
RDTSC = 0x06E
RDPMC = 0x06F
CPUID = 0x072
IRET = 0x074
SWINT = 0x075
INVD = 0x076
PAUSE = 0x077
HLT = 0x078
INVLPG = 0x079
IOIO = 0x07B
MSR = 0x07C
TASK_SWITCH = 0x07D
SHUTDOWN = 0x07F
VMRUN = 0x080
VMMCALL = 0x081
RDTSCP = 0x087
WBINVD = 0x089
MONITOR = 0x08A
MWAIT = 0x08B
XSETBV = 0x08D
NPF = 0x400

VMEXIT_INVALID = (1 << 64) - 1
"""EXITCODE after a VMRUN with invalid guest state: -1, as the 64-bit field holds it."""


def describe(code: int) -> str:
    """The name of an EXITCODE: the table's name, READ_CRn / WRITE_CRn for the CR
    codes the table leaves out, "VMEXIT_INVALID" for -1 (as an int or as the 64-bit
    field value), "UNKNOWN_0x<code>" otherwise."""
    if code in CODES:
        return CODES[code]
    if code in (-1, VMEXIT_INVALID):
        return "VMEXIT_INVALID"
    if 0 <= code < 0x010:
        return f"READ_CR{code}"
    if 0x010 <= code < 0x020:
        return f"WRITE_CR{code - 0x010}"
    return f"UNKNOWN_{code:#x}"


# --- IOIO (EXITINFO1) ----------------------------------------------------------

SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
"""Segment numbering of EXITINFO1 bits 12:10 (ES=0 … GS=5)."""

_IO_IN = 1 << 0
_IO_STRING = 1 << 2
_IO_REP = 1 << 3
_IO_SIZE_BITS = {1: 1 << 4, 2: 1 << 5, 4: 1 << 6}
_IO_ADDR_BITS = {16: 1 << 7, 32: 1 << 8, 64: 1 << 9}


def ioio_exitinfo1(
    *,
    port: int,
    size: int,
    is_in: bool,
    string: bool = False,
    rep: bool = False,
    addr_size: int = 16,
    segment: int = 3,
) -> int:
    """EXITINFO1 of an IOIO intercept; `size` is the operand size in bytes (1, 2, 4),
    `addr_size` the address size in bits (16, 32, 64), `segment` the effective
    segment (ES=0 … GS=5, see SEGMENT_NAMES)."""
    if size not in _IO_SIZE_BITS:
        raise ValueError(f"I/O access size must be 1, 2 or 4 bytes, not {size}")
    if addr_size not in _IO_ADDR_BITS:
        raise ValueError(f"address size must be 16, 32 or 64 bits, not {addr_size}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
    if not 0 <= segment < len(SEGMENT_NAMES):
        raise ValueError(f"segment number {segment} is outside 0 (ES) - 5 (GS)")
    return (
        (_IO_IN if is_in else 0)
        | (_IO_STRING if string else 0)
        | (_IO_REP if rep else 0)
        | _IO_SIZE_BITS[size]
        | _IO_ADDR_BITS[addr_size]
        | segment << 10
        | port << 16
    )


def _one_hot(value: int, bits: dict[int, int]) -> int:
    """The key whose bit is set in `value` (0 when none is)."""
    return next((key for key, bit in bits.items() if value & bit), 0)


def decode_ioio(info1: int) -> dict[str, int | bool | str]:
    """IOIO EXITINFO1 as {"port", "size" (bytes), "direction" ("in"/"out"), "string",
    "rep", "addr_size" (bits), "segment" ("es" … "gs")}."""
    seg = (info1 >> 10) & 7
    return {
        "port": (info1 >> 16) & 0xFFFF,
        "size": _one_hot(info1, _IO_SIZE_BITS),
        "direction": "in" if info1 & _IO_IN else "out",
        "string": bool(info1 & _IO_STRING),
        "rep": bool(info1 & _IO_REP),
        "addr_size": _one_hot(info1, _IO_ADDR_BITS),
        "segment": SEGMENT_NAMES[seg] if seg < len(SEGMENT_NAMES) else f"seg{seg}",
    }


# --- Nested page faults (EXITINFO1) --------------------------------------------

_NPF_BITS = {"present": 0, "write": 1, "user": 2, "reserved": 3, "fetch": 4, "final": 32, "walk": 33}


def npf_exitinfo1(
    *,
    present: bool,
    write: bool,
    user: bool = True,
    reserved: bool = False,
    fetch: bool = False,
    final: bool = True,
    walk: bool = False,
) -> int:
    """EXITINFO1 of a nested page fault: the page-fault error code of the nested walk
    (guest accesses count as user accesses), with bit 32 set when the fault was on
    the final guest-physical address and bit 33 when it was on a guest page-table
    access during the guest's own walk (never both)."""
    if final and walk:
        raise ValueError("a nested page fault is on the final address or during the walk, not both")
    flags = {"present": present, "write": write, "user": user, "reserved": reserved,
             "fetch": fetch, "final": final, "walk": walk}
    return sum(1 << _NPF_BITS[name] for name, on in flags.items() if on)


def decode_npf(info1: int) -> dict[str, bool]:
    """NPF EXITINFO1 as {"present", "write", "user", "reserved", "fetch", "final", "walk"}."""
    return {name: bool(info1 >> bit & 1) for name, bit in _NPF_BITS.items()}


# --- CR accesses with decode assists (EXITINFO1) -------------------------------

GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
"""General registers in the encoding order of EXITINFO1 bits 3:0."""

_CR_MOV = 1 << 63


def cr_exitinfo1(*, gpr: int, mov_cr: bool = True) -> int:
    """EXITINFO1 of a CR read/write intercept with decode assists: bit 63 for MOV CRn,
    bits 3:0 its general register (0 RAX … 15 R15). Other instructions (CLTS, LMSW,
    SMSW) leave both zero."""
    if not 0 <= gpr <= 15:
        raise ValueError(f"general register number {gpr} is outside 0-15")
    if not mov_cr and gpr:
        raise ValueError("only MOV CRn exits carry a general register")
    return (_CR_MOV if mov_cr else 0) | gpr


def decode_cr(info1: int) -> dict[str, bool | str]:
    """CR-intercept EXITINFO1 as {"mov_cr"}, plus "gpr" ("rax" … "r15") for MOV CRn."""
    out: dict[str, bool | str] = {"mov_cr": bool(info1 & _CR_MOV)}
    if out["mov_cr"]:
        out["gpr"] = GPR_NAMES[info1 & 0xF]
    return out


# --- Event injection (EVENTINJ, EXITINTINFO) -----------------------------------


class EventType(IntEnum):
    """Bits 10:8 of EVENTINJ / EXITINTINFO (1 and 5-7 are reserved).

    A class rather than module constants: NMI and INTR are also exit codes.
    """

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4


_EVENT_ERROR_CODE_VALID = 1 << 11
_EVENT_VALID = 1 << 31


def event_type_name(t: int) -> str:
    """The short name of an event type: "exception", "reserved-5", …"""
    try:
        return EventType(t).name.lower().replace("_", "-")
    except ValueError:
        return f"reserved-{t}"


def eventinj(*, vector: int, type: int, error_code: int | None = None) -> int:
    """A valid 64-bit EVENTINJ value (an EventType `type`): the error code, when given,
    goes in bits 63:32 with bit 11 set."""
    if not 0 <= vector <= 0xFF:
        raise ValueError(f"vector {vector} is outside 0-255")
    EventType(type)  # raises ValueError for a reserved type
    value = vector | type << 8 | _EVENT_VALID
    if error_code is not None:
        if not 0 <= error_code <= 0xFFFF_FFFF:
            raise ValueError(f"error code {error_code:#x} is wider than 32 bits")
        value |= _EVENT_ERROR_CODE_VALID | error_code << 32
    return value


def decode_eventinj(value: int) -> dict[str, int | bool | str]:
    """An EVENTINJ or EXITINTINFO value (64 bits, error code in 63:32) as {"vector",
    "type" (short name), "valid", "error_code_valid"}, plus "error_code" when valid."""
    out: dict[str, int | bool | str] = {
        "vector": value & 0xFF,
        "type": event_type_name((value >> 8) & 7),
        "valid": bool(value & _EVENT_VALID),
        "error_code_valid": bool(value & _EVENT_ERROR_CODE_VALID),
    }
    if out["error_code_valid"]:
        out["error_code"] = (value >> 32) & 0xFFFF_FFFF
    return out
