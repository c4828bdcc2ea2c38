"""The guest's own page tables: a walker for 32-bit, PAE and 4-level paging, and the 2-D walk.

Intel SDM Vol. 3A, chapter "Paging" (hierarchical paging structures, access
rights, page-fault exceptions); for the two-dimensional walk, SDM Vol. 3C "EPT
and guest paging" / "EPT Translation Mechanism" and AMD APM Vol. 2 §15.25
"Nested Paging" (nested table walk).

The walker reads the guest's tables and never writes them: accessed and dirty
flags are not set. It checks the rights the SDM defines for the access (U/S,
R/W with CR0.WP, NX with EFER.NXE, SMEP) but not SMAP, protection keys or
physical-address bits beyond MAXPHYADDR. PAE's four PDPTEs are read from memory
at CR3 & ~0x1F at each walk; the CPU caches them when CR3 is loaded.
5-level paging (CR4.LA57) is not modelled.

`guest_tree` lists the guest's paging structures from CR3 for display: present
entries only, in address order, capped at a number of nodes so that a guest
with huge (or aliased) tables cannot hang a debugger that shows them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .addresses import GPA, GVA, HPA
from .slat import SecondLevelTables, SlatStep, SlatWalk

CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_SMEP = 1 << 20
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
ACCESSED = 1 << 5
DIRTY = 1 << 6
PAGE_SIZE_BIT = 1 << 7
NO_EXECUTE = 1 << 63
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
ADDRESS_MASK_32 = 0xFFFF_F000

PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RESERVED = 1 << 3
PF_FETCH = 1 << 4

_PAE_PDPTE_RESERVED = 0x1E6 | NO_EXECUTE  # bits 2:1 and 8:5, and 63
_PSE_4M_RESERVED = 1 << 21


def paging_mode(cr0: int, cr4: int, efer: int) -> str:
    """"none" (CR0.PG = 0), "32-bit", "pae" or "4-level" (EFER.LMA, or LME with PG)."""
    if not cr0 & CR0_PG:
        return "none"
    if efer & (EFER_LMA | EFER_LME):
        return "4-level"
    return "pae" if cr4 & CR4_PAE else "32-bit"


@dataclass(frozen=True)
class GuestStep:
    """One guest paging-structure entry read during a walk.

    `decoded` holds present/writable/user/accessed/dirty/large/nx/address;
    `address` is the next table's GPA, or the page's base in a leaf. PAE's
    PDPTEs carry no access rights: writable and user read True there.
    """

    level: str
    table_gpa: GPA
    entry_gpa: GPA
    value: int
    decoded: dict[str, Any]


@dataclass(frozen=True)
class GuestWalk:
    """The result of translating one linear address through the guest's tables.

    `gpa` is None when the walk faults; `fault` then says why and `error_code`
    is the #PF error code (None for the #GP of a non-canonical address).
    `page_size` is the page's size, or the region the faulting entry covers
    (0 with paging off). `writable`, `user`, `executable` are the rights the
    entries walked grant together.
    """

    gva: GVA
    mode: str
    gpa: GPA | None
    fault: str | None
    error_code: int | None
    page_size: int
    writable: bool
    user: bool
    executable: bool
    steps: list[GuestStep]


@dataclass(frozen=True)
class TwoDStep:
    """One memory access of the two-dimensional walk.

    A SLAT step ("EPT for guest PDE at GPA 0x3000") translates a GPA: `hpa` is
    where it landed (None if not present), `value` the last SLAT entry read and
    `slat_steps` the SLAT walk. A guest step ("guest PDE") reads the guest's
    entry at `hpa`: `value` is the entry. `fault` names where hardware would
    stop: an EPT violation / nested page fault, or the guest's own #PF or #GP.
    """

    what: str
    gpa: GPA | None
    hpa: HPA | None
    value: int | None
    slat_steps: list[SlatStep]
    fault: str | None = None
    stage: str = ""
    """"slat" (a second-level translation), "guest" (a guest entry read), "" (no access made)."""
    level: str = ""
    """The guest level the access is for ("PML4E" ... "PTE"); "" for the final GPA."""


@dataclass(frozen=True)
class _Level:
    name: str
    shift: int
    index_bits: int
    large_size: int  # the page an entry with PS maps here; 0 where PS is not a page size


@dataclass(frozen=True)
class _Format:
    levels: tuple[_Level, ...]
    entry_size: int
    root_mask: int
    address_mask: int


_FORMATS = {
    "32-bit": _Format(
        (_Level("PDE", 22, 10, 1 << 22), _Level("PTE", 12, 10, 0)), 4, ADDRESS_MASK_32, ADDRESS_MASK_32
    ),
    "pae": _Format(
        (_Level("PDPTE", 30, 2, 0), _Level("PDE", 21, 9, 1 << 21), _Level("PTE", 12, 9, 0)),
        8,
        0xFFFF_FFE0,
        ADDRESS_MASK,
    ),
    "4-level": _Format(
        (
            _Level("PML4E", 39, 9, 0),
            _Level("PDPTE", 30, 9, 1 << 30),
            _Level("PDE", 21, 9, 1 << 21),
            _Level("PTE", 12, 9, 0),
        ),
        8,
        ADDRESS_MASK,
        ADDRESS_MASK,
    ),
}

_ReadEntry = Callable[[str, GPA, int], int]
"""(level name, entry GPA, entry size) -> the entry's value."""


def walk(
    read_gpa: Callable[[GPA, int], bytes],
    gva: GVA,
    *,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    write: bool = False,
    user: bool = False,
    fetch: bool = False,
) -> GuestWalk:
    """Translate `gva` through the guest's tables, reading guest-physical memory with `read_gpa(gpa, size)`.

    `write`, `user`, `fetch` describe the access whose rights are checked.
    """

    def read_entry(level: str, gpa: GPA, size: int) -> int:
        return int.from_bytes(read_gpa(gpa, size), "little")

    return _walk(read_entry, gva, cr0, cr3, cr4, efer, write, user, fetch)


def walk_2d(
    read_hpa: Callable[[HPA, int], bytes],
    slat: SecondLevelTables,
    gva: GVA,
    *,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    write: bool = False,
    user: bool = False,
    fetch: bool = False,
) -> list[TwoDStep]:
    """The walk hardware does with EPT/NPT on: every guest table access goes through `slat`.

    For each guest paging-structure entry, its GPA is translated by `slat`
    (checked as `slat.table_walk_access`), then the entry is read from host
    memory with `read_hpa(hpa, size)`; finally the guest's GPA is translated and
    checked for the access. The list ends where hardware would stop.
    """
    steps: list[TwoDStep] = []

    def read_entry(level: str, gpa: GPA, size: int) -> int:
        result = slat.translate(gpa)
        denied = _slat_denied(result, write=slat.table_walk_access == "write", fetch=False)
        fault = f"{slat.violation} during the guest page-table walk: {denied}" if denied else None
        steps.append(_slat_step(f"{slat.kind} for guest {level} at GPA {gpa:#x}", result, fault, level))
        hpa = result.hpa
        if hpa is None or denied:
            raise _SlatStop
        value = int.from_bytes(read_hpa(hpa, size), "little")
        steps.append(TwoDStep(f"guest {level}", gpa, hpa, value, [], stage="guest", level=level))
        return value

    try:
        guest = _walk(read_entry, gva, cr0, cr3, cr4, efer, write, user, fetch)
    except _SlatStop:
        return steps
    if guest.gpa is None:
        fault = f"{'#GP' if guest.error_code is None else 'guest #PF'}: {guest.fault}"
        if steps:
            steps[-1] = replace(steps[-1], fault=fault)
        else:
            steps.append(TwoDStep(f"guest linear address {gva:#x}", None, None, None, [], fault))
        return steps
    result = slat.translate(guest.gpa)
    denied = _slat_denied(result, write=write, fetch=fetch)
    fault = f"{slat.violation} on the final GPA: {denied}" if denied else None
    steps.append(_slat_step(f"{slat.kind} for final GPA {guest.gpa:#x}", result, fault))
    return steps


class _SlatStop(Exception):
    """A guest table access failed its second-level translation."""


def _slat_step(what: str, result: SlatWalk, fault: str | None, level: str = "") -> TwoDStep:
    last = result.steps[-1].value if result.steps else None
    return TwoDStep(what, result.gpa, result.hpa, last, result.steps, fault, "slat", level)


def _slat_denied(result: SlatWalk, *, write: bool, fetch: bool) -> str | None:
    if result.hpa is None:
        return "not present"
    if fetch and not result.executable:
        return "no execute permission"
    if write and not result.writable:
        return "no write permission"
    if not (write or fetch) and not result.readable:
        return "no read permission"
    return None


def _walk(
    read_entry: _ReadEntry,
    gva: GVA,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    write: bool,
    user: bool,
    fetch: bool,
) -> GuestWalk:
    mode = paging_mode(cr0, cr4, efer)
    if mode == "none":
        linear = gva & 0xFFFF_FFFF  # with paging off the CPU cannot be in long mode
        return GuestWalk(GVA(linear), mode, GPA(linear), None, None, 0, True, True, True, [])
    if mode == "4-level":
        top = gva >> 47
        if top not in (0, (1 << 17) - 1):
            return GuestWalk(gva, mode, None, "non-canonical address", None, 0, False, False, False, [])
    else:
        gva = GVA(gva & 0xFFFF_FFFF)
    fmt = _FORMATS[mode]
    nxe = mode != "32-bit" and bool(efer & EFER_NXE)
    error = (PF_WRITE if write else 0) | (PF_USER if user else 0)
    if fetch and (nxe or cr4 & CR4_SMEP):
        error |= PF_FETCH
    steps: list[GuestStep] = []
    table = GPA(cr3 & fmt.root_mask)
    writable = user_ok = True
    no_exec = False
    for level in fmt.levels:
        entry_gpa = GPA(table + fmt.entry_size * ((gva >> level.shift) & ((1 << level.index_bits) - 1)))
        value = read_entry(level.name, entry_gpa, fmt.entry_size)
        large = bool(level.large_size and value & PAGE_SIZE_BIT and (mode != "32-bit" or cr4 & CR4_PSE))
        leaf = large or level.name == "PTE"
        size = level.large_size if large else 1 << level.shift
        base = GPA(_page_base(value, size, fmt) if leaf else value & fmt.address_mask)
        pdpte_register = mode == "pae" and level.name == "PDPTE"
        steps.append(
            GuestStep(level.name, table, entry_gpa, value, _decode(value, base, large, leaf, pdpte_register, mode))
        )
        if not value & PRESENT:
            return _fault(gva, mode, f"not present at {level.name}", error, size, steps)
        if _reserved(value, level, large, size, mode, nxe):
            return _fault(gva, mode, f"reserved bit set at {level.name}", error | PF_PRESENT | PF_RESERVED, size, steps)
        if not pdpte_register:
            writable = writable and bool(value & WRITABLE)
            user_ok = user_ok and bool(value & USER)
        no_exec = no_exec or (nxe and bool(value & NO_EXECUTE))
        if leaf:
            denied = _denied(writable, user_ok, no_exec, cr0, cr4, write, user, fetch)
            if denied:
                return _fault(gva, mode, denied, error | PF_PRESENT, size, steps)
            gpa = GPA(base | (gva & (size - 1)))
            return GuestWalk(gva, mode, gpa, None, None, size, writable, user_ok, not no_exec, steps)
        table = base
    raise AssertionError("the last level of every paging format is a leaf")


def _fault(gva: GVA, mode: str, why: str, error_code: int, size: int, steps: list[GuestStep]) -> GuestWalk:
    return GuestWalk(gva, mode, None, why, error_code, size, False, False, False, steps)


def _page_base(value: int, size: int, fmt: _Format) -> int:
    if size == 1 << 22:  # 32-bit paging, 4 MiB page: bits 20:13 give address bits 39:32 (PSE-36)
        return (value & 0xFFC0_0000) | (((value >> 13) & 0xFF) << 32)
    return value & fmt.address_mask & ~(size - 1)


def _reserved(value: int, level: _Level, large: bool, size: int, mode: str, nxe: bool) -> bool:
    if mode == "32-bit":
        return large and bool(value & _PSE_4M_RESERVED)
    if mode == "pae" and level.name == "PDPTE":
        return bool(value & _PAE_PDPTE_RESERVED)
    if value & NO_EXECUTE and not nxe:
        return True
    if level.name == "PML4E" and value & PAGE_SIZE_BIT:
        return True
    return large and bool(value & (size - 1) & ~0x1FFF)  # bits 20:13 / 29:13 (bit 12 is PAT)


def _denied(
    writable: bool, user_ok: bool, no_exec: bool, cr0: int, cr4: int, write: bool, user: bool, fetch: bool
) -> str | None:
    if user and not user_ok:
        return "user access to supervisor page"
    if write and not writable and (user or cr0 & CR0_WP):
        return "write to read-only page"
    if fetch and no_exec:
        return "instruction fetch from no-execute page"
    if fetch and not user and user_ok and cr4 & CR4_SMEP:
        return "supervisor fetch from user page (SMEP)"
    return None


def _decode(value: int, address: int, large: bool, leaf: bool, pdpte_register: bool, mode: str) -> dict[str, Any]:
    return {
        "present": bool(value & PRESENT),
        "writable": pdpte_register or bool(value & WRITABLE),
        "user": pdpte_register or bool(value & USER),
        "accessed": not pdpte_register and bool(value & ACCESSED),
        "dirty": leaf and bool(value & DIRTY),
        "large": large,
        "nx": mode != "32-bit" and not pdpte_register and bool(value & NO_EXECUTE),
        "address": address,
    }



# -- the guest's tables as a tree, for display ----------------------------------------------------

TRUNCATED = "..."
"""The level of `guest_tree`'s pseudo-node that stands for the entries left out."""

_COUNT_TABLES = 256
"""Tables `guest_tree` reads past its limit to count what it leaves out (then it gives a lower bound)."""


@dataclass(frozen=True)
class GuestNode:
    """One present entry of the guest's paging structures, for display.

    `linear` is the first linear address the entry covers (canonical, so the
    upper half of 4-level paging is sign-extended) and `size` how many bytes it
    covers: the page for a leaf, the region under the table otherwise.
    `entry_gpa` is where the entry sits in guest-physical memory. `decoded` is
    as in `GuestStep` plus "reserved" (a reserved bit is set: hardware faults on
    the entry, so its table is not followed). `children` are the present entries
    of the next table.

    A pseudo-node with level `TRUNCATED` ("...") stands for `omitted` entries
    left out by the limit; `omitted_exact` is False when they were too many to
    count, and `omitted` is then a lower bound. `decoded["note"]` says so in words.
    """

    level: str
    index: int
    linear: GVA
    size: int
    entry_gpa: GPA
    value: int
    decoded: dict[str, Any]
    children: list[GuestNode] = field(default_factory=list)
    leaf: bool = False
    omitted: int = 0
    omitted_exact: bool = True

    @property
    def truncated(self) -> bool:
        """Whether this is the pseudo-node for entries left out."""
        return self.level == TRUNCATED


def decode_entry(value: int, level: str, *, mode: str, cr4: int = 0) -> dict[str, Any]:
    """The fields of a guest paging-structure entry at `level` ("PDE", ...) in paging `mode`.

    The same dictionary `walk` gives in `GuestStep.decoded`: `address` is the
    next table's GPA, or the page base for a leaf (a large page needs CR4.PSE in
    32-bit paging).
    """
    fmt = _FORMATS[mode]
    for lvl in fmt.levels:
        if lvl.name == level:
            break
    else:
        raise ValueError(f"{mode} paging has no {level} level")
    large, leaf, size = _shape(value, lvl, mode, cr4)
    base = _page_base(value, size, fmt) if leaf else value & fmt.address_mask
    return _decode(value, base, large, leaf, mode == "pae" and level == "PDPTE", mode)


def guest_tree(
    read_gpa: Callable[[GPA, int], bytes],
    *,
    cr0: int,
    cr3: int,
    cr4: int,
    efer: int,
    limit: int = 4096,
) -> list[GuestNode]:
    """The present entries of the guest's paging structures from CR3, as a tree.

    Reads guest-physical memory with `read_gpa(gpa, size)`, one table at a
    time. Empty with paging off. At most `limit` nodes are built, depth first
    in address order; if entries are left out, the list ends with a pseudo-node
    (level "...") saying how many.
    """
    mode = paging_mode(cr0, cr4, efer)
    if mode == "none":
        return []
    fmt = _FORMATS[mode]
    nxe = mode != "32-bit" and bool(efer & EFER_NXE)
    unpack = struct.Struct("<" + ("I" if fmt.entry_size == 4 else "Q")).iter_unpack
    state = {"left": max(0, limit), "omitted": 0, "count_tables": _COUNT_TABLES, "exact": True}

    def entries(table: int, level: _Level) -> list[tuple[int, int]]:
        count = 1 << level.index_bits
        raw = read_gpa(GPA(table), count * fmt.entry_size)
        return [(i, v) for i, (v,) in enumerate(unpack(raw)) if v & PRESENT]

    def follow(value: int, depth: int, level: _Level) -> int | None:
        """The next table's GPA, or None for a leaf or an entry with reserved bits set."""
        large, leaf, size = _shape(value, level, mode, cr4)
        if leaf or _reserved(value, level, large, size, mode, nxe) or depth + 1 >= len(fmt.levels):
            return None
        return value & fmt.address_mask

    def count(table: int, depth: int) -> int:
        """Present entries in the table and under it, reading at most the tables left to count."""
        if state["count_tables"] <= 0:
            state["exact"] = False
            return 0
        state["count_tables"] -= 1
        level = fmt.levels[depth]
        total = 0
        for _index, value in entries(table, level):
            total += 1
            below = follow(value, depth, level)
            if below is not None:
                total += count(below, depth + 1)
        return total

    def nodes(table: int, depth: int, base: int) -> list[GuestNode]:
        level = fmt.levels[depth]
        out: list[GuestNode] = []
        for index, value in entries(table, level):
            below = follow(value, depth, level)
            if state["left"] <= 0:
                state["omitted"] += 1 + (count(below, depth + 1) if below is not None else 0)
                continue
            state["left"] -= 1
            large, leaf, size = _shape(value, level, mode, cr4)
            linear = base + (index << level.shift)
            if mode == "4-level" and linear & (1 << 47):
                linear |= 0xFFFF_0000_0000_0000
            address = _page_base(value, size, fmt) if leaf else value & fmt.address_mask
            decoded = _decode(value, address, large, leaf, mode == "pae" and level.name == "PDPTE", mode)
            decoded["reserved"] = _reserved(value, level, large, size, mode, nxe)
            entry_gpa = GPA(table + fmt.entry_size * index)
            children = nodes(below, depth + 1, linear) if below is not None else []
            out.append(GuestNode(level.name, index, GVA(linear), size, entry_gpa, value, decoded, children, leaf))
        return out

    tree = nodes(cr3 & fmt.root_mask, 0, 0)
    omitted = state["omitted"]
    if omitted:
        exact = state["exact"]
        note = f"... {'' if exact else 'at least '}{omitted} more entries not shown"
        tree.append(
            GuestNode(TRUNCATED, 0, GVA(0), 0, GPA(0), 0, {"note": note}, [], False, omitted, exact)
        )
    return tree


def _shape(value: int, level: _Level, mode: str, cr4: int) -> tuple[bool, bool, int]:
    """(large, leaf, size) of an entry at `level`, as `_walk` decides them."""
    large = bool(level.large_size and value & PAGE_SIZE_BIT and (mode != "32-bit" or cr4 & CR4_PSE))
    leaf = large or level.name == "PTE"
    return large, leaf, level.large_size if large else 1 << level.shift
