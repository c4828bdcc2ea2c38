"""Distinct types for the three address spaces, so a GPA is never silently used as an HPA.

- GVA: guest-virtual (linear) address, translated by the guest's own page tables.
- GPA: guest-physical address, translated by EPT (Intel) or NPT (AMD).
- HPA: host-physical address: an offset into the engine's host memory buffer.

They are `typing.NewType`s over `int`: free at run time, checked by a type checker.
"""

from __future__ import annotations

from typing import NewType

GVA = NewType("GVA", int)
GPA = NewType("GPA", int)
HPA = NewType("HPA", int)

PAGE_SIZE = 0x1000
LARGE_PAGE_SIZE = 0x20_0000
PAGE_MASK = ~(PAGE_SIZE - 1)


def page_of(addr: int) -> int:
    """The 4 KiB page base holding `addr`."""
    return addr & PAGE_MASK


def align_up(value: int, alignment: int) -> int:
    """`value` rounded up to a multiple of `alignment` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)
