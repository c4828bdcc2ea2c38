"""The local APIC's register page (xAPIC MMIO at 0xFEE00000), as far as guests read it.

Registers by offset (SDM Vol. 3 "Local APIC Register Address Map"): 0x20 ID,
0x30 version, 0x80 TPR, 0xB0 EOI, 0xF0 spurious-interrupt vector. Timer, ICR
and interrupt delivery are not modelled yet; other registers read 0.
"""

from __future__ import annotations

APIC_BASE = 0xFEE0_0000
APIC_SIZE = 0x1000
#: Version 0x14 with six LVT entries (max LVT index 5 in bits 23:16), as QEMU reports.
APIC_VERSION = 0x0005_0014


class LocalApic:
    """One vCPU's local APIC register page."""

    name = "lapic"

    def __init__(self, apic_id: int) -> None:
        self.apic_id = apic_id
        self.tpr = 0
        self.svr = 0xFF
        self.eoi_count = 0

    def read(self, offset: int, size: int) -> int:
        reg = offset & ~0xF
        if reg == 0x20:
            return self.apic_id << 24
        if reg == 0x30:
            return APIC_VERSION
        if reg == 0x80:
            return self.tpr
        if reg == 0xF0:
            return self.svr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        reg = offset & ~0xF
        if reg == 0x80:
            self.tpr = value & 0xFF
        elif reg == 0xB0:
            self.eoi_count += 1
        elif reg == 0xF0:
            self.svr = value & 0x3FF
