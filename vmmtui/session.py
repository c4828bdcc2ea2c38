"""A debugging session: the machine, the image, the selected vCPU, and what changed.

The session is what every pane and every command reads. It never touches the
machine while the engine runs in its worker (the app guarantees that); at each
stop `mark_stop()` records the state panes diff against (registers, VMCS / VMCB
fields), as gdb-dashboard's registers pane does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import MachineConfig
from engine.exitfilter import ExitFilter
from engine.loader import LoadedImage, load
from engine.machine import Machine, Stop


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
