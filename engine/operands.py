"""Memory operands of an instruction Capstone decoded: where they point, from the
guest registers of a snapshot (`vcpu.SNAPSHOT_REGS`)."""

from __future__ import annotations

from typing import Any

from .vcpu import SNAP

_MASK = {16: 0xFFFF, 32: 0xFFFF_FFFF, 64: 0xFFFF_FFFF_FFFF_FFFF}

#: Capstone's name of a general register, at any width -> (snapshot register, mask).
GPRS: dict[str, tuple[str, int]] = {}
for _x in "abcd":
    GPRS.update({f"r{_x}x": (f"r{_x}x", _MASK[64]), f"e{_x}x": (f"r{_x}x", _MASK[32]), f"{_x}x": (f"r{_x}x", _MASK[16])})
for _s in ("si", "di", "bp", "sp"):
    GPRS.update({f"r{_s}": (f"r{_s}", _MASK[64]), f"e{_s}": (f"r{_s}", _MASK[32]), _s: (f"r{_s}", _MASK[16])})
for _n in range(8, 16):
    GPRS.update({f"r{_n}": (f"r{_n}", _MASK[64]), f"r{_n}d": (f"r{_n}", _MASK[32]), f"r{_n}w": (f"r{_n}", _MASK[16])})

_STACK_BASES = frozenset({"rsp", "esp", "sp", "rbp", "ebp", "bp"})


def effective_address(ins: Any, op: Any, snap: tuple[int, ...], bits: int) -> int:
    """The offset a memory operand names: displacement + base + index x scale, wrapped
    to the address size (the 0x67 prefix changes it); RIP-relative from the next
    instruction (SDM Vol. 2 2.2.1.6)."""
    size = getattr(ins, "addr_size", 0) * 8 or bits
    addr = op.mem.disp
    for reg, scale in ((op.mem.base, 1), (op.mem.index, op.mem.scale)):
        if not reg:
            continue
        name = ins.reg_name(reg)
        if name in ("rip", "eip"):
            value = ins.address + ins.size
        else:
            snap_name, mask = GPRS[name]
            value = snap[SNAP[snap_name]] & mask
        addr += value * scale
    return addr & _MASK.get(size, _MASK[64])


def segment_register(ins: Any, op: Any) -> str:
    """The segment register a memory operand goes through: its override, else SS for a
    stack-based address and DS for the rest (SDM Vol. 1 3.7.4)."""
    if op.mem.segment:
        return ins.reg_name(op.mem.segment)
    base = ins.reg_name(op.mem.base) if op.mem.base else ""
    return "ss" if base in _STACK_BASES else "ds"
