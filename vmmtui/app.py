"""The Textual app: every pane, the command line, key bindings, and the engine worker.

The engine runs in a thread worker so the screen stays responsive while the guest
runs at full speed; `pause` stops it at once (Unicorn's emu_stop is safe from
another thread). Nothing reads the machine while the worker runs except the
append-only exit log and console (a timer polls them); every pane re-renders when
the engine stops.

Recording (`r`, `:record`): the session attaches a trace writer while the guest
is stopped; the status line shows `● REC FILE N exits` while it records, and
quitting the app (q, `:quit`, ctrl+q) stops the engine first, then closes the
trace, so its data is flushed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Container, Vertical
from textual.widgets import Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from engine.config import MachineConfig
from engine.errors import EngineError
from engine.machine import Stop

from .commands import COMMANDS, PANES, CommandError, Outcome, complete, describe_stop, execute, recording_status
from .session import Session
from .widgets.console import ConsolePane
from .widgets.disasm import DisasmPane
from .widgets.exit_log import ExitLogView
from .widgets.memory import MemoryPane
from .widgets.page_tables import PageTablesPane
from .widgets.pane import Pane
from .widgets.registers import RegistersPane
from .widgets.schedule import SchedulePane
from .widgets.structure import StructurePane

WIDE = (150, 40)  # at least this many columns and rows: every pane at once
# UI actions that show the command's result in a pane (no need for the output box).
_SHOWN_IN_A_PANE = frozenset({"pane", "filter", "translate", "memory", "select-exit", "structure-filter"})


class ExitDetailPane(Pane):
    """The exit selected in the exit log, in full, with the VMM's handling steps."""

    TITLE = "exit detail"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.seq: int | None = None

    def render_view(self, session: Session):  # noqa: ANN201
        from .views.exit_log import exit_detail

        if self.seq is None:
            if not len(session.machine.exits):
                return Text("no exits yet: press n to run to the first one", style="dim")
            self.seq = len(session.machine.exits) - 1
        return exit_detail(session, self.seq)


class CommandProvider(Provider):
    """The command palette: every debugger command, from the same table as `:`."""

    async def discover(self) -> Hits:
        app = self.app
        assert isinstance(app, VmmApp)
        for cmd in COMMANDS.values():
            yield DiscoveryHit(cmd.usage, lambda c=cmd.name: app.palette_command(c), help=cmd.summary)

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, VmmApp)
        matcher = self.matcher(query)
        for cmd in COMMANDS.values():
            score = matcher.match(f"{cmd.name} {cmd.summary}")
            if score > 0:
                yield Hit(score, matcher.highlight(cmd.usage), lambda c=cmd.name: app.palette_command(c),
                          help=cmd.summary)


class VmmApp(App):
    """vmmtui: the guest, its VMM and every exit, live."""

    CSS_PATH = "vmmtui.tcss"
    # The output box, the status line and the command line stack between the panes and
    # the footer: docked to the same edge, Textual draws them on top of each other and
    # of the footer (the status line and what is typed at ':' were hidden).
    CSS = """
    #bottom { height: auto; }
    #bottom > #output, #bottom > #status, #bottom > #cmdline { dock: none; }
    """
    TITLE = "vmmtui"
    COMMANDS = App.COMMANDS | {CommandProvider}
    BINDINGS = [
        Binding("s", "command('step')", "step", id="step"),
        Binding("n", "command('next')", "next exit", id="next"),
        Binding("c", "command('continue')", "continue", id="continue"),
        Binding("p", "command('pause')", "pause", id="pause"),
        Binding("b", "prompt('break ')", "break", id="break"),
        Binding("r", "command('record')", "record", id="record"),
        Binding("colon", "prompt('')", ":command", id="command-line"),
        Binding("slash", "prompt('filter ')", "filter", show=False, id="filter"),
        Binding("t", "toggle_theme", "theme", show=False, id="theme"),
        Binding("q", "command('quit')", "quit", id="quit"),
        *[Binding(str(i + 1), f"show_pane('{name}')", name, show=False, id=f"pane-{name}")
          for i, name in enumerate(PANES)],
        Binding("escape", "dismiss", "close", show=False),
    ]

    def __init__(self, guest: str | Path, config: MachineConfig | None = None, session: Any = None) -> None:
        super().__init__()
        self.guest = str(guest)
        self.config = config or MachineConfig()
        self.session: Session | None = session  # given: a replay (vmmtui.replay.ReplaySession)
        self.error: str | None = None
        if session is None:
            try:
                self.session = Session.open(self.guest, self.config)
            except EngineError as e:
                self.error = str(e)
        self.running = False
        self.active_pane = "exits"
        self._poll = None
        self._status = Text()  # the status line without the recording indicator
        self._engine_idle = threading.Event()  # set whenever the engine worker is not running
        self._engine_idle.set()
        self._engine_stop: Stop | None = None  # what the engine worker's last run returned

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Container(id="main"):
            yield RegistersPane(id="registers")
            yield StructurePane(id="vmcs")
            if self.session is not None:
                yield ExitLogView(self.session, id="exits")
            else:
                yield Static(id="exits")
            yield DisasmPane(id="disasm")
            yield PageTablesPane(id="pagetables")
            yield ExitDetailPane(id="detail")
            yield SchedulePane(id="schedule")
            yield ConsolePane(id="console")
            yield MemoryPane(id="memory")
        with Vertical(id="bottom"):
            yield Static(id="output")
            yield Static(id="status")
            yield Input(id="cmdline", placeholder=": command (help lists them, tab completes)",
                        select_on_focus=False, compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._apply_size()
        self.query_one("#output").display = False
        if self.session is None:
            self._fatal(self.error or "the guest could not be loaded")
            return
        vendor = "Intel VT-x (VMCS, EPT)" if self.config.vendor == "intel" else "AMD-V (VMCB, NPT)"
        self.sub_title = f"{Path(self.guest).name} — {vendor}"
        self._refresh_panes()
        self.query_one("#exits").focus()

    def on_resize(self) -> None:
        self._apply_size()

    def _apply_size(self) -> None:
        wide = self.size.width >= WIDE[0] and self.size.height >= WIDE[1]
        self.screen.set_class(wide, "wide")
        self.screen.set_class(not wide, "narrow")
        self._show_active()

    def _show_active(self) -> None:
        for name in PANES:
            widget = self.query_one(f"#{name}")
            widget.set_class(name == self.active_pane, "active")

    def _fatal(self, message: str) -> None:
        output = self.query_one("#output", Static)
        output.update(Text(f"vmmtui cannot run this guest:\n{message}\n\npress q to quit", style="bold red"))
        output.display = True
        self.query_one("#main").display = False
        self.notify(message, title="error", severity="error", timeout=30)

    # -- running commands -------------------------------------------------------------------

    def action_command(self, line: str) -> None:
        self.run_line(line)

    def action_prompt(self, text: str) -> None:
        cmdline = self.query_one("#cmdline", Input)
        cmdline.value = text
        cmdline.cursor_position = len(text)
        # Focus now, not after a refresh: keys typed right after ':' must land here.
        self.screen.set_focus(cmdline)

    def action_dismiss(self) -> None:
        self.query_one("#cmdline", Input).value = ""
        self.query_one("#output").display = False
        self.screen.set_focus(self.query_one(f"#{self.active_pane}"))

    def palette_command(self, name: str) -> None:
        cmd = COMMANDS[name]
        if " " in cmd.usage and not cmd.usage.split()[1].startswith("["):
            self.action_prompt(name + " ")
        else:
            self.run_line(name)

    @on(Input.Submitted, "#cmdline")
    def _submitted(self, event: Input.Submitted) -> None:
        line = event.value.strip()
        event.input.value = ""
        self.screen.set_focus(self.query_one(f"#{self.active_pane}"))
        if line:
            self.run_line(line)

    def on_key(self, event: Any) -> None:
        cmdline = self.query_one("#cmdline", Input)
        if event.key == "tab" and cmdline.has_focus:
            options = complete(cmdline.value)
            if len(options) == 1:
                cmdline.value = options[0] + ("" if options[0].endswith(" ") else " ")
                cmdline.cursor_position = len(cmdline.value)
            elif options:
                self._show_output(Text("  ".join(options), style="dim"))
            event.stop()
            event.prevent_default()

    def run_line(self, line: str) -> None:
        """Run one command line as typed at `:`."""
        if self.session is None:
            if line.strip() in ("q", "quit"):
                self.exit()
            return
        word = line.split()[0] if line.split() else ""
        if self.running and word not in ("p", "pause", "q", "quit", "help", "h", "theme", "pane", "filter"):
            self.notify("the guest is running: pause it first (p)", severity="warning")
            return
        try:
            outcome = execute(self.session, line)
        except CommandError as e:
            self.notify(str(e), title=line, severity="error")
            return
        self._apply(outcome)

    def _apply(self, outcome: Outcome) -> None:
        ui = outcome.ui
        if ui:
            handler: Callable[..., None] | None = getattr(self, f"_ui_{ui[0].replace('-', '_')}", None)
            if handler is not None:
                handler(*ui[1:])
        if outcome.output is not None and (not ui or ui[0] not in _SHOWN_IN_A_PANE):
            self._show_output(outcome.output)
        if outcome.run is not None:
            self._start(outcome.run)

    def _show_output(self, renderable: Any) -> None:
        output = self.query_one("#output", Static)
        output.update(renderable)
        output.display = True

    # UI actions named by commands.
    def _ui_pause(self) -> None:
        if self.session is not None and self.running:
            self.session.machine.pause()
        elif not self.running:
            self.notify("the guest is not running")

    def _ui_quit(self) -> None:
        message = self._end_recording_for_exit()
        if self.running and self.session is not None:
            self.session.machine.pause()
        self.exit(message=message)

    async def action_quit(self) -> None:
        """ctrl+q (Textual's own quit) takes the same way out as q."""
        self._ui_quit()

    def on_unmount(self) -> None:
        # The last line of defence: however the app ends, an open trace is closed.
        self._end_recording_for_exit()

    def _end_recording_for_exit(self) -> Text | None:
        """Stop the engine if it runs (a trace must not be closed under it), then close
        the trace; the line to print after the app ends, or None."""
        session = self.session
        if session is None or getattr(session, "recorder", None) is None:
            return None
        if self.running:
            session.machine.pause()
            if not self._engine_idle.wait(5):
                writer, session.recorder = session.recorder, None
                writer.abort()  # the engine would not stop: keep the committed batches
                return Text(f"vmmtui: {writer.path}: the engine did not stop; the trace keeps what was "
                            "committed (it is marked incomplete)")
            if self._engine_stop is not None:  # the trace says how the run stopped: paused by the quit
                session.mark_stop(self._engine_stop)
        try:
            info = session.stop_recording()
        except EngineError as e:
            return Text(f"vmmtui: {e}")
        return Text(f"vmmtui: trace {info['path']}: {info['exits']:,} exits")

    def _ui_recording(self) -> None:
        self._set_status(self._status)

    def _ui_refresh(self) -> None:
        """The panes show another vCPU (or other state) now."""
        self._refresh_panes()

    def _ui_pane(self, name: str) -> None:
        self.action_show_pane(name)

    def _ui_theme(self, name: str) -> None:
        self.theme = "textual-light" if name == "light" else "textual-dark"

    def _ui_filter(self, text: str) -> None:
        self.query_one(ExitLogView).set_filter(text)
        self.action_show_pane("exits")

    def _ui_structure_filter(self, text: str) -> None:
        self.query_one(StructurePane).set_filter(text)
        self.action_show_pane("vmcs")

    def _ui_translate(self, gva: str) -> None:
        assert self.session is not None
        self.query_one(PageTablesPane).show_translation(int(gva))
        self.action_show_pane("pagetables")

    def _ui_memory(self, space: str, address: str, size: str) -> None:
        pane = self.query_one(MemoryPane)
        pane.show(space, int(address), int(size))
        assert self.session is not None
        pane.refresh_from(self.session)
        self.action_show_pane("memory")

    def _ui_select_exit(self, seq: str) -> None:
        self._select_exit(int(seq))

    def action_show_pane(self, name: str) -> None:
        self.active_pane = name
        self._show_active()
        self.query_one(f"#{name}").focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The record key belongs to a live session (a replay has nothing to record).
        if action == "command" and parameters == ("record",) and not hasattr(self.session, "start_recording"):
            return False
        return True

    def action_toggle_theme(self) -> None:
        self._ui_theme("light" if self.theme == "textual-dark" else "dark")

    # -- the engine worker -------------------------------------------------------------------

    def _set_status(self, line: Text) -> None:
        """The status line: the recording indicator, if one is on, then `line`."""
        self._status = line
        indicator = recording_status(self.session) if self.session is not None else None
        if indicator is not None:
            line = Text.assemble(indicator, ("  │  ", "dim"), line)
        self.query_one("#status", Static).update(line)

    def _start(self, run: Callable[[], Stop]) -> None:
        self.running = True
        self._engine_idle.clear()
        self.query_one("#output").display = False
        self._set_status(Text("running… (p pauses)", style="bold green"))
        self.sub_title = self.sub_title.split(" — running")[0] + " — running"
        self._poll = self.set_interval(0.1, self._while_running)
        self._engine(run)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def _engine(self, run: Callable[[], Stop]) -> Stop:
        self._engine_stop = None
        try:
            self._engine_stop = run()
            return self._engine_stop
        finally:
            self._engine_idle.set()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "engine" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if self._poll is not None:
            self._poll.stop()
            self._poll = None
        self.running = False
        assert self.session is not None
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{type(error).__name__}: {error}", title="engine error", severity="error", timeout=15)
            self.session.mark_stop(None)
        else:
            stop = event.worker.result
            self.session.mark_stop(stop)
            line = describe_stop(self.session, stop)
            self._set_status(line)
            if stop.reason.value in ("error", "shutdown"):
                self.notify(line.plain, title="the guest stopped", severity="error", timeout=8)
        check = getattr(self.session, "check_recording", None)
        failure = check() if check is not None else None
        if failure is not None:
            self._set_status(self._status)
            self.notify(failure, title="recording", severity="error", timeout=15)
        self._refresh_panes()

    def _while_running(self) -> None:
        self.query_one(ExitLogView).refresh_count()
        if getattr(self.session, "recorder", None) is not None:
            self._set_status(self._status)

    def _refresh_panes(self) -> None:
        session = self.session
        assert session is not None
        base = self.sub_title.split(" — running")[0].split(" — stopped")[0]
        if session.last_stop is not None:
            base += f" — stopped: {session.last_stop.reason.value}"
        self.sub_title = base
        self.query_one(ExitLogView).refresh_count()
        for pane in self.query(Pane):
            pane.refresh_from(session)
        self.query_one(StructurePane).refresh_from(session)
        self.query_one(PageTablesPane).refresh_from(session)
        stop = session.last_stop
        if stop is not None and stop.exit_seq is not None:
            self._select_exit(stop.exit_seq)

    @on(ExitLogView.Selected)
    def _exit_selected(self, event: ExitLogView.Selected) -> None:
        self._select_exit(event.seq, move_cursor=False)

    def _select_exit(self, seq: int, move_cursor: bool = True) -> None:
        detail = self.query_one(ExitDetailPane)
        detail.seq = seq
        if self.session is not None:
            detail.refresh_from(self.session)
        if move_cursor:
            self.query_one(ExitLogView).show_seq(seq)


def make_app(guest: str | Path, config: MachineConfig | None = None) -> VmmApp:
    """The app, as the CLI and the tests build it."""
    return VmmApp(guest, config)
