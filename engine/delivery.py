"""Delivering an interrupt or exception to the guest, as the CPU does.

Unicorn never delivers events to the guest's IVT or IDT (DESIGN.md), so the engine
does what the processor would (SDM Vol. 3 "Interrupt and Exception Handling":
"Exception and Interrupt Handling in 64-bit Mode", "Interrupt Procedures"; for
real mode "Interrupt and Exception Handling" in "8086 Emulation"):

- real mode: the 4-byte IVT entry (IP, CS) at IDTR.base + 4 x vector; FLAGS, CS
  and IP pushed on SS:SP; IF, TF and AC cleared.
- protected mode: the 8-byte IDT gate; EFLAGS, CS, EIP and the error code (for
  the vectors that have one) pushed on SS:ESP; an interrupt gate clears IF.
- long mode: the 16-byte IDT gate; RSP aligned to 16 (or taken from the TSS's IST
  entry); SS, RSP, RFLAGS, CS, RIP and the error code pushed as quadwords.

A fault while delivering (an IDT entry past the limit: #GP; a gate that is not
present: #NP; a bad gate type or selector: #GP) comes back as `DeliveryFailed`
with that fault; `escalate` says what the processor makes of the pair: the new
fault, a double fault, or a triple fault (SDM "Exception Classes"). A handler
more privileged than the interrupted code takes its stack from the TSS (ESP0 in
protected mode; RSP0 or an IST entry in long mode, with a null SS), which needs
a CPL-0 context the engine saved at an earlier exit (`to_ring0`); without one
it is a double fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn import x86_const as X

#: Vectors whose exceptions push an error code (SDM "Exception and Interrupt Reference").
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
_IF, _TF, _NT, _RF, _AC = 1 << 9, 1 << 8, 1 << 14, 1 << 16, 1 << 18

ReadLinear = Callable[[int, int], bytes]
WriteLinear = Callable[[int, bytes], None]
#: Puts the vCPU at CPL 0 keeping the rest of its state (see Machine._to_ring0): the
#: host cannot change CPL by writing registers (DESIGN.md, "segment registers").
ToRing0 = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Event:
    """An interrupt or exception to deliver."""

    vector: int
    error_code: int | None = None
    software: bool = False  # INT n / INT3 / INTO: the saved RIP is past the instruction
    cr2: int | None = None  # #PF: the faulting linear address the processor loads into CR2


class DeliveryFailed(Exception):
    """Delivering the event raised a fault of its own: `fault` (the caller decides
    between delivering it, a double fault and a triple fault)."""

    def __init__(self, message: str, fault: Event) -> None:
        super().__init__(message)
        self.fault = fault


def _gp(vector: int, message: str, ext: bool = True) -> DeliveryFailed:
    """#GP with the IDT-vector error code: index << 3 | IDT (bit 1) | EXT (bit 0)."""
    return DeliveryFailed(message, Event(13, vector << 3 | 2 | int(ext)))


#: Vectors whose faults are "contributory" (SDM "Exception Classes"); #PF is its own class.
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})


def escalate(first: Event, second: Event) -> Event | None:
    """What the processor does when delivering `first` raised `second`: deliver
    `second`, or #DF, or None for a triple fault (SDM table "Conditions for
    Generating a Double Fault")."""
    if first.vector == 8:
        return None
    first_class = "pf" if first.vector == 14 else "c" if first.vector in CONTRIBUTORY and not first.software else "b"
    second_class = "pf" if second.vector == 14 else "c" if second.vector in CONTRIBUTORY else "b"
    if (first_class == "c" and second_class == "c") or (first_class == "pf" and second_class in ("c", "pf")):
        return Event(8, 0)
    return second


def deliver(uc: Uc, event: Event, mode: str, read: ReadLinear, write: WriteLinear,
            ss_base: int, ss_32bit: bool, to_ring0: ToRing0) -> None:
    """Deliver `event` to the guest running on `uc` in `mode` ("real", "protected", "long")."""
    if event.cr2 is not None:
        uc.reg_write(X.UC_X86_REG_CR2, event.cr2)
    if mode == "real":
        _real(uc, event, read, write, ss_base)
    elif mode == "long":
        _long(uc, event, read, write, to_ring0)
    else:
        _protected(uc, event, read, write, ss_base, ss_32bit, to_ring0)


def _reg(uc: Uc, reg: int) -> int:
    return uc.reg_read(reg)


def _real(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear, ss_base: int) -> None:
    _sel, base, limit, _flags = uc.reg_read(X.UC_X86_REG_IDTR)
    if ev.vector * 4 + 3 > limit:
        raise _gp(ev.vector, f"IVT entry {ev.vector:#x} is past the IDTR limit {limit:#x}", not ev.software)
    ip, cs = struct.unpack("<HH", read(base + ev.vector * 4, 4))
    sp = (_reg(uc, X.UC_X86_REG_RSP) - 6) & 0xFFFF
    flags = _reg(uc, X.UC_X86_REG_RFLAGS)
    frame = struct.pack("<HHH", _reg(uc, X.UC_X86_REG_RIP) & 0xFFFF, _reg(uc, X.UC_X86_REG_CS), flags & 0xFFFF)
    write(ss_base + sp, frame)
    rsp = _reg(uc, X.UC_X86_REG_RSP)
    uc.reg_write(X.UC_X86_REG_RSP, (rsp & ~0xFFFF) | sp)
    uc.reg_write(X.UC_X86_REG_CS, cs)
    uc.reg_write(X.UC_X86_REG_RIP, ip)
    uc.reg_write(X.UC_X86_REG_RFLAGS, flags & ~(_IF | _TF | _AC))


def _gate(uc: Uc, ev: Event, read: ReadLinear, size: int) -> tuple[int, int, int, int, int]:
    """(selector, offset, type, dpl, ist) of the IDT gate for the event."""
    _sel, base, limit, _flags = uc.reg_read(X.UC_X86_REG_IDTR)
    if ev.vector * size + size - 1 > limit:
        raise _gp(ev.vector, f"IDT entry {ev.vector:#x} is past the IDTR limit {limit:#x}", not ev.software)
    raw = read(base + ev.vector * size, size)
    low = int.from_bytes(raw[:8], "little")
    selector = (low >> 16) & 0xFFFF
    kind = (low >> 40) & 0xF
    dpl = (low >> 45) & 3
    if not low >> 47 & 1:
        raise DeliveryFailed(f"IDT gate {ev.vector:#x} is not present",
                             Event(11, ev.vector << 3 | 2 | int(not ev.software)))
    offset = (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16
    ist = 0
    if size == 16:
        offset |= int.from_bytes(raw[8:12], "little") << 32
        ist = (low >> 32) & 7
        if kind not in (0xE, 0xF):
            raise _gp(ev.vector, f"IDT gate {ev.vector:#x} has type {kind:#x}, not a 64-bit interrupt/trap gate",
                      not ev.software)
    elif kind not in (0xE, 0xF):
        raise _gp(ev.vector, f"IDT gate {ev.vector:#x} has type {kind:#x}: only 32-bit interrupt and trap gates "
                  "are delivered", not ev.software)
    cpl = _reg(uc, X.UC_X86_REG_CS) & 3
    if ev.software and dpl < cpl:
        raise _gp(ev.vector, f"INT {ev.vector:#x} from CPL {cpl} through a DPL {dpl} gate", False)
    return selector, offset, kind, dpl, ist


def _descriptor_base(read: ReadLinear, gdt_base: int, selector: int) -> int:
    raw = int.from_bytes(read(gdt_base + (selector & ~7), 8), "little")
    return ((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24


def _protected(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear, ss_base: int, ss_32bit: bool,
               to_ring0: ToRing0) -> None:
    selector, offset, kind, _dpl, _ist = _gate(uc, ev, read, 8)
    flags = _reg(uc, X.UC_X86_REG_RFLAGS)
    old_cs = _reg(uc, X.UC_X86_REG_CS)
    words = [_reg(uc, X.UC_X86_REG_RIP) & 0xFFFF_FFFF, old_cs, flags & 0xFFFF_FFFF]
    if ev.error_code is not None:
        words.insert(0, ev.error_code & 0xFFFF_FFFF)
    rsp = _reg(uc, X.UC_X86_REG_RSP)
    mask = 0xFFFF_FFFF if ss_32bit else 0xFFFF
    new_ss = None
    if selector & 3 < old_cs & 3:
        # Inner privilege: the handler's stack is SS0:ESP0 from the 32-bit TSS, and the
        # interrupted SS:ESP go on it too (SDM "Stack Switching").
        _tsel, tss_base, _tlimit, _tflags = uc.reg_read(X.UC_X86_REG_TR)
        esp0, ss0 = struct.unpack("<IH", read(tss_base + 4, 6))
        words += [rsp & 0xFFFF_FFFF, _reg(uc, X.UC_X86_REG_SS)]
        ss_base = _descriptor_base(read, uc.reg_read(X.UC_X86_REG_GDTR)[1], ss0)
        rsp, mask, new_ss = esp0, 0xFFFF_FFFF, ss0
    frame = struct.pack(f"<{len(words)}I", *words)
    sp = (rsp - len(frame)) & mask
    write(ss_base + sp, frame)
    if new_ss is not None:
        if not to_ring0():
            raise DeliveryFailed(f"vector {ev.vector:#x}: a handler at CPL {selector & 3} from CPL {old_cs & 3} "
                                 "needs CPL 0, and the vCPU has not been at CPL 0 in this mode yet", Event(8, 0))
        uc.reg_write(X.UC_X86_REG_SS, new_ss)
    try:
        uc.reg_write(X.UC_X86_REG_CS, selector)  # protected mode: reloads the descriptor from the GDT
    except UcError:
        raise DeliveryFailed(f"vector {ev.vector:#x}: the gate's selector {selector:#x} is not a valid code "
                             "segment", Event(13, selector & ~3)) from None
    uc.reg_write(X.UC_X86_REG_RSP, (rsp & ~mask) | sp)
    uc.reg_write(X.UC_X86_REG_RIP, offset)
    cleared = _TF | _NT | _RF | (_IF if kind == 0xE else 0)
    uc.reg_write(X.UC_X86_REG_RFLAGS, flags & ~cleared)


def _long(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear, to_ring0: ToRing0) -> None:
    selector, offset, kind, _dpl, ist = _gate(uc, ev, read, 16)
    rsp = _reg(uc, X.UC_X86_REG_RSP)
    old_cs = _reg(uc, X.UC_X86_REG_CS)
    inner = selector & 3 < old_cs & 3
    # The 64-bit TSS holds RSP0-2 at offset 4 and IST1-7 at 0x24 (SDM "Task Management
    # in 64-bit Mode"); an IST entry wins over RSP0 (SDM "Interrupt Stack Table").
    if ist or inner:
        _tsel, tss_base, _tlimit, _tflags = uc.reg_read(X.UC_X86_REG_TR)
        at = tss_base + 0x24 + 8 * (ist - 1) if ist else tss_base + 4
        new_rsp = int.from_bytes(read(at, 8), "little")
    else:
        new_rsp = rsp
    new_rsp &= ~0xF  # 64-bit mode aligns the stack before pushing (SDM "64-Bit Mode Stack Frame")
    flags = _reg(uc, X.UC_X86_REG_RFLAGS)
    words = [_reg(uc, X.UC_X86_REG_RIP), _reg(uc, X.UC_X86_REG_CS), flags, rsp, _reg(uc, X.UC_X86_REG_SS)]
    if ev.error_code is not None:
        words.insert(0, ev.error_code)
    frame = struct.pack(f"<{len(words)}Q", *words)
    new_rsp -= len(frame)
    write(new_rsp, frame)
    if inner:
        if not to_ring0():
            raise DeliveryFailed(f"vector {ev.vector:#x}: a handler at CPL {selector & 3} from CPL {old_cs & 3} "
                                 "needs CPL 0, and the vCPU has not been at CPL 0 in this mode yet", Event(8, 0))
        uc.reg_write(X.UC_X86_REG_SS, 0)  # a privilege change in 64-bit mode loads a null SS
    uc.reg_write(X.UC_X86_REG_CS, selector)
    uc.reg_write(X.UC_X86_REG_RSP, new_rsp)
    uc.reg_write(X.UC_X86_REG_RIP, offset)
    cleared = _TF | _NT | _RF | (_IF if kind == 0xE else 0)
    uc.reg_write(X.UC_X86_REG_RFLAGS, flags & ~cleared)
