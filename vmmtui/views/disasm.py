"""Disassembly around RIP with Capstone, in the guest's current mode; breakpoints marked."""

from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from rich.table import Table
from rich.text import Text

from ..session import Session

_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}
_DISASSEMBLERS: dict[int, Cs] = {}


def _cs(bits: int) -> Cs:
    if bits not in _DISASSEMBLERS:
        _DISASSEMBLERS[bits] = Cs(CS_ARCH_X86, _MODES[bits])
    return _DISASSEMBLERS[bits]


def disassemble(session: Session, linear: int | None = None, count: int = 16) -> list[tuple[int, int, bytes, str]]:
    """(linear address, architectural IP, bytes, text) of `count` instructions from
    `linear` (default: the current instruction)."""
    m = session.machine
    cs_base, bits = m.code_bits(session.vcpu)
    rip = session.regs.get("rip", 0)
    start = cs_base + rip if linear is None else linear
    try:
        code = m.read_gva(start, 16 * count, session.vcpu) if session.regs.get("cr0", 0) >> 31 \
            else m.read_gpa(start, 16 * count)
    except Exception:
        return []
    out = []
    for insn in _cs(bits).disasm(code, start):
        out.append((insn.address, insn.address - cs_base, bytes(insn.bytes), f"{insn.mnemonic} {insn.op_str}".strip()))
        if len(out) >= count:
            break
    return out


def disasm_view(session: Session, linear: int | None = None, count: int = 16) -> Table:
    """A listing: marker (→ current, ● breakpoint), address, bytes, instruction."""
    m = session.machine
    cs_base, bits = m.code_bits(session.vcpu)
    here = cs_base + session.regs.get("rip", 0)
    bps = set(m.breakpoints)
    table = Table(box=None, padding=(0, 1), show_header=False)
    table.add_column(width=2)
    table.add_column(style="cyan")
    table.add_column(style="dim")
    table.add_column()
    rows = disassemble(session, linear, count)
    if not rows:
        table.add_row("", "", "", Text("(no code readable here)", style="dim"))
    for address, ip, raw, text in rows:
        marker = ("●" if address in bps else " ") + ("→" if address == here else " ")
        style = "bold reverse" if address == here else ""
        where = f"{ip:04x}" if bits == 16 and cs_base else f"{address:x}"
        table.add_row(Text(marker, style="red" if address in bps else "green"), where, raw.hex(" "),
                      Text(text, style=style))
    table.title = f"{bits}-bit code at {here:#x}"
    table.title_justify = "left"
    return table
