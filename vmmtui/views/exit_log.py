"""The exit log as text: one line per exit, the detail of one exit, and exit filtering.

Shared by the exit-log pane (`vmmtui.widgets.exit_log`) and the headless
`--script` mode, so both show the same rows. Nothing here imports Textual.

Rows
    `ExitRows` reads rows of the engine's columnar `ExitLog` as display cells
    (seq, vCPU, virtual time, reason number, name, RIP, length, qualification).
    Decoding (`Hardware.decode`) and the one-line qualification summary are
    memoised per distinct exit *encoding* (reason, info1, info2, aux1, aux2): a
    serial-polling loop of a million exits decodes a handful of times. Rows whose
    encodings are all distinct (RDTSC values, EPT addresses) cost one decode each.

Filters: `vmmtui.views.exit_select` (`FilterPlan.compile(text)`), re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine.exitlog import ExitEvent, ExitLog

from .exit_select import EncodingIndex, FilterPlan, Memo, last_matching

if TYPE_CHECKING:
    from ..session import Session

Decoder = Callable[[int, int, int, int, int], tuple[str, dict[str, Any]]]

# -- kinds and colours ---------------------------------------------------------------

KINDS = ("io", "msr", "cr", "ept", "cpuid", "hlt", "exception", "shutdown", "hypercall", "other")
"""The colour groups of exit names (a kind in words, not a filter)."""

#: Rich colours of the kinds for --script; the pane takes them from the theme.
KIND_COLOURS = {
    "io": "green", "msr": "yellow", "cr": "cyan", "ept": "magenta", "cpuid": "blue",
    "hlt": "bright_black", "exception": "red", "shutdown": "bold red", "hypercall": "bright_blue",
    "other": "default",
}


def exit_kind(name: str) -> str:
    """The colour group of an exit name, one of `KINDS`."""
    if name in ("IO_INSTRUCTION", "IOIO"):
        return "io"
    if name in ("MSR_READ", "MSR_WRITE", "MSR"):
        return "msr"
    if name == "CR_ACCESS" or name.startswith(("READ_CR", "WRITE_CR")):
        return "cr"
    if name in ("EPT_VIOLATION", "EPT_MISCONFIG", "NPF"):
        return "ept"
    if name == "CPUID":
        return "cpuid"
    if name == "HLT":
        return "hlt"
    if name == "EXCEPTION_NMI" or name.startswith("EXCP_"):
        return "exception"
    if name in ("TRIPLE_FAULT", "SHUTDOWN"):
        return "shutdown"
    if name in ("VMCALL", "VMMCALL"):
        return "hypercall"
    return "other"


def reason_text(reason: int, vendor: str) -> str:
    """The reason number as the vendor's manuals write it: decimal (Intel), hex (AMD)."""
    return str(reason) if vendor == "intel" else f"{reason:#x}"


# -- the one-line qualification ------------------------------------------------------

# CPUID leaves whose output depends on ECX (the subleaf); for the others the
# subleaf is whatever the guest left in ECX and is not shown in the row.
_SUBLEAF_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F,
                             0x20, 0x23, 0x24, 0x8000001D, 0x80000020, 0x80000026})
_VECTORS = {0: "DE", 1: "DB", 2: "NMI", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF",
            10: "TS", 11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC",
            19: "XM", 20: "VE", 21: "CP", 28: "HV", 29: "VC", 30: "SX"}
# Qualification parts shown in decimal; every other integer is shown in hex.
_DECIMAL = frozenset({"size", "count", "cr", "vector", "addr_size", "tsc"})


def _value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v) if key in _DECIMAL else f"{v:#x}"
    return str(v)


def _generic(q: dict[str, Any]) -> str:
    parts = []
    for k, v in q.items():
        if isinstance(v, bool):
            if v:
                parts.append(k)
        else:
            parts.append(f"{k}={_value(k, v)}")
    return " ".join(parts)


def _vector(v: int) -> str:
    return f"#{_VECTORS[v]}" if v in _VECTORS else f"vector={v}"


def qualification_text(name: str, q: dict[str, Any], vendor: str) -> str:
    """The decoded qualification of an exit named `name` in one short line.

    Examples: ``port=0x3f8 out 1B dx value=0x48``, ``leaf=0x40000000``,
    ``msr=0xc0000080 write value=0x100``, ``gpa=0x200000 write``,
    ``cr3 mov-to-cr rax value=0x10000``, ``#PF error_code=0x2 cr2=0x1000``.
    """
    try:
        return _summary(name, q, vendor)
    except (KeyError, TypeError, ValueError):  # an unexpected shape: show it as it is
        return _generic(q)


def _summary(name: str, q: dict[str, Any], vendor: str) -> str:
    kind = exit_kind(name)
    if kind == "io":
        parts = [f"port={q['port']:#x}", q["direction"], f"{q['size']}B"]
        if "operand" in q:
            parts.append(q["operand"])
        if q.get("string"):
            parts.append("rep string" if q.get("rep") else "string")
            if "segment" in q:
                parts.append(f"seg={q['segment']}")
            if "count" in q:
                parts.append(f"count={q['count']}")
        else:
            parts.append(f"value={q['value']:#x}")
        return " ".join(parts)
    if kind == "cpuid":
        leaf = q["leaf"]
        if leaf in _SUBLEAF_LEAVES:
            return f"leaf={leaf:#x} subleaf={q['subleaf']:#x}"
        return f"leaf={leaf:#x}"
    if kind == "msr":
        write = name == "MSR_WRITE" or bool(q.get("write"))
        return f"msr={q['msr']:#x} {'write' if write else 'read'} value={q['value']:#x}"
    if kind == "cr":
        if "access" in q:  # Intel: the access type is in the qualification
            access = q["access"]
            parts = [f"cr{q['cr']}", access]
            if "gpr" in q:
                parts.append(q["gpr"])
            if access == "lmsw":
                parts.append(f"data={q['lmsw_data']:#x} {q['lmsw_operand']}")
            if access in ("mov-to-cr", "mov-from-cr"):
                parts.append(f"value={q['value']:#x}")
            return " ".join(parts)
        write = name.startswith("WRITE_CR")  # AMD: the exit code says read or write
        if q.get("mov_cr"):
            parts = [f"cr{q['cr']}", "mov-to-cr" if write else "mov-from-cr", q["gpr"]]
        else:
            parts = [f"cr{q['cr']}", "write" if write else "read"]
        parts.append(f"value={q['value']:#x}")
        return " ".join(parts)
    if kind == "ept":
        if "gpa" not in q:
            return _generic(q)
        parts = [f"gpa={q['gpa']:#x}"]
        if "readable" in q:  # Intel EPT violation
            parts.append("/".join(a for a in ("read", "write", "fetch") if q.get(a)) or "access")
            perms = (q.get("readable"), q.get("writable"), q.get("executable"))
            if any(perms):
                parts.append("allowed=" + "".join(c if p else "-" for c, p in zip("rwx", perms)))
        else:  # AMD NPF: a page-fault error code
            parts.append("fetch" if q.get("fetch") else "write" if q.get("write") else "read")
            if q.get("present"):
                parts.append("protection")
            if q.get("reserved"):
                parts.append("reserved-bit")
            if q.get("walk"):
                parts.append("guest-walk")
        return " ".join(parts)
    if kind == "exception":
        parts = [_vector(q["vector"])]
        if q.get("type") not in (None, "hardware-exception"):
            parts.append(q["type"])
        if "error_code" in q and q.get("error_code_valid", True):
            parts.append(f"error_code={q['error_code']:#x}")
        if "cr2" in q:
            parts.append(f"cr2={q['cr2']:#x}")
        return " ".join(parts)
    if kind == "hypercall":
        return f"function={q['function']:#x} result={q['result']:#x}"
    if name in ("RDTSC", "RDTSCP") and "tsc" in q:
        return f"tsc={q['tsc']}"
    if name == "INVLPG" and "linear" in q:
        return f"linear={q['linear']:#x}"
    return _generic(q)


def exit_row_text(event: ExitEvent, vendor: str) -> str:
    """The decoded qualification of `event` in one short line (see `qualification_text`)."""
    return qualification_text(event.name, event.qualification, vendor)


# -- rows ----------------------------------------------------------------------------

HEADERS = ("seq", "vcpu", "time", "reason", "name", "rip", "len", "qualification")

# The one-line text of a row (what a substring filter searches): seq, vcpu, time,
# ("reason name", qualification), rip, length. One format for `ExitRows.text` and
# the filter's C-level loop, so both see the same text.
_TEXT = "{0} {1} {2} {3[0]} {4:#x} {5} {3[1]}"


@dataclass(frozen=True, slots=True)
class RowCells:
    """One exit's display cells (all text), and its colour group."""

    seq: str
    vcpu: str
    time: str
    reason: str
    name: str
    rip: str
    length: str
    qualification: str
    kind: str

    def text(self) -> str:
        """The row as one line: the cells joined by single spaces."""
        return " ".join((self.seq, self.vcpu, self.time, self.reason, self.name, self.rip, self.length,
                         self.qualification))


class ExitRows:
    """Rows of an `ExitLog` as display cells, decoded once per distinct exit encoding.

    `decode` is the machine's `Hardware.decode` (the decoder the log itself uses).
    Safe to use from a worker thread while the UI thread uses another instance;
    one instance is not meant to be shared between threads.
    """

    def __init__(self, log: ExitLog, decode: Decoder, vendor: str, index: EncodingIndex | None = None) -> None:
        self.log = log
        self.decode = decode
        self.vendor = vendor
        #: the log's encoding codes; may be shared with other threads (it locks itself)
        self.index = index if index is not None else EncodingIndex(log)
        self._encoded = Memo(self._describe)  # (reason, info1, info2, aux1, aux2) -> cells
        self._searchable = Memo(self._search_parts)  # the same key -> lower-cased text parts
        self._names = Memo(lambda r: decode(r, 0, 0, 0, 0)[0], limit=1 << 20)

    def name_of(self, reason: int) -> str:
        """The name of a reason number (decoded once per reason)."""
        return self._names[reason]

    def _describe(self, key: tuple[int, int, int, int, int]) -> tuple[str, str, str, str]:
        try:
            name, q = self.decode(*key)
            qual = qualification_text(name, q, self.vendor)
        except Exception as e:  # a row that cannot be decoded shows why, it does not break the pane
            qual = f"<cannot decode: {type(e).__name__}: {e}>"
            try:
                name = self.name_of(key[0])
            except Exception:
                name = "?"
        return reason_text(key[0], self.vendor), name, qual, exit_kind(name)

    def _search_parts(self, key: tuple[int, int, int, int, int]) -> tuple[str, str]:
        reason, name, qual, _kind = self._encoded[key]
        return f"{reason} {name}".lower(), qual.lower()

    def encoding(self, seq: int) -> tuple[int, int, int, int, int]:
        log = self.log
        return log.reason[seq], log.info1[seq], log.info2[seq], log.aux1[seq], log.aux2[seq]

    def cells(self, seq: int) -> RowCells:
        """Exit `seq` as display cells."""
        log = self.log
        reason, name, qual, kind = self._encoded[self.encoding(seq)]
        return RowCells(str(seq), str(log.vcpu[seq]), str(log.time[seq]), reason, name,
                        f"{log.rip[seq]:#x}", str(log.length[seq]), qual, kind)

    def text(self, seq: int) -> str:
        """Exit `seq` as one line: its cells joined by single spaces."""
        log = self.log
        reason, name, qual, _kind = self._encoded[self.encoding(seq)]
        return _TEXT.format(seq, log.vcpu[seq], log.time[seq], (f"{reason} {name}", qual), log.rip[seq],
                            log.length[seq])

    def search_texts(self, seqs: Iterable[int] | range) -> Iterable[str]:
        """`text(seq).lower()` for each of `seqs`, formatted in a C-level loop."""
        log = self.log
        if isinstance(seqs, range) and seqs.step == 1:
            a, b = seqs.start, seqs.stop
            keys = zip(log.reason[a:b], log.info1[a:b], log.info2[a:b], log.aux1[a:b], log.aux2[a:b])
            return map(_TEXT.format, seqs, log.vcpu[a:b], log.time[a:b], map(self._searchable.__getitem__, keys),
                       log.rip[a:b], log.length[a:b])
        seqs = list(seqs)
        keys = zip(map(log.reason.__getitem__, seqs), map(log.info1.__getitem__, seqs),
                   map(log.info2.__getitem__, seqs), map(log.aux1.__getitem__, seqs),
                   map(log.aux2.__getitem__, seqs))
        return map(_TEXT.format, seqs, map(log.vcpu.__getitem__, seqs), map(log.time.__getitem__, seqs),
                   map(self._searchable.__getitem__, keys), map(log.rip.__getitem__, seqs),
                   map(log.length.__getitem__, seqs))

    def forget(self) -> None:
        """Drop memoised rows (after an exit's operands were completed with update_aux)."""
        self._encoded.clear()
        self._searchable.clear()


def complete_rows(log: ExitLog) -> int:
    """How many rows of `log` are complete: every column appended.

    `ExitLog.append` appends the columns one after the other, so a reader on
    another thread may see `len(log)` one ahead of the last columns; `aux2` is
    appended last.
    """
    return min(len(log.reason), len(log.aux2))


# -- the encoding index --------------------------------------------------------------

def exits_table(session: Session, last: int = 20, filter_text: str = "") -> Table:
    """The last `last` exits that pass `filter_text`, as the exit-log pane shows them."""
    machine = session.machine
    log = machine.exits
    rows = ExitRows(log, machine.hw.decode, machine.vendor)
    total = complete_rows(log)
    plan = FilterPlan.compile(filter_text)
    seqs, matched = last_matching(plan, rows, total, last)
    table = Table(title=f"exit log ({total:,} exits, {matched:,} shown)", title_justify="left",
                  caption=(f"the last {len(seqs)} of {matched:,}; {plan.describe()}" if plan else
                           f"the last {len(seqs)} of {matched:,}"), caption_justify="left")
    for h in HEADERS:
        table.add_column(h, justify="right" if h in ("seq", "vcpu", "time", "reason", "len") else "left",
                         no_wrap=True)
    for seq in seqs:
        c = rows.cells(seq)
        table.add_row(c.seq, c.vcpu, c.time, c.reason, Text(c.name, style=KIND_COLOURS[c.kind]), c.rip,
                      c.length, c.qualification)
    return table


def info_field_names(name: str, vendor: str) -> tuple[str, str]:
    """The architectural names of an exit's info1 / info2 for its vendor."""
    if vendor != "intel":
        return "EXITINFO1", "EXITINFO2"
    if name in ("EXCEPTION_NMI", "EXTERNAL_INTERRUPT"):
        return "EXIT_QUALIFICATION", "VM_EXIT_INTR_INFO"
    return "EXIT_QUALIFICATION", "GUEST_PHYSICAL_ADDRESS"


def _part_value(key: str, v: Any) -> str:
    text = _value(key, v)
    if isinstance(v, int) and not isinstance(v, bool) and key not in _DECIMAL and v > 9:
        text += f" ({v})"
        if key == "value" and 0x20 <= v < 0x7F:
            text += f" {chr(v)!r}"
    return text


def exit_detail(session: Session, seq: int) -> RenderableType:
    """Every field of exit `seq`, its decoded qualification, and the VMM's handling steps."""
    machine = session.machine
    vendor = machine.vendor
    e = machine.exits[seq]
    kind = exit_kind(e.name)
    info1_name, info2_name = info_field_names(e.name, vendor)
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("seq", str(e.seq))
    fields.add_row("vCPU", str(e.vcpu))
    fields.add_row("time", str(e.time))
    label = "exit reason" if vendor == "intel" else "EXITCODE"
    fields.add_row(label, Text.assemble(reason_text(e.reason, vendor), " ", (e.name, KIND_COLOURS[kind])))
    fields.add_row("RIP", f"{e.rip:#x}")
    fields.add_row("length", str(e.length))
    fields.add_row(info1_name, f"{e.info1:#x}")
    note = ""
    if vendor == "intel" and info2_name == "GUEST_PHYSICAL_ADDRESS" and e.name not in ("EPT_VIOLATION",
                                                                                       "EPT_MISCONFIG"):
        note = "  (set by EPT exits only)"
    fields.add_row(info2_name, Text.assemble(f"{e.info2:#x}", (note, "dim")))
    parts = Table.grid(padding=(0, 2))
    parts.add_column(style="bold", no_wrap=True)
    parts.add_column()
    for key, value in e.qualification.items():
        parts.add_row(key, _part_value(key, value))
    if not e.qualification:
        parts.add_row(Text("(none)", style="dim"), "")
    steps = machine.hw.handling_steps(e.reason)
    handling = Text("\n".join(f"{i:>2}. {step}" for i, step in enumerate(steps, 1)))
    return Group(
        Text(f"exit {e.seq}: {e.name}", style="bold"),
        fields,
        Text(""),
        Text.assemble(("qualification", "bold underline"), "  ", exit_row_text(e, vendor)),
        parts,
        Text(""),
        Text("VMM handling", style="bold underline"),
        handling,
    )
