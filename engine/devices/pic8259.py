"""The 8259A programmable interrupt controller pair of a PC (master at 0x20, slave at
0xA0, cascaded on the master's IRQ 2).

Programmed as the datasheet describes (Intel 8259A, "Initialization Command Words"
and "Operation Command Words"): ICW1 on the command port starts initialisation,
ICW2 (vector base), ICW3 (cascade) and ICW4 (if ICW1 asked for it) follow on the
data port; afterwards the data port is the interrupt mask (OCW1), and the command
port takes EOIs (OCW2) and the IRR / ISR read select (OCW3). Edge-triggered,
fixed priority (IRQ 0 highest), no special mask or rotation modes.
"""

from __future__ import annotations


class Pic8259:
    """One 8259A."""

    name = "pic8259"

    def __init__(self, vector_base: int = 0x08) -> None:
        self.irr = 0  # interrupt request register
        self.isr = 0  # in-service register
        self.imr = 0xFF  # all masked until the guest unmasks
        self.vector_base = vector_base
        self._init_step = 0  # 0: ready; 2, 3, 4: expecting that ICW
        self._needs_icw4 = False
        self._single = False
        self._read_isr = False
        self.cascade = 0

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.isr if self._read_isr else self.irr
        return self.imr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if value & 0x10:  # ICW1
                self._init_step = 2
                self._needs_icw4 = bool(value & 0x01)
                self._single = bool(value & 0x02)
                self.imr = 0
                self.isr = self.irr = 0
                self._read_isr = False
            elif value & 0x08:  # OCW3
                if value & 0x02:
                    self._read_isr = bool(value & 0x01)
            else:  # OCW2
                command = value >> 5
                if command == 1 and self.isr:  # non-specific EOI: the highest priority in service
                    self.isr &= self.isr - 1
                elif command == 3:  # specific EOI
                    self.isr &= ~(1 << (value & 7))
            return
        if self._init_step == 2:  # ICW2
            self.vector_base = value & 0xF8
            self._init_step = 4 if self._single else 3
            if self._init_step == 4 and not self._needs_icw4:
                self._init_step = 0
        elif self._init_step == 3:  # ICW3
            self.cascade = value
            self._init_step = 4 if self._needs_icw4 else 0
        elif self._init_step == 4:  # ICW4 (8086 mode assumed)
            self._init_step = 0
        else:  # OCW1
            self.imr = value

    def raise_irq(self, irq: int) -> None:
        """An edge on input `irq` (0-7)."""
        self.irr |= 1 << irq

    def pending(self) -> int | None:
        """The input that would be acknowledged next, if any (not masked, and of higher
        priority than anything in service)."""
        requests = self.irr & ~self.imr & 0xFF
        if not requests:
            return None
        irq = (requests & -requests).bit_length() - 1
        if self.isr and (self.isr & -self.isr).bit_length() - 1 <= irq:
            return None
        return irq

    def acknowledge(self) -> int:
        """INTA: move the pending request in service and return its vector."""
        irq = self.pending()
        assert irq is not None, "acknowledge without a pending interrupt"
        self.irr &= ~(1 << irq)
        self.isr |= 1 << irq
        return self.vector_base + irq


class PicPair:
    """The master and slave 8259A of a PC; the slave's output is the master's IRQ 2."""

    def __init__(self) -> None:
        self.master = Pic8259(0x08)
        self.slave = Pic8259(0x70)

    def raise_irq(self, irq: int) -> None:
        """An edge on ISA IRQ `irq` (0-15)."""
        if irq < 8:
            self.master.raise_irq(irq)
        else:
            self.slave.raise_irq(irq - 8)
            if self.slave.pending() is not None:
                self.master.raise_irq(2)

    def has_interrupt(self) -> bool:
        """Whether the pair asserts INTR to the CPU."""
        return self.master.pending() is not None

    def acknowledge(self) -> int:
        """The CPU's interrupt acknowledge: the vector to deliver."""
        if self.master.pending() == 2 and self.slave.pending() is not None:
            self.master.acknowledge()
            return self.slave.acknowledge()
        return self.master.acknowledge()
