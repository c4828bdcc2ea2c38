"""One vCPU's local APIC in xAPIC mode (the register page at 0xFEE00000).

Modelled (SDM Vol. 3, chapter "Advanced Programmable Interrupt Controller (APIC)"):

- The register page ("Local APIC Register Address Map"): ID, version, TPR, PPR,
  EOI, LDR, DFR, SVR, ISR, TMR, IRR, ESR, ICR, the six LVT entries (timer,
  thermal, performance counter, LINT0, LINT1, error), and the timer's initial
  count, current count and divide configuration.
- Fixed interrupts: `accept` sets the IRR bit, `pending` and `acknowledge` give
  the CPU the highest request above the processor priority, EOI retires the
  highest in-service vector ("Interrupt, Task, and Processor Priority").
- The APIC timer in one-shot and periodic mode, counting *virtual* nanoseconds:
  its input clock is 1 GHz divided by the divide configuration. Writing the
  initial count starts it at the time of the last `advance`; writing 0 stops it.
  A new divide configuration while counting keeps the count left and counts it
  down at the new rate from then on. A mode change while counting lets the
  running count finish under the new mode (reload if periodic, stop if one-shot).
- Error reporting ("Error Handling"): illegal vectors set ESR bits 5 or 6, a
  write to the ESR publishes the errors logged since the last write, and an
  unmasked LVT error entry raises its vector.
- Software enable and disable (SVR bit 8, "Local APIC State"): while disabled
  every LVT entry stays masked and no interrupt is offered to the CPU.
- IPIs: a write to the ICR low word hands an `Ipi` to the machine, which routes
  it (to this APIC too, for the self and all-including-self shorthands).

Not modelled: x2APIC (MSR access) and the TSC-deadline timer mode (CPUID does not
offer them; LVT timer bit 18 is not writable); the IA32_APIC_BASE global enable
and relocation; writes to the APIC ID (the SDM allows them; here the ID is the
vCPU's, fixed, so that the machine can route IPIs by it); logical destination mode (an IPI with ICR bit 11 set and no
shorthand is dropped, since its targets depend on every other APIC's LDR and
DFR); lowest-priority arbitration (the machine picks a target); NMI, SMI,
ExtINT and INIT delivery through the LVT; level-triggered interrupts (the TMR
reads 0, EOI broadcasts nothing); the thermal and performance-counter sources;
the arbitration priority (0x90) and remote read (0xC0) registers, which read 0;
ESR bit 7 (illegal register address).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

APIC_BASE = 0xFEE0_0000
APIC_SIZE = 0x1000
#: Version 0x14 with six LVT entries (max LVT index 5 in bits 23:16), as QEMU reports.
APIC_VERSION = 0x0005_0014

# Register offsets ("Local APIC Register Address Map").
ID = 0x20
VERSION = 0x30
TPR = 0x80
PPR = 0xA0
EOI = 0xB0
LDR = 0xD0
DFR = 0xE0
SVR = 0xF0
ISR = 0x100
TMR = 0x180
IRR = 0x200
ESR = 0x280
ICR_LOW = 0x300
ICR_HIGH = 0x310
LVT_TIMER = 0x320
LVT_THERMAL = 0x330
LVT_PERF = 0x340
LVT_LINT0 = 0x350
LVT_LINT1 = 0x360
LVT_ERROR = 0x370
TIMER_INITIAL = 0x380
TIMER_CURRENT = 0x390
TIMER_DIVIDE = 0x3E0

SVR_ENABLE = 1 << 8
LVT_MASKED = 1 << 16
LVT_PERIODIC = 1 << 17
#: ESR bits ("Error Handling"): an illegal vector (0-15) sent, or received.
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6

#: The bits software can write in each LVT entry ("Local Vector Table"): vector,
#: delivery mode (not timer or error), polarity and trigger mode (LINT only), mask,
#: and the timer's periodic bit. Delivery status and remote IRR are read-only.
_LVT_WRITABLE = {
    LVT_TIMER: 0x300FF,
    LVT_THERMAL: 0x107FF,
    LVT_PERF: 0x107FF,
    LVT_LINT0: 0x1A7FF,
    LVT_LINT1: 0x1A7FF,
    LVT_ERROR: 0x100FF,
}
_ICR_LOW_WRITABLE = 0x000C_CFFF  # bits 11:0, 15:14, 19:18; bit 12 (delivery status) reads 0
_DELIVERY_MODES = {0: "fixed", 1: "lowest", 2: "smi", 4: "nmi", 5: "init", 6: "startup"}


@dataclass(frozen=True, slots=True)
class Ipi:
    """An interrupt command the guest wrote to the ICR."""

    source: int  # APIC ID of the sender
    mode: str  # "fixed", "lowest", "smi", "nmi", "init", "startup", "init-deassert"
    vector: int  # bits 7:0
    destination: int  # ICR high bits 31:24 (physical APIC ID; 0xFF = broadcast)
    shorthand: int  # ICR bits 19:18: 0 none, 1 self, 2 all including self, 3 all excluding self
    level: int  # bit 14
    trigger: int  # bit 15


def divisor(divide_config: int) -> int:
    """The timer's clock divisor for a divide configuration register value (bits 0, 1, 3)."""
    code = (divide_config & 3) | ((divide_config >> 1) & 4)
    return 1 if code == 7 else 2 << code


class LocalApic:
    """One vCPU's local APIC: its register page, interrupt state and timer."""

    name = "lapic"

    def __init__(self, apic_id: int, send_ipi: Callable[[Ipi], None] | None = None) -> None:
        self.apic_id = apic_id
        #: Where ICR writes go; None drops them.
        self.send_ipi = send_ipi
        #: Virtual time (ns) of the last `advance`.
        self.now = 0
        self.reset()

    def reset(self) -> None:
        """Power-up / INIT state: everything but the APIC ID and the time base ("INIT Reset")."""
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFF_FFFF
        self.svr = 0xFF
        self.irr = 0  # 256-bit vector sets; bits 0-15 are never set
        self.isr = 0
        self.esr = 0  # the readable ESR
        self._errors = 0  # errors logged since the last ESR write
        self.icr_low = 0
        self.icr_high = 0
        self.lvt = dict.fromkeys(_LVT_WRITABLE, LVT_MASKED)
        self.timer_initial = 0
        self.timer_divide = 0
        #: How many times the timer has reached zero, masked or not.
        self.timer_expirations = 0
        self._deadline: int | None = None  # absolute ns of the next expiry; None when stopped

    # -- state -----------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the APIC is software-enabled (SVR bit 8)."""
        return bool(self.svr & SVR_ENABLE)

    @property
    def ppr(self) -> int:
        """The processor priority ("Processor Priority Register")."""
        isrv = self.isr.bit_length() - 1 if self.isr else 0
        if (self.tpr >> 4) >= (isrv >> 4):
            return self.tpr
        return isrv & 0xF0

    # -- MMIO ------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """The value at `offset`: 32-bit registers on 16-byte boundaries; a read at
        register + k (k < 4) gives its bytes from k on, beyond that 0."""
        k = offset & 0xF
        if k >= 4:
            return 0
        return (self._register(offset & ~0xF) >> (8 * k)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """Store `value` in the register at `offset`. Only 4-byte writes at a register's
        offset take effect (as in KVM); read-only and unknown registers ignore writes."""
        if size != 4 or offset & 0xF:
            return
        value &= 0xFFFF_FFFF
        if offset == TPR:
            self.tpr = value & 0xFF
        elif offset == EOI:
            if self.isr:
                self.isr &= ~(1 << (self.isr.bit_length() - 1))
        elif offset == LDR:
            self.ldr = value & 0xFF00_0000
        elif offset == DFR:
            self.dfr = value | 0x0FFF_FFFF
        elif offset == SVR:
            self.svr = value & 0x3FF  # vector, enable, focus processor checking
            if not self.enabled:
                for reg in self.lvt:  # "Local APIC State": disabling masks every LVT entry
                    self.lvt[reg] |= LVT_MASKED
        elif offset == ESR:
            self.esr, self._errors = self._errors, 0
        elif offset == ICR_LOW:
            self.icr_low = value & _ICR_LOW_WRITABLE
            self._send()
        elif offset == ICR_HIGH:
            self.icr_high = value & 0xFF00_0000
        elif offset in self.lvt:
            self.lvt[offset] = (value & _LVT_WRITABLE[offset]) | (0 if self.enabled else LVT_MASKED)
        elif offset == TIMER_INITIAL:
            self.timer_initial = value
            self._deadline = self.now + value * divisor(self.timer_divide) if value else None
        elif offset == TIMER_DIVIDE:
            # The count left keeps counting from now at the new rate.
            remaining = self._current_count()
            self.timer_divide = value & 0xB
            if self._deadline is not None:
                self._deadline = self.now + remaining * divisor(self.timer_divide)

    def _register(self, reg: int) -> int:
        """The 32-bit value of the register at `reg` (16-byte aligned)."""
        if reg == ID:
            return self.apic_id << 24
        if reg == VERSION:
            return APIC_VERSION
        if reg == TPR:
            return self.tpr
        if reg == PPR:
            return self.ppr
        if reg == LDR:
            return self.ldr
        if reg == DFR:
            return self.dfr
        if reg == SVR:
            return self.svr
        if ISR <= reg < ISR + 0x80:
            return (self.isr >> (2 * (reg - ISR))) & 0xFFFF_FFFF
        if IRR <= reg < IRR + 0x80:
            return (self.irr >> (2 * (reg - IRR))) & 0xFFFF_FFFF
        if reg == ESR:
            return self.esr
        if reg == ICR_LOW:
            return self.icr_low
        if reg == ICR_HIGH:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == TIMER_INITIAL:
            return self.timer_initial
        if reg == TIMER_CURRENT:
            return self._current_count()
        if reg == TIMER_DIVIDE:
            return self.timer_divide
        return 0  # TMR (no level-triggered interrupts), EOI (write-only), unknown

    # -- IPIs ------------------------------------------------------------------

    def _send(self) -> None:
        """Hand the command in the ICR to the machine ("Interrupt Command Register")."""
        low = self.icr_low
        mode = _DELIVERY_MODES.get((low >> 8) & 7)
        vector, level, trigger, shorthand = low & 0xFF, (low >> 14) & 1, (low >> 15) & 1, (low >> 18) & 3
        if mode is None:  # reserved delivery modes 3 and 7
            return
        if mode in ("fixed", "lowest") and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        if low & (1 << 11) and shorthand == 0:  # logical destination: not modelled
            return
        if mode == "init" and level == 0 and trigger == 1:
            mode = "init-deassert"
        if self.send_ipi is not None:
            self.send_ipi(Ipi(self.apic_id, mode, vector, self.icr_high >> 24, shorthand, level, trigger))

    # -- interrupts ------------------------------------------------------------

    def accept(self, vector: int) -> None:
        """A fixed interrupt arrives: request `vector` in the IRR. Vectors 0-15 are
        illegal: they set ESR bit 6 and are dropped."""
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        self.irr |= 1 << vector

    def pending(self) -> int | None:
        """The vector the CPU would take next, if any: the highest requested one whose
        priority class is above the processor priority's, while software-enabled."""
        if not self.enabled or not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        return vector if (vector >> 4) > (self.ppr >> 4) else None

    def acknowledge(self) -> int:
        """INTA: move the pending vector from the IRR to the ISR and return it."""
        vector = self.pending()
        assert vector is not None, "acknowledge without a pending interrupt"
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    def _error(self, bit: int) -> None:
        """Log an error for the next ESR write and raise the LVT error vector if unmasked."""
        self._errors |= bit
        entry = self.lvt[LVT_ERROR]
        if not entry & LVT_MASKED and (entry & 0xFF) >= 16:
            self.irr |= 1 << (entry & 0xFF)

    # -- timer -----------------------------------------------------------------

    def advance(self, now: int) -> None:
        """Virtual time is now `now` ns: let the timer expire as often as it was due
        (periodic reloads keep their phase), requesting its vector unless masked."""
        if now < self.now:
            raise ValueError(f"virtual time went back from {self.now} to {now}")
        self.now = now
        if self._deadline is None or now < self._deadline:
            return
        entry = self.lvt[LVT_TIMER]
        # The mode at expiry decides: a mode change while counting lets the running
        # count finish, then reload (periodic) or stop (one-shot), as KVM does.
        if entry & LVT_PERIODIC:
            period = self.timer_initial * divisor(self.timer_divide)
            expirations = (now - self._deadline) // period + 1
            self._deadline += expirations * period
        else:
            expirations = 1
            self._deadline = None
        self.timer_expirations += expirations
        if not entry & LVT_MASKED:
            self.accept(entry & 0xFF)

    def next_deadline(self) -> int | None:
        """When (absolute ns) the timer next expires; None if it is stopped, has
        fired its one shot, or is masked."""
        if self.lvt[LVT_TIMER] & LVT_MASKED:
            return None
        return self._deadline

    def _current_count(self) -> int:
        """The current count at `now`: ticks left until the next expiry, 0 when stopped."""
        if self._deadline is None:
            return 0
        return -(-(self._deadline - self.now) // divisor(self.timer_divide))
