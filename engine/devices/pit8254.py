"""The 8254 programmable interval timer, channel 0 (IRQ 0), driven by virtual time.

Ports 0x40-0x42 are the channels' counters and 0x43 the mode/command register
(Intel 8254 datasheet, "Control Word Format"). Channel 0 counts down at 1.193182
MHz of *virtual* time: `advance(ticks)` moves it on and returns how many IRQ 0
edges that made. Modes 2 (rate generator) and 3 (square wave) are periodic; mode
0 (interrupt on terminal count) fires once. Channels 1 and 2 are accepted and
ignored.
"""

from __future__ import annotations

PIT_HZ = 1_193_182


class Pit8254:
    """Channel 0 of the PIT."""

    name = "pit8254"

    def __init__(self) -> None:
        self.mode = 3
        self.access = 3  # 1 lo, 2 hi, 3 lo then hi
        self.reload = 0x10000
        self.count = 0x10000
        self.armed = False
        self._write_hi = False
        self._read_hi = False
        self._latched: int | None = None

    def read(self, offset: int, size: int) -> int:
        if offset != 0:
            return 0
        value = self._latched if self._latched is not None else self.count & 0xFFFF
        if self.access == 1:
            self._latched = None
            return value & 0xFF
        if self.access == 2:
            self._latched = None
            return value >> 8
        out = (value >> 8) if self._read_hi else (value & 0xFF)
        self._read_hi = not self._read_hi
        if not self._read_hi:
            self._latched = None
        return out

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 3:
            if value >> 6 != 0:
                return  # channels 1, 2 (and read-back) are not modelled
            access = (value >> 4) & 3
            if access == 0:  # counter latch
                self._latched = self.count & 0xFFFF
                return
            self.access = access
            self.mode = (value >> 1) & 7
            if self.mode > 5:
                self.mode -= 4  # modes 6 and 7 are 2 and 3
            self._write_hi = self._read_hi = False
            self.armed = False
            return
        if offset != 0:
            return
        if self.access == 1:
            self._load(value)
        elif self.access == 2:
            self._load(value << 8)
        elif not self._write_hi:
            self._low = value
            self._write_hi = True
        else:
            self._write_hi = False
            self._load(self._low | value << 8)

    def _load(self, value: int) -> None:
        self.reload = value or 0x10000
        self.count = self.reload
        self.armed = True

    def advance(self, ticks: int) -> int:
        """Let `ticks` PIT clock periods pass; returns the number of IRQ 0 edges."""
        if not self.armed or ticks <= 0:
            return 0
        if self.mode in (2, 3):
            edges, rest = divmod(ticks, self.reload)
            if rest >= self.count:
                edges += 1
                self.count = self.reload - (rest - self.count)
            else:
                self.count -= rest
            return edges
        if ticks >= self.count:  # mode 0 (and the one-shot modes): one edge, then stop
            self.count = 0
            self.armed = False
            return 1
        self.count -= ticks
        return 0
