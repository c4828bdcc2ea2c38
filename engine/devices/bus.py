"""The port I/O bus and the MMIO bus: sorted maps of ranges to devices.

A device sees (offset within its range, size) and never knows where it is mapped.
An overlapping registration is refused. An access no device claims is answered as
a PC answers it: reads return all ones, writes are dropped; the caller still logs
the exit.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from ..errors import ConfigError


class Device(Protocol):
    """What a bus calls: a register file seen through offsets."""

    name: str

    def read(self, offset: int, size: int) -> int:
        """The value read at `offset` (`size` bytes)."""
        ...

    def write(self, offset: int, size: int, value: int) -> None:
        """Store `value` (`size` bytes) at `offset`."""
        ...


@dataclass(frozen=True, slots=True)
class Range:
    """A claimed address range [base, base + length)."""

    base: int
    length: int
    device: Device

    @property
    def end(self) -> int:
        return self.base + self.length


class Bus:
    """A sorted, non-overlapping map of ranges to devices."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._bases: list[int] = []
        self._ranges: list[Range] = []

    def register(self, base: int, length: int, device: Device) -> None:
        """Map `device` at [base, base + length); refuses an overlap."""
        if length <= 0:
            raise ConfigError(f"{self.name} bus: {device.name} needs a positive length")
        i = bisect.bisect_left(self._bases, base)
        neighbours = self._ranges[max(i - 1, 0) : i + 1]
        for r in neighbours:
            if base < r.end and r.base < base + length:
                raise ConfigError(
                    f"{self.name} bus: {device.name} at {base:#x}+{length:#x} overlaps "
                    f"{r.device.name} at {r.base:#x}+{r.length:#x}"
                )
        self._bases.insert(i, base)
        self._ranges.insert(i, Range(base, length, device))

    def find(self, addr: int) -> Range | None:
        """The range holding `addr`, if any."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._ranges[i].end:
            return self._ranges[i]
        return None

    def read(self, addr: int, size: int) -> tuple[int, Device | None]:
        """Read `size` bytes at `addr`: (value, device) — all ones and None when unclaimed."""
        r = self.find(addr)
        if r is None:
            return (1 << (8 * size)) - 1, None
        return r.device.read(addr - r.base, size), r.device

    def write(self, addr: int, size: int, value: int) -> Device | None:
        """Write at `addr`; returns the device that took it, None when it was dropped."""
        r = self.find(addr)
        if r is None:
            return None
        r.device.write(addr - r.base, size, value)
        return r.device

    def ranges(self) -> list[Range]:
        """Every registered range, in address order."""
        return list(self._ranges)
