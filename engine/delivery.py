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

A handler more privileged than the interrupted code (a stack switch through the
TSS's RSP0 / ESP0) is not delivered yet: that delivery fails with a reason, as
does an IDT entry past the limit, a gate that is not present or of the wrong
type; the caller turns a failure into #DF, and a failure to deliver #DF into a
triple fault (shutdown), as the processor does (SDM "Exception Classes";
simplified: any fault while delivering escalates).
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


@dataclass(frozen=True, slots=True)
class Event:
    """An interrupt or exception to deliver."""

    vector: int
    error_code: int | None = None
    software: bool = False  # INT n / INT3 / INTO: the saved RIP is past the instruction


class DeliveryFailed(Exception):
    """The processor could not deliver the event (the caller escalates)."""


def deliver(uc: Uc, event: Event, mode: str, read: ReadLinear, write: WriteLinear,
            ss_base: int, ss_32bit: bool) -> None:
    """Deliver `event` to the guest running on `uc` in `mode` ("real", "protected", "long")."""
    if mode == "real":
        _real(uc, event, read, write, ss_base)
    elif mode == "long":
        _long(uc, event, read, write)
    else:
        _protected(uc, event, read, write, ss_base, ss_32bit)


def _reg(uc: Uc, reg: int) -> int:
    return uc.reg_read(reg)


def _real(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear, ss_base: int) -> None:
    _sel, base, limit, _flags = uc.reg_read(X.UC_X86_REG_IDTR)
    if ev.vector * 4 + 3 > limit:
        raise DeliveryFailed(f"IVT entry {ev.vector} is past the IDTR limit {limit:#x}")
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
        raise DeliveryFailed(f"IDT entry {ev.vector} is past the IDTR limit {limit:#x} (#GP)")
    raw = read(base + ev.vector * size, size)
    low = int.from_bytes(raw[:8], "little")
    selector = (low >> 16) & 0xFFFF
    kind = (low >> 40) & 0xF
    dpl = (low >> 45) & 3
    if not low >> 47 & 1:
        raise DeliveryFailed(f"IDT gate {ev.vector} is not present (#NP)")
    offset = (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16
    ist = 0
    if size == 16:
        offset |= int.from_bytes(raw[8:12], "little") << 32
        ist = (low >> 32) & 7
        if kind not in (0xE, 0xF):
            raise DeliveryFailed(f"IDT gate {ev.vector} has type {kind:#x}, not a 64-bit interrupt/trap gate (#GP)")
    elif kind not in (0xE, 0xF):
        raise DeliveryFailed(f"IDT gate {ev.vector} has type {kind:#x}: only 32-bit interrupt and trap gates "
                             "are delivered")
    cpl = _reg(uc, X.UC_X86_REG_CS) & 3
    if ev.software and dpl < cpl:
        raise DeliveryFailed(f"INT {ev.vector:#x} from CPL {cpl} through a DPL {dpl} gate (#GP)")
    if selector & 3 < cpl:
        raise DeliveryFailed(f"vector {ev.vector}: a handler at CPL {selector & 3} from CPL {cpl} needs a stack "
                             "switch through the TSS, which vmmtui does not deliver yet")
    return selector, offset, kind, dpl, ist


def _protected(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear, ss_base: int, ss_32bit: bool) -> None:
    selector, offset, kind, _dpl, _ist = _gate(uc, ev, read, 8)
    flags = _reg(uc, X.UC_X86_REG_RFLAGS)
    words = [_reg(uc, X.UC_X86_REG_RIP) & 0xFFFF_FFFF, _reg(uc, X.UC_X86_REG_CS), flags & 0xFFFF_FFFF]
    if ev.error_code is not None:
        words.insert(0, ev.error_code & 0xFFFF_FFFF)
    frame = struct.pack(f"<{len(words)}I", *words)
    rsp = _reg(uc, X.UC_X86_REG_RSP)
    mask = 0xFFFF_FFFF if ss_32bit else 0xFFFF
    sp = (rsp - len(frame)) & mask
    write(ss_base + sp, frame)
    try:
        uc.reg_write(X.UC_X86_REG_CS, selector)  # protected mode: reloads the descriptor from the GDT
    except UcError:
        raise DeliveryFailed(f"vector {ev.vector}: the gate's selector {selector:#x} is not a valid code "
                             "segment (#GP)") from None
    uc.reg_write(X.UC_X86_REG_RSP, (rsp & ~mask) | sp)
    uc.reg_write(X.UC_X86_REG_RIP, offset)
    cleared = _TF | _NT | _RF | (_IF if kind == 0xE else 0)
    uc.reg_write(X.UC_X86_REG_RFLAGS, flags & ~cleared)


def _long(uc: Uc, ev: Event, read: ReadLinear, write: WriteLinear) -> None:
    selector, offset, kind, _dpl, ist = _gate(uc, ev, read, 16)
    rsp = _reg(uc, X.UC_X86_REG_RSP)
    if ist:
        _tsel, tss_base, _tlimit, _tflags = uc.reg_read(X.UC_X86_REG_TR)
        new_rsp = int.from_bytes(read(tss_base + 0x24 + 8 * (ist - 1), 8), "little")
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
    uc.reg_write(X.UC_X86_REG_CS, selector)
    uc.reg_write(X.UC_X86_REG_RSP, new_rsp)
    uc.reg_write(X.UC_X86_REG_RIP, offset)
    cleared = _TF | _NT | _RF | (_IF if kind == 0xE else 0)
    uc.reg_write(X.UC_X86_REG_RFLAGS, flags & ~cleared)
