"""Bits, by name and in memory: what the VMX and SVM control fields and permission
maps share."""

from __future__ import annotations

from enum import IntFlag


def bit_names(flag_class: type[IntFlag], value: int) -> list[str]:
    """The names of the bits set in `value`, lowest first; a bit `flag_class` does not
    name is shown as "bit<n>"."""
    names = {member.value: member.name for member in flag_class}
    return [names.get(1 << n, f"bit{n}") for n in range(value.bit_length()) if value >> n & 1]


class MemoryBitmap:
    """Permission bits kept as real bytes in host memory (I/O and MSR bitmaps, IOPM, MSRPM).

    Subclasses say where a bit lives (`(byte address, mask)`, or None for "outside
    the map": such an access always exits).
    """

    def __init__(self, view: memoryview) -> None:
        self._view = view

    def _store(self, where: tuple[int, int], on: bool) -> None:
        addr, bit = where
        self._view[addr] = self._view[addr] | bit if on else self._view[addr] & ~bit

    def _test(self, where: tuple[int, int] | None) -> bool:
        if where is None:
            return True
        addr, bit = where
        return bool(self._view[addr] & bit)

    def _msr_bit(self, index: int, write: bool) -> tuple[int, int] | None:
        raise NotImplementedError

    def _set_msr(self, index: int, read: bool | None, write: bool | None, outside: str) -> None:
        """Set the read and / or write bit of MSR `index`; `outside` explains a refusal."""
        for is_write, on in ((False, read), (True, write)):
            if on is None:
                continue
            where = self._msr_bit(index, is_write)
            if where is None:
                raise ValueError(f"MSR {index:#x} is outside {outside}")
            self._store(where, on)
