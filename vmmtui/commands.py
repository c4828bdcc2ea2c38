"""The debugger's commands: one parser for the `:` command line, the command palette
and `--script` files.

A command returns an `Outcome`: what it shows (a Rich renderable), engine work to
do (`run`: the TUI does it in its worker, a script does it in line), and an
optional UI action (switch pane, theme, quit) that headless runs report and skip.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from engine.errors import EngineError
from engine.exitfilter import parse as parse_filter
from engine.machine import Stop, StopReason

from .session import Session
from .views.console import console_view
from .views.disasm import disasm_view
from .views.memory import memory_view
from .views.registers import registers_view

PANES = ("registers", "vmcs", "exits", "detail", "pagetables", "disasm", "schedule", "console", "memory")


class CommandError(Exception):
    """A command that cannot be run as typed; the message is one line."""


@dataclass
class Outcome:
    """What a command produced."""

    output: Any = None  # a Rich renderable or None
    run: Callable[[], Stop] | None = None  # engine work
    ui: tuple[str, ...] = ()  # ("pane", name) / ("theme", name) / ("quit",) / ("filter", text) / ...


@dataclass(frozen=True)
class Command:
    """One command of the debugger."""

    name: str
    usage: str
    summary: str
    handler: Callable[[Session, list[str]], Outcome]
    aliases: tuple[str, ...] = field(default_factory=tuple)
    key: str = ""  # the key binding that does the same, if any


class CommandTable:
    """A set of commands, found by name, alias or unambiguous prefix: the live
    debugger has one (`LIVE`), a replay another (vmmtui.replay)."""

    def __init__(self, options: dict[str, list[str]], refuse: Callable[[str], str | None] | None = None) -> None:
        self.commands: dict[str, Command] = {}
        self._aliases: dict[str, str] = {}
        self._options = options  # what may follow a command, for completion
        self._refuse = refuse  # word -> why this table refuses it (None: it does not)

    def command(self, name: str, usage: str, summary: str, aliases: tuple[str, ...] = (),
                key: str = ""):  # noqa: ANN201
        """Register a command handler."""

        def register(fn: Callable[[Any, list[str]], Outcome]) -> Callable[[Any, list[str]], Outcome]:
            self.add(Command(name, usage, summary, fn, aliases, key))
            return fn

        return register

    def add(self, cmd: Command) -> None:
        """Register a command (also one shared with another table)."""
        self.commands[cmd.name] = cmd
        for alias in cmd.aliases:
            self._aliases[alias] = cmd.name

    def lookup(self, word: str) -> Command:
        """The command a word names."""
        word = word.lower()
        name = self._aliases.get(word, word)
        if name in self.commands:
            return self.commands[name]
        reason = self._refuse(name) if self._refuse is not None else None
        if reason:
            raise CommandError(reason)
        matches = [n for n in self.commands if n.startswith(word)]
        if len(matches) == 1:
            return self.commands[matches[0]]
        if matches:
            raise CommandError(f"{word!r} is ambiguous: {', '.join(sorted(matches))}")
        raise CommandError(f"unknown command {word!r} (type help)")

    def execute(self, session: Any, line: str) -> Outcome:
        """Parse and run one command line."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise CommandError(f"cannot parse {line!r}: {e}") from None
        if not words:
            return Outcome()
        cmd = self.lookup(words[0])
        try:
            return cmd.handler(session, words[1:])
        except EngineError as e:
            raise CommandError(str(e)) from None

    def complete(self, prefix: str) -> list[str]:
        """Completions of a partly typed command line."""
        words = prefix.split()
        if len(words) <= 1 and not prefix.endswith(" "):
            stem = words[0].lower() if words else ""
            return sorted(n for n in self.commands if n.startswith(stem))
        try:
            head = self.lookup(words[0]).name
        except CommandError:
            return []
        rest = prefix.split(maxsplit=1)[1] if len(prefix.split(maxsplit=1)) > 1 else ""
        return [f"{words[0]} {o}" for o in self._options.get(head, []) if o.startswith(rest)]

    def help(self, args: list[str], title: str) -> Outcome:
        """`help`: every command in a table, or one explained."""
        if args:
            cmd = self.lookup(args[0])
            aliases = f"  (also: {', '.join(cmd.aliases)})" if cmd.aliases else ""
            key = f"  key: {cmd.key}" if cmd.key else ""
            return Outcome(Text(f"{cmd.usage}\n  {cmd.summary}{aliases}{key}"))
        table = Table("command", "what it does", box=None, title=title, title_justify="left")
        for cmd in self.commands.values():
            table.add_row(cmd.usage, cmd.summary)
        return Outcome(table)


LIVE = CommandTable({
    "break": ["exit ", "exit io ", "exit cpuid ", "exit msr ", "exit ept ", "exit cr ", "exit hlt "],
    "pane": list(PANES), "theme": ["dark", "light"], "mem": ["gpa ", "gva "], "record": ["off", "--force "],
})
COMMANDS = LIVE.commands
command, lookup, execute, complete = LIVE.command, LIVE.lookup, LIVE.execute, LIVE.complete


def number(text: str) -> int:
    """A number in decimal or 0x-hex."""
    try:
        return int(text, 0)
    except ValueError:
        raise CommandError(f"not a number: {text!r}") from None


def address(session: Session, text: str) -> int:
    """A linear address: a number, or SEG:OFF (real mode: SEG x 16 + OFF)."""
    if ":" in text:
        seg, _, off = text.partition(":")
        try:
            return (int(seg, 16) << 4) + int(off, 16)
        except ValueError:
            raise CommandError(f"not a SEG:OFF address: {text!r} (hex, e.g. 0000:7c00)") from None
    return number(text)


def describe_stop(session: Session, stop: Stop) -> Text:
    """One line saying why the guest stopped, with the exit if there is one."""
    text = Text(f"stopped: {stop.reason.value}", style="bold")
    if stop.status is not None:
        text.append(f" (status {stop.status})")
    if stop.exit_seq is not None and stop.exit_seq < len(session.machine.exits):
        from .views.exit_log import exit_row_text

        e = session.machine.exits[stop.exit_seq]
        text.append(f" — exit #{e.seq} {e.name} at rip {e.rip:#x}")
        summary = exit_row_text(e, session.machine.vendor)
        if summary:
            text.append(f" {summary}", style="dim")
        if stop.reason in (StopReason.SHUTDOWN, StopReason.ERROR) and stop.message:
            text.append(f" — {stop.message}")
    elif stop.message:
        text.append(f" — {stop.message}")
    text.append(f"  [rip {session.machine.registers(session.vcpu)['rip']:#x}, {len(session.machine.exits)} exits]",
                style="dim")
    return text


# -- running the guest -------------------------------------------------------------------

@command("step", "step [N]", "execute N guest instructions (default 1)", aliases=("s", "si"), key="s")
def _step(session: Session, args: list[str]) -> Outcome:
    n = number(args[0]) if args else 1
    if n < 1:
        raise CommandError("step takes a positive count")

    def run() -> Stop:
        stop = session.machine.step()
        for _ in range(n - 1):
            if stop.reason != StopReason.STEP:
                break
            stop = session.machine.step()
        return stop

    return Outcome(run=run)


@command("next", "next", "run to the next VM exit (taken and handled)", aliases=("n",), key="n")
def _next(session: Session, args: list[str]) -> Outcome:
    return Outcome(run=session.machine.run_to_exit)


@command("continue", "continue", "run until a breakpoint, a break on an exit, or the end", aliases=("c", "cont"),
         key="c")
def _continue(session: Session, args: list[str]) -> Outcome:
    return Outcome(run=session.machine.run)


@command("pause", "pause", "stop the running guest", aliases=("p",), key="p")
def _pause(session: Session, args: list[str]) -> Outcome:
    return Outcome(ui=("pause",))


# -- breakpoints ----------------------------------------------------------------------------

@command("break", "break ADDR | break SEG:OFF | break exit FILTER",
         "break at an address, or on exits (e.g. break exit io port=0x3f8 dir=out)", aliases=("b",))
def _break(session: Session, args: list[str]) -> Outcome:
    if not args:
        return _breakpoints(session, args)
    if args[0] == "exit":
        f = parse_filter(" ".join(args[1:]))
        n = session.add_exit_break(f)
        return Outcome(Text(f"breakpoint {n}: on exits matching {f.text!r}"))
    linear = address(session, args[0])
    n = session.add_address_break(linear)
    return Outcome(Text(f"breakpoint {n}: at {linear:#x}"))


@command("delete", "delete N | delete all", "delete a breakpoint", aliases=("d",))
def _delete(session: Session, args: list[str]) -> Outcome:
    if not args:
        raise CommandError("delete which breakpoint? (delete N or delete all)")
    if args[0] == "all":
        numbers = list(session.address_breaks) + [b.number for b in session.exit_breaks]
        for n in numbers:
            session.delete_break(n)
        return Outcome(Text(f"deleted {len(numbers)} breakpoints"))
    n = number(args[0])
    if not session.delete_break(n):
        raise CommandError(f"no breakpoint {n}")
    return Outcome(Text(f"deleted breakpoint {n}"))


@command("breakpoints", "breakpoints", "list breakpoints", aliases=("bl", "info"))
def _breakpoints(session: Session, args: list[str]) -> Outcome:
    table = Table("#", "kind", "where", box=None, title="breakpoints", title_justify="left")
    for n, linear in sorted(session.address_breaks.items()):
        table.add_row(str(n), "address", f"{linear:#x}")
    for b in session.exit_breaks:
        table.add_row(str(b.number), "exit", b.filter.text)
    if not table.row_count:
        return Outcome(Text("no breakpoints", style="dim"))
    return Outcome(table)


# -- looking ---------------------------------------------------------------------------------

@command("vcpu", "vcpu [N]", "choose the vCPU the panes show")
def _vcpu(session: Session, args: list[str]) -> Outcome:
    if args:
        n = number(args[0])
        if not 0 <= n < session.machine.config.vcpus:
            raise CommandError(f"no vCPU {n} (this machine has {session.machine.config.vcpus})")
        session.vcpu = n
        session.mark_stop(session.last_stop)
    return Outcome(Text(f"vCPU {session.vcpu} of {session.machine.config.vcpus}"), ui=("refresh",) if args else ())


@command("regs", "regs", "show the registers", aliases=("registers", "r"))
def _regs(session: Session, args: list[str]) -> Outcome:
    return Outcome(registers_view(session), ui=("pane", "registers"))


@command("vmcs", "vmcs [FILTER]", "show the VMCS (Intel) or VMCB (AMD), fields matching FILTER", aliases=("vmcb",))
def _vmcs(session: Session, args: list[str]) -> Outcome:
    from .views.structure import structure_view

    text = " ".join(args)
    return Outcome(structure_view(session, text), ui=("structure-filter", text))


@command("exits", "exits [N] [FILTER]", "show the last N exits (default 20), optionally filtered")
def _exits(session: Session, args: list[str]) -> Outcome:
    from .views.exit_log import exits_table

    last = 20
    if args and args[0].isdigit():
        last = int(args[0])
        args = args[1:]
    text = " ".join(args)
    return Outcome(exits_table(session, last=last, filter_text=text), ui=("filter", text))


@command("exit", "exit N", "show exit number N in detail")
def _exit(session: Session, args: list[str]) -> Outcome:
    from .views.exit_log import exit_detail

    if not args:
        raise CommandError("exit which? (exit N, the seq from the exit log)")
    n = number(args[0])
    if not 0 <= n < len(session.machine.exits):
        raise CommandError(f"no exit {n} (the log has {len(session.machine.exits)})")
    return Outcome(exit_detail(session, n), ui=("select-exit", str(n)))


@command("filter", "filter [FILTER]", "filter the exit log (e.g. filter msr write); no argument clears it")
def _filter(session: Session, args: list[str]) -> Outcome:
    text = " ".join(args)
    return Outcome(Text(f"exit log filter: {text!r}" if text else "exit log filter cleared"), ui=("filter", text))


@command("translate", "translate ADDR", "walk ADDR through the guest's tables and EPT/NPT, step by step",
         aliases=("t",))
def _translate(session: Session, args: list[str]) -> Outcome:
    from .views.page_tables import translate_view

    if not args:
        raise CommandError("translate which address?")
    gva = address(session, args[0])
    return Outcome(translate_view(session, gva), ui=("translate", str(gva)))


@command("pagetables", "pagetables", "show the guest's page tables and the EPT/NPT", aliases=("pt",))
def _pagetables(session: Session, args: list[str]) -> Outcome:
    from rich.console import Group

    from .views.page_tables import guest_tables_view, slat_view

    return Outcome(Group(guest_tables_view(session), slat_view(session)), ui=("pane", "pagetables"))


@command("disasm", "disasm [ADDR] [N]", "disassemble N instructions (default: around RIP)", aliases=("x", "u"))
def _disasm(session: Session, args: list[str]) -> Outcome:
    linear = address(session, args[0]) if args else None
    count = number(args[1]) if len(args) > 1 else 16
    return Outcome(disasm_view(session, linear, count), ui=("pane", "disasm"))


@command("mem", "mem [gpa|gva] ADDR [N]", "hex view of N bytes (default 256) of guest memory")
def _mem(session: Session, args: list[str]) -> Outcome:
    space = "gpa"
    if args and args[0] in ("gpa", "gva"):
        space, args = args[0], args[1:]
    if not args:
        raise CommandError("mem needs an address")
    addr = address(session, args[0])
    size = number(args[1]) if len(args) > 1 else 256
    if not 0 < size <= 1 << 16:
        raise CommandError("mem shows 1 to 65536 bytes")
    return Outcome(memory_view(session, addr, size, space), ui=("memory", space, str(addr), str(size)))


@command("console", "console", "show the guest's serial output")
def _console(session: Session, args: list[str]) -> Outcome:
    return Outcome(console_view(session), ui=("pane", "console"))


@command("send", "send TEXT", "type TEXT (and a newline) into the guest's serial port")
def _send(session: Session, args: list[str]) -> Outcome:
    data = (" ".join(args) + "\n").encode()
    session.machine.send_serial(data)
    return Outcome(Text(f"sent {len(data)} bytes to the UART"))


# -- recording -------------------------------------------------------------------------------------

def recording_status(session: Session) -> Text | None:
    """The status line's recording indicator (`● REC run-1.vmtrace 1,234 exits`), or None."""
    writer = getattr(session, "recorder", None)
    if writer is None:
        return None
    text = Text("● REC", style="bold red")
    text.append(f" {writer.path.name} {writer.exits:,} exit{'' if writer.exits == 1 else 's'}", style="red")
    return text


@command("record", "record [--force] [FILE] | record off",
         "record the exit trace from the next exit on into FILE (default IMAGE-N.vmtrace); "
         "record again, or record off, stops", key="r")
def _record(session: Session, args: list[str]) -> Outcome:
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) > 1:
        raise CommandError("record takes one FILE (quote a name with spaces), or off")
    if args and args[0] == "off" or not args and session.recording and not force:
        if not session.recording:
            raise CommandError("not recording (record [FILE] starts)")
        info = session.stop_recording()
        n, first = info["exits"], info["first_seq"]
        text = Text("recording stopped: ", style="bold")
        text.append(f"{info['path']} holds {n:,} exit{'' if n == 1 else 's'}")
        if n and first:
            text.append(f" (this session's exits #{first}–#{first + n - 1}, numbered 0–{n - 1} in the trace)",
                        style="dim")
        text.append(f", {info['bytes']:,} bytes", style="dim")
        return Outcome(text, ui=("recording",))
    writer = session.start_recording(args[0] if args else None, force=force)
    first = writer.first_seq
    text = Text("● recording", style="bold red")
    text.append(f" to {writer.path} from {'the first exit' if not first else f'exit #{first}'} on")
    text.append(" (r or record off stops; the trace numbers its exits from 0)" if first
                else " (r or record off stops)", style="dim")
    return Outcome(text, ui=("recording",))


# -- the screen ----------------------------------------------------------------------------------

@command("pane", "pane NAME", f"show a pane ({', '.join(PANES)})")
def _pane(session: Session, args: list[str]) -> Outcome:
    if not args or args[0] not in PANES:
        raise CommandError(f"pane is one of: {', '.join(PANES)}")
    return Outcome(ui=("pane", args[0]))


@command("theme", "theme dark|light", "switch between the dark and light themes")
def _theme(session: Session, args: list[str]) -> Outcome:
    if not args or args[0] not in ("dark", "light"):
        raise CommandError("theme dark or theme light")
    return Outcome(ui=("theme", args[0]))


@command("help", "help [COMMAND]", "list the commands, or explain one", aliases=("h", "?"))
def _help(session: Session, args: list[str]) -> Outcome:
    return LIVE.help(args, "commands")


@command("quit", "quit", "leave vmmtui", aliases=("q",))
def _quit(session: Session, args: list[str]) -> Outcome:
    return Outcome(ui=("quit",))
