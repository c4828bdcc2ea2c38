"""The machine as it was at a recorded exit, rebuilt by re-running the guest.

A trace keeps exits, registers and inputs, not memory. What a replay needs beyond
them (guest memory, the guest's page tables and the EPT / NPT, the VMCS / VMCB,
the code to disassemble) it gets from `Rerun`: the traced guest, run again on a
machine of the recorded configuration, fed the recorded inputs, stopped after
the VMM has handled the selected exit -- the state a live session stopped at
that exit shows. The engine is deterministic, so this is the recorded run; and
each exit the re-run takes is checked against the trace as `replay --verify`
does, so a re-run that differs (another vmmtui, a `--fast` trace) says where,
instead of showing a state the recorded run never had.

The image comes from the path named (`image=`), else the copy the trace carries
(table `image`, checked against its SHA-256), else the path the trace names.
Moving forward runs on from where the re-run stands; moving backward starts
again from launch.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..machine import Machine, StopReason
from .format import TraceError
from .guest import start
from .reader import Trace
from .verify import Divergence, _Checker


class RerunFailed(TraceError):
    """The re-run could not reach the selected exit as the trace recorded it."""

    title = "re-run differs"


class RerunCancelled(Exception):
    """`cancel()` stopped a seek on its way; the re-run stands at an earlier exit."""


class Rerun:
    """The traced run, re-executed on demand up to a selected exit (see the module)."""

    def __init__(self, trace: Trace, image: str | Path | None = None, timeout: float | None = None) -> None:
        self.trace = trace
        self._image = image
        self.first = int(trace.meta.get("first_seq") or 0)
        self.timeout = timeout if timeout is not None else max(60.0, 20 * float(trace.meta.get("elapsed_s") or 0))
        self.machine: Machine | None = None
        self.position: int | None = None  # the trace exit whose state the machine shows
        #: The last trace exit the machine has taken: `position`, or one after it when an
        #: exit's handling makes another in the same stop (an ICR write and its INIT's exit).
        self.reached = -1
        self.restarts = 0  # machines built (for figures and tests)
        self.exits_run = 0  # exits re-executed in all
        self.seconds = 0.0  # wall-clock time spent re-running
        self._checker: _Checker | None = None
        self._failure: tuple[int, RerunFailed] | None = None  # (first bad exit, why)
        self._cancelled = False  # cancel() was called during the running seek

    def cost(self, seq: int) -> int:
        """How many exits `seek(seq)` would re-execute."""
        return self.first + seq + 1 if self._must_restart(seq) else max(seq - self.reached, 0)

    def _must_restart(self, seq: int) -> bool:
        """Whether exit `seq` is behind the re-run (or there is none): only a new one gets there."""
        return (self.machine is None or self.position is None or seq < self.position
                or (seq < self.reached and seq != self.position))

    def seek(self, seq: int) -> Machine:
        """The machine stopped after the VMM handled trace exit `seq`. RerunFailed when
        the re-run cannot get there as recorded; ImageError / ImageChanged when the
        image is missing or not the traced one."""
        if not 0 <= seq < len(self.trace):
            raise RerunFailed(f"no exit {seq} in the trace")
        if self._failure is not None and seq >= self._failure[0]:
            raise self._failure[1]
        started = time.perf_counter()
        self._cancelled = False
        try:
            return self._seek(seq)
        finally:
            self.seconds += time.perf_counter() - started

    def _seek(self, seq: int) -> Machine:
        if self._must_restart(seq):
            self._restart()
        machine, checker = self.machine, self._checker
        assert machine is not None and checker is not None
        if seq > self.reached:
            if self._cancelled:  # while the machine was being built
                self.position = self.reached if self.reached >= 0 else None
                raise RerunCancelled(f"the re-run to exit {seq} was cancelled at exit {self.reached}")
            self.position = None  # running: no state to read until it stops
            before = len(machine.exits)
            stop = machine.run(max_exits=self.first + seq + 1, timeout=self.timeout)
            self.exits_run += len(machine.exits) - before
            if checker.error is not None:
                raise checker.error
            self.reached = len(machine.exits) - self.first - 1
            if checker.divergence is None and self.reached >= 0:
                checker.check(min(self.reached + 1, len(self.trace)))
            if checker.divergence is not None:
                self._fail(checker.divergence)
            if self.reached < seq and stop.reason is StopReason.PAUSE:
                # cancel(): the machine stopped after handling an earlier exit, a state as good as any.
                self.position = self.reached if self.reached >= 0 else None
                raise RerunCancelled(f"the re-run to exit {seq} was cancelled at exit {self.reached}")
            if self.reached < seq:
                how = ("timed out" if stop.reason is StopReason.TIMEOUT
                       else f"stopped ({stop.reason.value}: {stop.message})")
                self._fail(Divergence(max(self.reached + 1, 0), "exit", "an exit",
                                      f"none: the re-run {how} after {len(machine.exits)} exits"))
        self.position = seq
        return machine

    def cancel(self) -> None:
        """Stop a `seek` running in another thread as soon as it can (it raises
        RerunCancelled); safe to call at any time."""
        self._cancelled = True
        machine = self.machine
        if machine is not None and self.position is None:
            machine.pause()

    def _restart(self) -> None:
        machine, _loaded, _changed = start(self.trace, self._image, carried_first=True)
        checker = _Checker(self.trace, machine)
        machine.on_exit(checker)
        self.machine, self._checker, self.position, self.reached = machine, checker, None, -1
        self.restarts += 1

    def _fail(self, divergence: Divergence) -> None:
        seq = divergence.seq if divergence.seq is not None else len(self.trace)
        why = ""
        if self.trace.time_per_exit:
            why = (f" (the trace was recorded with the old time model, an exit costing {self.trace.time_per_exit} "
                   "ticks: its times cannot match a re-run)")
        elif self.trace.meta.get("fast"):
            why = " (a --fast trace is not exact)"
        failure = RerunFailed(f"re-running the guest differs from the trace at {divergence}{why}")
        self._failure = (seq, failure)
        self.machine, self._checker, self.position = None, None, None
        raise failure
