"""A 16550A UART (the console): transmit to the host, receive from the user.

Registers by offset (with DLAB = LCR bit 7 selecting the divisor latch at 0/1):
0 RBR/THR, 1 IER, 2 IIR/FCR, 3 LCR, 4 MCR, 5 LSR, 6 MSR, 7 SCR. The transmitter
is always ready (LSR.THRE and LSR.TEMT set): output reaches `on_output` at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

LSR_DATA_READY = 0x01
LSR_THRE = 0x20
LSR_TEMT = 0x40
IIR_NO_INTERRUPT = 0x01
IIR_FIFO_ENABLED = 0xC0


class Uart16550:
    """The console UART."""

    name = "uart16550"

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self._on_output = on_output
        self._rx: deque[int] = deque()
        self.ier = 0
        self.fcr = 0
        self.lcr = 0x03  # 8N1, as firmware leaves it
        self.mcr = 0
        self.scr = 0
        self.divisor = 1

    def feed(self, data: bytes) -> None:
        """Queue bytes typed by the user for the guest to read."""
        self._rx.extend(data)

    @property
    def pending_input(self) -> int:
        """Bytes waiting in the receive queue."""
        return len(self._rx)

    def read(self, offset: int, size: int) -> int:
        dlab = self.lcr & 0x80
        if offset == 0:
            if dlab:
                return self.divisor & 0xFF
            return self._rx.popleft() if self._rx else 0
        if offset == 1:
            return (self.divisor >> 8) if dlab else self.ier
        if offset == 2:
            return IIR_NO_INTERRUPT | (IIR_FIFO_ENABLED if self.fcr & 1 else 0)
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return LSR_THRE | LSR_TEMT | (LSR_DATA_READY if self._rx else 0)
        if offset == 6:
            return 0xB0  # DCD, DSR, CTS: a terminal is attached
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = self.lcr & 0x80
        if offset == 0:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._on_output(bytes((value,)))
        elif offset == 1:
            if dlab:
                self.divisor = (self.divisor & 0xFF) | (value << 8)
            else:
                self.ier = value & 0x0F
        elif offset == 2:
            self.fcr = value
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
