"""One VMCS or VMCB field's value in words: "10 CPUID", "port 0x3f8 out 1 byte dx", "PE PG".

`describe_field(vendor, name, value, context=...)` is what the structure pane
(and a headless script, or the JSON) shows beside a raw field value. It returns
None where the hex value says it all (addresses, limits, counters).

Some fields only mean something together with another one: the exit
qualification (Intel) and EXITINFO1/2 (AMD) are decoded according to the exit
reason, an NPF's address is in EXITINFO2, an event's error code sits in the next
field. `context` is the dict of every field's value by name (as
`Hardware.structure_fields` gives them); without it, those fields decode as far
as they can on their own.

Bit and format meanings follow tests/refdata/NOTES.md (Intel SDM Vol. 3; AMD APM
Vol. 2) and reuse the decoders of `engine.vmx.exits`, `engine.svm.exits`,
`engine.vmx.controls`, `engine.svm.intercepts` and `engine.ept`. Nothing here
raises for any integer value: a reserved encoding is named as such.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import IntFlag

from .bits import bit_names
from .ept import decode_eptp
from .svm import exits as S
from .svm.intercepts import Misc1, Misc2
from .svm.vmcb import CONTROL, SAVE
from .vmx import exits as X
from .vmx.fields import FIELDS, Width, width
from .vmx.controls import (
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
)

Context = Mapping[str, int]
_Decoder = Callable[[int, Context], "str | None"]

ALL_ONES_64 = (1 << 64) - 1

# --- shared vocabulary ----------------------------------------------------------

EXCEPTION_NAMES: dict[int, str] = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
    9: "#CSO", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
    18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP", 28: "#HV", 29: "#VC", 30: "#SX",
}
"""Exception vectors 0-31 by mnemonic (SDM Vol. 3 "Exception and Interrupt Vectors";
APM Vol. 2 for #HV, #VC, #SX); 9 is the legacy coprocessor segment overrun."""

_ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})


def exception_name(vector: int) -> str:
    """'#GP' for 13; '#15' for a vector 0-31 without a mnemonic; 'vector 0x80' above 31."""
    if vector in EXCEPTION_NAMES:
        return EXCEPTION_NAMES[vector]
    return f"#{vector}" if 0 <= vector < 32 else f"vector {vector:#x}"


def _bits(value: int, names: Mapping[int, str], *, skip: int = 0) -> list[str]:
    """Names of the bits set in `value` (lowest first), "bit<n>" for unnamed ones."""
    return [names.get(n, f"bit{n}") for n in range(value.bit_length()) if value >> n & 1 and not skip >> n & 1]


def _join(parts: list[str]) -> str | None:
    return " ".join(parts) or None


CR0_BITS = {0: "PE", 1: "MP", 2: "EM", 3: "TS", 4: "ET", 5: "NE", 16: "WP", 18: "AM", 29: "NW", 30: "CD",
            31: "PG"}
CR4_BITS = {0: "VME", 1: "PVI", 2: "TSD", 3: "DE", 4: "PSE", 5: "PAE", 6: "MCE", 7: "PGE", 8: "PCE",
            9: "OSFXSR", 10: "OSXMMEXCPT", 11: "UMIP", 12: "LA57", 13: "VMXE", 14: "SMXE", 16: "FSGSBASE",
            17: "PCIDE", 18: "OSXSAVE", 19: "KL", 20: "SMEP", 21: "SMAP", 22: "PKE", 23: "CET", 24: "PKS"}
EFER_BITS = {0: "SCE", 8: "LME", 10: "LMA", 11: "NXE", 12: "SVME", 13: "LMSLE", 14: "FFXSR", 15: "TCE"}
RFLAGS_BITS = {0: "CF", 2: "PF", 4: "AF", 6: "ZF", 7: "SF", 8: "TF", 9: "IF", 10: "DF", 11: "OF", 14: "NT",
               16: "RF", 17: "VM", 18: "AC", 19: "VIF", 20: "VIP", 21: "ID"}
_RFLAGS_FIXED1 = 1 << 1
_RFLAGS_IOPL = 3 << 12


def _cr0(value: int, _ctx: Context) -> str | None:
    return _join(_bits(value, CR0_BITS))


def _cr4(value: int, _ctx: Context) -> str | None:
    return _join(_bits(value, CR4_BITS))


def _efer(value: int, _ctx: Context) -> str | None:
    return _join(_bits(value, EFER_BITS))


def _rflags(value: int, _ctx: Context) -> str | None:
    """Set flags lowest first; bit 1 (always 1) is left out; IOPL as IOPL=n when non-zero."""
    parts = _bits(value, RFLAGS_BITS, skip=_RFLAGS_FIXED1 | _RFLAGS_IOPL)
    iopl = (value & _RFLAGS_IOPL) >> 12
    if iopl:
        parts.append(f"IOPL={iopl}")
    return _join(parts)


def _mask(decode_bits: _Decoder) -> _Decoder:
    """A guest/host mask: "all bits host-owned" when every bit is set, else its bit names."""

    def describe(value: int, ctx: Context) -> str | None:
        if value == ALL_ONES_64:
            return "all bits host-owned"
        return decode_bits(value, ctx)

    return describe


# --- segment access rights --------------------------------------------------------

_SYSTEM_TYPES = {
    1: "16-bit TSS (available)", 2: "LDT", 3: "16-bit TSS (busy)", 4: "16-bit call gate", 5: "task gate",
    6: "16-bit interrupt gate", 7: "16-bit trap gate", 9: "TSS (available)", 11: "TSS (busy)",
    12: "call gate", 14: "interrupt gate", 15: "trap gate",
}
_AR_UNUSABLE = 1 << 16


def _segment_type(t: int, s: bool) -> str:
    if not s:
        return _SYSTEM_TYPES.get(t, f"reserved system type {t:#x}")
    words = []
    if t & 8:
        words.append("code " + ("exec/read" if t & 2 else "exec-only"))
        if t & 4:
            words.append("conforming")
    else:
        words.append("data " + ("read/write" if t & 2 else "read-only"))
        if t & 4:
            words.append("expand-down")
    if t & 1:
        words.append("accessed")
    return " ".join(words)


def access_rights(ar: int) -> str | None:
    """A segment's access rights in the VMCS layout (SDM "Guest Register State"):
    bits 3:0 type, 4 S, 6:5 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G, 16 unusable.

    0x9b -> "code exec/read accessed; S DPL=0 P"; 0x10000 -> "unusable"."""
    if ar == 0:
        return None
    s = bool(ar & 0x10)
    flags = ["S"] if s else []
    flags.append(f"DPL={(ar >> 5) & 3}")
    if ar & 0x80:
        flags.append("P")
    flags += [name for bit, name in ((12, "AVL"), (13, "L"), (14, "DB"), (15, "G")) if ar >> bit & 1]
    text = f"{_segment_type(ar & 0xF, s)}; {' '.join(flags)}"
    if ar & _AR_UNUSABLE:
        return "unusable" if not ar & 0xF0FF else f"unusable ({text})"
    return text


def _intel_ar(value: int, _ctx: Context) -> str | None:
    return access_rights(value)


def _amd_attrib(value: int, _ctx: Context) -> str | None:
    """VMCB ATTRIB: the access byte in bits 7:0, AVL/L/DB/G in bits 11:8 (APM "Segment
    State in the VMCB"), decoded as the VMCS access rights they correspond to."""
    return access_rights((value & 0xFF) | (value & 0xF00) << 4)


# --- events ---------------------------------------------------------------------


def _event(vector: int, type_name: str, *, valid: bool, error_code: int | None,
           error_code_valid: bool, extra: list[str] | None = None) -> str:
    if type_name in ("hardware-exception", "software-exception", "privileged-software-exception",
                     "exception"):
        what = f"{exception_name(vector)} (vector {vector})"
    elif type_name == "nmi":
        what = "NMI" if vector == 2 else f"NMI (vector {vector})"
    elif type_name == "software-interrupt":
        what = f"int {vector:#x}"
    else:
        what = f"vector {vector:#x}"
    parts = [what] if type_name == "nmi" else [what, type_name]
    if error_code_valid:
        parts.append("error code" if error_code is None else f"error code {error_code:#x}")
    parts += extra or []
    if not valid:
        parts.append("(not valid)")
    return " ".join(parts)


def _interruption_info(error_field: str | None) -> _Decoder:
    """VM_EXIT_INTR_INFO, IDT_VECTORING_INFO_FIELD, VM_ENTRY_INTR_INFO_FIELD."""

    def describe(value: int, ctx: Context) -> str | None:
        if value == 0:
            return None
        d = X.decode_interruption_info(value)
        error = ctx.get(error_field) if error_field and d["error_code_valid"] else None
        extra = ["NMI unblocking"] if value >> 12 & 1 else []
        return _event(int(d["vector"]), str(d["type"]), valid=bool(d["valid"]), error_code=error,
                      error_code_valid=bool(d["error_code_valid"]), extra=extra)

    return describe


def _eventinj(error_field: str) -> _Decoder:
    """EVENTINJ / EXITINTINFO (the VMCB holds the error code in the next 32 bits,
    which `engine.svm.vmcb` names EVENTINJ_ERR / EXITINTINFO_ERR)."""

    def describe(value: int, ctx: Context) -> str | None:
        if value == 0:
            return None
        d = S.decode_eventinj(value)
        error = d.get("error_code")
        if d["error_code_valid"] and value >> 32 == 0:
            error = ctx.get(error_field)  # the 32-bit field: the error code is the next one
        return _event(int(d["vector"]), str(d["type"]), valid=bool(d["valid"]),
                      error_code=None if error is None else int(error),
                      error_code_valid=bool(d["error_code_valid"]))

    return describe


def _exception_vectors(value: int, _ctx: Context) -> str | None:
    """A 32-bit bitmap with one bit per exception vector."""
    value &= 0xFFFF_FFFF
    if value == 0xFFFF_FFFF:
        return "all 32 vectors"
    return _join([exception_name(n) for n in range(32) if value >> n & 1])


def _flags(flag_class: type[IntFlag]) -> _Decoder:
    def describe(value: int, _ctx: Context) -> str | None:
        return _join(bit_names(flag_class, value))

    return describe


# --- Intel ----------------------------------------------------------------------


def _intel_exit_reason(value: int, _ctx: Context) -> str:
    basic = X.basic_reason(value)
    text = f"{basic} {X.REASONS.get(basic, f'UNKNOWN_{basic}')}"
    return f"{text} (VM-entry failure)" if X.is_entry_failure(value) else text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def intel_io(q: int) -> str:
    """An I/O-instruction qualification: "port 0x3f8 out 1 byte dx [string] [rep]"."""
    d = X.decode_io(q)
    text = f"port {d['port']:#x} {d['direction']} {_plural(int(d['size']), 'byte')} {d['operand']}"
    return text + (" string" if d["string"] else "") + (" rep" if d["rep"] else "")


def intel_cr(q: int) -> str:
    """A control-register-access qualification: "mov to cr3 from rax", "mov from cr3 to rbx",
    "clts", "lmsw 0x1 (register)"."""
    d = X.decode_cr(q)
    cr = f"cr{d['cr']}"
    if d["access"] == "mov-to-cr":
        return f"mov to {cr} from {d['gpr']}"
    if d["access"] == "mov-from-cr":
        return f"mov from {cr} to {d['gpr']}"
    if d["access"] == "clts":
        return "clts" if d["cr"] == 0 else f"clts ({cr})"
    return f"lmsw {d['lmsw_data']:#x} ({d['lmsw_operand']})"


def _rwx(r: bool, w: bool, x: bool) -> str:
    return ("r" if r else "-") + ("w" if w else "-") + ("x" if x else "-")


def intel_ept_violation(q: int, gpa: int | None = None) -> str:
    """An EPT-violation qualification: "write gpa 0xb8000, EPT allowed r-x, linear
    translated" (access, the GPA when known, the permissions of the walk, what the
    linear address was used for)."""
    d = X.decode_ept_violation(q)
    access = "+".join(a for a in ("read", "write", "fetch") if d[a]) or "no access bits"
    parts = [access if gpa is None else f"{access} gpa {gpa:#x}",
             "EPT allowed " + _rwx(d["readable"], d["writable"], d["executable"])]
    if not d["linear_valid"]:
        parts.append("no linear address")
    elif d["translated"]:
        parts.append("linear translated")
    else:
        parts.append("guest paging-structure access")
    if q >> 12 & 1:
        parts.append("NMI unblocking")
    return ", ".join(parts)


def _intel_exit_qualification(value: int, ctx: Context) -> str | None:
    reason = ctx.get("VM_EXIT_REASON")
    if reason is None:
        return None
    basic = X.basic_reason(reason)
    if basic == X.IO_INSTRUCTION:
        return intel_io(value)
    if basic == X.CR_ACCESS:
        return intel_cr(value)
    if basic == X.EPT_VIOLATION:
        return intel_ept_violation(value, ctx.get("GUEST_PHYSICAL_ADDRESS"))
    if basic == X.INVLPG:
        return f"linear {value:#x}"
    if basic == X.EXCEPTION_NMI:
        info = ctx.get("VM_EXIT_INTR_INFO", 0)
        if info >> 31 & 1 and info & 0xFF == 14:
            return f"#PF linear {value:#x}"
    return None


def _intel_eptp(value: int, _ctx: Context) -> str | None:
    if value == 0:
        return None
    d = decode_eptp(value)
    memtype = {0: "UC", 6: "WB"}.get(d["memtype"], f"memtype {d['memtype']}")
    text = f"{memtype}, {d['walk_length']}-level walk, PML4 at HPA {d['pml4']:#x}"
    return text + (", A/D flags on" if d["accessed_dirty"] else "")


ACTIVITY_STATES = {0: "active", 1: "HLT", 2: "shutdown", 3: "wait-for-SIPI"}


def _intel_activity(value: int, _ctx: Context) -> str:
    return ACTIVITY_STATES.get(value, f"reserved state {value}")


_INTERRUPTIBILITY = {0: "blocking by STI", 1: "blocking by MOV SS", 2: "blocking by SMI",
                     3: "blocking by NMI", 4: "enclave interruption"}


def _intel_interruptibility(value: int, _ctx: Context) -> str | None:
    return ", ".join(_bits(value, _INTERRUPTIBILITY)) or None


def _intel_link_pointer(value: int, _ctx: Context) -> str | None:
    return "none (all ones)" if value == ALL_ONES_64 else None


INTEL: dict[str, _Decoder] = {
    "VM_EXIT_REASON": _intel_exit_reason,
    "EXIT_QUALIFICATION": _intel_exit_qualification,
    "VM_EXIT_INTR_INFO": _interruption_info("VM_EXIT_INTR_ERROR_CODE"),
    "IDT_VECTORING_INFO_FIELD": _interruption_info("IDT_VECTORING_ERROR_CODE"),
    "VM_ENTRY_INTR_INFO_FIELD": _interruption_info("VM_ENTRY_EXCEPTION_ERROR_CODE"),
    "PIN_BASED_VM_EXEC_CONTROL": _flags(PinBased),
    "CPU_BASED_VM_EXEC_CONTROL": _flags(PrimaryProcBased),
    "SECONDARY_VM_EXEC_CONTROL": _flags(SecondaryProcBased),
    "VM_EXIT_CONTROLS": _flags(ExitControls),
    "VM_ENTRY_CONTROLS": _flags(EntryControls),
    "EXCEPTION_BITMAP": _exception_vectors,
    "EPT_POINTER": _intel_eptp,
    "GUEST_CR0": _cr0, "HOST_CR0": _cr0, "CR0_READ_SHADOW": _cr0, "CR0_GUEST_HOST_MASK": _mask(_cr0),
    "GUEST_CR4": _cr4, "HOST_CR4": _cr4, "CR4_READ_SHADOW": _cr4, "CR4_GUEST_HOST_MASK": _mask(_cr4),
    "GUEST_IA32_EFER": _efer, "HOST_IA32_EFER": _efer,
    "GUEST_RFLAGS": _rflags,
    "GUEST_ACTIVITY_STATE": _intel_activity,
    "GUEST_INTERRUPTIBILITY_INFO": _intel_interruptibility,
    "VMCS_LINK_POINTER": _intel_link_pointer,
    **{f"GUEST_{seg}_AR_BYTES": _intel_ar for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")},
}
"""Intel VMCS field name -> decoder(value, context)."""


# --- AMD ------------------------------------------------------------------------


def _amd_exitcode(value: int, _ctx: Context) -> str:
    name = S.describe(value)
    if S.EXCP_BASE <= value < S.EXCP_BASE + 32:
        return f"{name} ({exception_name(value - S.EXCP_BASE)})"
    return name


def amd_ioio(info1: int) -> str:
    """IOIO EXITINFO1: "port 0x3f8 out 1 byte a16 [string rep ds]"."""
    d = S.decode_ioio(info1)
    size = int(d["size"])
    text = f"port {d['port']:#x} {d['direction']} " + (_plural(size, "byte") if size else "size ?")
    text += f" a{d['addr_size']}" if d["addr_size"] else ""
    if d["string"]:
        text += " string" + (" rep" if d["rep"] else "") + f" {d['segment']}"
    elif d["rep"]:
        text += " rep"
    return text


def page_fault_error(code: int) -> str:
    """A page-fault error code (bits 0 P, 1 W/R, 2 U/S, 3 RSVD, 4 I/D), as in an NPF's
    EXITINFO1 or a #PF's error code: "not-present write user"."""
    parts = ["present" if code & 1 else "not-present",
             "fetch" if code & 0x10 else "write" if code & 2 else "read"]
    if code & 0x10 and code & 2:
        parts.append("write")
    parts.append("user" if code & 4 else "supervisor")
    if code & 8:
        parts.append("reserved-bit")
    return " ".join(parts)


def amd_npf(info1: int) -> str:
    """NPF EXITINFO1: the nested walk's error code, then where it faulted: "not-present
    write user, final GPA" / "…, during guest page-table walk"."""
    d = S.decode_npf(info1)
    text = page_fault_error(info1 & 0x1F)
    if d["final"]:
        text += ", final GPA"
    if d["walk"]:
        text += ", during guest page-table walk"
    return text


def _amd_cr_access(code: int, info1: int) -> str:
    n = code & 0xF
    write = code >= S.WRITE_CR0
    d = S.decode_cr(info1)
    if not d["mov_cr"]:
        return f"{'write' if write else 'read'} of cr{n}, not MOV CR (no decode assist)"
    return f"mov to cr{n} from {d['gpr']}" if write else f"mov from cr{n} to {d['gpr']}"


def _amd_exitinfo1(value: int, ctx: Context) -> str | None:
    code = ctx.get("EXITCODE")
    if code is None:
        return None
    if code == S.IOIO:
        return amd_ioio(value)
    if code == S.NPF:
        return amd_npf(value)
    if code == S.MSR:
        return "WRMSR" if value & 1 else "RDMSR"
    if 0 <= code < 0x20:
        return _amd_cr_access(code, value)
    if code == S.INVLPG:
        return f"linear {value:#x}"
    if S.EXCP_BASE <= code < S.EXCP_BASE + 32:
        vector = code - S.EXCP_BASE
        if vector == 14:
            return f"error code {value:#x}: {page_fault_error(value)}"
        if vector in _ERROR_CODE_VECTORS:
            return f"error code {value:#x}"
    return None


def _amd_exitinfo2(value: int, ctx: Context) -> str | None:
    code = ctx.get("EXITCODE")
    if code == S.IOIO:
        return f"next RIP {value:#x}"
    if code == S.NPF:
        return f"GPA {value:#x}"
    if code == S.EXCP_BASE + 14:
        return f"#PF linear {value:#x}"
    return None


def _amd_intercept_cr(prefix: str) -> _Decoder:
    """INTERCEPT_CR / INTERCEPT_DR: bits 0-15 reads of n, bits 16-31 writes."""

    def describe(value: int, _ctx: Context) -> str | None:
        parts = []
        for what, shift in (("read", 0), ("write", 16)):
            regs = [f"{prefix}{n}" for n in range(16) if value >> (shift + n) & 1]
            if regs:
                parts.append(f"{what} {' '.join(regs)}")
        return "; ".join(parts) or None

    return describe


def _amd_np_enable(value: int, _ctx: Context) -> str:
    parts = ["nested paging on" if value & 1 else "nested paging off"]
    parts += [name for bit, name in ((1, "SEV"), (2, "SEV-ES")) if value >> bit & 1]
    return ", ".join(parts)


_TLB_CONTROL = {0: None, 1: "flush entire TLB", 3: "flush this ASID", 7: "flush this ASID's non-global entries"}


def _amd_tlb_control(value: int, _ctx: Context) -> str | None:
    return _TLB_CONTROL.get(value, f"reserved {value:#x}")


def _amd_insn_bytes(value: int, ctx: Context) -> str | None:
    """GUEST_INSN_BYTES holds the fetched bytes in memory order; GUEST_INSN_LEN says how many."""
    n = ctx.get("GUEST_INSN_LEN", 0) & 0xF
    if n == 0:
        return None
    return " ".join(f"{b:02x}" for b in value.to_bytes(15, "little")[:n])


AMD: dict[str, _Decoder] = {
    "EXITCODE": _amd_exitcode,
    "EXITINFO1": _amd_exitinfo1,
    "EXITINFO2": _amd_exitinfo2,
    "INTERCEPT_CR": _amd_intercept_cr("CR"),
    "INTERCEPT_DR": _amd_intercept_cr("DR"),
    "INTERCEPT_EXCEPTIONS": _exception_vectors,
    "INTERCEPT_MISC1": _flags(Misc1),
    "INTERCEPT_MISC2": _flags(Misc2),
    "EVENTINJ": _eventinj("EVENTINJ_ERR"),
    "EXITINTINFO": _eventinj("EXITINTINFO_ERR"),
    "NP_ENABLE": _amd_np_enable,
    "TLB_CONTROL": _amd_tlb_control,
    "GUEST_INSN_BYTES": _amd_insn_bytes,
    "CR0": _cr0,
    "CR4": _cr4,
    "EFER": _efer,
    "RFLAGS": _rflags,
    **{f"{seg}_ATTRIB": _amd_attrib for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")},
}
"""AMD VMCB field name -> decoder(value, context)."""

_BY_VENDOR = {"intel": INTEL, "amd": AMD}


def describe_field(vendor: str, name: str, value: int, *, context: Context | None = None) -> str | None:
    """A short decoding of VMCS (vendor "intel") or VMCB ("amd") field `name` holding
    `value`, or None where there is nothing to add to the number.

    `context` maps field names to values (the whole structure); fields whose meaning
    depends on another field (the exit qualification on the exit reason, EXITINFO1/2
    on EXITCODE, an event's error code) use it and return None without it.
    """
    try:
        table = _BY_VENDOR[vendor]
    except KeyError:
        raise ValueError(f"unknown vendor {vendor!r}: 'intel' or 'amd'") from None
    decoder = table.get(name)
    if decoder is None:
        return None
    return decoder(value, context or {})


_WIDTH_BITS = {Width.W16: 16, Width.W32: 32, Width.W64: 64, Width.NATURAL: 64}
_VMCB_SIZES = {name: size for name, (_offset, size) in {**CONTROL, **SAVE}.items()}


def field_bits(vendor: str, name: str) -> int | None:
    """The width of a field in bits: from the encoding for the VMCS (natural width is
    64 bits), from the layout for the VMCB (GUEST_INSN_BYTES: 120); None if unknown."""
    if vendor == "intel":
        enc = FIELDS.get(name)
        return None if enc is None else _WIDTH_BITS[width(enc)]
    if vendor == "amd":
        size = _VMCB_SIZES.get(name)
        return None if size is None else 8 * size
    raise ValueError(f"unknown vendor {vendor!r}: 'intel' or 'amd'")


def describe_fields(vendor: str, values: Mapping[str, int]) -> dict[str, str]:
    """The decoding of every field in `values` that has one, with `values` as the context."""
    out = {}
    for name, value in values.items():
        text = describe_field(vendor, name, value, context=values)
        if text is not None:
            out[name] = text
    return out
