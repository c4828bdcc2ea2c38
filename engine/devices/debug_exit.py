"""The debug-exit port (QEMU's isa-debug-exit convention): a write ends the run.

A write of any size ends the run with the written value as its status. Unlike
QEMU, which reports (value << 1) | 1 as its process status, vmmtui passes the
value as it is.
"""

from __future__ import annotations

from collections.abc import Callable

DEBUG_EXIT_PORT = 0xF4


class DebugExit:
    """Ends the run with the value written."""

    name = "debug-exit"

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value)
