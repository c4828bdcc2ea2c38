"""NPT: x86-64 page-table entries (APM §15.25) read back from host memory; translation; splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.hostmem import HostMemory
from engine.npt import Npt
from test_ept import GPA, KIB4, MASK, MIB2, entries_for, ops, run_model

NX = 1 << 63


@pytest.fixture
def mem() -> HostMemory:
    return HostMemory(64 << 20)


@pytest.fixture
def npt(mem: HostMemory) -> Npt:
    return Npt(mem)


def test_4k_leaf_and_nonleaf_entries(mem, npt):
    npt.map(GPA, 0x5000, KIB4)
    pml4e, pdpte, pde, pte = entries_for(mem, npt.root, GPA)
    assert pte == 0x5007  # P | RW | US
    for upper in (pml4e, pdpte, pde):
        assert upper & ~MASK == 0x7  # P | RW | US, no NX


def test_2m_leaf_has_page_size_bit(mem, npt):
    npt.map(MIB2, 0x40_0000, MIB2)
    assert entries_for(mem, npt.root, MIB2)[-1] == 0x40_0000 | 0x87


@pytest.mark.parametrize(
    "rights, expected",
    [
        ((True, True, False), 0x5007 | NX),
        ((True, False, True), 0x5005),
        ((True, False, False), 0x5005 | NX),
        ((False, False, False), 0x5004 | NX),  # not present, address and U/S kept
    ],
)
def test_leaf_rights_bits(mem, npt, rights, expected):
    read, write, execute = rights
    npt.map(GPA, 0x5000, KIB4, read=read, write=write, execute=execute)
    assert entries_for(mem, npt.root, GPA)[-1] == expected


@pytest.mark.parametrize("rights", [(False, True, False), (False, False, True), (False, True, True)])
def test_rights_without_read_are_refused(npt, rights):
    read, write, execute = rights
    with pytest.raises(ValueError):
        npt.map(GPA, 0x5000, KIB4, read=read, write=write, execute=execute)


def test_ncr3_is_the_root(npt):
    assert npt.ncr3() == npt.root
    assert npt.root % KIB4 == 0 and npt.root != 0


def test_decode(npt):
    assert npt.decode(0x5000 | 0x67 | NX, "PTE") == {
        "present": True,
        "writable": True,
        "user": True,
        "accessed": True,
        "dirty": True,
        "large": False,
        "nx": True,
        "address": 0x5000,
    }
    assert npt.decode(0x20_0000 | 0x85, "PDE")["large"] is True
    assert npt.decode(0x9000 | 0x7, "PDPTE")["dirty"] is None


def test_translate(npt):
    npt.map(GPA, 0x5000, KIB4, write=False, execute=False)
    walk = npt.translate(GPA + 0x42)
    assert walk.hpa == 0x5042
    assert (walk.readable, walk.writable, walk.executable) == (True, False, False)
    assert [s.level for s in walk.steps] == ["PML4E", "PDPTE", "PDE", "PTE"]
    assert walk.steps[-1].decoded["nx"] is True


def test_translate_not_present(npt):
    npt.map(GPA, 0x5000, KIB4, read=False, write=False, execute=False)
    walk = npt.translate(GPA)
    assert walk.hpa is None and walk.page_size == KIB4
    assert walk.steps[-1].value == 0x5004 | NX
    assert list(npt.mappings()) == [(GPA, 0x5000, KIB4, False, False, False)]


def test_split_keeps_nx_and_rights(mem, npt):
    npt.map(0, 0x40_0000, MIB2, execute=False)
    npt.map(3 * KIB4, 0x7000, KIB4)
    table = entries_for(mem, npt.root, 0)[2] & MASK
    assert mem.read_u64(table) == 0x40_0007 | NX
    assert mem.read_u64(table + 8 * 511) == (0x40_0000 + 511 * KIB4) | 0x7 | NX
    assert mem.read_u64(table + 8 * 3) == 0x7007
    assert npt.translate(3 * KIB4).executable
    assert not npt.translate(4 * KIB4).executable


def test_labels():
    assert (Npt.kind, Npt.violation, Npt.table_walk_access) == ("NPT", "nested page fault", "write")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, (1 << 36) - 1), st.integers(0x100, 0xFFF), max_size=40))
def test_any_set_of_4k_mappings_translates_back(mapping):
    npt = Npt(HostMemory(16 << 20))
    for gpa_page, hpa_page in mapping.items():
        npt.map(gpa_page << 12, hpa_page << 12, KIB4)
    for gpa_page, hpa_page in mapping.items():
        assert npt.translate((gpa_page << 12) | 0x7F8).hpa == (hpa_page << 12) | 0x7F8
    assert [(m.gpa, m.hpa) for m in npt.mappings()] == sorted((g << 12, h << 12) for g, h in mapping.items())


def _npt_op(op: tuple) -> tuple:
    """NPT cannot express execute-only: read it as no access."""
    return tuple((False, False, False) if part == (False, False, True) else part for part in op)


@settings(max_examples=60, deadline=None)
@given(st.lists(ops.map(_npt_op), max_size=25))
def test_map_unmap_protect_agree_with_a_page_model(operations):
    run_model(Npt(HostMemory(64 << 20)), operations)
