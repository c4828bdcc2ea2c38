"""`guest_tree`: the guest's own paging structures as a tree of present entries, over hand-built tables."""

from __future__ import annotations

import random
import time

import pytest

from engine.paging import TRUNCATED, GuestNode, decode_entry, guest_tree, walk

PE, PG = 1, 1 << 31
PSE, PAE = 1 << 4, 1 << 5
LME, LMA, NXE = 1 << 8, 1 << 10, 1 << 11
P, RW, PS = 1, 2, 0x80
XD = 1 << 63

LONG = dict(cr0=PG | PE, cr3=0x1000, cr4=PAE, efer=LME | LMA)
PAE_ONLY = dict(cr0=PG | PE, cr3=0x1020, cr4=PAE, efer=0)
BITS32 = dict(cr0=PG | PE, cr3=0x1000, cr4=0, efer=0)


class Ram:
    """Guest-physical memory as a zero-filled bytearray; counts the bytes read."""

    def __init__(self, size: int = 16 << 20) -> None:
        self.data = bytearray(size)
        self.reads = 0

    def read(self, gpa: int, size: int) -> bytes:
        self.reads += 1
        return bytes(self.data[gpa : gpa + size])

    def put(self, gpa: int, value: int, size: int = 8) -> None:
        self.data[gpa : gpa + size] = value.to_bytes(size, "little")


@pytest.fixture
def ram() -> Ram:
    return Ram()


def shape(nodes: list[GuestNode]) -> list[tuple]:
    """(level, index, linear, size, entry GPA, address, children) all the way down."""
    return [(n.level, n.index, n.linear, n.size, n.entry_gpa, n.decoded.get("address"), shape(n.children))
            for n in nodes]


def leaves(nodes: list[GuestNode]) -> list[GuestNode]:
    out = []
    for n in nodes:
        out.extend([n] if n.leaf else leaves(n.children))
    return out


def test_paging_off_has_no_tree(ram):
    ram.put(0x1000, 0x2000 | 7)
    assert guest_tree(ram.read, cr0=PE, cr3=0x1000, cr4=PAE, efer=LME) == []
    assert ram.reads == 0


# -- 4-level -------------------------------------------------------------------------------------


def test_4level_one_path_to_a_4k_page(ram):
    ram.put(0x1000 + 8 * 1, 0x2000 | 7)
    ram.put(0x2000 + 8 * 2, 0x3000 | 7)
    ram.put(0x3000 + 8 * 3, 0x4000 | 7)
    ram.put(0x4000 + 8 * 4, 0x5000 | 7 | 0x60)
    tree = guest_tree(ram.read, **LONG)
    base = (1 << 39) | (2 << 30) | (3 << 21)
    assert shape(tree) == [
        ("PML4E", 1, 1 << 39, 1 << 39, 0x1008, 0x2000, [
            ("PDPTE", 2, (1 << 39) | (2 << 30), 1 << 30, 0x2010, 0x3000, [
                ("PDE", 3, base, 1 << 21, 0x3018, 0x4000, [
                    ("PTE", 4, base | (4 << 12), 0x1000, 0x4020, 0x5000, []),
                ]),
            ]),
        ]),
    ]
    pte = tree[0].children[0].children[0].children[0]
    assert pte.leaf and not tree[0].leaf and pte.value == 0x5067
    assert pte.decoded == {"present": True, "writable": True, "user": True, "accessed": True, "dirty": True,
                           "large": False, "nx": False, "address": 0x5000, "reserved": False}


def test_4level_large_pages_are_leaves_and_not_present_entries_are_left_out(ram):
    ram.put(0x1000, 0x2000 | 7)
    ram.put(0x2000 + 8 * 0, 0x3000 | 7)
    ram.put(0x2000 + 8 * 1, 0x4000_0000 | PS | P)  # 1 GiB page, read-only, supervisor
    ram.put(0x2000 + 8 * 2, 0x8000_0000 | PS | RW)  # not present: left out
    ram.put(0x3000 + 8 * 5, 0x00A0_0000 | PS | 7 | XD)
    tree = guest_tree(ram.read, **{**LONG, "efer": LME | LMA | NXE})
    pdptes = tree[0].children
    assert [(n.level, n.index, n.leaf, n.size) for n in pdptes] == [("PDPTE", 0, False, 1 << 30),
                                                                    ("PDPTE", 1, True, 1 << 30)]
    one_g = pdptes[1]
    assert one_g.linear == 1 << 30 and one_g.decoded["large"] and one_g.decoded["address"] == 0x4000_0000
    assert not one_g.decoded["writable"] and not one_g.decoded["user"] and one_g.children == []
    two_m = pdptes[0].children
    assert [(n.level, n.index, n.linear, n.size, n.leaf) for n in two_m] == [("PDE", 5, 5 << 21, 1 << 21, True)]
    assert two_m[0].decoded["nx"] and two_m[0].decoded["address"] == 0xA0_0000 and not two_m[0].decoded["reserved"]


def test_4level_upper_half_is_sign_extended(ram):
    ram.put(0x1000 + 8 * 256, 0x2000 | 7)
    ram.put(0x1000 + 8 * 511, 0x3000 | 7)
    ram.put(0x2000, 0x0020_0000 | PS | 7)  # a 1 GiB page at 0x200000: bits 29:13 reserved
    tree = guest_tree(ram.read, **LONG)
    assert [(n.index, n.linear) for n in tree] == [(256, 0xFFFF_8000_0000_0000), (511, 0xFFFF_FF80_0000_0000)]
    assert tree[0].children[0].linear == 0xFFFF_8000_0000_0000 and tree[0].children[0].decoded["reserved"]
    assert tree[1].children == []  # its PDPT is all zeros


def test_entries_with_reserved_bits_are_shown_but_not_followed(ram):
    ram.put(0x1000, 0x2000 | PS | 7)  # PS is reserved in a PML4E
    ram.put(0x1008, 0x3000 | 7 | XD)  # NX without EFER.NXE is reserved
    ram.put(0x2000, 0x4000 | 7)
    ram.put(0x3000, 0x4000 | 7)
    tree = guest_tree(ram.read, **LONG)
    assert [(n.index, n.leaf, n.decoded["reserved"], n.children) for n in tree] == [(0, False, True, []),
                                                                                    (1, False, True, [])]


def test_cr3_low_bits_are_ignored(ram):
    ram.put(0x1000, 0x2000 | 7)
    assert [n.entry_gpa for n in guest_tree(ram.read, **{**LONG, "cr3": 0x1018})] == [0x1000]


# -- PAE and 32-bit ------------------------------------------------------------------------------


def test_pae_reads_four_pdptes_at_cr3_32_byte_aligned(ram):
    ram.put(0x1020 + 8 * 3, 0x2000 | P)
    ram.put(0x1020 + 8 * 1, 0x5000 | P | RW)  # bit 1 is reserved in a PAE PDPTE
    ram.put(0x1040, 0x6000 | P)  # beyond the four PDPTEs: never read
    ram.put(0x2000 + 8 * 1, 0x3000 | 7)
    ram.put(0x2000 + 8 * 2, 0x0060_0000 | PS | 7)
    ram.put(0x3000 + 8 * 1, 0x6000 | 7)
    tree = guest_tree(ram.read, **PAE_ONLY)
    assert shape(tree) == [
        ("PDPTE", 1, 1 << 30, 1 << 30, 0x1028, 0x5000, []),
        ("PDPTE", 3, 0xC000_0000, 1 << 30, 0x1038, 0x2000, [
            ("PDE", 1, 0xC020_0000, 1 << 21, 0x2008, 0x3000, [
                ("PTE", 1, 0xC020_1000, 0x1000, 0x3008, 0x6000, []),
            ]),
            ("PDE", 2, 0xC040_0000, 1 << 21, 0x2010, 0x60_0000, []),
        ]),
    ]
    assert tree[0].decoded["reserved"] and not tree[1].decoded["reserved"]
    assert tree[1].decoded["writable"] and tree[1].decoded["user"]  # PDPTEs restrict nothing


def test_32bit_4k_and_pse_4m_pages(ram):
    ram.put(0x1000 + 4 * 1, 0x2000 | 7, 4)
    ram.put(0x2000 + 4 * 3, 0x5000 | 7, 4)
    ram.put(0x1000 + 4 * 3, 0x0C40_0000 | (0x3 << 13) | PS | 7, 4)  # PSE-36: address bits 39:32 = 3
    ram.put(0x1000 + 4 * 1023, 0xFFC0_0000 | PS | P, 4)
    tree = guest_tree(ram.read, **{**BITS32, "cr4": PSE})
    assert shape(tree) == [
        ("PDE", 1, 0x40_0000, 4 << 20, 0x1004, 0x2000, [("PTE", 3, 0x40_3000, 0x1000, 0x200C, 0x5000, [])]),
        ("PDE", 3, 0xC0_0000, 4 << 20, 0x100C, 0x3_0C40_0000, []),
        ("PDE", 1023, 0xFFC0_0000, 4 << 20, 0x1FFC, 0xFFC0_0000, []),
    ]
    assert [n.leaf for n in tree] == [False, True, True]
    assert not tree[2].decoded["nx"]  # 32-bit entries have no NX bit


def test_32bit_page_size_bit_without_cr4_pse_points_at_a_table(ram):
    ram.put(0x1000, 0x0040_0000 | PS | 7, 4)
    ram.put(0x0040_0000 + 4 * 5, 0x9000 | 7, 4)
    tree = guest_tree(ram.read, **BITS32)
    assert not tree[0].leaf and not tree[0].decoded["large"]
    assert [(n.level, n.linear, n.decoded["address"]) for n in tree[0].children] == [("PTE", 0x5000, 0x9000)]


# -- the limit -----------------------------------------------------------------------------------


def test_limit_ends_the_list_with_a_pseudo_node_counting_what_is_left_out(ram):
    ram.put(0x1000, 0x2000 | 7)
    ram.put(0x2000, 0x3000 | 7)
    ram.put(0x3000, 0x4000 | 7)
    for i in range(512):
        ram.put(0x4000 + 8 * i, (i << 12) | 3)
    ram.put(0x1008, 0x2000 | 7)  # a second PML4E aliasing the same PDPT: 515 more entries
    full = guest_tree(ram.read, **LONG)
    assert len(full) == 2 and len(leaves(full)) == 1024
    tree = guest_tree(ram.read, **LONG, limit=10)
    assert len(leaves(tree)) == 7  # PML4E, PDPTE, PDE and 7 PTEs
    last = tree[-1]
    assert last.truncated and last.level == TRUNCATED == "..."
    assert (last.omitted, last.omitted_exact) == (1030 - 10, True)
    assert last.decoded == {"note": "... 1020 more entries not shown"}
    assert [n.level for n in tree] == ["PML4E", "..."]


def test_limit_zero_shows_only_the_pseudo_node(ram):
    ram.put(0x1000, 0x2000 | 7)
    tree = guest_tree(ram.read, **LONG, limit=0)
    assert [(n.level, n.omitted) for n in tree] == [("...", 1)]


def test_aliased_tables_cannot_hang_the_walk(ram):
    # every entry of every level points at the same table: 512**4 leaves in a 4 KiB page
    for i in range(512):
        ram.put(0x1000 + 8 * i, 0x1000 | 7)
    start = time.perf_counter()
    tree = guest_tree(ram.read, **LONG, limit=100)
    assert time.perf_counter() - start < 10  # a guard against hanging, not a timing target
    nodes = 0
    stack = list(tree)
    while stack:
        n = stack.pop()
        nodes += not n.truncated
        stack.extend(n.children)
    assert nodes == 100
    last = tree[-1]
    assert last.truncated and not last.omitted_exact and last.omitted > 100_000
    assert last.decoded["note"] == f"... at least {last.omitted} more entries not shown"


# -- agreement with the walker -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_every_leaf_translates_as_the_walker_does(ram, seed):
    rng = random.Random(seed)
    frames = iter(range(0x10_0000, 0x80_0000, 0x1000))

    def table(depth: int) -> int:
        gpa = next(frames)
        for i in rng.sample(range(512), 3):
            if depth == 3 or (depth in (1, 2) and rng.random() < 0.3):  # a leaf
                size = (1 << 12, 1 << 30, 1 << 21, 1 << 12)[depth]
                ps = PS if depth < 3 else 0
                ram.put(gpa + 8 * i, (rng.randrange(1, 64) * size) | ps | rng.choice((1, 3, 5, 7)))
            else:
                ram.put(gpa + 8 * i, table(depth + 1) | 7)
        return gpa

    regs = {**LONG, "cr3": table(0)}
    found = leaves(guest_tree(ram.read, **regs))
    assert found
    for leaf in found:
        offset = rng.randrange(leaf.size)
        result = walk(ram.read, leaf.linear + offset, **regs)
        assert result.gpa == leaf.decoded["address"] + offset and result.page_size == leaf.size
        assert result.steps[-1].entry_gpa == leaf.entry_gpa
        assert {k: v for k, v in leaf.decoded.items() if k != "reserved"} == result.steps[-1].decoded


def test_decode_entry_matches_the_walk(ram):
    ram.put(0x1000, 0x2000 | 7)
    ram.put(0x2000, 0x3000 | 7)
    ram.put(0x3000, 0x0040_0000 | PS | 7 | 0x60)
    result = walk(ram.read, 0x1234, **LONG)
    for step in result.steps:
        assert decode_entry(step.value, step.level, mode="4-level") == step.decoded
    assert decode_entry(0x0040_0000 | PS | 7, "PDE", mode="32-bit", cr4=0)["address"] == 0x40_0000
    assert decode_entry(0x0040_0000 | PS | 7, "PDE", mode="32-bit", cr4=PSE)["large"]
    with pytest.raises(ValueError):
        decode_entry(0, "PML4E", mode="pae")


def test_2d_walk_steps_say_their_stage_and_guest_level():
    from engine.ept import Ept
    from engine.hostmem import HostMemory
    from engine.paging import walk_2d

    mem = HostMemory(8 << 20)
    ept = Ept(mem)
    frames = {gpa: mem.alloc_frame() for gpa in (0x1000, 0x2000, 0x3000, 0x4000, 0x5000)}
    for gpa, hpa in frames.items():
        ept.map(gpa, hpa, 0x1000)
    for gpa in (0x1000, 0x2000, 0x3000, 0x4000):
        mem.write_u64(frames[gpa], (gpa + 0x1000) | 7)
    steps = walk_2d(mem.read, ept, 0x123, **LONG)
    assert [(s.stage, s.level) for s in steps] == [
        ("slat", "PML4E"), ("guest", "PML4E"), ("slat", "PDPTE"), ("guest", "PDPTE"),
        ("slat", "PDE"), ("guest", "PDE"), ("slat", "PTE"), ("guest", "PTE"), ("slat", ""),
    ]
    assert steps[-1].hpa == frames[0x5000] + 0x123
    off = walk_2d(mem.read, ept, 0x5123, cr0=PE, cr3=0, cr4=0, efer=0)
    assert [(s.stage, s.level, s.hpa) for s in off] == [("slat", "", frames[0x5000] + 0x123)]
