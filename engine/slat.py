"""Second-level address translation: the four-level tables that EPT and NPT share.

Intel SDM Vol. 3C, "EPT Translation Mechanism"; AMD APM Vol. 2, §15.25 "Nested
Paging". Both translate a guest-physical address (GPA) to a host-physical address
(HPA) through four levels of 512-entry tables of 8-byte entries, indexed by GPA
bits 47:39 (PML4E), 38:30 (PDPTE), 29:21 (PDE) and 20:12 (PTE). An entry at the
PDE level with bit 7 set maps a 2 MiB page (at the PDPTE level, 1 GiB: walked
here, never built). Only the entry format differs; a subclass supplies it
(`engine.ept.Ept`, `engine.npt.Npt`).

The tables live in host memory and are the source of truth for guest-physical
memory. Frames are never freed (see `HostMemory`): a table that a mapping
replaces stays allocated and unreferenced.

An entry is *in use* when its value is not 0. A leaf in use with no access
right keeps its address (it is still listed by `mappings()`), but translates to
nothing: hardware treats it as not present.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from .addresses import GPA, HPA, LARGE_PAGE_SIZE, PAGE_SIZE
from .hostmem import HostMemory

LEVELS = ("PML4E", "PDPTE", "PDE", "PTE")
_SHIFTS = (39, 30, 21, 12)
ENTRIES = 512
GPA_LIMIT = 1 << 48
"""Four levels translate GPA bits 47:0."""

_TABLE = struct.Struct(f"<{ENTRIES}Q")
_LEVEL_OF_SIZE = {LARGE_PAGE_SIZE: 2, PAGE_SIZE: 3}


def level_size(level: str) -> int:
    """The bytes of guest-physical space one entry at `level` covers."""
    return 1 << _SHIFTS[LEVELS.index(level)]


@dataclass(frozen=True)
class SlatStep:
    """One entry read during a translation."""

    level: str
    table_hpa: HPA
    index: int
    entry_hpa: HPA
    value: int
    decoded: dict[str, Any]


@dataclass(frozen=True)
class SlatWalk:
    """The result of translating one GPA.

    `hpa` is None when the walk met an entry that is not present, or when the
    rights along the walk allow nothing. `readable`, `writable`, `executable`
    are the AND of the rights of every entry walked (all False when `hpa` is
    None). `page_size` is the size of the page found, or of the region the
    non-present entry covers (0 for a GPA beyond bit 47, where no entry is read).
    """

    gpa: GPA
    hpa: HPA | None
    readable: bool
    writable: bool
    executable: bool
    page_size: int
    steps: list[SlatStep]


class SlatMapping(NamedTuple):
    """One leaf: `size` bytes at `gpa` backed by host memory at `hpa`."""

    gpa: GPA
    hpa: HPA
    size: int
    read: bool
    write: bool
    execute: bool


class SlatNode(NamedTuple):
    """One entry in use, for display; `children` are the next table's entries in use."""

    level: str
    index: int
    gpa_base: GPA
    value: int
    decoded: dict[str, Any]
    children: list[SlatNode]


class SecondLevelTables(ABC):
    """A GPA -> HPA radix tree in host memory; the entry format comes from the subclass."""

    kind: ClassVar[str]
    """"EPT" or "NPT", for labels."""
    violation: ClassVar[str]
    """What hardware calls a failed translation ("EPT violation", "nested page fault")."""
    table_walk_access: ClassVar[str]
    """How a guest paging-structure access is checked against these tables: "read" or "write"."""

    def __init__(self, mem: HostMemory) -> None:
        self.mem = mem
        self.root: HPA = mem.alloc_frame()

    # -- the entry format ------------------------------------------------------

    @abstractmethod
    def encode_table_entry(self, table_hpa: HPA) -> int:
        """A non-leaf entry pointing at the table at `table_hpa`, granting every right."""

    @abstractmethod
    def encode_leaf(self, hpa: HPA, level: str, *, read: bool, write: bool, execute: bool) -> int:
        """A leaf entry at `level` mapping the page at `hpa` with these rights."""

    @abstractmethod
    def decode(self, value: int, level: str) -> dict[str, Any]:
        """The fields of an entry at `level`, by name."""

    @abstractmethod
    def is_present(self, value: int) -> bool:
        """Whether hardware would use this entry (rather than fault on it)."""

    @abstractmethod
    def permissions(self, value: int) -> tuple[bool, bool, bool]:
        """(read, write, execute) this entry grants; all False when not present."""

    @abstractmethod
    def is_large(self, value: int) -> bool:
        """Whether the page-size bit is set (meaningful at the PDPTE and PDE levels)."""

    @abstractmethod
    def address(self, value: int) -> HPA:
        """The physical address field of an entry (bits 51:12)."""

    def check_permissions(self, read: bool, write: bool, execute: bool) -> None:
        """Raise ValueError for a combination of rights the format cannot express."""
        if write and not read:
            raise ValueError(f"{self.kind} cannot map a page writable but not readable")

    # -- building --------------------------------------------------------------

    def map(
        self, gpa: GPA, hpa: HPA, size: int, *, read: bool = True, write: bool = True, execute: bool = True
    ) -> None:
        """Map `size` (4 KiB or 2 MiB) bytes at `gpa` to `hpa`, both aligned to `size`.

        Intermediate tables are allocated on demand. A mapping already there is
        replaced; a 4 KiB mapping inside a 2 MiB page first splits that page
        into a page table that keeps the rest of it mapped as before.
        """
        level = _LEVEL_OF_SIZE.get(size)
        if level is None:
            raise ValueError(f"mapping size {size:#x} is neither 4 KiB nor 2 MiB")
        _check_range(gpa, size)
        if gpa % size:
            raise ValueError(f"guest-physical address {gpa:#x} is not aligned to {size:#x}")
        if hpa % size or hpa < 0 or hpa + size > self.mem.size:
            raise ValueError(f"host-physical page {hpa:#x}+{size:#x} is unaligned or outside host memory")
        self.check_permissions(read, write, execute)
        entry = self._entry(gpa, level, create=True)
        assert entry is not None  # create=True always finds the entry
        self.mem.write_u64(entry, self.encode_leaf(hpa, LEVELS[level], read=read, write=write, execute=execute))

    def unmap(self, gpa: GPA, size: int) -> None:
        """Remove every mapping of the 4 KiB-aligned range; holes are skipped.

        2 MiB pieces are cleared at the PDE (dropping a page table under it);
        a 4 KiB piece inside a 2 MiB page splits that page first.
        """
        _check_range(gpa, size)
        for chunk, level in _chunks(gpa, size):
            entry = self._entry(chunk, level, create=False)
            if entry is not None:
                self.mem.write_u64(entry, 0)

    def protect(self, gpa: GPA, size: int, *, read: bool, write: bool, execute: bool) -> None:
        """Set the rights of every mapping in the 4 KiB-aligned range; holes are skipped.

        A 4 KiB piece inside a 2 MiB page splits that page first. With no right
        at all the entries keep their addresses, so a later `protect` restores them.
        """
        _check_range(gpa, size)
        self.check_permissions(read, write, execute)
        rights = {"read": read, "write": write, "execute": execute}
        for chunk, level in _chunks(gpa, size):
            entry = self._entry(chunk, level, create=False)
            if entry is None:
                continue
            value = self.mem.read_u64(entry)
            if value == 0:
                continue
            if self._is_leaf(value, level):
                self._reprotect(entry, value, level, rights)
            else:  # a page table under a 2 MiB piece
                table = self.address(value)
                for index, pte in enumerate(self._entries(table)):
                    if pte:
                        self._reprotect(HPA(table + 8 * index), pte, level + 1, rights)

    # -- reading ---------------------------------------------------------------

    def translate(self, gpa: GPA) -> SlatWalk:
        """Walk the tables for `gpa` as hardware does, recording every entry read."""
        if not 0 <= gpa < GPA_LIMIT:
            return SlatWalk(gpa, None, False, False, False, 0, [])
        steps: list[SlatStep] = []
        table = self.root
        rights = (True, True, True)
        level = 0
        while True:
            index = (gpa >> _SHIFTS[level]) & (ENTRIES - 1)
            entry = HPA(table + 8 * index)
            value = self.mem.read_u64(entry)
            steps.append(SlatStep(LEVELS[level], table, index, entry, value, self.decode(value, LEVELS[level])))
            size = 1 << _SHIFTS[level]
            if not self.is_present(value):
                return SlatWalk(gpa, None, False, False, False, size, steps)
            rights = _and(rights, self.permissions(value))
            if self._is_leaf(value, level):
                if not any(rights):
                    return SlatWalk(gpa, None, False, False, False, size, steps)
                hpa = HPA((self.address(value) & ~(size - 1)) | (gpa & (size - 1)))
                return SlatWalk(gpa, hpa, *rights, size, steps)
            table = self.address(value)
            level += 1

    def mappings(self) -> Iterator[SlatMapping]:
        """Every leaf in use, in GPA order, with the rights along its walk."""
        yield from self._leaves(self.root, 0, GPA(0), (True, True, True))

    def tree(self) -> list[SlatNode]:
        """The entries in use of the root table, each with its subtree."""
        return self._nodes(self.root, 0, GPA(0))

    # -- internals -------------------------------------------------------------

    def _is_leaf(self, value: int, level: int) -> bool:
        return level == 3 or (level in (1, 2) and self.is_large(value))

    def _entries(self, table: HPA) -> tuple[int, ...]:
        return _TABLE.unpack(self.mem.read(table, PAGE_SIZE))

    def _entry(self, gpa: int, level: int, *, create: bool) -> HPA | None:
        """The HPA of the entry at `level` for `gpa`, splitting large pages above it.

        A missing table is allocated when `create`, else the answer is None.
        """
        table = self.root
        for upper in range(level):
            entry = HPA(table + 8 * ((gpa >> _SHIFTS[upper]) & (ENTRIES - 1)))
            value = self.mem.read_u64(entry)
            if value == 0:
                if not create:
                    return None
                table = self.mem.alloc_frame()
                self.mem.write_u64(entry, self.encode_table_entry(table))
            elif self._is_leaf(value, upper):
                table = self._split(entry, value, upper)
            else:
                table = self.address(value)
        return HPA(table + 8 * ((gpa >> _SHIFTS[level]) & (ENTRIES - 1)))

    def _split(self, entry: HPA, value: int, level: int) -> HPA:
        """Replace the large leaf at `entry` by a table of 512 leaves mapping the same page."""
        table = self.mem.alloc_frame()
        child_size = 1 << _SHIFTS[level + 1]
        base = self.address(value) & ~((1 << _SHIFTS[level]) - 1)
        read, write, execute = self.permissions(value)
        child_level = LEVELS[level + 1]
        leaves = [
            self.encode_leaf(HPA(base + i * child_size), child_level, read=read, write=write, execute=execute)
            for i in range(ENTRIES)
        ]
        self.mem.write(table, _TABLE.pack(*leaves))
        self.mem.write_u64(entry, self.encode_table_entry(table))
        return table

    def _reprotect(self, entry: HPA, value: int, level: int, rights: dict[str, bool]) -> None:
        base = HPA(self.address(value) & ~((1 << _SHIFTS[level]) - 1))
        self.mem.write_u64(entry, self.encode_leaf(base, LEVELS[level], **rights))

    def _leaves(self, table: HPA, level: int, base: GPA, rights: tuple[bool, bool, bool]) -> Iterator[SlatMapping]:
        size = 1 << _SHIFTS[level]
        for index, value in enumerate(self._entries(table)):
            if value == 0:
                continue
            gpa = GPA(base + index * size)
            here = _and(rights, self.permissions(value))
            if self._is_leaf(value, level):
                yield SlatMapping(gpa, HPA(self.address(value) & ~(size - 1)), size, *here)
            elif self.is_present(value):
                yield from self._leaves(self.address(value), level + 1, gpa, here)

    def _nodes(self, table: HPA, level: int, base: GPA) -> list[SlatNode]:
        nodes = []
        for index, value in enumerate(self._entries(table)):
            if value == 0:
                continue
            gpa = GPA(base + (index << _SHIFTS[level]))
            descend = not self._is_leaf(value, level) and self.is_present(value)
            children = self._nodes(self.address(value), level + 1, gpa) if descend else []
            nodes.append(SlatNode(LEVELS[level], index, gpa, value, self.decode(value, LEVELS[level]), children))
        return nodes


def _and(a: tuple[bool, bool, bool], b: tuple[bool, bool, bool]) -> tuple[bool, bool, bool]:
    return (a[0] and b[0], a[1] and b[1], a[2] and b[2])


def _check_range(gpa: int, size: int) -> None:
    if size <= 0 or gpa % PAGE_SIZE or size % PAGE_SIZE or gpa < 0 or gpa + size > GPA_LIMIT:
        raise ValueError(f"guest-physical range {gpa:#x}+{size:#x} is not 4 KiB-aligned below 2**48")


def _chunks(gpa: GPA, size: int) -> Iterator[tuple[GPA, int]]:
    """The range as (gpa, level) pieces: whole 2 MiB pieces at the PDE, the rest 4 KiB."""
    end = gpa + size
    while gpa < end:
        if gpa % LARGE_PAGE_SIZE == 0 and end - gpa >= LARGE_PAGE_SIZE:
            yield gpa, 2
            gpa = GPA(gpa + LARGE_PAGE_SIZE)
        else:
            yield gpa, 3
            gpa = GPA(gpa + PAGE_SIZE)
