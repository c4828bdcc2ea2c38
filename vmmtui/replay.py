"""Replay: the debugger on a recorded trace.

`ReplaySession` offers what the panes read from a live `Session` (`machine.exits`,
`machine.hw`, `regs`, the console, ...) from a trace, at a *position*: the
selected exit. The registers are those at that exit (keyframe + deltas); the
console shows what the guest had written by the end of that exit's handling;
the exit log, the exit detail and the vCPU schedule show the whole trace. None
of that runs anything. What the trace does not hold (guest memory, the page
tables and the EPT / NPT, the VMCS / VMCB, the code to disassemble, EFER) comes
from the guest re-run to the selected exit (`engine.trace.rerun`, checked exit
by exit against the trace): the state a live session stopped at that exit
shows. In the TUI a worker thread re-runs while the panes say so.

Commands (`:` line, palette keys, `vmmtui replay TRACE --script FILE`):
`next [N]` / `prev [N]` move through the exits (among those the filter shows,
when one is set), `goto N`, `goto time T`, `goto first|last`, `break exit
FILTER` + `continue` / `rcontinue` jump to the next / previous matching exit,
`filter`, `exit N`, `regs`, `console`, `info`, `mem`, `disasm`, `translate`,
`pagetables`, `vmcs`, `help`, `quit`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.binding import Binding

from engine.errors import EngineError
from engine.machine import Machine, Stop, StopReason
from engine.trace.format import TraceError
from engine.trace.reader import Trace
from engine.trace.rerun import Rerun, RerunCancelled

from .commands import COMMANDS, PANES, CommandError, CommandTable, Outcome
from .views.console import console_view
from .views.exit_log import ExitRows, exit_row_text
from .views.exit_select import FilterPlan
from .views.registers import CHANGED, CR0_BITS, CR4_BITS, EFER_BITS, GPRS, RFLAGS_BITS, bits
from .widgets.pane import Pane

class NotInTrace(EngineError):
    """Something a replay cannot show: the trace does not hold it and no re-run gives it."""

    title = "not in the trace"


class RerunPending(NotInTrace):
    """The state at the selected exit is being rebuilt (the TUI re-runs in a worker)."""

    title = "re-running"
    transient = True  # panes show it as a note, not as an error


# -- the session ------------------------------------------------------------------------

class ReplayMachine:
    """The part of `engine.machine.Machine` the panes read, served from a trace."""

    def __init__(self, trace: Trace, session: ReplaySession) -> None:
        self.trace = trace
        self._session = session
        self.exits = trace.exits
        self.hw = trace.hw
        self.vendor = trace.vendor
        self.config = trace.config()
        self.breakpoints: list[int] = []
        self.exit_breaks: list[Any] = []
        self.time = int(trace.meta.get("end_time") or (self.exits.time[-1] if len(self.exits) else 0))
        reason = trace.meta.get("stop")
        try:
            self.stop: Stop | None = Stop(StopReason(reason), trace.meta.get("stop_status"),
                                          str(trace.meta.get("stop_message") or "")) if reason else None
        except ValueError:
            self.stop = None
        self._serial = trace.serial_chunks()

    @property
    def serial(self) -> bytes:
        """The console output up to the end of the selected exit."""
        pos = self._session.position
        if pos is None:
            return b""
        t = self.exits.time[pos]
        return b"".join(d for when, d in self._serial if when <= t)

    def registers(self, vcpu: int = 0) -> dict[str, int]:
        """The registers at the selected exit; EFER, which the trace lacks, from the re-run."""
        regs = dict(self._session.regs)
        regs.setdefault("efer", self._session.state("EFER").registers(vcpu)["efer"])
        return regs

    # What the trace does not hold comes from the guest re-run to the selected exit
    # (`engine.trace.rerun`): the state a live session stopped there would show.

    def guest_state(self, vcpu: int = 0) -> Any:
        return self._session.state("the hidden segment state").guest_state(vcpu)

    def read_gpa(self, gpa: int, size: int) -> bytes:
        return self._session.state("guest memory").read_gpa(gpa, size)

    def read_gva(self, gva: int, size: int, vcpu: int = 0) -> bytes:
        return self._session.state("guest memory").read_gva(gva, size, vcpu)

    def translate(self, gva: int, vcpu: int = 0) -> Any:
        return self._session.state("the guest's page tables").translate(gva, vcpu)

    def structure(self, vcpu: int = 0) -> Any:
        return self._session.state(f"the {self.hw.structure_name}").structure(vcpu)

    def structure_fields(self, vcpu: int = 0) -> list[tuple[str, str, int, int]]:
        return self._session.state(f"the {self.hw.structure_name}").structure_fields(vcpu)

    def code_bits(self, vcpu: int = 0) -> tuple[int, int]:
        return self._session.state("the code segment").code_bits(vcpu)

    @property
    def host(self) -> Any:
        return self._session.state("host memory").host

    @property
    def mem(self) -> Any:
        return self._session.state("guest memory").mem

    @property
    def slat(self) -> Any:
        return self._session.state(f"the {'EPT' if self.vendor == 'intel' else 'NPT'}").slat

    def send_serial(self, data: bytes) -> None:
        raise NotInTrace("a replay runs nothing: the guest cannot take input")


@dataclass
class ReplaySession:
    """A trace under the debugger: a position (the selected exit) and the state there."""

    trace: Trace
    vcpu: int = 0
    position: int | None = None
    regs: dict[str, int] = field(default_factory=dict)
    prev_regs: dict[str, int] = field(default_factory=dict)
    fields: dict[str, int] = field(default_factory=dict)
    prev_fields: dict[str, int] = field(default_factory=dict)
    filter_text: str = ""
    break_filters: list[tuple[int, str]] = field(default_factory=list)
    replay: bool = True

    #: Exits a re-run may take inline even in the TUI (a few milliseconds): no "re-running…" flash.
    INLINE_RERUN = 2000

    def __post_init__(self) -> None:
        self.machine = ReplayMachine(self.trace, self)
        self.rerun = Rerun(self.trace)
        #: The TUI re-runs in a worker (`seek_state`) and the panes wait; else `state` re-runs inline.
        self.rerun_in_background = False
        self._state_error: tuple[int, EngineError] | None = None  # why the state at an exit is not there
        self._seeking = threading.Lock()  # one re-run at a time: the TUI's worker or an inline one
        self._fields_at: tuple[int | None, int] | None = None  # (position, vcpu) of `fields`
        self.last_stop = self.machine.stop
        self.exit_breaks: list[Any] = []
        self.address_breaks: dict[int, int] = {}
        self._rows = ExitRows(self.machine.exits, self.machine.hw.decode, self.machine.vendor)
        self._plans: dict[str, FilterPlan | None] = {}
        self._next_break = 1
        if len(self) and self.position is None:
            try:
                self.goto(0)
            except CommandError as e:  # the trace cannot even show its first exit
                raise TraceError(str(e)) from None

    @classmethod
    def open(cls, path: str) -> ReplaySession:
        from engine.trace import open_trace

        return cls(open_trace(path))

    def __len__(self) -> int:
        return len(self.machine.exits)

    # -- moving --------------------------------------------------------------------

    def goto(self, seq: int) -> int:
        """Select exit `seq`: the registers there, diffed against the vCPU's exit before it."""
        n = len(self)
        if not 0 <= seq < n:
            raise CommandError(f"no exit {seq} (the trace has {n:,}: 0 to {n - 1:,})" if n else
                               "the trace has no exits")
        try:
            regs = self.trace.registers(seq)
            before = self.trace.previous_of_vcpu(seq)
            prev = self.trace.registers(before) if before is not None else regs
        except TraceError as e:
            raise CommandError(str(e)) from None
        self.position = seq
        self.vcpu = self.machine.exits.vcpu[seq]
        self.regs, self.prev_regs = regs, prev
        return seq

    def goto_time(self, time: int) -> int:
        """Select the first exit at or after virtual time `time` (the last exit if none)."""
        seq = self.machine.exits.seq_at_time(time)
        return self.goto(min(seq, len(self) - 1))

    def _plan(self, text: str) -> FilterPlan | None:
        if text not in self._plans:
            self._plans[text] = FilterPlan.compile(text)
        return self._plans[text]

    def _matching(self, plans: list[FilterPlan | None], forward: bool, start: int) -> int | None:
        """The nearest exit from `start` (inclusive) in the direction that passes any plan."""
        n = len(self)
        if any(p is None for p in plans):
            return start if 0 <= start < n else None
        step = 65536
        if forward:
            lo = start
            while lo < n:
                hi = min(n, lo + step)
                found = [seqs[0] for p in plans if (seqs := p.select(self._rows, lo, hi)) is not None and len(seqs)]
                if found:
                    return min(found)
                lo = hi
        else:
            hi = start + 1
            while hi > 0:
                lo = max(0, hi - step)
                found = [seqs[-1] for p in plans if (seqs := p.select(self._rows, lo, hi)) is not None and len(seqs)]
                if found:
                    return max(found)
                hi = lo
        return None

    def step(self, count: int) -> int:
        """Move `count` exits forward (negative: backward) among those the filter shows."""
        if self.position is None:
            raise CommandError("the trace has no exits")
        plan = self._plan(self.filter_text)
        seq = self.position
        for _ in range(abs(count)):
            nxt = self._matching([plan], count > 0, seq + (1 if count > 0 else -1))
            if nxt is None:
                if seq == self.position:
                    where = "last" if count > 0 else "first"
                    raise CommandError(f"already at the {where} exit" + (f" the filter shows ({self.filter_text})"
                                                                       if self.filter_text else ""))
                break
            seq = nxt
        return self.goto(seq)

    def continue_(self, forward: bool) -> int:
        """To the next (previous) exit matching an exit breakpoint, or the last (first) exit."""
        if self.position is None:
            raise CommandError("the trace has no exits")
        plans = [self._plan(text) for _n, text in self.break_filters]
        start = self.position + (1 if forward else -1)
        seq = self._matching(plans, forward, start) if plans else None
        if seq is None:
            seq = len(self) - 1 if forward else 0
        return self.goto(seq)

    # -- the state the trace does not hold: from the re-run ----------------------------

    def state(self, what: str) -> Machine:
        """The guest re-run to the selected exit (see `engine.trace.rerun`); NotInTrace,
        naming `what` was asked for, when it cannot get there."""
        pos = self.position
        if pos is None:
            raise NotInTrace(f"{what}: the trace has no exits")
        if self.rerun.position == pos and self.rerun.machine is not None:
            return self.rerun.machine
        if self._state_error is not None and self._state_error[0] == pos:
            raise self._failed(what, self._state_error[1])
        if not self.rerun_in_background:
            return self.seek_state(pos, what)
        # The TUI: a worker re-runs; a short way is taken here, unless the worker is busy.
        if self.rerun.cost(pos) <= self.INLINE_RERUN and self._seeking.acquire(blocking=False):
            try:
                return self._seek(pos, what)
            except RerunCancelled:
                pass  # a cancel meant for the worker's last run: the worker goes on from here
            finally:
                self._seeking.release()
        raise RerunPending(f"{what} at exit {pos:,}: re-running the guest to it…")

    def needs_rerun(self) -> bool:
        """Whether the state at the selected exit is neither there nor known to be out of reach."""
        pos = self.position
        return (pos is not None and self.rerun.position != pos
                and (self._state_error is None or self._state_error[0] != pos))

    def seek_state(self, seq: int, what: str = "the state") -> Machine:
        """Re-run the guest to exit `seq` now (the caller's thread); NotInTrace if it cannot."""
        with self._seeking:
            return self._seek(seq, what)

    def _seek(self, seq: int, what: str) -> Machine:
        try:
            return self.rerun.seek(seq)
        except EngineError as e:
            self._state_error = (seq, e)
            raise self._failed(what, e) from None

    def _failed(self, what: str, error: EngineError) -> NotInTrace:
        return NotInTrace(f"{what} at exit {self.position:,} comes from re-running the guest, which failed: {error}")

    # -- what the panes ask ----------------------------------------------------------

    def changed_registers(self) -> set[str]:
        return {k for k, v in self.regs.items() if self.prev_regs.get(k) != v}

    def changed_fields(self) -> set[str]:
        """VMCS / VMCB fields that differ from the exit shown before this one (the re-run's)."""
        try:
            machine = self.state("the VMCS / VMCB")
        except NotInTrace:
            return set()
        key = (self.position, self.vcpu)
        if key != self._fields_at:
            fields = {name: value for _g, name, _e, value in machine.structure_fields(self.vcpu)}
            self.prev_fields, self.fields, self._fields_at = self.fields or fields, fields, key
        return {k for k, v in self.fields.items() if self.prev_fields.get(k) != v}

    def mark_stop(self, stop: Stop | None) -> None:
        """Nothing runs in a replay (Session compatibility)."""


# -- views --------------------------------------------------------------------------------

def _efer(session: ReplaySession) -> int | None:
    """EFER at the selected exit, from the re-run; None while it is not there."""
    try:
        return session.machine.registers(session.vcpu)["efer"]
    except NotInTrace:
        return None


def _mode(regs: dict[str, int], efer: int | None) -> str:
    cr0 = regs.get("cr0", 0)
    if not cr0 & 1:
        return "real"
    if cr0 >> 31 and regs.get("cr4", 0) & (1 << 5):
        if efer is None:
            return "protected + PAE paging, or long (EFER: not re-run yet)"
        return "long" if efer & (1 << 10) else "protected + PAE paging"  # EFER.LMA (SDM Vol. 3 2.2.1)
    return "protected" + (" + paging" if cr0 >> 31 else "")


def position_line(session: ReplaySession) -> Text:
    """Where the replay is: exit N of M, its name, RIP and time."""
    if session.position is None:
        return Text("replay: the trace has no exits", style="bold")
    seq = session.position
    e = session.machine.exits[seq]
    text = Text.assemble(("replay ", "bold magenta"), (f"exit {seq:,}", "bold"), f" of {len(session):,}: ",
                         (e.name, "bold"), f" at rip {e.rip:#x}, vCPU {e.vcpu}, time {e.time:,}")
    summary = exit_row_text(e, session.machine.vendor)
    if summary:
        text.append(f"  {summary}", style="dim")
    if session.filter_text:
        text.append(f"  [filter: {session.filter_text}]", style="dim")
    return text


def registers_view(session: ReplaySession, wide: bool = True) -> RenderableType:
    """The registers at the selected exit (as the guest left them when the exit was taken);
    changes since the vCPU's previous exit highlighted."""
    regs = session.regs
    if session.position is None:
        return Text("the trace has no exits", style="dim")
    changed = session.changed_registers()
    efer = _efer(session)

    def value(name: str, width: int = 16) -> Text:
        return Text(f"{regs.get(name, 0):0{width}x}", style=CHANGED if name in changed else "")

    head = Text.assemble(("vCPU ", "dim"), (str(session.vcpu), "bold"), ("  at exit ", "dim"),
                         (f"{session.position:,}", "bold"), ("  mode ", "dim"), (_mode(regs, efer), "bold"))
    gpr = Table.grid(padding=(0, 1))
    cols = 2 if wide else 1
    for _ in range(cols):
        gpr.add_column(style="cyan", justify="right")
        gpr.add_column()
    names = list(GPRS) + ["rip", "rflags"]
    for i in range(0, len(names), cols):
        row: list[Text | str] = []
        for name in names[i:i + cols]:
            row += [name, value(name)]
        gpr.add_row(*row)
    flags = Text(f"  {bits(regs.get('rflags', 0), RFLAGS_BITS)}  IOPL={(regs.get('rflags', 0) >> 12) & 3}",
                 style="dim")
    segs = Table.grid(padding=(0, 1))
    for _ in range(3):
        segs.add_column(style="cyan", justify="right")
        segs.add_column()
    seg_names = ("cs", "ds", "es", "ss", "fs", "gs")
    for i in range(0, 6, 3):
        row = []
        for name in seg_names[i:i + 3]:
            row += [name, value(name, 4)]
        segs.add_row(*row)
    bases = Table.grid(padding=(0, 1))
    bases.add_column(style="cyan", justify="right")
    bases.add_column()
    bases.add_column(style="dim")
    for name, names_ in (("cr0", CR0_BITS), ("cr2", ()), ("cr3", ()), ("cr4", CR4_BITS), ("fs_base", ()),
                         ("gs_base", ())):
        bases.add_row(name, value(name), bits(regs.get(name, 0), names_))
    if efer is not None:
        bases.add_row("efer", Text(f"{efer:016x}"), bits(efer, EFER_BITS))
    note = Text("segment bases / limits / attributes, GDTR, IDTR: the VMCS / VMCB guest state (re-run)",
                style="dim italic")
    return Group(head, gpr, flags, segs, bases, note)


def info_view(session: ReplaySession) -> Table:
    """What the trace holds: its meta table, readably."""
    t = session.trace
    table = Table(box=None, show_header=False, title=f"trace {t.path}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    keys = ("format_version", "vmmtui_version", "created", "vendor", "vcpus", "mem_size", "page_size",
            "exit_options", "image_path", "image_sha256", "stop", "stop_status", "stop_message", "exits",
            "elapsed_s", "ok")
    for key in keys:
        if key in t.meta:
            table.add_row(key, str(t.meta[key]))
    try:
        carried = t.image()
    except TraceError as e:
        table.add_row("image", Text(str(e), style="yellow"))
    else:
        table.add_row("image", f"carried in the trace ({len(carried[1]):,} bytes): memory and the VMCS / VMCB at "
                               "an exit come from re-running it" if carried else
                      "not carried (an older trace): re-runs need the file at image_path")
    if not t.complete:
        table.add_row("note", Text("incomplete: the recorder did not close this trace (killed or crashed)",
                                   style="yellow"))
    return table


# -- commands -----------------------------------------------------------------------------

def _live_only(word: str) -> str | None:
    if word in _LIVE_ONLY:
        return f"{word}: not in a replay ({_LIVE_ONLY[word]})"
    return None


REPLAY = CommandTable({"goto": ["time ", "first", "last"], "break": ["exit "], "pane": list(PANES),
                       "theme": ["dark", "light"]}, refuse=_live_only)
REPLAY_COMMANDS = REPLAY.commands
_command, lookup, execute, complete = REPLAY.command, REPLAY.lookup, REPLAY.execute, REPLAY.complete


def _number(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""), 0)
    except ValueError:
        raise CommandError(f"not a number: {text!r}") from None


def _moved(session: ReplaySession) -> Outcome:
    return Outcome(position_line(session), ui=("goto", str(session.position)))


@_command("next", "next [N]", "go to the next exit (N exits on; only exits the filter shows)",
          aliases=("n", "step", "s", "si"))
def _next(session: ReplaySession, args: list[str]) -> Outcome:
    session.step(_number(args[0]) if args else 1)
    return _moved(session)


@_command("prev", "prev [N]", "go back to the previous exit (N exits back; only exits the filter shows)",
          aliases=("back", "previous", "N"))
def _prev(session: ReplaySession, args: list[str]) -> Outcome:
    session.step(-(_number(args[0]) if args else 1))
    return _moved(session)


@_command("goto", "goto N | goto time T | goto first|last", "go to exit N, or the first exit at or after "
          "virtual time T", aliases=("g", "jump"))
def _goto(session: ReplaySession, args: list[str]) -> Outcome:
    if not args:
        raise CommandError("goto where? (goto N, goto time T, goto first, goto last)")
    if args[0] == "time":
        if len(args) < 2:
            raise CommandError("goto time needs a virtual time (e.g. goto time 5000)")
        session.goto_time(_number(args[1]))
    elif args[0] in ("first", "start"):
        session.goto(0)
    elif args[0] in ("last", "end"):
        session.goto(len(session) - 1)
    else:
        session.goto(_number(args[0]))
    return _moved(session)


@_command("continue", "continue", "go to the next exit matching an exit breakpoint (or the last exit)",
          aliases=("c", "cont"))
def _continue(session: ReplaySession, args: list[str]) -> Outcome:
    session.continue_(forward=True)
    return _moved(session)


@_command("rcontinue", "rcontinue", "go back to the previous exit matching an exit breakpoint (or the first)",
          aliases=("rc", "reverse-continue"))
def _rcontinue(session: ReplaySession, args: list[str]) -> Outcome:
    session.continue_(forward=False)
    return _moved(session)


@_command("break", "break exit FILTER", "stop continue / rcontinue at exits matching FILTER "
          "(e.g. break exit io port=0x3f8)", aliases=("b",))
def _break(session: ReplaySession, args: list[str]) -> Outcome:
    if not args:
        return _breakpoints(session, args)
    if args[0] != "exit" or len(args) < 2:
        raise CommandError("a replay breaks on exits only: break exit FILTER (addresses need a live run)")
    text = " ".join(args[1:])
    plan = FilterPlan.compile(text)
    if plan is not None and plan.error:
        raise CommandError(f"not an exit filter: {plan.error}")
    n = session._next_break
    session._next_break += 1
    session.break_filters.append((n, text))
    return Outcome(Text(f"breakpoint {n}: on exits matching {text!r} (continue / rcontinue go there)"))


@_command("delete", "delete N | delete all", "delete an exit breakpoint", aliases=("d",))
def _delete(session: ReplaySession, args: list[str]) -> Outcome:
    if not args:
        raise CommandError("delete which breakpoint? (delete N or delete all)")
    if args[0] == "all":
        n = len(session.break_filters)
        session.break_filters.clear()
        return Outcome(Text(f"deleted {n} breakpoints"))
    number = _number(args[0])
    for item in session.break_filters:
        if item[0] == number:
            session.break_filters.remove(item)
            return Outcome(Text(f"deleted breakpoint {number}"))
    raise CommandError(f"no breakpoint {number}")


@_command("breakpoints", "breakpoints", "list the exit breakpoints", aliases=("bl",))
def _breakpoints(session: ReplaySession, args: list[str]) -> Outcome:
    if not session.break_filters:
        return Outcome(Text("no breakpoints", style="dim"))
    table = Table("#", "on exits matching", box=None, title="breakpoints", title_justify="left")
    for n, text in session.break_filters:
        table.add_row(str(n), text)
    return Outcome(table)


@_command("filter", "filter [FILTER]", "show only exits matching FILTER in the log; next / prev step "
          "through them; no argument clears it")
def _filter(session: ReplaySession, args: list[str]) -> Outcome:
    text = " ".join(args)
    session.filter_text = text
    return Outcome(Text(f"exit log filter: {text!r}" if text else "exit log filter cleared"), ui=("filter", text))


@_command("exit", "exit N", "go to exit N and show it in detail")
def _exit(session: ReplaySession, args: list[str]) -> Outcome:
    from .views.exit_log import exit_detail

    if not args:
        raise CommandError("exit which? (exit N, the seq from the exit log)")
    session.goto(_number(args[0]))
    return Outcome(exit_detail(session, session.position), ui=("goto", str(session.position)))  # type: ignore[arg-type]


@_command("exits", "exits [N] [FILTER]", "show the last N exits (default 20) up to here, optionally filtered")
def _exits(session: ReplaySession, args: list[str]) -> Outcome:
    last = 20
    if args and args[0].isdigit():
        last = int(args[0])
        args = args[1:]
    text = " ".join(args)
    plan = FilterPlan.compile(text)
    upto = (session.position or 0) + 1
    seqs = list(range(upto)) if plan is None else list(plan.select(session._rows, 0, upto) or [])
    table = Table(title=f"exits up to {upto - 1:,}" + (f" matching {text!r}" if text else ""), title_justify="left")
    for h in ("seq", "vcpu", "time", "name", "rip", "qualification"):
        table.add_column(h, no_wrap=True)
    for seq in seqs[-last:]:
        c = session._rows.cells(seq)
        table.add_row(c.seq, c.vcpu, c.time, c.name, c.rip, c.qualification)
    return Outcome(table)


@_command("regs", "regs", "show the registers at the selected exit", aliases=("registers", "r"))
def _regs(session: ReplaySession, args: list[str]) -> Outcome:
    return Outcome(registers_view(session), ui=("pane", "registers"))


@_command("console", "console", "show the console output up to the selected exit")
def _console(session: ReplaySession, args: list[str]) -> Outcome:
    return Outcome(console_view(session), ui=("pane", "console"))  # type: ignore[arg-type]


@_command("info", "info", "what the trace holds: configuration, image, how the run stopped")
def _info(session: ReplaySession, args: list[str]) -> Outcome:
    return Outcome(info_view(session))


@_command("pause", "pause", "(nothing runs in a replay)", aliases=("p",))
def _pause(session: ReplaySession, args: list[str]) -> Outcome:
    return Outcome(Text("nothing runs in a replay: next / prev / goto move through the trace", style="dim"))


@_command("help", "help [COMMAND]", "list the replay commands, or explain one", aliases=("h", "?"))
def _help(session: ReplaySession, args: list[str]) -> Outcome:
    return REPLAY.help(args, "replay commands")


# The screen commands read nothing of the session, and the views of memory, page
# tables and the VMCS / VMCB read the re-run machine (ReplayMachine): the live ones
# serve a replay too.
for _name in ("pane", "theme", "quit", "mem", "disasm", "translate", "pagetables", "vmcs"):
    REPLAY.add(COMMANDS[_name])


_LIVE_ONLY = {"send": "nothing runs: the guest cannot take input",
              "vcpu": "the panes show the vCPU of the selected exit; goto an exit of another vCPU"}


# -- the TUI --------------------------------------------------------------------------------

class ReplayRegistersPane(Pane):
    """The registers at the selected exit."""

    TITLE = "registers (replay)"

    def render_view(self, session):  # noqa: ANN001, ANN201
        return registers_view(session, wide=self.size.width >= 44 or self.size.width == 0)


class ReplayConsolePane(Pane):
    """The console output up to the selected exit (no input: nothing runs)."""

    TITLE = "console (replay)"

    def render_view(self, session):  # noqa: ANN001, ANN201
        view = console_view(session, lines=max(self.size.height, 10))
        self.scroll_end(animate=False)
        return view


_APP_CLASS: list[type] = []


def _replay_app_class() -> type:
    if _APP_CLASS:
        return _APP_CLASS[0]
    from .app import ExitDetailPane, VmmApp  # the app imports panes; import it only for the TUI
    from .widgets.exit_log import ExitLogView
    from .widgets.page_tables import PageTablesPane
    from .widgets.structure import StructurePane

    class ReplayApp(VmmApp):
        """The TUI on a trace: the live app with replay panes and replay commands."""

        BINDINGS = [*VmmApp.BINDINGS,
                    Binding("N", "command('prev')", "prev exit", id="prev"),
                    Binding("g", "prompt('goto ')", "goto", id="goto"),
                    Binding("C", "command('rcontinue')", "reverse-continue", show=False, id="rcontinue")]

        def __init__(self, session: ReplaySession) -> None:
            super().__init__(session.trace.path, session.machine.config, session=session)

        def compose(self):  # noqa: ANN201
            swap = {"registers": lambda: ReplayRegistersPane(id="registers"),
                    "console": lambda: ReplayConsolePane(id="console")}
            for widget in super().compose():
                make = swap.get(widget.id or "")
                yield make() if make is not None else widget

        def on_mount(self) -> None:
            self._rerunning = False
            self._rerun_target: int | None = None
            self._quitting = False
            self.session.rerun_in_background = True  # the re-run must not freeze the screen
            super().on_mount()
            session = self.session
            state = "" if session.trace.complete else " — incomplete trace"
            self.sub_title = f"replay of {session.trace.path.name} — {session.machine.vendor}{state}"
            if session.position is not None:
                self._select_exit(session.position)

        def run_line(self, line: str) -> None:
            try:
                outcome = execute(self.session, line)
            except CommandError as e:
                self.notify(str(e), title=line, severity="error")
                return
            self._apply(outcome)

        def on_key(self, event: Any) -> None:
            cmdline = self.query_one("#cmdline")
            if event.key == "tab" and cmdline.has_focus:
                options = complete(cmdline.value)
                if len(options) == 1:
                    cmdline.value = options[0] + ("" if options[0].endswith(" ") else " ")
                    cmdline.cursor_position = len(cmdline.value)
                elif options:
                    self._show_output(Text("  ".join(options), style="dim"))
                event.stop()
                event.prevent_default()

        def _ui_goto(self, seq: str) -> None:
            self._select_exit(int(seq))

        def _ui_select_exit(self, seq: str) -> None:
            self._select_exit(int(seq))

        def _refresh_panes(self) -> None:
            session = self.session
            self.query_one(ExitLogView).refresh_count()
            for pane in self.query(Pane):
                pane.refresh_from(session)
            self.query_one(StructurePane).refresh_from(session)
            self.query_one(PageTablesPane).refresh_from(session)
            self.query_one("#status").update(position_line(session))
            self._want_state()

        def _want_state(self) -> None:
            """Re-run the guest to the selected exit in a worker, unless it is there (or cannot be)."""
            session = self.session
            if self._rerunning:
                if session.position != self._rerun_target:
                    session.rerun.cancel()  # the worker takes the new position from where it stopped
                return
            if not session.needs_rerun():
                return
            self._rerunning = True
            self.run_worker(self._rerun_to_position, thread=True, group="rerun")

        def _rerun_to_position(self) -> None:
            session = self.session
            while not self._quitting:  # the user may move on while it runs: follow until it catches up
                target = self._rerun_target = session.position
                if target is None:
                    break
                try:
                    session.seek_state(target)
                except NotInTrace:
                    pass  # kept by the session; the panes say why
                except RerunCancelled:
                    continue
                if session.position == target:
                    break
            if not self._quitting:
                self.call_from_thread(self._rerun_done)

        def _ui_quit(self) -> None:
            self._quitting = True  # a re-run in progress stops at its next exit: quitting does not wait
            self.session.rerun.cancel()
            super()._ui_quit()

        def _rerun_done(self) -> None:
            self._rerunning = False
            self._refresh_panes()

        def _select_exit(self, seq: int, move_cursor: bool = True) -> None:
            session = self.session
            if seq != session.position:
                try:
                    session.goto(seq)
                except CommandError as e:
                    self.notify(str(e), severity="error")
                    return
            self.query_one(ExitDetailPane).seq = seq
            self._refresh_panes()
            if move_cursor:
                self.query_one(ExitLogView).show_seq(seq)

    _APP_CLASS.append(ReplayApp)
    return ReplayApp


def make_replay_app(trace: Trace | str) -> Any:
    """The replay TUI on `trace` (a Trace or a path), as the CLI and the tests build it."""
    from engine.trace import open_trace

    if not isinstance(trace, Trace):
        trace = open_trace(trace)
    return _replay_app_class()(ReplaySession(trace))
