"""The registers view: GPRs, RIP, RFLAGS decoded, segments with their hidden part,
control registers and EFER decoded; what changed since the last stop highlighted."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..session import Session

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
RFLAGS_BITS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"), (10, "DF"),
               (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (21, "ID"))
CR0_BITS = ((0, "PE"), (1, "MP"), (2, "EM"), (3, "TS"), (4, "ET"), (5, "NE"), (16, "WP"), (18, "AM"),
            (29, "NW"), (30, "CD"), (31, "PG"))
CR4_BITS = ((0, "VME"), (1, "PVI"), (2, "TSD"), (3, "DE"), (4, "PSE"), (5, "PAE"), (6, "MCE"), (7, "PGE"),
            (9, "OSFXSR"), (10, "OSXMMEXCPT"), (13, "VMXE"), (16, "FSGSBASE"), (17, "PCIDE"), (20, "SMEP"))
EFER_BITS = ((0, "SCE"), (8, "LME"), (10, "LMA"), (11, "NXE"), (12, "SVME"))
CHANGED = "bold yellow"


def bits(value: int, names: tuple[tuple[int, str], ...]) -> str:
    """The names of the set bits, lowest first."""
    return " ".join(name for bit, name in names if value >> bit & 1)


def _value(name: str, value: int, changed: set[str], width: int = 16) -> Text:
    return Text(f"{value:0{width}x}", style=CHANGED if name in changed else "")


def registers_view(session: Session, wide: bool = True) -> Group:
    """The registers of the selected vCPU at the last stop."""
    regs = session.regs
    changed = session.changed_registers()
    mode = _mode(regs)
    head = Text.assemble(("vCPU ", "dim"), (str(session.vcpu), "bold"), ("  mode ", "dim"), (mode, "bold"))
    gpr = Table.grid(padding=(0, 1))
    cols = 2 if wide else 1
    for _ in range(cols):
        gpr.add_column(style="cyan", justify="right")
        gpr.add_column()
    names = list(GPRS) + ["rip", "rflags"]
    for i in range(0, len(names), cols):
        row: list[Text | str] = []
        for name in names[i : i + cols]:
            row += [name, _value(name, regs.get(name, 0), changed)]
        gpr.add_row(*row)
    flags = Text(f"  {bits(regs.get('rflags', 0), RFLAGS_BITS)}  IOPL={(regs.get('rflags', 0) >> 12) & 3}",
                 style="dim")
    segs = Table("seg", "sel", "base", "limit", "attr", box=None, padding=(0, 1), header_style="dim")
    state = session.machine.guest_state(session.vcpu)
    for name in ("cs", "ds", "es", "ss", "fs", "gs"):
        s = state.segments[name]
        segs.add_row(Text(name, style="cyan"), _value(name, s.selector, changed, 4), f"{s.base:08x}",
                     f"{s.limit:08x}", f"{s.attributes:04x}")
    ctl = Table.grid(padding=(0, 1))
    ctl.add_column(style="cyan", justify="right")
    ctl.add_column()
    ctl.add_column(style="dim")
    for name, names_ in (("cr0", CR0_BITS), ("cr2", ()), ("cr3", ()), ("cr4", CR4_BITS), ("efer", EFER_BITS)):
        value = regs.get(name, 0)
        ctl.add_row(name, _value(name, value, changed), bits(value, names_))
    ctl.add_row("gdtr", f"{state.gdtr[0]:016x}", f"limit {state.gdtr[1]:#x}")
    ctl.add_row("idtr", f"{state.idtr[0]:016x}", f"limit {state.idtr[1]:#x}")
    return Group(head, gpr, flags, segs, ctl)


def _mode(regs: dict[str, int]) -> str:
    if not regs.get("cr0", 0) & 1:
        return "real"
    if regs.get("efer", 0) & (1 << 10):
        return "long"
    return "protected" + (" + paging" if regs.get("cr0", 0) >> 31 else "")
