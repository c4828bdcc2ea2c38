"""How many guest instructions a counted `emu_start` retired before it returned.

Unicorn's counted mode (`emu_start(..., count=N)`) counts instructions with a
code hook of its own in C that increments a 64-bit counter in its engine state
(`uc_struct.emu_counter`) before every instruction it starts, and stops once the
counter passes N. The Python binding does not expose the counter, but virtual
time (instructions retired) needs it after every early stop: a hook that stops
at an exit, a breakpoint, a fault.

The counter sits in the engine state right before `emu_count` (the N passed to
`emu_start`). Its offset is found once per process by a probe: a counted run of
a known length on a scratch instance, then a search of the engine state for N
with the expected count beside it. If that fails (another Unicorn build), the
engine refuses to start instead of keeping wrong time; unicorn is pinned and
tests/test_icount.py checks the counts this module gives.

What the counter means after a stop (measured, Unicorn 2.1.4): the instruction
in progress when the run stopped was counted but did not retire (a stop in a
code hook lands before it, a stop in an IN / OUT hook lands after the
instruction and the next one was counted, an exception leaves the faulting
instruction un-retired; a stop from another thread or from emu_start's timeout
lands the same way), so the retired count is the counter minus one. The
exceptions: a run that stops because the next fetch is not permitted, or at its
`until` address, never counted that instruction.
"""

from __future__ import annotations

import ctypes
from functools import cache

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as X

from .errors import EngineError

_PROBE_COUNT = 0x2468ACE  # a count no other field of the engine state holds
_PROBE_LENGTH = 7  # instructions the probe retires
_SEARCH_BYTES = 16384


@cache
def counter_offset() -> int:
    """The byte offset of `emu_counter` in Unicorn's engine state."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    # inc rax x 7, then a jump to itself; stop after exactly 7 with `until`.
    code = b"\x48\xff\xc0" * _PROBE_LENGTH + b"\xeb\xfe"
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0x1000 + 3 * _PROBE_LENGTH, count=_PROBE_COUNT)
    if uc.reg_read(X.UC_X86_REG_RAX) != _PROBE_LENGTH:
        raise EngineError("Unicorn's counted mode did not run the instruction-count probe as expected")
    words = (ctypes.c_uint64 * (_SEARCH_BYTES // 8)).from_address(uc._uch.value)
    for i in range(1, len(words)):
        # Stopped by `until` before the eighth instruction was counted.
        if words[i] == _PROBE_COUNT and words[i - 1] == _PROBE_LENGTH:
            return (i - 1) * 8
    raise EngineError("cannot find Unicorn's instruction counter (is unicorn the pinned 2.1.4?)")


class InstructionCounter:
    """Reads one Unicorn instance's instruction counter."""

    def __init__(self, uc: Uc) -> None:
        self._cell = ctypes.c_uint64.from_address(uc._uch.value + counter_offset())

    @property
    def raw(self) -> int:
        """Instructions Unicorn counted since the last emu_start (see the module text)."""
        return self._cell.value

    def retired(self, fetch_fault: bool = False) -> int:
        """Instructions retired by the last counted emu_start."""
        raw = self._cell.value
        return raw if fetch_fault else max(raw - 1, 0)
