"""Intel EPT: the second-level tables in the EPT entry format, and the EPTP.

Intel SDM Vol. 3C, "EPT Translation Mechanism" (entry formats) and "Extended-Page-
Table Pointer (EPTP)"; tests/refdata/NOTES.md. Entry bits: 0 read, 1 write,
2 execute, 5:3 memory type (leaf), 6 ignore PAT (leaf), 7 page size (PDPTE/PDE),
8 accessed, 9 dirty (leaf), 51:12 the physical address. An entry whose bits 2:0
are all 0 is not present. Non-leaf entries built here grant RWX; leaves are
write-back (memory type 6). Write without read is an EPT misconfiguration and is
refused; execute-only pages are allowed (a processor capability hypervisors use).
"""

from __future__ import annotations

from typing import Any

from .addresses import HPA
from .slat import SecondLevelTables

READ = 1 << 0
WRITE = 1 << 1
EXECUTE = 1 << 2
MEMTYPE_SHIFT = 3
MEMTYPE_WB = 6
IGNORE_PAT = 1 << 6
PAGE_SIZE_BIT = 1 << 7
ACCESSED = 1 << 8
DIRTY = 1 << 9
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000

EPTP_WALK_LENGTH_SHIFT = 3
EPTP_AD_ENABLE = 1 << 6


class Ept(SecondLevelTables):
    """Extended page tables: four levels, write-back leaves, accessed/dirty flags off."""

    kind = "EPT"
    violation = "EPT violation"
    table_walk_access = "read"  # guest paging-structure reads are reads while A/D flags are off

    def encode_table_entry(self, table_hpa: HPA) -> int:
        """A non-leaf entry granting RWX to the table at `table_hpa`."""
        return table_hpa | READ | WRITE | EXECUTE

    def encode_leaf(self, hpa: HPA, level: str, *, read: bool, write: bool, execute: bool) -> int:
        """A write-back leaf; bit 7 marks it large above the PTE level."""
        value = hpa | (MEMTYPE_WB << MEMTYPE_SHIFT)
        value |= (READ if read else 0) | (WRITE if write else 0) | (EXECUTE if execute else 0)
        return value | (PAGE_SIZE_BIT if level != "PTE" else 0)

    def decode(self, value: int, level: str) -> dict[str, Any]:
        """read/write/execute/memtype/ignore_pat/large/accessed/dirty/address.

        memtype, ignore_pat and dirty are None in a non-leaf entry, where those bits are ignored.
        """
        large = level in ("PDPTE", "PDE") and bool(value & PAGE_SIZE_BIT)
        leaf = large or level == "PTE"
        return {
            "read": bool(value & READ),
            "write": bool(value & WRITE),
            "execute": bool(value & EXECUTE),
            "memtype": (value >> MEMTYPE_SHIFT) & 7 if leaf else None,
            "ignore_pat": bool(value & IGNORE_PAT) if leaf else None,
            "large": large,
            "accessed": bool(value & ACCESSED),
            "dirty": bool(value & DIRTY) if leaf else None,
            "address": value & ADDRESS_MASK,
        }

    def is_present(self, value: int) -> bool:
        """Any of read, write, execute."""
        return bool(value & (READ | WRITE | EXECUTE))

    def permissions(self, value: int) -> tuple[bool, bool, bool]:
        """Bits 0, 1, 2."""
        return bool(value & READ), bool(value & WRITE), bool(value & EXECUTE)

    def is_large(self, value: int) -> bool:
        """Bit 7."""
        return bool(value & PAGE_SIZE_BIT)

    def address(self, value: int) -> HPA:
        """Bits 51:12."""
        return HPA(value & ADDRESS_MASK)

    def eptp(self) -> int:
        """The EPT pointer for the VMCS: write-back, a 4-level walk, A/D flags off, the PML4 table."""
        return self.root | MEMTYPE_WB | ((4 - 1) << EPTP_WALK_LENGTH_SHIFT)


def decode_eptp(value: int) -> dict[str, Any]:
    """The fields of an EPTP: memtype, walk_length (levels), accessed_dirty, pml4 (its HPA)."""
    return {
        "memtype": value & 7,
        "walk_length": ((value >> EPTP_WALK_LENGTH_SHIFT) & 7) + 1,
        "accessed_dirty": bool(value & EPTP_AD_ENABLE),
        "pml4": value & ADDRESS_MASK,
    }
