"""The guest page-table walker over hand-built tables, and the two-dimensional walk through EPT/NPT."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ept import Ept
from engine.hostmem import HostMemory
from engine.npt import Npt
from engine.paging import paging_mode, walk, walk_2d

PE, WP, PG = 1, 1 << 16, 1 << 31
PSE, PAE, SMEP = 1 << 4, 1 << 5, 1 << 20
LME, LMA, NXE = 1 << 8, 1 << 10, 1 << 11
P, RW, US, PS = 1, 2, 4, 0x80
XD = 1 << 63
KIB4 = 0x1000
MASK = 0x000F_FFFF_FFFF_F000

LONG = dict(cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=LME | LMA)
# 4-level indices 1, 2, 3, 4 and offset 0xABC
GVA = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0xABC


class Ram:
    """Guest-physical memory for a walk that does not need EPT: a zero-filled bytearray."""

    def __init__(self, size: int = 16 << 20) -> None:
        self.data = bytearray(size)

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.data[gpa : gpa + size])

    def put(self, gpa: int, value: int, size: int = 8) -> None:
        self.data[gpa : gpa + size] = value.to_bytes(size, "little")


@pytest.fixture
def ram() -> Ram:
    return Ram()


def long_tables(ram: Ram, *, pml4e: int = 0x2000 | 7, pdpte: int = 0x3000 | 7, pde: int = 0x4000 | 7,
                pte: int = 0x5000 | 7) -> None:
    """The path to GVA: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, page 0x5000."""
    ram.put(0x1000 + 8 * 1, pml4e)
    ram.put(0x2000 + 8 * 2, pdpte)
    ram.put(0x3000 + 8 * 3, pde)
    ram.put(0x4000 + 8 * 4, pte)


# -- mode ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cr0, cr4, efer, mode",
    [
        (PE, PAE, LME | LMA, "none"),
        (PE | PG, 0, 0, "32-bit"),
        (PE | PG, PSE, 0, "32-bit"),
        (PE | PG, PAE, 0, "pae"),
        (PE | PG, PAE, LMA | LME, "4-level"),
        (PE | PG, PAE, LME, "4-level"),
        (PE | PG, PAE, LMA, "4-level"),
    ],
)
def test_paging_mode(cr0, cr4, efer, mode):
    assert paging_mode(cr0, cr4, efer) == mode


def test_paging_off_is_identity_truncated_to_32_bits(ram):
    result = walk(ram.read, 0x1_2345_6789, cr0=PE, cr3=0x1000, cr4=PAE, efer=LME)
    assert (result.mode, result.gpa, result.fault, result.page_size, result.steps) == ("none", 0x2345_6789, None, 0, [])


# -- 32-bit paging -------------------------------------------------------------------------------


def test_32bit_4k_page(ram):
    ram.put(0x1000 + 4 * 1, 0x2000 | 7, 4)
    ram.put(0x2000 + 4 * 3, 0x5000 | 7 | 0x60, 4)  # accessed and dirty
    result = walk(ram.read, 0x0040_3123, cr0=PG | PE, cr3=0x1000, cr4=0, efer=0)
    assert result.gpa == 0x5123 and result.page_size == KIB4 and result.fault is None
    assert [(s.level, s.table_gpa, s.entry_gpa, s.value) for s in result.steps] == [
        ("PDE", 0x1000, 0x1004, 0x2007),
        ("PTE", 0x2000, 0x200C, 0x5067),
    ]
    assert result.steps[1].decoded == {
        "present": True,
        "writable": True,
        "user": True,
        "accessed": True,
        "dirty": True,
        "large": False,
        "nx": False,
        "address": 0x5000,
    }


def test_32bit_pse_4m_page_with_pse36_high_bits(ram):
    ram.put(0x1000 + 4 * 2, 0x0C00_0000 | PS | 7, 4)
    ram.put(0x1000 + 4 * 3, 0x0C40_0000 | (0x3 << 13) | PS | 7, 4)  # bits 20:13 = address bits 39:32
    low = walk(ram.read, 0x0080_1234, cr0=PG | PE, cr3=0x1000, cr4=PSE, efer=0)
    assert low.gpa == 0x0C00_1234 and low.page_size == 4 << 20
    assert [s.level for s in low.steps] == ["PDE"] and low.steps[0].decoded["large"]
    high = walk(ram.read, 0x00C0_0010, cr0=PG | PE, cr3=0x1000, cr4=PSE, efer=0)
    assert high.gpa == 0x3_0C40_0010


def test_32bit_page_size_bit_is_ignored_without_cr4_pse(ram):
    ram.put(0x1000, 0x0040_0000 | PS | 7, 4)  # without PSE: a page table at 0x400000
    ram.put(0x0040_0000 + 4 * 5, 0x9000 | 7, 4)
    result = walk(ram.read, 0x5010, cr0=PG | PE, cr3=0x1000, cr4=0, efer=0)
    assert result.gpa == 0x9010 and [s.level for s in result.steps] == ["PDE", "PTE"]


def test_32bit_4m_reserved_bit_21(ram):
    ram.put(0x1000, 0x0020_0000 | PS | 7, 4)
    result = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=PSE, efer=0)
    assert result.fault == "reserved bit set at PDE" and result.error_code == 0x9


def test_32bit_fetch_fault_has_no_id_bit_without_smep(ram):
    ram.put(0x1000, 0x2000 | 7, 4)
    ram.put(0x2000, 0x5000 | P | RW, 4)  # supervisor page
    result = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=0, efer=NXE, user=True, fetch=True)
    assert result.fault == "user access to supervisor page" and result.error_code == 0x5


# -- PAE -----------------------------------------------------------------------------------------


def test_pae_4k_page_with_pdptes_at_cr3_32_byte_aligned(ram):
    ram.put(0x1020 + 8 * 3, 0x2000 | P)
    ram.put(0x2000 + 8 * 1, 0x3000 | 7)
    ram.put(0x3000 + 8 * 1, 0x6000 | 7)
    result = walk(ram.read, 0xC020_1123, cr0=PG | PE, cr3=0x1020, cr4=PAE, efer=0)
    assert result.mode == "pae" and result.gpa == 0x6123
    assert [(s.level, s.table_gpa, s.entry_gpa) for s in result.steps] == [
        ("PDPTE", 0x1020, 0x1038),
        ("PDE", 0x2000, 0x2008),
        ("PTE", 0x3000, 0x3008),
    ]
    pdpte = result.steps[0].decoded
    assert pdpte["writable"] and pdpte["user"] and pdpte["address"] == 0x2000  # PDPTEs restrict nothing
    assert result.writable and result.user and result.executable


def test_pae_2m_page(ram):
    ram.put(0x1020 + 8 * 3, 0x2000 | P)
    ram.put(0x2000 + 8 * 2, 0x0060_0000 | PS | 7)
    result = walk(ram.read, 0xC040_1234, cr0=PG | PE, cr3=0x1020, cr4=PAE, efer=0)
    assert result.gpa == 0x60_1234 and result.page_size == 0x20_0000
    assert result.steps[-1].decoded["large"]


def test_pae_pdpte_reserved_bits(ram):
    ram.put(0x1000, 0x2000 | P | RW)  # bit 1 is reserved in a PAE PDPTE
    result = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=0)
    assert result.fault == "reserved bit set at PDPTE" and result.error_code == 0x9
    assert result.page_size == 1 << 30


def test_pae_nx(ram):
    ram.put(0x1000, 0x2000 | P)
    ram.put(0x2000, 0x3000 | 7)
    ram.put(0x3000, 0x6000 | 7 | XD)
    ok = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=NXE)
    assert ok.gpa == 0x6010 and not ok.executable and ok.steps[-1].decoded["nx"]
    fetch = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=NXE, fetch=True)
    assert fetch.fault == "instruction fetch from no-execute page" and fetch.error_code == 0x11
    no_nxe = walk(ram.read, 0x10, cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=0)
    assert no_nxe.fault == "reserved bit set at PTE" and no_nxe.error_code == 0x9


# -- 4-level -------------------------------------------------------------------------------------


def test_4level_4k_page(ram):
    long_tables(ram)
    result = walk(ram.read, GVA, **LONG)
    assert result.mode == "4-level" and result.gpa == 0x5ABC and result.page_size == KIB4
    assert [(s.level, s.table_gpa, s.entry_gpa, s.value) for s in result.steps] == [
        ("PML4E", 0x1000, 0x1008, 0x2007),
        ("PDPTE", 0x2000, 0x2010, 0x3007),
        ("PDE", 0x3000, 0x3018, 0x4007),
        ("PTE", 0x4000, 0x4020, 0x5007),
    ]


def test_4level_cr3_low_bits_are_ignored(ram):
    long_tables(ram)
    assert walk(ram.read, GVA, **{**LONG, "cr3": 0x1000 | 0x18}).gpa == 0x5ABC


def test_4level_2m_and_1g_pages(ram):
    long_tables(ram, pde=0x0080_0000 | PS | 7)
    two = walk(ram.read, GVA, **LONG)
    assert two.gpa == 0x0080_0000 | (GVA & 0x1F_FFFF) and two.page_size == 0x20_0000
    assert [s.level for s in two.steps] == ["PML4E", "PDPTE", "PDE"]
    long_tables(ram, pdpte=0x4000_0000 | PS | 7)
    one = walk(ram.read, GVA, **LONG)
    assert one.gpa == 0x4000_0000 | (GVA & 0x3FFF_FFFF) and one.page_size == 1 << 30
    assert one.steps[-1].decoded["large"] and one.steps[-1].decoded["address"] == 0x4000_0000


def test_4level_upper_half_address(ram):
    ram.put(0x1000 + 8 * 256, 0x2000 | 7)
    ram.put(0x2000, 0x3000 | 7)
    ram.put(0x3000, 0x0020_0000 | PS | 7)
    assert walk(ram.read, 0xFFFF_8000_0000_1234, **LONG).gpa == 0x20_1234


def test_non_canonical_address_is_a_gp(ram):
    result = walk(ram.read, 0x0000_8000_0000_0000, **LONG)
    assert result.fault == "non-canonical address" and result.error_code is None and result.steps == []


@pytest.mark.parametrize(
    "missing, level, size", [("pml4e", "PML4E", 1 << 39), ("pdpte", "PDPTE", 1 << 30), ("pde", "PDE", 0x20_0000),
                             ("pte", "PTE", KIB4)]
)
def test_not_present_at_each_level(ram, missing, level, size):
    long_tables(ram, **{missing: 0x9000 | RW | US})  # P = 0
    result = walk(ram.read, GVA, **LONG, write=True, user=True)
    assert result.gpa is None and result.fault == f"not present at {level}"
    assert result.error_code == 0x6  # W | U, P = 0
    assert result.steps[-1].level == level and result.page_size == size
    assert not result.steps[-1].decoded["present"]


def test_write_to_read_only_page(ram):
    long_tables(ram, pte=0x5000 | P | US)
    user = walk(ram.read, GVA, **LONG, write=True, user=True)
    assert user.fault == "write to read-only page" and user.error_code == 0x7
    assert walk(ram.read, GVA, **LONG, write=True).gpa == 0x5ABC  # supervisor, CR0.WP = 0
    wp = walk(ram.read, GVA, **{**LONG, "cr0": PG | PE | WP}, write=True)
    assert wp.fault == "write to read-only page" and wp.error_code == 0x3
    assert not walk(ram.read, GVA, **LONG).writable


def test_read_only_upper_level_makes_the_page_read_only(ram):
    long_tables(ram, pdpte=0x3000 | P | US)
    assert walk(ram.read, GVA, **LONG, write=True, user=True).fault == "write to read-only page"


def test_user_access_to_supervisor_page(ram):
    long_tables(ram, pde=0x4000 | P | RW)
    result = walk(ram.read, GVA, **LONG, user=True)
    assert result.fault == "user access to supervisor page" and result.error_code == 0x5
    assert walk(ram.read, GVA, **LONG).gpa == 0x5ABC


def test_nx_at_an_upper_level(ram):
    long_tables(ram, pde=0x4000 | 7 | XD)
    efer = LME | LMA | NXE
    fetch = walk(ram.read, GVA, **{**LONG, "efer": efer}, fetch=True, user=True)
    assert fetch.fault == "instruction fetch from no-execute page" and fetch.error_code == 0x15
    data = walk(ram.read, GVA, **{**LONG, "efer": efer})
    assert data.gpa == 0x5ABC and not data.executable
    rsvd = walk(ram.read, GVA, **LONG)  # NXE = 0: bit 63 is reserved
    assert rsvd.fault == "reserved bit set at PDE" and rsvd.error_code == 0x9


def test_smep(ram):
    long_tables(ram)  # all user pages
    result = walk(ram.read, GVA, **{**LONG, "cr4": PAE | SMEP}, fetch=True)
    assert result.fault == "supervisor fetch from user page (SMEP)" and result.error_code == 0x11
    assert walk(ram.read, GVA, **LONG, fetch=True).gpa == 0x5ABC


@pytest.mark.parametrize(
    "kw, level",
    [({"pml4e": 0x2000 | PS | 7}, "PML4E"), ({"pde": 0x0080_2000 | PS | 7}, "PDE"),
     ({"pdpte": 0x4000_2000 | PS | 7}, "PDPTE")],
)
def test_4level_reserved_bits(ram, kw, level):
    long_tables(ram, **kw)
    result = walk(ram.read, GVA, **LONG)
    assert result.fault == f"reserved bit set at {level}" and result.error_code == 0x9


# -- two-dimensional walk --------------------------------------------------------------------------

GUEST_PAGES = [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]  # PML4, PDPT, PD, PT, data


def two_d_machine(slat_class):
    """Guest tables at GPAs 0x1000-0x4000 (and data at 0x5000) backed by scattered HPAs."""
    mem = HostMemory(32 << 20)
    slat = slat_class(mem)
    frames = [mem.alloc_frame() for _ in range(8)]
    hpa = dict(zip(GUEST_PAGES, [frames[6], frames[2], frames[7], frames[0], frames[4]]))
    for gpa, host in hpa.items():
        slat.map(gpa, host, KIB4)
    for gpa, index, value in [(0x1000, 1, 0x2007), (0x2000, 2, 0x3007), (0x3000, 3, 0x4007), (0x4000, 4, 0x5007)]:
        mem.write_u64(hpa[gpa] + 8 * index, value)
    return mem, slat, hpa


def test_2d_walk_through_ept():
    mem, ept, hpa = two_d_machine(Ept)
    steps = walk_2d(mem.read, ept, GVA, **LONG)
    assert [s.what for s in steps] == [
        "EPT for guest PML4E at GPA 0x1008",
        "guest PML4E",
        "EPT for guest PDPTE at GPA 0x2010",
        "guest PDPTE",
        "EPT for guest PDE at GPA 0x3018",
        "guest PDE",
        "EPT for guest PTE at GPA 0x4020",
        "guest PTE",
        "EPT for final GPA 0x5abc",
    ]
    entry_gpas = [0x1008, 0x2010, 0x3018, 0x4020]
    assert [s.gpa for s in steps] == [g for g in entry_gpas for _ in (0, 1)] + [0x5ABC]
    entry_hpas = [hpa[g & ~0xFFF] + (g & 0xFFF) for g in entry_gpas]
    assert [s.hpa for s in steps] == [h for h in entry_hpas for _ in (0, 1)] + [hpa[0x5000] + 0xABC]
    assert [s.value for s in steps[1:8:2]] == [0x2007, 0x3007, 0x4007, 0x5007]
    assert [s.value for s in steps[0::2]] == [hpa[g] | 0x37 for g in GUEST_PAGES]  # the EPT leaves
    assert all(len(s.slat_steps) == 4 for s in steps[0::2]) and all(s.slat_steps == [] for s in steps[1::2])
    assert all(s.fault is None for s in steps)
    assert steps[0].slat_steps[0].table_hpa == ept.root


def test_2d_walk_agrees_with_the_1d_walk_over_the_same_memory():
    mem, ept, _ = two_d_machine(Ept)

    def read_gpa(gpa: int, size: int) -> bytes:
        return mem.read(ept.translate(gpa).hpa, size)

    one = walk(read_gpa, GVA, **LONG)
    two = walk_2d(mem.read, ept, GVA, **LONG)
    assert [(s.entry_gpa, s.value) for s in one.steps] == [(s.gpa, s.value) for s in two[1:8:2]]


def test_2d_walk_stops_at_an_unmapped_guest_table():
    mem, ept, _ = two_d_machine(Ept)
    ept.unmap(0x3000, KIB4)
    steps = walk_2d(mem.read, ept, GVA, **LONG)
    assert len(steps) == 5
    last = steps[-1]
    assert last.what == "EPT for guest PDE at GPA 0x3018" and last.gpa == 0x3018 and last.hpa is None
    assert last.fault == "EPT violation during the guest page-table walk: not present"
    assert [s.level for s in last.slat_steps] == ["PML4E", "PDPTE", "PDE", "PTE"] and last.value == 0


def test_2d_walk_npt_checks_guest_table_accesses_as_writes():
    mem, npt, _ = two_d_machine(Npt)
    npt.protect(0x2000, KIB4, read=True, write=False, execute=True)
    steps = walk_2d(mem.read, npt, GVA, **LONG)
    assert steps[-1].what == "NPT for guest PDPTE at GPA 0x2010" and steps[-1].hpa is not None
    assert steps[-1].fault == "nested page fault during the guest page-table walk: no write permission"
    mem, ept, _ = two_d_machine(Ept)
    ept.protect(0x2000, KIB4, read=True, write=False, execute=False)
    assert walk_2d(mem.read, ept, GVA, **LONG)[-1].fault is None  # EPT: reads, A/D flags off


def test_2d_walk_guest_page_fault():
    mem, ept, hpa = two_d_machine(Ept)
    mem.write_u64(hpa[0x4000] + 8 * 4, 0)
    steps = walk_2d(mem.read, ept, GVA, **LONG)
    assert len(steps) == 8
    assert steps[-1].what == "guest PTE" and steps[-1].fault == "guest #PF: not present at PTE"


def test_2d_walk_final_gpa_faults():
    mem, ept, _ = two_d_machine(Ept)
    ept.protect(0x5000, KIB4, read=True, write=False, execute=False)
    steps = walk_2d(mem.read, ept, GVA, **LONG, write=True)
    assert steps[-1].fault == "EPT violation on the final GPA: no write permission"
    fetch = walk_2d(mem.read, ept, GVA, **LONG, fetch=True)
    assert fetch[-1].fault == "EPT violation on the final GPA: no execute permission"
    ept.unmap(0x5000, KIB4)
    steps = walk_2d(mem.read, ept, GVA, **LONG)
    assert len(steps) == 9 and steps[-1].hpa is None
    assert steps[-1].fault == "EPT violation on the final GPA: not present"


def test_2d_walk_with_paging_off_and_non_canonical():
    mem, ept, hpa = two_d_machine(Ept)
    (only,) = walk_2d(mem.read, ept, 0x5010, cr0=PE, cr3=0, cr4=0, efer=0)
    assert only.what == "EPT for final GPA 0x5010" and only.hpa == hpa[0x5000] + 0x10
    (gp,) = walk_2d(mem.read, ept, 0x0000_8000_0000_0000, **LONG)
    assert gp.fault == "#GP: non-canonical address" and gp.gpa is None


# -- properties ----------------------------------------------------------------------------------


class Tables4:
    """A tiny builder of 4-level guest tables in a Ram, for the properties."""

    def __init__(self) -> None:
        self.ram = Ram(2 << 20)
        self.next = 0x1000
        self.cr3 = self._alloc()

    def _alloc(self) -> int:
        self.next += KIB4
        return self.next - KIB4

    def map(self, gva: int, gpa: int) -> None:
        table = self.cr3
        for shift in (39, 30, 21):
            entry = table + 8 * ((gva >> shift) & 511)
            value = int.from_bytes(self.ram.read(entry, 8), "little")
            if not value & P:
                value = self._alloc() | 7
                self.ram.put(entry, value)
            table = value & MASK
        self.ram.put(table + 8 * ((gva >> 12) & 511), gpa | 7)


def canonical(page: int) -> int:
    gva = page << 12
    return gva | (0xFFFF << 48) if gva >> 47 else gva


gva_pages = st.integers(0, (1 << 36) - 1)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(gva_pages, st.integers(0x100, 0xFFFFF), min_size=1, max_size=30), gva_pages)
def test_4level_walk_finds_every_mapping(mapping, probe):
    tables = Tables4()
    for page, gpa_page in mapping.items():
        tables.map(canonical(page), gpa_page << 12)
    regs = dict(cr0=PG | PE, cr3=tables.cr3, cr4=PAE, efer=LME | LMA)
    for page, gpa_page in mapping.items():
        assert walk(tables.ram.read, canonical(page) | 0x5A5, **regs).gpa == (gpa_page << 12) | 0x5A5
    result = walk(tables.ram.read, canonical(probe), **regs)
    if probe in mapping:
        assert result.gpa == mapping[probe] << 12
    else:
        assert result.gpa is None and result.fault.startswith("not present at ")


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(gva_pages, st.integers(0x10, 0x1FF), min_size=1, max_size=12), st.randoms())
def test_2d_walk_ends_where_the_1d_walk_and_ept_lead(mapping, rng: random.Random):
    tables = Tables4()
    for page, gpa_page in mapping.items():
        tables.map(canonical(page), gpa_page << 12)
    mem = HostMemory(16 << 20)
    ept = Ept(mem)
    guest_pages = sorted(set(range(0x1000, tables.next, KIB4)) | {g << 12 for g in mapping.values()})
    frames = [mem.alloc_frame() for _ in guest_pages]
    rng.shuffle(frames)
    for gpa, hpa in zip(guest_pages, frames):
        ept.map(gpa, hpa, KIB4)
        if gpa < tables.next:
            mem.write(hpa, tables.ram.read(gpa, KIB4))
    regs = dict(cr0=PG | PE, cr3=tables.cr3, cr4=PAE, efer=LME | LMA)
    for page in mapping:
        gva = canonical(page) | 0x321
        steps = walk_2d(mem.read, ept, gva, **regs)
        assert len(steps) == 9 and all(s.fault is None for s in steps)
        assert steps[-1].hpa == ept.translate(walk(tables.ram.read, gva, **regs).gpa).hpa
