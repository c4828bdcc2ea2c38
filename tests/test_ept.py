"""EPT: entries as the SDM lays them out, read back from host memory; translation; splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ept import Ept, decode_eptp
from engine.hostmem import HostMemory
from engine.slat import SecondLevelTables, level_size

KIB4 = 0x1000
MIB2 = 0x20_0000
MASK = 0x000F_FFFF_FFFF_F000
# PML4 index 1, PDPT index 2, PD index 3, PT index 4
GPA = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12)


def entries_for(mem: HostMemory, root: int, gpa: int) -> list[int]:
    """The entries on the path to `gpa`, read straight from host memory (stops at a large leaf)."""
    out = []
    table = root
    for level, shift in enumerate((39, 30, 21, 12)):
        value = mem.read_u64(table + 8 * ((gpa >> shift) & 511))
        out.append(value)
        if level == 3 or value & 0x80:
            break
        table = value & MASK
    return out


@pytest.fixture
def mem() -> HostMemory:
    return HostMemory(64 << 20)


@pytest.fixture
def ept(mem: HostMemory) -> Ept:
    return Ept(mem)


def test_4k_rwx_leaf_and_nonleaf_entries(mem, ept):
    ept.map(GPA, 0x5000, KIB4)
    pml4e, pdpte, pde, pte = entries_for(mem, ept.root, GPA)
    assert pte == 0x5037  # 0x5000 | RWX | WB << 3
    for upper in (pml4e, pdpte, pde):
        assert upper & ~MASK == 0x7  # RWX, nothing else
    # three new tables, each a fresh frame, none of them the root
    tables = {pml4e & MASK, pdpte & MASK, pde & MASK}
    assert len(tables) == 3 and ept.root not in tables


def test_2m_leaf_has_page_size_bit(mem, ept):
    ept.map(MIB2 * 3, 0x40_0000, MIB2)
    *_, pde = entries_for(mem, ept.root, MIB2 * 3)
    assert pde == 0x40_0000 | 0x37 | 0x80 == 0x4000B7


@pytest.mark.parametrize(
    "rights, low_bits",
    [
        ((True, False, False), 0x31),
        ((True, True, False), 0x33),
        ((True, False, True), 0x35),
        ((False, False, True), 0x34),  # execute-only
        ((False, False, False), 0x30),  # no access: not present, address kept
    ],
)
def test_leaf_rights_bits(mem, ept, rights, low_bits):
    read, write, execute = rights
    ept.map(GPA, 0x5000, KIB4, read=read, write=write, execute=execute)
    assert entries_for(mem, ept.root, GPA)[-1] == 0x5000 | low_bits


def test_write_without_read_is_refused(ept):
    with pytest.raises(ValueError):
        ept.map(GPA, 0x5000, KIB4, read=False, write=True, execute=False)
    ept.map(GPA, 0x5000, KIB4)
    with pytest.raises(ValueError):
        ept.protect(GPA, KIB4, read=False, write=True, execute=True)


def test_eptp_and_its_decoding(ept):
    assert ept.eptp() == ept.root | 0x1E
    assert decode_eptp(ept.eptp()) == {
        "memtype": 6,
        "walk_length": 4,
        "accessed_dirty": False,
        "pml4": ept.root,
    }
    assert decode_eptp(0x1234_5000 | 0x40 | 0x18)["accessed_dirty"] is True


def test_decode_leaf_and_nonleaf(ept):
    assert ept.decode(0x5000 | 0x37 | 0x40 | 0x300, "PTE") == {
        "read": True,
        "write": True,
        "execute": True,
        "memtype": 6,
        "ignore_pat": True,
        "large": False,
        "accessed": True,
        "dirty": True,
        "address": 0x5000,
    }
    assert ept.decode(0x20_0000 | 0xB5, "PDE")["large"] is True
    table = ept.decode(0x9000 | 0x7, "PDPTE")
    assert table["large"] is False and table["memtype"] is None and table["dirty"] is None
    assert ept.decode(0x80, "PML4E")["large"] is False  # bit 7 is no page size in a PML4E


def test_translate_mapped_page(mem, ept):
    ept.map(GPA, 0x5000, KIB4)
    walk = ept.translate(GPA + 0x123)
    assert walk.hpa == 0x5123
    assert (walk.readable, walk.writable, walk.executable) == (True, True, True)
    assert walk.page_size == KIB4
    assert [s.level for s in walk.steps] == ["PML4E", "PDPTE", "PDE", "PTE"]
    assert [s.index for s in walk.steps] == [1, 2, 3, 4]
    assert [s.value for s in walk.steps] == entries_for(mem, ept.root, GPA)
    assert walk.steps[0].table_hpa == ept.root
    assert walk.steps[0].entry_hpa == ept.root + 8
    assert walk.steps[-1].decoded["memtype"] == 6
    for step in walk.steps:
        assert mem.read_u64(step.entry_hpa) == step.value


def test_translate_2m_page_keeps_21_bits_of_offset(ept):
    ept.map(MIB2, 0x60_0000, MIB2)
    walk = ept.translate(MIB2 + 0x1_2345)
    assert walk.hpa == 0x61_2345 and walk.page_size == MIB2
    assert [s.level for s in walk.steps] == ["PML4E", "PDPTE", "PDE"]


def test_translate_unmapped_stops_at_the_first_empty_entry(ept):
    walk = ept.translate(GPA)
    assert walk.hpa is None
    assert [s.level for s in walk.steps] == ["PML4E"]
    assert walk.page_size == 1 << 39
    ept.map(GPA, 0x5000, KIB4)
    neighbour = ept.translate(GPA + KIB4)
    assert neighbour.hpa is None and neighbour.page_size == KIB4
    assert len(neighbour.steps) == 4 and neighbour.steps[-1].value == 0
    assert (neighbour.readable, neighbour.writable, neighbour.executable) == (False, False, False)


def test_translate_beyond_48_bits(ept):
    walk = ept.translate(1 << 48)
    assert walk.hpa is None and walk.steps == [] and walk.page_size == 0


def test_translate_read_only_and_execute_only(ept):
    ept.map(GPA, 0x5000, KIB4, write=False, execute=False)
    ro = ept.translate(GPA)
    assert ro.hpa == 0x5000 and (ro.readable, ro.writable, ro.executable) == (True, False, False)
    ept.map(GPA, 0x5000, KIB4, read=False, write=False, execute=True)
    xo = ept.translate(GPA)
    assert xo.hpa == 0x5000 and (xo.readable, xo.writable, xo.executable) == (False, False, True)


def test_protect_to_nothing_keeps_the_address(mem, ept):
    ept.map(GPA, 0x5000, KIB4)
    ept.protect(GPA, KIB4, read=False, write=False, execute=False)
    assert ept.translate(GPA).hpa is None
    assert entries_for(mem, ept.root, GPA)[-1] == 0x5030
    assert list(ept.mappings()) == [(GPA, 0x5000, KIB4, False, False, False)]
    ept.protect(GPA, KIB4, read=True, write=False, execute=True)
    assert entries_for(mem, ept.root, GPA)[-1] == 0x5035


def test_map_over_a_mapping_replaces_it(ept):
    ept.map(GPA, 0x5000, KIB4)
    ept.map(GPA, 0x9000, KIB4, write=False)
    assert list(ept.mappings()) == [(GPA, 0x9000, KIB4, True, False, True)]


def test_4k_map_inside_a_2m_page_splits_it(mem, ept):
    base_gpa, base_hpa = 4 * MIB2, 0x80_0000
    ept.map(base_gpa, base_hpa, MIB2, write=False)  # R-X
    ept.map(base_gpa + 5 * KIB4, 0x3000, KIB4)
    pde = entries_for(mem, ept.root, base_gpa)[2]
    assert not pde & 0x80 and pde & ~MASK == 0x7  # now a table pointer
    table = pde & MASK
    for i in range(512):
        pte = mem.read_u64(table + 8 * i)
        if i == 5:
            assert pte == 0x3037
        else:
            assert pte == (base_hpa + i * KIB4) | 0x35  # R-X, WB, no page-size bit
        walk = ept.translate(base_gpa + i * KIB4 + 0x10)
        assert walk.page_size == KIB4
        if i != 5:
            assert walk.hpa == base_hpa + i * KIB4 + 0x10
            assert (walk.readable, walk.writable, walk.executable) == (True, False, True)
    maps = list(ept.mappings())
    assert len(maps) == 512 and all(m.size == KIB4 for m in maps)
    assert [m.gpa for m in maps] == [base_gpa + i * KIB4 for i in range(512)]


def test_unmap_4k_inside_a_2m_page_keeps_the_other_511(ept):
    ept.map(0, 0x60_0000, MIB2)
    ept.unmap(7 * KIB4, KIB4)
    assert ept.translate(7 * KIB4).hpa is None
    assert ept.translate(8 * KIB4).hpa == 0x60_8000
    assert ept.translate(6 * KIB4 + 1).hpa == 0x60_6001
    assert len(list(ept.mappings())) == 511


def test_unmap_2m_drops_a_page_table_and_skips_holes(ept):
    for i in range(3):
        ept.map(MIB2 + i * KIB4, 0x10_0000 + i * KIB4, KIB4)
    ept.map(3 * MIB2, 0x40_0000, MIB2)
    ept.unmap(0, 8 * MIB2)  # holes included
    assert list(ept.mappings()) == []
    assert ept.translate(MIB2).hpa is None


def test_map_2m_over_a_page_table_replaces_it(ept):
    ept.map(MIB2 + KIB4, 0x5000, KIB4)
    ept.map(MIB2, 0x40_0000, MIB2)
    assert list(ept.mappings()) == [(MIB2, 0x40_0000, MIB2, True, True, True)]
    assert ept.translate(MIB2 + KIB4).hpa == 0x40_1000


def test_protect_a_range_across_a_page_table_a_large_page_and_a_hole(ept):
    ept.map(0, 0x10_0000, KIB4)
    ept.map(KIB4, 0x11_1000, KIB4)
    ept.map(MIB2, 0x40_0000, MIB2)
    ept.protect(0, 2 * MIB2 + 3 * MIB2, read=True, write=False, execute=False)
    assert list(ept.mappings()) == [
        (0, 0x10_0000, KIB4, True, False, False),
        (KIB4, 0x11_1000, KIB4, True, False, False),
        (MIB2, 0x40_0000, MIB2, True, False, False),
    ]


def test_protect_4k_inside_a_large_page_splits_it(ept):
    ept.map(0, 0x40_0000, MIB2)
    ept.protect(KIB4, KIB4, read=True, write=False, execute=True)
    walk = ept.translate(KIB4)
    assert walk.hpa == 0x40_1000 and not walk.writable and walk.page_size == KIB4
    assert ept.translate(0).writable


def test_mappings_are_in_gpa_order(ept):
    gpas = [GPA, 0, 5 * MIB2, (3 << 39), KIB4 * 9, (1 << 39)]
    for n, gpa in enumerate(gpas):
        ept.map(gpa, 0x10_0000 + n * KIB4, KIB4)
    assert [m.gpa for m in ept.mappings()] == sorted(gpas)


def test_tree_shows_entries_in_use(ept):
    ept.map(GPA, 0x5000, KIB4)
    ept.map(MIB2, 0x40_0000, MIB2)
    tree = ept.tree()
    assert [(n.level, n.index, n.gpa_base) for n in tree] == [("PML4E", 0, 0), ("PML4E", 1, 1 << 39)]
    low = tree[0]
    (pdpte,) = low.children
    (pde,) = pdpte.children
    assert (pde.level, pde.index, pde.gpa_base, pde.value) == ("PDE", 1, MIB2, 0x4000B7)
    assert pde.decoded["large"] and pde.children == []
    pte = tree[1].children[0].children[0].children[0]
    assert (pte.level, pte.index, pte.gpa_base, pte.value) == ("PTE", 4, GPA, 0x5037)


@pytest.mark.parametrize(
    "gpa, hpa, size",
    [
        (0x800, 0x5000, KIB4),  # gpa unaligned
        (0, 0x5800, KIB4),  # hpa unaligned
        (KIB4, 0x40_0000, MIB2),  # gpa not 2 MiB-aligned
        (0, 0x40_1000, MIB2),  # hpa not 2 MiB-aligned
        (0, 0x5000, 2 * KIB4),  # neither size
        (0, 64 << 20, KIB4),  # hpa beyond host memory
        (1 << 48, 0x5000, KIB4),  # gpa beyond 48 bits
    ],
)
def test_map_rejects_bad_arguments(ept, gpa, hpa, size):
    with pytest.raises(ValueError):
        ept.map(gpa, hpa, size)


def test_level_size():
    assert [level_size(n) for n in ("PML4E", "PDPTE", "PDE", "PTE")] == [1 << 39, 1 << 30, MIB2, KIB4]


def test_labels():
    assert (Ept.kind, Ept.violation, Ept.table_walk_access) == ("EPT", "EPT violation", "read")
    assert issubclass(Ept, SecondLevelTables)


# -- properties --------------------------------------------------------------------------------

pages = st.integers(min_value=0, max_value=(1 << 36) - 1)  # any 4 KiB page below 2**48


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(pages, st.integers(min_value=0x100, max_value=0xFFF), max_size=40))
def test_any_set_of_4k_mappings_translates_back(mapping):
    ept = Ept(HostMemory(16 << 20))
    for gpa_page, hpa_page in mapping.items():
        ept.map(gpa_page << 12, hpa_page << 12, KIB4)
    for gpa_page, hpa_page in mapping.items():
        assert ept.translate((gpa_page << 12) | 0xABC).hpa == (hpa_page << 12) | 0xABC
    assert [(m.gpa, m.hpa) for m in ept.mappings()] == sorted((g << 12, h << 12) for g, h in mapping.items())


RIGHTS = [(True, True, True), (True, False, True), (True, False, False), (True, True, False), (False, False, True),
          (False, False, False)]
WINDOW_PAGES = 4 * 512  # 8 MiB of GPA: four 2 MiB slots
FAR = 1 << 39  # a second window under another PML4 entry

ops = st.one_of(
    st.tuples(st.just("map4k"), st.integers(0, 2 * WINDOW_PAGES - 1), st.integers(0x800, 0x1FFF),
              st.sampled_from(RIGHTS)),
    st.tuples(st.just("map2m"), st.integers(0, 7), st.integers(4, 15), st.sampled_from(RIGHTS)),
    st.tuples(st.just("unmap"), st.integers(0, 2 * WINDOW_PAGES - 1), st.integers(1, 1200)),
    st.tuples(st.just("protect"), st.integers(0, 2 * WINDOW_PAGES - 1), st.integers(1, 1200),
              st.sampled_from(RIGHTS)),
)


def _window_gpa(page: int) -> int:
    """Pages 0..WINDOW_PAGES-1 sit at GPA 0; the next WINDOW_PAGES at FAR."""
    return (page % WINDOW_PAGES) * KIB4 + (FAR if page >= WINDOW_PAGES else 0)


def run_model(slat: SecondLevelTables, operations: list) -> None:
    """Apply `operations` to `slat` and to a page-by-page model; they must agree."""
    model: dict[int, tuple[int, bool, bool, bool]] = {}
    for op in operations:
        if op[0] == "map4k":
            _, page, hpa_page, rights = op
            slat.map(_window_gpa(page), hpa_page * KIB4, KIB4, read=rights[0], write=rights[1], execute=rights[2])
            model[_window_gpa(page)] = (hpa_page * KIB4, *rights)
        elif op[0] == "map2m":
            _, slot, hpa_slot, rights = op
            gpa = _window_gpa(slot * 512)
            slat.map(gpa, hpa_slot * MIB2, MIB2, read=rights[0], write=rights[1], execute=rights[2])
            for i in range(512):
                model[gpa + i * KIB4] = (hpa_slot * MIB2 + i * KIB4, *rights)
        else:
            page = op[1]
            count = min(op[2], WINDOW_PAGES - page % WINDOW_PAGES)
            gpa = _window_gpa(page)
            if op[0] == "unmap":
                slat.unmap(gpa, count * KIB4)
                for i in range(count):
                    model.pop(gpa + i * KIB4, None)
            else:
                rights = op[3]
                slat.protect(gpa, count * KIB4, read=rights[0], write=rights[1], execute=rights[2])
                for i in range(count):
                    if gpa + i * KIB4 in model:
                        model[gpa + i * KIB4] = (model[gpa + i * KIB4][0], *rights)
    seen: dict[int, tuple[int, bool, bool, bool]] = {}
    last = -1
    for m in slat.mappings():
        assert m.gpa > last
        last = m.gpa
        for i in range(m.size // KIB4):
            seen[m.gpa + i * KIB4] = (m.hpa + i * KIB4, m.read, m.write, m.execute)
    assert seen == model
    for gpa, (hpa, r, w, x) in list(model.items())[:64]:
        walk = slat.translate(gpa + 8)
        assert walk.hpa == (hpa + 8 if (r or w or x) else None)
        assert (walk.readable, walk.writable, walk.executable) == ((r, w, x) if walk.hpa is not None else (False,) * 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=25))
def test_map_unmap_protect_agree_with_a_page_model(operations):
    run_model(Ept(HostMemory(64 << 20)), operations)
