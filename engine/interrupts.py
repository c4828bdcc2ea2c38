"""The machine's interrupt sources and how they reach the vCPUs, in virtual time.

A PC's legacy pair: the 8254 PIT's channel 0 raises IRQ 0 on the 8259A pair,
whose INTR output goes to the bootstrap processor (vCPU 0; the APIC's LINT0 in
virtual-wire mode). Every vCPU has its local APIC: its timer and the IPIs other
vCPUs send arrive there.

Virtual time is counted in guest instructions retired; the devices see it as
nanoseconds at a nominal 1 GHz, so the PIT's 1.193182 MHz input clock makes one
PIT period every 838.1 instructions, and the APIC timer's input clock is 1 GHz
before its divider.
"""

from __future__ import annotations

from .devices.lapic import LocalApic
from .devices.pic8259 import PicPair
from .devices.pit8254 import PIT_HZ, Pit8254

NS_PER_S = 1_000_000_000
PIC_SOURCE = -1  # `pending` names the PIC this way; APIC vectors are 0-255


class Interrupts:
    """The PIT, the PIC pair and the local APICs, kept at one virtual time."""

    def __init__(self, pic: PicPair, pit: Pit8254, lapics: list[LocalApic]) -> None:
        self.pic = pic
        self.pit = pit
        self.lapics = lapics
        self.now = 0
        self._pit_ticks = 0  # PIT input periods accounted for since time 0

    def advance(self, now: int) -> None:
        """Let virtual time reach `now`: timers count down and raise their interrupts."""
        if now <= self.now:
            return
        ticks = now * PIT_HZ // NS_PER_S - self._pit_ticks
        if ticks:
            self._pit_ticks += ticks
            if self.pit.advance(ticks):
                # An edge latches IRQ 0 once, however many passed (8259A edge mode).
                self.pic.raise_irq(0)
        for lapic in self.lapics:
            lapic.advance(now)
        self.now = now

    def deadline(self, wakeable: list[bool]) -> int | None:
        """The virtual time of the next timer interrupt that could wake a vCPU
        (`wakeable[i]`: vCPU i is halted and would take it), or None."""
        times = []
        if wakeable[0] and self.pit.armed and not self.pic.master.imr & 1:
            # The PIT counts `count` more periods to its next edge (Pit8254.advance).
            tick = self._pit_ticks + self.pit.count
            times.append(-(-tick * NS_PER_S // PIT_HZ))
        for i, lapic in enumerate(self.lapics):
            if wakeable[i]:
                t = lapic.next_deadline()
                if t is not None:
                    times.append(t)
        return max(min(times), self.now + 1) if times else None

    def next_timer(self) -> int | None:
        """The virtual time of the next timer event of any kind (to end a slice there)."""
        return self.deadline([True] * len(self.lapics))

    def pending(self, vcpu: int) -> int | None:
        """What vCPU `vcpu` would take if it could: PIC_SOURCE, an APIC vector, or None."""
        if vcpu == 0 and self.pic.has_interrupt():
            return PIC_SOURCE
        lapic = self.lapics[vcpu]
        return lapic.pending()

    def acknowledge(self, vcpu: int, source: int) -> int:
        """The CPU acknowledges `source` (from `pending`): the vector to deliver."""
        if source == PIC_SOURCE:
            return self.pic.acknowledge()
        return self.lapics[vcpu].acknowledge()
