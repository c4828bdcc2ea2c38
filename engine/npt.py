"""AMD nested page tables: the second-level tables in the x86-64 page-table format.

AMD APM Vol. 2, §15.25 "Nested Paging"; tests/refdata/NOTES.md. The tables at
nCR3 (VMCB N_CR3) use the ordinary long-mode entry: bit 0 present, 1 writable,
2 user, 5 accessed, 6 dirty, 7 page size (PDPTE/PDE), 63 no-execute, 51:12 the
physical address. A nested walk treats every guest access as a user access, so
every entry built here has U/S set, and it treats guest page-table accesses as
writes. Read permission is presence: a page cannot be writable or executable
without being readable. The nested tables follow the host's paging controls at
VMRUN; NX (bit 63) counts because the VMM is taken to run with EFER.NXE set.
"""

from __future__ import annotations

from typing import Any

from .addresses import HPA
from .slat import SecondLevelTables

PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
ACCESSED = 1 << 5
DIRTY = 1 << 6
PAGE_SIZE_BIT = 1 << 7
NO_EXECUTE = 1 << 63
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000


class Npt(SecondLevelTables):
    """Nested page tables: four levels, user pages, no-execute where execute is denied."""

    kind = "NPT"
    violation = "nested page fault"
    table_walk_access = "write"  # the nested walk accesses guest page tables as user writes

    def check_permissions(self, read: bool, write: bool, execute: bool) -> None:
        """Besides write-only, refuse execute-only: a present entry is always readable."""
        super().check_permissions(read, write, execute)
        if execute and not read:
            raise ValueError("NPT cannot map a page executable but not readable")

    def encode_table_entry(self, table_hpa: HPA) -> int:
        """P | RW | US pointing at the table at `table_hpa`."""
        return table_hpa | PRESENT | WRITABLE | USER

    def encode_leaf(self, hpa: HPA, level: str, *, read: bool, write: bool, execute: bool) -> int:
        """A user leaf; not present without read, NX without execute, PS above the PTE level."""
        value = hpa | USER | (PRESENT if read else 0) | (WRITABLE if write else 0)
        value |= 0 if execute else NO_EXECUTE
        return value | (PAGE_SIZE_BIT if level != "PTE" else 0)

    def decode(self, value: int, level: str) -> dict[str, Any]:
        """present/writable/user/accessed/dirty/large/nx/address; dirty is None in a non-leaf entry."""
        large = level in ("PDPTE", "PDE") and bool(value & PAGE_SIZE_BIT)
        return {
            "present": bool(value & PRESENT),
            "writable": bool(value & WRITABLE),
            "user": bool(value & USER),
            "accessed": bool(value & ACCESSED),
            "dirty": bool(value & DIRTY) if large or level == "PTE" else None,
            "large": large,
            "nx": bool(value & NO_EXECUTE),
            "address": value & ADDRESS_MASK,
        }

    def is_present(self, value: int) -> bool:
        """Bit 0."""
        return bool(value & PRESENT)

    def permissions(self, value: int) -> tuple[bool, bool, bool]:
        """Read = present; write = present and RW; execute = present and not NX."""
        if not value & PRESENT:
            return False, False, False
        return True, bool(value & WRITABLE), not value & NO_EXECUTE

    def is_large(self, value: int) -> bool:
        """Bit 7."""
        return bool(value & PAGE_SIZE_BIT)

    def address(self, value: int) -> HPA:
        """Bits 51:12."""
        return HPA(value & ADDRESS_MASK)

    def ncr3(self) -> int:
        """The value for the VMCB's N_CR3: the HPA of the PML4 table."""
        return self.root
