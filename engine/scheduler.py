"""The vCPU scheduler: deterministic round-robin of the vCPUs on one host thread.

Virtual time is the number of guest instructions retired (by all vCPUs, since
they run one at a time), plus the stretches the machine skips while every vCPU
is halted and waits for a timer. A vCPU runs for a *turn* of at most `quantum`
instructions; the turn ends early when the vCPU halts or is sent INIT. Stops the
debugger asks for (a breakpoint, a step, an exit the user breaks on) pause the
turn without ending it, so the interleaving of the vCPUs, and with it every exit
and its time, is the same whether a run is stepped, broken or run straight.

The schedule is kept as slices: (vCPU, start, end, why) with `why` one of
`quantum` (the turn used its instructions), `halt` (HLT), `sipi` (INIT: waiting
for a start-up IPI), `exit` (the run ended on this vCPU: debug-exit port,
hypercall, shutdown, an error) or `running` (the slice is still open).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class RunState(str, Enum):
    """What a vCPU is doing (the SDM's activity states, plus "not started")."""

    ACTIVE = "active"
    HALTED = "halted"  # HLT: wakes on an interrupt it can take
    WAIT_SIPI = "wait-for-sipi"  # after INIT (and an AP before the BSP starts it)
    STOPPED = "stopped"  # HLT with interrupts disabled: only INIT wakes it


@dataclass(slots=True)
class Slice:
    """One turn of one vCPU on the host thread, in virtual time."""

    vcpu: int
    start: int
    end: int
    why: str = "running"

    def as_json(self) -> dict[str, int | str]:
        return {"vcpu": self.vcpu, "start": self.start, "end": self.end, "why": self.why}


class Scheduler:
    """Picks the vCPU to run and keeps the schedule."""

    def __init__(self, vcpus: int, quantum: int) -> None:
        if quantum < 1:
            raise ValueError("the quantum is at least one instruction")
        self.quantum = quantum
        self.states = [RunState.ACTIVE] + [RunState.WAIT_SIPI] * (vcpus - 1)
        self.retired = [0] * vcpus
        self.slices: list[Slice] = []
        self.current: int | None = None  # the vCPU of the last turn
        self._open_turn = False
        self._ending: str | None = None  # why the open turn ends at the next account()
        self._used = 0  # instructions of the open turn

    def runnable(self, vcpu: int) -> bool:
        return self.states[vcpu] is RunState.ACTIVE

    def pick(self, now: int) -> int | None:
        """The vCPU to run next (the open turn's, else the next active one after it)."""
        if self._open_turn and self.current is not None and self.runnable(self.current):
            return self.current
        n = len(self.states)
        start = 0 if self.current is None else self.current + 1
        for i in range(n):
            v = (start + i) % n
            if self.runnable(v):
                self._open(v, now)
                return v
        return None

    def budget(self) -> int:
        """Instructions left in the open turn."""
        return self.quantum - self._used

    def account(self, vcpu: int, retired: int, now: int) -> None:
        """vCPU `vcpu` retired `retired` instructions; virtual time is now `now`."""
        self.retired[vcpu] += retired
        self._used += retired
        if self.slices and self.slices[-1].vcpu == vcpu and self.slices[-1].why == "running":
            self.slices[-1].end = now
        if self._ending is not None:
            self.close(self._ending)
        elif self._used >= self.quantum and len(self.states) > 1:
            self.close("quantum")
        elif self._used >= self.quantum:
            self._used = 0  # alone: the turn goes on in the same slice

    def end_turn(self, why: str) -> None:
        """End the open turn when the running slice is accounted (halt, sipi)."""
        self._ending = why

    def close(self, why: str) -> None:
        """Close the open turn now (quantum, exit)."""
        if self.slices and self.slices[-1].why == "running":
            self.slices[-1].why = why
        self._used = 0
        self._open_turn = False
        self._ending = None

    def _open(self, vcpu: int, now: int) -> None:
        self.current = vcpu
        self._open_turn = True
        self._used = 0
        self.slices.append(Slice(vcpu, now, now))

    def as_json(self) -> list[dict[str, int | str]]:
        return [s.as_json() for s in self.slices]
