"""A debugging session: the machine, the image, the selected vCPU, and what changed.

The session is what every pane and every command reads. It never touches the
machine while the engine runs in its worker (the app guarantees that); at each
stop `mark_stop()` records the state panes diff against (registers, VMCS / VMCB
fields), as gdb-dashboard's registers pane does.

The session also owns the record toggle (`start_recording` / `stop_recording`):
an `engine.trace.TraceWriter` attached while the machine is stopped, from the
next exit on (docs/trace-format.md, "A trace started mid-run"). So that such a
trace can be re-run from launch, the session notes every input fed to the guest
from the start (`inputs`), whether or not a recording is on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import MachineConfig
from engine.exitfilter import ExitFilter
from engine.loader import LoadedImage, load
from engine.machine import Machine, Stop, StopReason
from engine.trace import TraceError, TraceWriter

#: The suffix of trace files.
TRACE_SUFFIX = ".vmtrace"


@dataclass
class ExitBreak:
    """A breakpoint on exits: its number and filter."""

    number: int
    filter: ExitFilter


@dataclass
class Session:
    """The machine under the debugger and the debugger's own state."""

    machine: Machine
    image: LoadedImage
    vcpu: int = 0
    last_stop: Stop | None = None
    exit_breaks: list[ExitBreak] = field(default_factory=list)
    address_breaks: dict[int, int] = field(default_factory=dict)  # number -> linear address
    _next_break: int = 1
    # State at the previous stop and at the current one, for "what changed".
    prev_regs: dict[str, int] = field(default_factory=dict)
    regs: dict[str, int] = field(default_factory=dict)
    prev_fields: dict[str, int] = field(default_factory=dict)
    fields: dict[str, int] = field(default_factory=dict)
    # The record toggle: the recorder while one is on, every input since launch
    # (virtual time, kind, data), and why a recording ended on its own, if it did.
    recorder: TraceWriter | None = None
    inputs: list[tuple[int, str, bytes]] = field(default_factory=list)
    recording_failure: str | None = None
    _forwarding: bool = False

    def __post_init__(self) -> None:
        # Every way of typing to the guest (the `send` command, the console pane's
        # typing mode) goes through `machine.send_serial`: note each input there, at
        # the virtual time it was fed, for the record toggle.
        feed = self.machine.send_serial

        def send_serial(data: bytes) -> None:
            feed(data)
            self._note_input("serial", bytes(data))

        self.machine.send_serial = send_serial  # type: ignore[method-assign]

    @classmethod
    def open(cls, image: str, config: MachineConfig) -> Session:
        """Build the machine and load the image (raises EngineError for bad input)."""
        machine = Machine(config)
        loaded = load(machine, image)
        session = cls(machine, loaded)
        session.mark_stop(None)
        return session

    def mark_stop(self, stop: Stop | None) -> None:
        """Record the state at a stop (the engine is not running)."""
        self.last_stop = stop
        self.prev_regs, self.regs = self.regs, self.machine.registers(self.vcpu)
        rows = self.machine.hw.structure_fields(self.vcpu)
        self.prev_fields, self.fields = self.fields, {name: value for _g, name, _e, value in rows}
        if not self.prev_regs:
            self.prev_regs = dict(self.regs)
        if not self.prev_fields:
            self.prev_fields = dict(self.fields)

    def changed_registers(self) -> set[str]:
        """Registers whose value differs from the previous stop."""
        return {k for k, v in self.regs.items() if self.prev_regs.get(k) != v}

    def changed_fields(self) -> set[str]:
        """VMCS / VMCB fields whose value differs from the previous stop."""
        return {k for k, v in self.fields.items() if self.prev_fields.get(k) != v}

    def add_address_break(self, linear: int) -> int:
        """A breakpoint at a linear address; returns its number."""
        n = self._take_number()
        self.address_breaks[n] = linear
        self.machine.add_breakpoint(linear)
        return n

    def add_exit_break(self, f: ExitFilter) -> int:
        """A breakpoint on exits matching `f`; returns its number."""
        n = self._take_number()
        self.exit_breaks.append(ExitBreak(n, f))
        self.machine.exit_breaks.append(f.matches)
        return n

    def delete_break(self, number: int) -> bool:
        """Delete breakpoint `number`; False if there is none."""
        if number in self.address_breaks:
            self.machine.remove_breakpoint(self.address_breaks.pop(number))
            return True
        for b in self.exit_breaks:
            if b.number == number:
                self.exit_breaks.remove(b)
                self.machine.exit_breaks.remove(b.filter.matches)
                return True
        return False

    def _take_number(self) -> int:
        n = self._next_break
        self._next_break += 1
        return n

    # -- the record toggle -------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def default_trace_path(self, directory: str | Path = ".") -> Path:
        """`<image stem>-<N>.vmtrace` in `directory`, N the first number not taken."""
        stem = Path(self.image.path).stem
        n = 1
        while True:
            path = Path(directory) / f"{stem}-{n}{TRACE_SUFFIX}"
            if not any(Path(str(path) + s).exists() for s in ("", "-wal", "-journal")):
                return path
            n += 1

    def start_recording(self, path: str | Path | None = None, force: bool = False) -> TraceWriter:
        """Record the exits from the next one on into `path` (default: `default_trace_path()`).
        The machine must be stopped. Raises TraceError (one line) and changes nothing
        when the file cannot be written."""
        if self.recorder is not None:
            raise TraceError(f"already recording to {self.recorder.path} (record off stops)")
        if self.machine.stop is not None:
            raise TraceError(f"the guest has stopped ({self.machine.stop.reason.value}): there is nothing left "
                             "to record")
        target = Path(path).expanduser() if path is not None else self.default_trace_path()
        parent = target.parent
        if not parent.exists():
            raise TraceError(f"{target}: cannot record: no directory {parent}")
        if not parent.is_dir():
            raise TraceError(f"{target}: cannot record: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TraceError(f"{target}: cannot record: permission denied (cannot write in {parent})")
        if not self._forwarding:  # once: the recorders come and go, the listeners stay
            self.machine.on_exit(self._forward_exit)
            self.machine.on_serial(self._forward_serial)
            self._forwarding = True
        self.recorder = TraceWriter(target, self.machine, self.image, force=force, mid_run=True,
                                    prior_inputs=self.inputs, listen=False)
        self.recording_failure = None
        return self.recorder

    def stop_recording(self) -> dict[str, Any]:
        """Close the trace (the machine must be stopped); returns the writer's summary
        with `first_seq` (the session's number of the trace's exit 0) added. A trace
        that cannot be finished is abandoned (what was committed stays) and the
        TraceError is raised; the recording is off either way."""
        writer = self.recorder
        if writer is None:
            raise TraceError("not recording (record [FILE] starts)")
        self.recorder = None
        stop = self.last_stop if self.last_stop is not None else Stop(StopReason.PAUSE, message="recording stopped")
        try:
            summary = writer.close(stop)
        except TraceError:
            writer.abort()
            raise
        summary["first_seq"] = writer.first_seq
        return summary

    def check_recording(self) -> str | None:
        """After a run: if the recorder failed on the exit path (it then paused the
        run), turn the recording off and return why; else None."""
        writer = self.recorder
        if writer is None or writer.error is None:
            return None
        self.recorder = None
        writer.abort()
        self.recording_failure = (f"recording stopped: {writer.error} (the trace keeps the "
                                  f"{writer.exits:,} exits committed before it)")
        return self.recording_failure

    def _forward_exit(self, seq: int, vcpu: int, snapshot: tuple[int, ...]) -> None:
        writer = self.recorder
        if writer is not None:
            writer.on_exit(seq, vcpu, snapshot)

    def _forward_serial(self, data: bytes) -> None:
        writer = self.recorder
        if writer is not None:
            writer.on_serial(data)

    def _note_input(self, kind: str, data: bytes) -> None:
        self.inputs.append((self.machine.now(), kind, data))
        if self.recorder is not None:
            self.recorder.record_input(kind, data)
