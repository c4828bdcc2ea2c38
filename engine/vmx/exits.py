"""VMX exit reasons, exit qualifications and interruption information.

Intel SDM Vol. 3, Appendix C "VMX Basic Exit Reasons" for the reason numbers, and
the chapter "VM Exits", section "Exit Qualification for VM Exits" (the tables for
control-register accesses, I/O instructions and EPT violations) and section
"Information for VM Exits Due to Vectored Events" for the interruption-information
format (shared by VM_EXIT_INTR_INFO, IDT_VECTORING_INFO_FIELD and
VM_ENTRY_INTR_INFO_FIELD).

The encoders build the values the emulated hardware stores in the VMCS; the
decoders turn them into plain dicts (ints, bools, short strings) for the UI and
the JSON output.
"""

from __future__ import annotations

from enum import IntEnum

REASONS: dict[int, str] = {
    0: "EXCEPTION_NMI",
    1: "EXTERNAL_INTERRUPT",
    2: "TRIPLE_FAULT",
    3: "INIT_SIGNAL",
    4: "STARTUP_IPI",
    5: "IO_SMI",
    6: "OTHER_SMI",
    7: "INTERRUPT_WINDOW",
    8: "NMI_WINDOW",
    9: "TASK_SWITCH",
    10: "CPUID",
    11: "GETSEC",
    12: "HLT",
    13: "INVD",
    14: "INVLPG",
    15: "RDPMC",
    16: "RDTSC",
    17: "RSM",
    18: "VMCALL",
    19: "VMCLEAR",
    20: "VMLAUNCH",
    21: "VMPTRLD",
    22: "VMPTRST",
    23: "VMREAD",
    24: "VMRESUME",
    25: "VMWRITE",
    26: "VMXOFF",
    27: "VMXON",
    28: "CR_ACCESS",
    29: "DR_ACCESS",
    30: "IO_INSTRUCTION",
    31: "MSR_READ",
    32: "MSR_WRITE",
    33: "INVALID_GUEST_STATE",
    34: "MSR_LOAD_FAIL",
    36: "MWAIT_INSTRUCTION",
    37: "MONITOR_TRAP_FLAG",
    39: "MONITOR_INSTRUCTION",
    40: "PAUSE_INSTRUCTION",
    41: "MCE_DURING_VMENTRY",
    43: "TPR_BELOW_THRESHOLD",
    44: "APIC_ACCESS",
    45: "EOI_INDUCED",
    46: "GDTR_IDTR",
    47: "LDTR_TR",
    48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG",
    50: "INVEPT",
    51: "RDTSCP",
    52: "PREEMPTION_TIMER",
    53: "INVVPID",
    54: "WBINVD",
    55: "XSETBV",
    56: "APIC_WRITE",
    57: "RDRAND",
    58: "INVPCID",
    59: "VMFUNC",
    61: "RDSEED",
    62: "PML_FULL",
    63: "XSAVES",
    64: "XRSTORS",
}
"""Every basic exit reason (bits 15:0 of VM_EXIT_REASON), number -> name."""

# The basic exit reasons the engine raises or handles by name.
EXCEPTION_NMI = 0
EXTERNAL_INTERRUPT = 1
TRIPLE_FAULT = 2
INIT_SIGNAL = 3
STARTUP_IPI = 4
INTERRUPT_WINDOW = 7
NMI_WINDOW = 8
TASK_SWITCH = 9
CPUID = 10
HLT = 12
INVD = 13
INVLPG = 14
RDPMC = 15
RDTSC = 16
VMCALL = 18
CR_ACCESS = 28
DR_ACCESS = 29
IO_INSTRUCTION = 30
MSR_READ = 31
MSR_WRITE = 32
INVALID_GUEST_STATE = 33
MSR_LOAD_FAIL = 34
MWAIT_INSTRUCTION = 36
MONITOR_TRAP_FLAG = 37
MONITOR_INSTRUCTION = 39
PAUSE_INSTRUCTION = 40
MCE_DURING_VMENTRY = 41
GDTR_IDTR = 46
LDTR_TR = 47
EPT_VIOLATION = 48
EPT_MISCONFIG = 49
RDTSCP = 51
PREEMPTION_TIMER = 52
WBINVD = 54
XSETBV = 55

ENTRY_FAILURE = 1 << 31
"""VM_EXIT_REASON bit 31: the exit is a VM-entry failure (SDM "VM Entries")."""


def basic_reason(exit_reason: int) -> int:
    """The basic exit reason: bits 15:0 of a VM_EXIT_REASON value."""
    return exit_reason & 0xFFFF


def is_entry_failure(exit_reason: int) -> bool:
    """Whether a VM_EXIT_REASON value reports a failed VM entry (bit 31)."""
    return bool(exit_reason & ENTRY_FAILURE)


def describe(exit_reason: int) -> str:
    """The name of a VM_EXIT_REASON value's basic reason ("UNKNOWN_<n>" if not in the
    table), with " (VM-entry failure)" appended when bit 31 is set."""
    basic = basic_reason(exit_reason)
    name = REASONS.get(basic, f"UNKNOWN_{basic}")
    return f"{name} (VM-entry failure)" if is_entry_failure(exit_reason) else name


# --- I/O instructions (exit reason 30) -----------------------------------------

_IO_SIZES = {1: 0, 2: 1, 4: 3}  # bits 2:0 = size - 1
_IO_IN = 1 << 3
_IO_STRING = 1 << 4
_IO_REP = 1 << 5
_IO_IMM = 1 << 6


def io_qualification(
    *, port: int, size: int, is_in: bool, string: bool = False, rep: bool = False, imm: bool = False
) -> int:
    """The exit qualification of an I/O instruction exit; `size` is in bytes (1, 2, 4).

    `imm` says the port came from an immediate operand (IN/OUT imm8) rather than DX.
    """
    if size not in _IO_SIZES:
        raise ValueError(f"I/O access size must be 1, 2 or 4 bytes, not {size}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
    return (
        _IO_SIZES[size]
        | (_IO_IN if is_in else 0)
        | (_IO_STRING if string else 0)
        | (_IO_REP if rep else 0)
        | (_IO_IMM if imm else 0)
        | port << 16
    )


def decode_io(q: int) -> dict[str, int | bool | str]:
    """An I/O-instruction exit qualification as {"port", "size" (bytes), "direction"
    ("in"/"out"), "string", "rep", "operand" ("dx"/"imm")}."""
    return {
        "port": (q >> 16) & 0xFFFF,
        "size": (q & 7) + 1,
        "direction": "in" if q & _IO_IN else "out",
        "string": bool(q & _IO_STRING),
        "rep": bool(q & _IO_REP),
        "operand": "imm" if q & _IO_IMM else "dx",
    }


# --- Control-register accesses (exit reason 28) --------------------------------

MOV_TO_CR = 0
MOV_FROM_CR = 1
CLTS = 2
LMSW = 3

_CR_ACCESS_NAMES = ("mov-to-cr", "mov-from-cr", "clts", "lmsw")

GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
"""General registers in the encoding order of qualification bits 11:8."""

_LMSW_MEMORY = 1 << 6


def cr_qualification(
    *, cr: int, access: int, gpr: int = 0, lmsw_memory: bool = False, lmsw_data: int = 0
) -> int:
    """The exit qualification of a control-register access.

    `access` is MOV_TO_CR, MOV_FROM_CR, CLTS or LMSW; `gpr` (0 RAX … 15 R15) is the
    MOV operand. The SDM clears the register bits for CLTS and LMSW and the LMSW
    bits for the other accesses, so giving them there is an error.
    """
    if not 0 <= cr <= 15:
        raise ValueError(f"control register number {cr} is outside 0-15")
    if access not in (MOV_TO_CR, MOV_FROM_CR, CLTS, LMSW):
        raise ValueError(f"unknown control-register access type {access}")
    if not 0 <= gpr <= 15:
        raise ValueError(f"general register number {gpr} is outside 0-15")
    if not 0 <= lmsw_data <= 0xFFFF:
        raise ValueError(f"LMSW source data {lmsw_data:#x} is wider than 16 bits")
    if access in (CLTS, LMSW) and gpr:
        raise ValueError("CLTS and LMSW exits carry no general register")
    if access != LMSW and (lmsw_memory or lmsw_data):
        raise ValueError("only LMSW exits carry an LMSW operand and source data")
    return cr | access << 4 | (_LMSW_MEMORY if lmsw_memory else 0) | gpr << 8 | lmsw_data << 16


def decode_cr(q: int) -> dict[str, int | str]:
    """A control-register-access qualification as {"cr", "access", "gpr"}; "gpr" only
    for MOV to/from CR, "lmsw_data" and "lmsw_operand" ("register"/"memory") only
    for LMSW."""
    access = (q >> 4) & 3
    out: dict[str, int | str] = {"cr": q & 0xF, "access": _CR_ACCESS_NAMES[access]}
    if access in (MOV_TO_CR, MOV_FROM_CR):
        out["gpr"] = GPR_NAMES[(q >> 8) & 0xF]
    elif access == LMSW:
        out["lmsw_data"] = (q >> 16) & 0xFFFF
        out["lmsw_operand"] = "memory" if q & _LMSW_MEMORY else "register"
    return out


# --- EPT violations (exit reason 48) -------------------------------------------

_EPT_BITS = ("read", "write", "fetch", "readable", "writable", "executable")  # bits 0-5
_EPT_LINEAR_VALID = 1 << 7
_EPT_TRANSLATED = 1 << 8


def ept_violation_qualification(
    *,
    read: bool,
    write: bool,
    fetch: bool,
    readable: bool,
    writable: bool,
    executable: bool,
    linear_valid: bool = True,
    translated: bool = True,
) -> int:
    """The exit qualification of an EPT violation.

    read/write/fetch: the access that faulted; readable/writable/executable: the
    permissions the EPT walk granted the GPA. `translated` (the access was to the
    translated linear address, not to a guest paging-structure entry) is only
    encoded when `linear_valid` (GUEST_LINEAR_ADDRESS holds the address).
    """
    q = 0
    for bit, flag in enumerate((read, write, fetch, readable, writable, executable)):
        if flag:
            q |= 1 << bit
    if linear_valid:
        q |= _EPT_LINEAR_VALID
        if translated:
            q |= _EPT_TRANSLATED
    return q


def decode_ept_violation(q: int) -> dict[str, bool]:
    """An EPT-violation qualification as {"read", "write", "fetch", "readable",
    "writable", "executable", "linear_valid"}, plus "translated" when linear_valid."""
    out = {name: bool(q >> bit & 1) for bit, name in enumerate(_EPT_BITS)}
    out["linear_valid"] = bool(q & _EPT_LINEAR_VALID)
    if out["linear_valid"]:
        out["translated"] = bool(q & _EPT_TRANSLATED)
    return out


# --- Interruption information --------------------------------------------------


class InterruptionType(IntEnum):
    """Bits 10:8 of the interruption-information fields (type 1 is reserved).

    A class rather than module constants: EXTERNAL_INTERRUPT is also exit reason 1.
    """

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6
    OTHER_EVENT = 7


_INFO_ERROR_CODE_VALID = 1 << 11
_INFO_VALID = 1 << 31


def interruption_type_name(t: int) -> str:
    """The short name of an interruption type: "hardware-exception", "reserved-1", …"""
    try:
        return InterruptionType(t).name.lower().replace("_", "-")
    except ValueError:
        return f"reserved-{t}"


def interruption_info(
    *, vector: int, type: int, error_code_valid: bool = False, valid: bool = True
) -> int:
    """An interruption-information value (an InterruptionType `type`)."""
    if not 0 <= vector <= 0xFF:
        raise ValueError(f"vector {vector} is outside 0-255")
    InterruptionType(type)  # raises ValueError for a reserved type
    return (
        vector
        | type << 8
        | (_INFO_ERROR_CODE_VALID if error_code_valid else 0)
        | (_INFO_VALID if valid else 0)
    )


def decode_interruption_info(v: int) -> dict[str, int | bool | str]:
    """An interruption-information value as {"vector", "type" (short name),
    "error_code_valid", "valid"}."""
    return {
        "vector": v & 0xFF,
        "type": interruption_type_name((v >> 8) & 7),
        "error_code_valid": bool(v & _INFO_ERROR_CODE_VALID),
        "valid": bool(v & _INFO_VALID),
    }
