"""The VMCS (Intel) or VMCB (AMD) of the selected vCPU, field by field.

Each field is a row: a change marker, the name, where it lives (the VMCS field
encoding, as VMREAD takes it, or the VMCB offset), the value in hex and a short
decoding (`engine.fielddecode`). Rows are grouped as the vendor groups them: the
VMCS by the encoding's field type (control, VM-exit information, guest-state,
host-state; SDM Vol. 3 Appendix B), the VMCB by area (control area, state-save
area; APM Vol. 2 Appendix B).

Fields whose value differs from the previous stop (`Session.changed_fields`) are
bold yellow with a `*` in the first column; zero-valued fields are dimmed.

Values are zero-padded to the field's width for fields of up to 32 bits (bit
fields read best that way: VM_EXIT_REASON 0x0000000a); 64-bit and natural-width
fields, which mostly hold addresses, are shown without padding (GUEST_RIP 0x7e09).

The filter (`filter_text`) is a list of words that must all match, ignoring case:
a plain word matches the field's name ("exit", "guest cs"); a word starting with
"=" matches its decoding or hex value ("=cpuid", "=PG", "=7e09").

`structure_view` is the whole thing as one Rich renderable (what `--script`
prints). The pane (`vmmtui.widgets.structure`) takes a `StructureSnapshot` at
each stop and draws from it (`structure_title`, `group_table`, one collapsible
section per group), so typing in its filter never touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from engine.fielddecode import describe_field, field_bits

from ..session import Session

CHANGED_STYLE = "bold yellow"
ZERO_STYLE = "dim"
CHANGED_MARK = "*"

GROUP_TITLES = {
    ("intel", "control"): "control fields",
    ("intel", "exit-information"): "VM-exit information fields",
    ("intel", "guest-state"): "guest-state area",
    ("intel", "host-state"): "host-state area",
    ("amd", "control"): "control area",
    ("amd", "state-save"): "state-save area",
}
"""(vendor, group from Hardware.structure_fields) -> the section title."""

_EXIT_REASON_FIELDS = frozenset({"VM_EXIT_REASON", "EXITCODE"})
_EXIT_DETAIL_FIELDS = frozenset({"EXIT_QUALIFICATION", "EXITINFO1", "EXITINFO2"})
_MIN_DECODING = 16


@dataclass(frozen=True, slots=True)
class FieldRow:
    """One field as the pane shows it."""

    group: str  # as Hardware.structure_fields names it: "control", "guest-state", "state-save", ...
    name: str
    where: int  # VMCS encoding or VMCB offset
    where_text: str  # "0x4402" / "0x070"
    value: int
    value_text: str
    decoding: str | None
    changed: bool

    @property
    def zero(self) -> bool:
        return self.value == 0

    @property
    def style(self) -> str:
        """The row's style: changed wins over zero."""
        return CHANGED_STYLE if self.changed else ZERO_STYLE if self.zero else ""


def format_value(value: int, bits: int | None) -> str:
    """Hex, zero-padded to the field's width when it is 32 bits or less."""
    if bits is not None and bits <= 32:
        return f"0x{value:0{(bits + 3) // 4}x}"
    return f"{value:#x}"


def matches(row: FieldRow, filter_text: str) -> bool:
    """Whether `row` passes the filter (see the module docstring)."""
    for word in filter_text.lower().split():
        if word.startswith("="):
            needle = word[1:]
            if needle and needle not in (row.decoding or "").lower() and needle not in row.value_text:
                return False
        elif word not in row.name.lower():
            return False
    return True


def _has_exited(session: Session) -> bool:
    return session.vcpu in session.machine.exits.vcpu


@dataclass(frozen=True, slots=True)
class StructureSnapshot:
    """The whole structure at one stop: what the pane filters and draws without going
    back to the machine (which may be running again by then)."""

    vendor: str  # "intel" / "amd"
    structure_name: str  # "VMCS" / "VMCB"
    head: str  # "VMCS (vCPU 0, launched)"
    exited: bool  # whether this vCPU has taken a VM exit yet
    rows: tuple[FieldRow, ...]

    @property
    def groups(self) -> list[str]:
        """The groups in the vendor's order."""
        return list(dict.fromkeys(row.group for row in self.rows))

    @property
    def changed(self) -> list[str]:
        """Names of the fields that changed since the previous stop."""
        return [row.name for row in self.rows if row.changed]

    @property
    def name_width(self) -> int:
        """The longest field name: the name column's width, so that sections line up."""
        return max((len(row.name) for row in self.rows), default=5)

    def filtered(self, filter_text: str = "") -> list[FieldRow]:
        """The rows that pass the filter (see the module docstring)."""
        return [row for row in self.rows if matches(row, filter_text)]


def structure_snapshot(session: Session) -> StructureSnapshot:
    """Read the selected vCPU's VMCS / VMCB once and decode every field."""
    hw = session.machine.hw
    vendor = hw.vendor
    fields = session.machine.structure_fields(session.vcpu)
    context = {name: value for _group, name, _where, value in fields}
    changed = session.changed_fields()
    exited = _has_exited(session)
    where_digits = 4 if vendor == "intel" else 3
    rows = []
    for group, name, where, value in fields:
        if not exited and name in _EXIT_REASON_FIELDS:
            decoding: str | None = "no VM exit yet"
        elif not exited and name in _EXIT_DETAIL_FIELDS:
            decoding = None
        else:
            decoding = describe_field(vendor, name, value, context=context)
        rows.append(FieldRow(group, name, where, f"0x{where:0{where_digits}x}", value,
                             format_value(value, field_bits(vendor, name)), decoding, name in changed))
    structure = session.machine.structure(session.vcpu)
    if hw.structure_name == "VMCS":
        state = "launched" if getattr(structure, "launched", False) else "clear"
        head = f"VMCS (vCPU {session.vcpu}, {state})"
    else:
        head = f"{hw.structure_name} at HPA {structure.hpa:#x} (vCPU {session.vcpu})"
    return StructureSnapshot(vendor, hw.structure_name, head, exited, tuple(rows))


def structure_rows(session: Session, filter_text: str = "") -> list[FieldRow]:
    """Every field of the selected vCPU's VMCS / VMCB that passes the filter, in the
    vendor's order."""
    return structure_snapshot(session).filtered(filter_text)


def structure_title(snapshot: StructureSnapshot, filter_text: str = "") -> Text:
    """"VMCS (vCPU 0, launched)" / "VMCB at HPA 0x3000 (vCPU 0)", then how many fields
    changed and, with a filter, how many match."""
    title = Text(snapshot.head, style="bold")
    notes = []
    if not snapshot.exited:
        notes.append("no VM exit yet")
    changed = len(snapshot.changed)
    notes.append(f"{changed} changed since the last stop" if changed else "nothing changed since the last stop")
    if filter_text.strip():
        shown = len(snapshot.filtered(filter_text))
        notes.append(f"filter {filter_text.strip()!r}: {shown} of {len(snapshot.rows)} fields")
    title.append("  " + " · ".join(notes), style="dim")
    return title


def group_title(vendor: str, group: str) -> str:
    """The section title of a group ("guest-state area")."""
    return GROUP_TITLES.get((vendor, group), group)


class FieldTable:
    """Rows of one structure as a table whose columns line up across groups (widths come
    from every row of the snapshot, not just these). Built at render time: a pane too
    narrow for every column drops the encoding / offset column before the decoding
    gets squeezed."""

    def __init__(self, snapshot: StructureSnapshot, items: list[FieldRow | str]) -> None:
        self.snapshot = snapshot
        self.items = items  # rows, and group names where a section header goes

    def table(self, max_width: int) -> Table:
        snap = self.snapshot
        name_w = snap.name_width
        where_header = "encoding" if snap.vendor == "intel" else "offset"
        where_w = max([len(where_header)] + [len(r.where_text) for r in snap.rows])
        value_w = max([5] + [len(r.value_text) for r in snap.rows])
        fixed = 1 + name_w + value_w + 3  # marker, name, value and the padding between them
        show_where = max_width >= fixed + where_w + 1 + 1 + _MIN_DECODING
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), expand=False,
                      header_style="bold", show_header=True)
        table.add_column("", width=1, no_wrap=True)
        table.add_column("field", width=name_w, no_wrap=True, overflow="ellipsis")
        if show_where:
            table.add_column(where_header, width=where_w, no_wrap=True)
        table.add_column("value", width=value_w, justify="right", no_wrap=True)
        table.add_column("decoding", overflow="fold", min_width=_MIN_DECODING)
        first = True
        for item in self.items:
            if isinstance(item, str):
                if not first:
                    table.add_row()
                table.add_row("", Text(group_title(snap.vendor, item), style="bold underline"))
            else:
                cells = [CHANGED_MARK if item.changed else "", item.name]
                if show_where:
                    cells.append(item.where_text)
                cells += [item.value_text, item.decoding or ""]
                table.add_row(*cells, style=item.style)
            first = False
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def group_table(snapshot: StructureSnapshot, rows: list[FieldRow]) -> FieldTable:
    """Some rows (one group's) as a table whose columns line up with every other group's."""
    return FieldTable(snapshot, list(rows))


def render_structure(snapshot: StructureSnapshot, filter_text: str = "") -> Group:
    """The title line and one table with a section per group."""
    rows = snapshot.filtered(filter_text)
    title = structure_title(snapshot, filter_text)
    if not rows:
        return Group(title, Text(f"no field matches {filter_text.strip()!r}", style="italic"))
    items: list[FieldRow | str] = []
    for group in snapshot.groups:
        group_rows = [row for row in rows if row.group == group]
        if group_rows:
            items.append(group)
            items += group_rows
    return Group(title, FieldTable(snapshot, items))


def structure_view(session: Session, filter_text: str = "") -> Group:
    """The selected vCPU's VMCS / VMCB as one renderable (what `--script` prints)."""
    return render_structure(structure_snapshot(session), filter_text)
