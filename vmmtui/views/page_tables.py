"""The page-tables views: the guest's own tables, the host's EPT / NPT, and the two-dimensional walk.

Each view returns a Rich renderable, so `--script` prints what the pane shows.
The label functions (`guest_node_label`, `slat_node_label`, ...) are shared with
the Textual pane (`vmmtui.widgets.page_tables`), which shows one tree node per
entry; the Rich tree views print runs of contiguous leaves with the same bits
as one line by default (`compact=True`), so a 512-entry page table is one line
of a script's output rather than 512.

Label formats (addresses in hex, ranges inclusive):

- guest leaf   ``PTE 1: 0x1000-0x1fff -> 0x2000, R W X, S, 4K``
  (linear range -> guest-physical page; rights of this entry: R always,
  W if writable, X unless NX; U user / S supervisor; A accessed, D dirty)
- guest table  ``PDE 0: 0x0-0x1fffff -> table 0x13000, R W X, S``
- EPT leaf     ``PDE 1: 0x200000-0x3fffff -> 0x7c00000, R W X, WB, 2M``
  (guest-physical range -> host-physical page, rights, memory type, page size)
- NPT leaf     ``PDE 1: 0x200000-0x3fffff -> 0x7a00000, R W X, 2M``
- a run        ``PTE 2-511: 0x2000-0x1fffff -> 0x2000-0x1fffff, R W X, S, 510 x 4K``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from engine.ept import decode_eptp
from engine.paging import GuestNode, decode_entry, guest_tree, paging_mode, walk_2d
from engine.slat import SecondLevelTables, SlatNode, level_size

from ..session import Session

GUEST_LIMIT = 4096
"""The most guest entries the views and the pane build (see `engine.paging.guest_tree`)."""

MEMTYPES = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB"}
MODE_NAMES = {"32-bit": "32-bit", "pae": "PAE", "4-level": "4-level"}


# -- small formatters ------------------------------------------------------------------------------


def size_text(size: int) -> str:
    """4K, 2M, 4M, 1G, 512G."""
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


def rights_text(read: bool, write: bool, execute: bool) -> str:
    """``R W X`` with ``-`` for a right not granted."""
    return " ".join(c if ok else "-" for c, ok in (("R", read), ("W", write), ("X", execute)))


def memtype_text(memtype: int) -> str:
    return MEMTYPES.get(memtype, f"memtype {memtype}")


def _flag(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "1" if value else "0"
    return f"{value:#x}" if isinstance(value, int) else str(value)


def decoded_text(decoded: dict[str, Any]) -> str:
    """``present=1 writable=1 ... address=0x2000``: every decoded field, for a detail line."""
    return " ".join(f"{k}={_flag(v)}" for k, v in decoded.items())


# -- one row per entry (or per run of entries) ----------------------------------------------------


@dataclass(frozen=True)
class _Row:
    level: str
    first: int  # index of the first entry
    count: int  # entries in the run
    base: int  # first address covered
    size: int  # bytes one entry covers
    target: int | None  # the page (leaf) or table the first entry points at; None when not shown
    leaf: bool
    attrs: tuple[str, ...]  # rights and flags, the page size excluded

    def label(self) -> str:
        index = f"{self.first}" if self.count == 1 else f"{self.first}-{self.first + self.count - 1}"
        end = self.base + self.size * self.count - 1
        parts = [f"{self.level} {index}: {self.base:#x}-{end:#x}"]
        if self.target is not None:
            if not self.leaf:
                parts[0] += f" -> table {self.target:#x}"
            elif self.count == 1:
                parts[0] += f" -> {self.target:#x}"
            else:
                parts[0] += f" -> {self.target:#x}-{self.target + self.size * self.count - 1:#x}"
        attrs = list(self.attrs)
        if self.leaf:
            attrs.append(size_text(self.size) if self.count == 1 else f"{self.count} x {size_text(self.size)}")
        return ", ".join(parts + attrs)

    def extends(self, other: _Row) -> bool:
        """Whether `other` continues this run: the next leaf, the next page, the same bits."""
        return (
            self.leaf and other.leaf and self.target is not None and other.target is not None
            and other.level == self.level and other.size == self.size and other.attrs == self.attrs
            and other.first == self.first + self.count and other.base == self.base + self.size * self.count
            and other.target == self.target + self.size * self.count
        )

    def merged(self, other: _Row) -> _Row:
        return _Row(self.level, self.first, self.count + other.count, self.base, self.size, self.target,
                    True, self.attrs)


def _guest_row(node: GuestNode, mode: str) -> _Row:
    d = node.decoded
    pdpte_register = mode == "pae" and node.level == "PDPTE"
    attrs: list[str] = []
    if not pdpte_register:  # PAE's PDPTEs carry no rights
        attrs.append(rights_text(True, d["writable"], not d["nx"]))
        attrs.append("U" + _ad(d) if d["user"] else "S" + _ad(d))
    if d.get("reserved"):
        attrs.append("reserved bits set")
    return _Row(node.level, node.index, 1, node.linear, node.size, d["address"], node.leaf, tuple(attrs))


def _ad(d: dict[str, Any]) -> str:
    return (" A" if d.get("accessed") else "") + (" D" if d.get("dirty") else "")


def _slat_is_leaf(node: SlatNode) -> bool:
    return node.level == "PTE" or bool(node.decoded.get("large"))


def _slat_row(node: SlatNode, slat: SecondLevelTables) -> _Row:
    d = node.decoded
    leaf = _slat_is_leaf(node)
    size = level_size(node.level)
    read, write, execute = slat.permissions(node.value)
    attrs = [rights_text(read, write, execute)]
    if leaf and d.get("memtype") is not None:
        attrs.append(memtype_text(d["memtype"]))
    flags = _ad(d).strip()
    if flags:
        attrs.append(flags)
    if not slat.is_present(node.value):
        attrs.append("not present")
    return _Row(node.level, node.index, 1, node.gpa_base, size, slat.address(node.value), leaf, tuple(attrs))


def guest_node_label(node: GuestNode, mode: str) -> str:
    """The one-line label of a guest entry (`mode` is the paging mode, for PAE's PDPTEs)."""
    if node.truncated:
        return str(node.decoded["note"])
    return _guest_row(node, mode).label()


def slat_node_label(node: SlatNode, slat: SecondLevelTables) -> str:
    """The one-line label of an EPT / NPT entry."""
    return _slat_row(node, slat).label()


def guest_details(node: GuestNode) -> list[str]:
    """Detail lines for a guest entry: where it is, its raw value, every decoded field."""
    return [f"entry {node.value:#x} at GPA {node.entry_gpa:#x}", decoded_text(node.decoded)]


def slat_details(node: SlatNode, table_hpa: int) -> list[str]:
    """Detail lines for an EPT / NPT entry in the table at `table_hpa`."""
    return [f"entry {node.value:#x} at HPA {table_hpa + 8 * node.index:#x}", decoded_text(node.decoded)]


# -- reading the session ------------------------------------------------------------------------------


def guest_registers(session: Session) -> dict[str, int]:
    """CR0, CR3, CR4 and EFER of the session's vCPU, as the machine has them now."""
    r = session.machine.registers(session.vcpu)
    return {k: r[k] for k in ("cr0", "cr3", "cr4", "efer")}


def guest_mode(session: Session) -> str:
    r = guest_registers(session)
    return paging_mode(r["cr0"], r["cr4"], r["efer"])


def guest_nodes(session: Session, limit: int = GUEST_LIMIT) -> tuple[str, list[GuestNode]]:
    """(paging mode, the guest's tree) for the session's vCPU."""
    r = guest_registers(session)
    mode = paging_mode(r["cr0"], r["cr4"], r["efer"])
    return mode, guest_tree(session.machine.mem.read, limit=limit, **r)


def guest_root_label(session: Session) -> str:
    """The guest tree's heading: the paging mode and CR3."""
    r = guest_registers(session)
    mode = paging_mode(r["cr0"], r["cr4"], r["efer"])
    if mode == "none":
        return "guest page tables: paging is off (CR0.PG = 0)"
    return f"guest page tables (linear -> GPA): {MODE_NAMES[mode]} paging, CR3 {r['cr3']:#x}"


def slat_root_label(session: Session) -> str:
    """The EPT / NPT heading: the EPTP decoded (Intel) or nCR3 (AMD), as the VMCS / VMCB hold them."""
    machine = session.machine
    slat = machine.slat
    structure = machine.structure(session.vcpu)
    if slat.kind == "EPT":
        eptp = structure.read("EPT_POINTER")
        f = decode_eptp(eptp)
        root = f["pml4"]
        text = (f"EPT (GPA -> HPA): EPTP {eptp:#x} = PML4 at {root:#x}, {f['walk_length']}-level walk, "
                f"{memtype_text(f['memtype'])}, A/D {'on' if f['accessed_dirty'] else 'off'}")
    else:
        root = structure.read("N_CR3")
        text = f"NPT (GPA -> HPA): nCR3 {root:#x} = PML4 at {root:#x}"
        if not structure.read("NP_ENABLE") & 1:
            text += ", nested paging off"
    if root != slat.root:
        text += f" (the tables shown are at {slat.root:#x})"
    return text


# -- the Rich views -----------------------------------------------------------------------------------


def _add_rows(parent: Tree, items: Sequence[Any], row: Callable[[Any], _Row | None],
              children: Callable[[Any], Sequence[Any]], compact: bool) -> None:
    pending: _Row | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            parent.add(Text(pending.label()))
            pending = None

    for item in items:
        r = row(item)
        if r is None:  # a pseudo-node
            flush()
            parent.add(Text(item.decoded["note"], style="italic"))
            continue
        kids = children(item)
        if compact and r.leaf and not kids:
            if pending is not None and pending.extends(r):
                pending = pending.merged(r)
                continue
            flush()
            pending = r
            continue
        flush()
        branch = parent.add(Text(r.label(), style="" if r.leaf else "bold"))
        _add_rows(branch, kids, row, children, compact)
    flush()


def guest_tables_view(session: Session, *, compact: bool = True, limit: int = GUEST_LIMIT) -> RenderableType:
    """The guest's paging structures from CR3: present entries only, as a tree."""
    mode, nodes = guest_nodes(session, limit)
    tree = Tree(Text(guest_root_label(session), style="bold"), guide_style="dim")
    if mode != "none" and not nodes:
        tree.add(Text("no present entry in the top-level table", style="italic"))
    _add_rows(tree, nodes, lambda n: None if n.truncated else _guest_row(n, mode), lambda n: n.children, compact)
    return tree


def slat_view(session: Session, *, compact: bool = True) -> RenderableType:
    """The host's EPT (Intel) or NPT (AMD): the EPTP / nCR3, then every entry in use, as a tree."""
    slat = session.machine.slat
    tree = Tree(Text(slat_root_label(session), style="bold"), guide_style="dim")
    nodes = slat.tree()
    if not nodes:
        tree.add(Text("no entry in use", style="italic"))
    _add_rows(tree, nodes, lambda n: _slat_row(n, slat), lambda n: n.children, compact)
    return tree


def _slat_rights(step_entries: Sequence[Any], slat: SecondLevelTables) -> tuple[bool, bool, bool]:
    rights = (True, True, True)
    for e in step_entries:
        p = slat.permissions(e.value)
        rights = (rights[0] and p[0], rights[1] and p[1], rights[2] and p[2])
    return rights


def _slat_meaning(step: Any, slat: SecondLevelTables) -> str:
    if not step.slat_steps:
        return "beyond the 48-bit guest-physical space"
    last = step.slat_steps[-1]
    if not slat.is_present(last.value):
        return f"{last.level} not present"
    parts = [rights_text(*_slat_rights(step.slat_steps, slat))]
    if last.decoded.get("memtype") is not None:
        parts.append(memtype_text(last.decoded["memtype"]))
    parts.append(size_text(level_size(last.level)))
    return ", ".join(parts)


def _slat_entry_meaning(entry: Any, slat: SecondLevelTables) -> str:
    """One EPT / NPT entry read during a translation (for `translate_view(detail=True)`)."""
    if not slat.is_present(entry.value):
        return "not present"
    leaf = entry.level == "PTE" or bool(entry.decoded.get("large"))
    address = slat.address(entry.value)
    parts = [f"{'page' if leaf else 'table'} {address:#x}", rights_text(*slat.permissions(entry.value))]
    if leaf:
        if entry.decoded.get("memtype") is not None:
            parts.append(memtype_text(entry.decoded["memtype"]))
        parts.append(size_text(level_size(entry.level)))
    return ", ".join(parts)


def _guest_meaning(step: Any, mode: str, cr4: int) -> str:
    d = decode_entry(step.value, step.level, mode=mode, cr4=cr4)
    if not d["present"]:
        return "not present"
    leaf = step.level == "PTE" or d["large"]
    parts = [f"page {d['address']:#x}" if leaf else f"table {d['address']:#x}"]
    if not (mode == "pae" and step.level == "PDPTE"):
        parts.append(rights_text(True, d["writable"], not d["nx"]))
        parts.append("U" if d["user"] else "S")
    if leaf:
        size = {"PTE": 1 << 12, "PDE": (4 << 20) if mode == "32-bit" else (2 << 20), "PDPTE": 1 << 30}[step.level]
        parts.append(size_text(size))
    return ", ".join(parts)


def translate_view(session: Session, gva: int, *, detail: bool = False) -> RenderableType:
    """The two-dimensional walk of linear address `gva`, step by step, down to the host-physical address.

    Each guest paging-structure access is shown with its own EPT / NPT
    translation (GPA -> HPA), then the entry read there with its bits; the last
    step translates the final GPA. A fault is shown where the walk stops. With
    `detail`, every EPT / NPT entry read for each translation is listed too.
    """
    machine = session.machine
    slat = machine.slat
    r = guest_registers(session)
    mode = paging_mode(r["cr0"], r["cr4"], r["efer"])
    steps = walk_2d(machine.host.read, slat, gva, **r)
    kind = slat.kind
    if mode == "none":
        head = Text.assemble(
            (f"translate {gva:#x}", "bold"),
            f": paging is off (CR0.PG = 0), so the linear address is the guest-physical address; "
            f"only the {kind} translation applies",
        )
    else:
        head = Text.assemble((f"translate {gva:#x}", "bold"),
                             f": {MODE_NAMES[mode]} paging, CR3 {r['cr3']:#x}, through {kind}")
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("access", no_wrap=True)
    table.add_column("GPA -> HPA", no_wrap=True)
    table.add_column("entry", no_wrap=True)
    table.add_column("meaning")
    entries_read = {"guest": 0, "slat": 0}
    for number, step in enumerate(steps, 1):
        style = "red" if step.fault else ""
        if step.stage == "slat":
            entries_read["slat"] += len(step.slat_steps)
            what = f"{kind}: guest {step.level}" if step.level else f"{kind}: final GPA"
            where = f"{step.gpa:#x} -> {step.hpa:#x}" if step.hpa is not None else f"{step.gpa:#x} -> none"
            value = f"{step.value:#x}" if step.value is not None else ""
            meaning = _slat_meaning(step, slat)
        elif step.stage == "guest":
            entries_read["guest"] += 1
            what = f"guest {step.level}"
            where = f"read at {step.hpa:#x}"
            value = f"{step.value:#x}"
            meaning = _guest_meaning(step, mode, r["cr4"])
        else:
            what, where, value, meaning = step.what, "", "", ""
        if step.fault and not meaning:
            meaning = step.fault
        table.add_row(str(number), what, where, value, meaning, style=style)
        if detail and step.stage == "slat":
            for e in step.slat_steps:
                table.add_row("", f"  {kind} {e.level} {e.index}", f"read at {e.entry_hpa:#x}", f"{e.value:#x}",
                              _slat_entry_meaning(e, slat), style="dim")
    last = steps[-1] if steps else None
    if last is not None and last.fault is None and last.stage == "slat" and last.level == "" and last.hpa is not None:
        if mode == "none":
            result = f"{gva:#x} = GPA {last.gpa:#x} -> HPA {last.hpa:#x}"
        else:
            result = f"{gva:#x} -> GPA {last.gpa:#x} -> HPA {last.hpa:#x}"
        foot = Text.assemble(("result: ", "bold"), (result, "bold green"))
    else:
        where = f"step {len(steps)}" if steps else "the start"
        why = last.fault if last is not None and last.fault else "the walk stopped"
        foot = Text.assemble(("stopped at ", "bold red"), (f"{where}: {why}", "red"))
    guest_reads, slat_reads = entries_read["guest"], entries_read["slat"]
    count = Text(
        f"{len(steps)} step{'' if len(steps) == 1 else 's'}; {guest_reads + slat_reads} entries read "
        f"({guest_reads} guest, {slat_reads} {kind})",
        style="dim",
    )
    return Group(head, table, foot, count)
