"""Checking a trace by re-execution: `verify(trace, image)` runs the guest again with
the recorded configuration, feeds the recorded inputs at their virtual time, and
compares every exit with the trace as it is taken.

Per exit, in this order: reason, rip, length, info1, info2, vcpu, time, then every
register of the snapshot; aux1 and aux2 (operands the VMM completes while it
handles the exit, such as the value an IN returned) when the next exit arrives or
the run ends. The first difference stops the re-run (`Machine.pause`) and is the
result. After the last exit: the number of exits, how the run stopped, and the
console output.

Inputs: an input recorded at virtual time T entered the machine while it was
stopped at time T. Virtual time counts guest instructions and an exit takes none
of it: an exit's time is the instructions retired before its instruction, and a
stop after the exit lands at that time + 1 when the exiting instruction
completes (IN, OUT, CPUID, ...), at that time when it does not (an EPT violation
or NPF that is retried, an exception). So the stop was before the first exit
whose time is T or later, and the re-run feeds the input from that exit's
listener, before the VMM handles it: the same point in the guest's execution
(an exit right after the stop, with no instruction between, has time T). One
case stays ambiguous in the format: a stop after an exit that does not complete
its instruction has the time of that exit, which then gets the input before the
VMM handles it instead of after, one exit early; the guest sees no difference
unless the VMM's handling of that very exit reads the UART.

A trace recorded from the middle of a session (`meta.first_seq` = F > 0, the
TUI's record toggle) is checked from the start state too: the re-run takes the
session's first F exits unchecked (feeding the inputs recorded before the
recording started, whose times are <= 0), then compares exit F + k of the re-run
with the trace's exit k, times shifted by `meta.start_time`, and the console
output from byte `meta.start_serial_bytes` on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..machine import Machine, Stop, StopReason
from ..vcpu import SNAPSHOT_REGS
from .format import TraceError
from .guest import start
from .reader import Trace

_EARLY = ("reason", "rip", "length", "info1", "info2", "vcpu", "time")
_LATE = ("aux1", "aux2")
_DECIMAL = frozenset({"vcpu", "time", "length", "exits", "seq"})
#: Recorded stops after which the guest could have gone on (the trace is a prefix).
_OPEN_ENDED = frozenset({"max-exits", "timeout", "pause", "exit", "breakpoint", "step", None})


@dataclass(frozen=True)
class Divergence:
    """The first place where the re-run differs from the trace."""

    seq: int | None  # the exit; None for what is compared after the last exit
    field: str
    expected: Any
    got: Any
    recorded: str = ""  # the recorded exit, in words
    rerun: str = ""  # the re-run's exit at the same seq, in words

    def value_text(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value) if self.field in _DECIMAL else f"{value:#x}"
        return str(value)

    def __str__(self) -> str:
        where = f"exit {self.seq}" if self.seq is not None else "after the last exit"
        return (f"{where}: {self.field}: expected {self.value_text(self.expected)}, "
                f"got {self.value_text(self.got)}")


@dataclass
class VerifyResult:
    """What `verify` found."""

    trace_exits: int
    checked: int  # exits compared completely
    divergence: Divergence | None
    stop: Stop | None
    elapsed: float
    image: str
    image_sha256: str
    image_changed: bool
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.divergence is None

    def report(self) -> str:
        """The result for a person: one line when identical, a few when not."""
        if self.divergence is None:
            lines = [f"identical: {self.checked:,} exits match the trace (reason, rip, length, info1, info2, "
                     f"aux1, aux2, vcpu, time and {len(SNAPSHOT_REGS)} registers each)"]
        else:
            d = self.divergence
            lines = [f"diverged at {d}"]
            if d.recorded:
                lines.append(f"  recorded: {d.recorded}")
            if d.rerun:
                lines.append(f"  re-run:   {d.rerun}")
            lines.append(f"  {self.checked:,} of {self.trace_exits:,} exits matched before it")
        if self.image_changed:
            lines.append(f"  note: the image differs from the traced one (SHA-256 {self.image_sha256})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _describe(name: str, row: dict[str, int]) -> str:
    return (f"{name} at rip {row['rip']:#x} (vcpu {row['vcpu']}, time {row['time']}, length {row['length']}, "
            f"info1 {row['info1']:#x}, info2 {row['info2']:#x}, aux1 {row['aux1']:#x}, aux2 {row['aux2']:#x})")


class _Checker:
    """The exit listener of the re-run: it keeps each exit's snapshot and compares in
    blocks of `BLOCK` exits (column slices compare in C), so the first divergence
    is found exactly and the re-run stops at most a block after it."""

    BLOCK = 1024

    def __init__(self, trace: Trace, machine: Machine) -> None:
        self.trace = trace
        self.machine = machine
        self.expected = trace.exits
        self.n = len(self.expected)
        # A trace started mid-run: the re-run's exit F + k is the trace's exit k.
        self.first = int(trace.meta.get("first_seq") or 0)
        self.injected: list[tuple[int, int, int]] = []  # the re-run's (time, vcpu, vector), in trace time
        self.start_time = int(trace.meta.get("start_time") or 0)
        self.divergence: Divergence | None = None
        self.checked = 0  # exits [0, checked) compared completely
        self.ran_past_end = False
        self.error: Exception | None = None
        self._snaps: list[tuple[int, ...]] = []  # snapshots of exits checked.. onwards
        names = trace.register_names
        if tuple(names) == tuple(SNAPSHOT_REGS):
            self.reg_map: list[tuple[str, int, int]] | None = None
        else:  # a trace from an engine with other snapshot registers: compare the common ones
            self.reg_map = [(name, i, SNAPSHOT_REGS.index(name)) for i, name in enumerate(names)
                            if name in SNAPSHOT_REGS]
        self._chunks = trace.register_chunks()
        self._exp_regs: dict[int, tuple[int, ...]] = {}
        self._loaded_upto = 0  # every chunk starting below this has been read
        self.inputs = [(t + self.start_time, kind, data) for t, kind, data in trace.inputs()]
        for _t, kind, _d in self.inputs:
            if kind != "serial":
                raise TraceError(f"{trace.path}: input of kind {kind!r} is unknown to this vmmtui")
        self._next_input = 0
        self.open_ended = trace.meta.get("stop") in _OPEN_ENDED

    # -- helpers -------------------------------------------------------------------

    def _live_column(self, name: str, lo: int, hi: int) -> Any:
        """The re-run's column for the trace's exits [lo, hi), in the trace's time."""
        values = self.machine.exits.column(name)[lo + self.first:hi + self.first]
        if name == "time" and self.start_time:
            values = type(values)(values.typecode, [t - self.start_time for t in values])
        return values

    def _live_count(self) -> int:
        """The re-run's exits counted as the trace counts them (negative: not there yet)."""
        return len(self.machine.exits) - self.first

    def _live_name(self, seq: int) -> str:
        return self.machine.exits.name(seq + self.first)

    def _live_row(self, seq: int) -> dict[str, int]:
        return {name: self._live_column(name, seq, seq + 1)[0] for name in self.expected.COLUMNS}

    def _expected_row(self, seq: int) -> dict[str, int]:
        return dict(zip(self.expected.COLUMNS, self.expected.row(seq)))

    def _found(self, seq: int, name: str, expected: Any, got: Any) -> None:
        recorded = _describe(self.expected.name(seq), self._expected_row(seq)) if seq < self.n else ""
        rerun = _describe(self._live_name(seq), self._live_row(seq)) if seq < self._live_count() else ""
        self.divergence = Divergence(seq, name, expected, got, recorded, rerun)

    def _expected_registers(self, seq: int) -> tuple[int, ...]:
        while seq not in self._exp_regs:
            try:
                _vcpu, seqs, tuples = next(self._chunks)
            except StopIteration:
                raise TraceError(f"{self.trace.path}: damaged trace: no registers for exit {seq}") from None
            self._exp_regs.update(zip(seqs, tuples))
        return self._exp_regs.pop(seq)

    def _register_difference(self, expected: tuple[int, ...], got: tuple[int, ...]) -> tuple[str, int, int] | None:
        if self.reg_map is None:
            if expected == got:
                return None
            pairs = [(name, i, i) for i, name in enumerate(SNAPSHOT_REGS)]
        else:
            pairs = self.reg_map
        for name, ti, si in pairs:
            if expected[ti] != got[si]:
                return name, expected[ti], got[si]
        return None

    def check(self, hi: int) -> bool:
        """Compare exits [checked, hi) completely; False (and `divergence` set) at the first difference."""
        lo = self.checked
        if hi <= lo:
            return True
        first_bad = hi
        for name in self.expected.COLUMNS:
            exp, live = self.expected.column(name)[lo:hi], self._live_column(name, lo, hi)
            if exp != live:
                first_bad = min(first_bad, lo + next(i for i, (a, b) in enumerate(zip(exp, live)) if a != b))
        bad = first_bad
        for k, seq in enumerate(range(lo, first_bad)):
            diff = self._register_difference(self._expected_registers(seq), self._snaps[k])
            if diff is not None:  # the row itself matched: the registers are the difference
                self._found(seq, *diff)
                break
        else:
            if bad < hi:
                exp_row, live_row = self._expected_row(bad), self._live_row(bad)
                early = next((f for f in _EARLY if exp_row[f] != live_row[f]), None)
                diff = None
                if early is None:
                    diff = self._register_difference(self._expected_registers(bad), self._snaps[bad - lo])
                if early is not None:
                    self._found(bad, early, exp_row[early], live_row[early])
                elif diff is not None:
                    self._found(bad, *diff)
                else:
                    late = next(f for f in _LATE if exp_row[f] != live_row[f])
                    self._found(bad, late, exp_row[late], live_row[late])
        if self.divergence is not None:
            self.checked = self.divergence.seq or 0
            return False
        del self._snaps[:hi - lo]
        self.checked = hi
        return True

    # -- the listener ------------------------------------------------------------------

    def __call__(self, seq: int, vcpu: int, snapshot: tuple[int, ...]) -> None:
        # On the exit path, inside a Unicorn hook: an exception must not escape here
        # (ctypes would print it and carry on); keep it for `verify` to raise.
        if self.divergence is not None or self.ran_past_end or self.error is not None:
            return
        try:
            self._listen(seq, snapshot)
        except Exception as e:  # noqa: BLE001 - re-raised by verify() after the run
            self.error = e
            self.machine.pause()

    def _listen(self, seq: int, snapshot: tuple[int, ...]) -> None:
        if seq < self.first:  # before the recording started: only reach its first exit
            self._feed_inputs()
            return
        seq -= self.first
        if seq >= self.n:
            if not self.check(seq):  # everything before is complete now
                self.machine.pause()
            elif self.open_ended:
                self.ran_past_end = True  # the trace is a prefix of the run, and it all matched
                self.machine.pause()
            else:
                stop = self.trace.meta.get("stop")
                self.divergence = Divergence(seq, "exit", f"none (the recorded run stopped: {stop}, after "
                                             f"{self.n} exits)", self._live_name(seq),
                                             "", _describe(self._live_name(seq), self._live_row(seq)))
                self.machine.pause()
            return
        self._snaps.append(snapshot)
        self._feed_inputs()
        if seq - self.checked >= self.BLOCK and not self.check(seq):
            self.machine.pause()

    def _feed_inputs(self) -> None:
        now = self.machine.now()  # the exit's time (`machine.time` is the slice's start in a hook)
        while self._next_input < len(self.inputs) and self.inputs[self._next_input][0] <= now:
            _t, _kind, data = self.inputs[self._next_input]
            self.machine.send_serial(data)
            self._next_input += 1


def verify(trace: Trace, image: str | Path | None = None, *, allow_image_change: bool = False,
           timeout: float | None = None) -> VerifyResult:
    """Re-run the traced guest and compare; see the module docstring.

    `image` defaults to the image path stored in the trace, or, when that file is
    gone, the copy of the image the trace carries. An image whose SHA-256
    differs from the trace's raises `ImageChanged` naming both hashes, unless
    `allow_image_change` (then the comparison shows where the change shows).
    `timeout` bounds the re-run in seconds (default: 60 s or 20x the recorded
    run's time, whichever is longer).
    """
    machine, loaded, changed = start(trace, image, allow_image_change=allow_image_change)
    path = loaded.path
    checker = _Checker(trace, machine)
    machine.on_exit(checker)
    machine.on_inject(lambda time, vcpu, vector: checker.injected.append((time - checker.start_time, vcpu, vector)))
    if timeout is None:
        timeout = max(60.0, 20 * float(trace.meta.get("elapsed_s") or 0))
    started = time.perf_counter()
    stop = machine.run(timeout=timeout)
    elapsed = time.perf_counter() - started
    if checker.error is not None:
        raise checker.error
    result = VerifyResult(len(trace), checker.checked, checker.divergence, stop, elapsed, str(path),
                          loaded.sha256, changed)
    if checker.divergence is None and not checker.ran_past_end:
        _check_end(trace, machine, stop, checker, result)
    if checker.divergence is not None:
        checker.checked = checker.divergence.seq if checker.divergence.seq is not None else checker.checked
    if checker.first:
        if len(machine.exits) >= checker.first:
            result.notes.append(f"the trace was recorded from exit {checker.first} of a session: the re-run "
                                f"took exits 0 to {checker.first - 1} unchecked to reach it (trace exit k is "
                                f"the re-run's exit {checker.first} + k)")
        else:
            result.notes.append(f"the trace was recorded from exit {checker.first} of a session: the re-run "
                                f"ran its exits unchecked and never reached it")
    if checker.ran_past_end:
        end = f"ends after exit {len(trace) - 1}" if len(trace) else "has no exits"
        result.notes.append(f"the trace {end} (recorded stop: "
                            f"{trace.meta.get('stop') or 'none, the recorder was killed'}); the re-run "
                            "matched all of it")
    if not trace.complete:
        result.notes.append("the trace is incomplete (its recorder was killed): checked up to its last batch")
    if trace.time_per_exit and checker.divergence is not None:
        result.notes.append(f"the trace was recorded with the old time model (an exit cost {trace.time_per_exit} "
                            "ticks, instructions were not counted): its times cannot match a re-run")
    result.divergence = checker.divergence
    result.checked = checker.checked
    return result


def _check_end(trace: Trace, machine: Machine, stop: Stop, checker: _Checker, result: VerifyResult) -> None:
    """After the re-run stopped by itself: the exits left, the count, the stop, the console."""
    n = len(trace)
    live = checker._live_count()
    if live < 0:
        # Stopped before the session's exit F: the trace's exit 0 never came.
        how = ("timed out (--timeout sets the limit)" if stop.reason == StopReason.TIMEOUT
               else f"stopped ({stop.reason.value}: {stop.message})")
        recorded = _describe(trace.exits.name(0), checker._expected_row(0)) if n else ""
        checker.divergence = Divergence(
            0, "exit", f"the session's exit {checker.first}, where the recording started",
            f"none: the re-run {how} after {len(machine.exits)} exits, before reaching it", recorded)
        return
    if not checker.check(min(live, n)):
        return
    if live < n:
        if stop.reason == StopReason.TIMEOUT:
            checker.divergence = Divergence(live, "exit", "an exit", f"none: the re-run timed out after {live} "
                                            "exits (--timeout sets the limit)")
        else:
            checker.divergence = Divergence(
                live, "exit", _describe(trace.exits.name(live), checker._expected_row(live)),
                f"none: the re-run stopped ({stop.reason.value}: {stop.message}) after {live} exits")
        return
    if not trace.complete or checker.open_ended:
        return
    recorded_stop = trace.meta.get("stop")
    if recorded_stop != stop.reason.value:
        checker.divergence = Divergence(None, "stop", recorded_stop, stop.reason.value)
        return
    if trace.meta.get("stop_status") != stop.status:
        checker.divergence = Divergence(None, "stop status", trace.meta.get("stop_status"), stop.status)
        return
    recorded = trace.injections()
    if recorded:  # traces from before interrupts were modelled hold none: nothing to compare
        injected = [i for i in checker.injected if i[0] >= 0]
        for k, (want, got_one) in enumerate(zip(recorded, injected)):
            if want != got_one:
                checker.divergence = Divergence(None, f"injected interrupt {k} (time, vCPU, vector)", want, got_one)
                return
        if len(recorded) != len(injected):
            checker.divergence = Divergence(None, "injected interrupts", f"{len(recorded)}", f"{len(injected)}")
            return
    expected_serial = trace.serial()
    got = bytes(machine.serial)[int(trace.meta.get("start_serial_bytes") or 0):]
    if expected_serial != got:
        at = next((i for i, (a, b) in enumerate(zip(expected_serial, got)) if a != b),
                  min(len(expected_serial), len(got)))
        checker.divergence = Divergence(None, f"console output at byte {at}", expected_serial[at:at + 20],
                                        got[at:at + 20])
