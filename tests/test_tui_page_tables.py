"""The page-tables pane and its views: the guest's tables, EPT / NPT, and the two-dimensional walk."""

from __future__ import annotations

import asyncio
import re

import pytest
from rich.console import Console
from textual.app import App, ComposeResult

from engine.config import MachineConfig
from vmmtui.session import Session
from vmmtui.views.page_tables import guest_tables_view, slat_view, translate_view
from vmmtui.widgets.page_tables import PageTablesPane

from conftest import GUESTS

VENDORS = ["intel", "amd"]
_SESSIONS: dict[tuple[str, str], Session] = {}


def finished(image: str, vendor: str) -> Session:
    """A session of `image` run to its end (built once per image and vendor; the panes only read it)."""
    key = (image, vendor)
    if key not in _SESSIONS:
        session = Session.open(str(GUESTS / image), MachineConfig(vendor=vendor))
        stop = session.machine.run(timeout=30)
        assert stop.status == 0, stop
        _SESSIONS[key] = session
    return _SESSIONS[key]


class PaneApp(App):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        yield PageTablesPane(id="pt")

    def on_mount(self) -> None:
        self.query_one(PageTablesPane).refresh_from(self.session)


def with_pane(session: Session, check, size=(160, 48)) -> None:
    """Run `check(pane, pilot)` (a coroutine function) inside the app."""

    async def main() -> None:
        app = PaneApp(session)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await check(app.query_one(PageTablesPane), pilot)

    asyncio.run(main())


def text_of(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def numbered_rows(text: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s{2}", text, re.M)]


# -- the second-level tables -----------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_second_level_pde_for_0x200000_is_a_2m_leaf(vendor):
    session = finished("memory.img", vendor)
    machine = session.machine
    hpa = machine.mem.hpa(0x200000)

    async def check(pane, pilot):
        root = pane.slat_tree.root
        if vendor == "intel":
            assert str(root.label) == (f"EPT (GPA -> HPA): EPTP {machine.slat.eptp():#x} = PML4 at "
                                       f"{machine.slat.root:#x}, 4-level walk, WB, A/D off")
            expected = f"PDE 1: 0x200000-0x3fffff -> {hpa:#x}, R W X, WB, 2M"
        else:
            assert str(root.label) == f"NPT (GPA -> HPA): nCR3 {machine.slat.root:#x} = PML4 at {machine.slat.root:#x}"
            expected = f"PDE 1: 0x200000-0x3fffff -> {hpa:#x}, R W X, 2M"
        pde = pane.find("slat", ("PML4E", 0), ("PDPTE", 0), ("PDE", 1))
        assert pde is not None and str(pde.label) == expected
        # the single PML4E and PDPTE are opened at the first refresh: the nine PDEs show
        labels = pane.labels("slat")
        pdes = [label for depth, label in labels if depth == 3]
        assert len(pdes) == 9 and pdes[1] == expected
        assert pdes[8].startswith("PDE 8: 0x1000000-0x11fffff -> ")
        pdpt = machine.slat.address(machine.host.read_u64(machine.slat.root))
        assert [label for depth, label in labels if depth in (1, 2)] == [
            f"PML4E 0: 0x0-0x7fffffffff -> table {pdpt:#x}, R W X",
            labels[2][1],
        ] and labels[2][1].startswith("PDPTE 0: 0x0-0x3fffffff -> table ")
        # a leaf opens onto its raw entry and every decoded field
        pde.expand()
        await pilot.pause()
        value = machine.slat.translate(0x200000).steps[-1].value
        details = [str(c.label) for c in pde.children]
        assert details[0].startswith(f"entry {value:#x} at HPA ")
        if vendor == "intel":
            assert details[1] == ("read=1 write=1 execute=1 memtype=0x6 ignore_pat=0 large=1 accessed=0 dirty=0 "
                                  f"address={hpa:#x}")
        else:
            assert details[1] == f"present=1 writable=1 user=1 accessed=0 dirty=0 large=1 nx=0 address={hpa:#x}"

    with_pane(session, check)


@pytest.mark.parametrize("vendor", VENDORS)
def test_second_level_page_table_under_the_legacy_hole(vendor):
    session = finished("memory.img", vendor)
    machine = session.machine

    async def check(pane, pilot):
        pde0 = pane.find("slat", ("PML4E", 0), ("PDPTE", 0), ("PDE", 0))
        pde0.expand()
        await pilot.pause()
        ptes = [str(c.label) for c in pde0.children]
        assert len(ptes) == 160 + 256  # 0xA0000-0xFFFFF is not RAM
        wb = ", WB" if vendor == "intel" else ""
        assert ptes[0] == f"PTE 0: 0x0-0xfff -> {machine.mem.hpa(0):#x}, R W X{wb}, 4K"
        assert ptes[159].startswith("PTE 159: 0x9f000-0x9ffff -> ")
        assert ptes[160] == f"PTE 256: 0x100000-0x100fff -> {machine.mem.hpa(0x100000):#x}, R W X{wb}, 4K"

    with_pane(session, check)


# -- the guest's tables ----------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_guest_4level_tree_maps_virtual_0x1000_to_physical_0x2000(vendor):
    session = finished("paging.img", vendor)

    async def check(pane, pilot):
        labels = pane.labels("guest")
        assert labels[0] == (0, "guest page tables (linear -> GPA): 4-level paging, CR3 0x10000")
        # one entry per level down to the page table: opened at the first refresh
        assert [label for depth, label in labels if depth in (1, 2, 3)] == [
            "PML4E 0: 0x0-0x7fffffffff -> table 0x11000, R W X, S A",
            "PDPTE 0: 0x0-0x3fffffff -> table 0x12000, R W X, S A",
            "PDE 0: 0x0-0x1fffff -> table 0x13000, R W X, S A",
        ]
        ptes = [label for depth, label in labels if depth == 4]
        assert len(ptes) == 512
        assert ptes[1] == "PTE 1: 0x1000-0x1fff -> 0x2000, R W X, S A, 4K"  # accessed: the guest read it
        assert ptes[2] == "PTE 2: 0x2000-0x2fff -> 0x2000, R W X, S, 4K"
        assert ptes[511] == "PTE 511: 0x1ff000-0x1fffff -> 0x1ff000, R W X, S, 4K"
        pte = pane.find("guest", ("PML4E", 0), ("PDPTE", 0), ("PDE", 0), ("PTE", 1))
        pte.expand()
        await pilot.pause()
        assert [str(c.label) for c in pte.children] == [
            "entry 0x2023 at GPA 0x13008",
            "present=1 writable=1 user=0 accessed=1 dirty=0 large=0 nx=0 address=0x2000 reserved=0",
        ]

    with_pane(session, check)


def test_guest_tree_with_paging_off():
    session = finished("memory.img", "intel")

    async def check(pane, pilot):
        assert pane.labels("guest") == [(0, "guest page tables: paging is off (CR0.PG = 0)")]

    with_pane(session, check)


# -- the two-dimensional walk ----------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_translate_0x1000_is_nine_steps_down_to_the_host_page(vendor):
    session = finished("paging.img", vendor)
    hpa = session.machine.mem.hpa(0x2000)
    kind = "EPT" if vendor == "intel" else "NPT"
    text = text_of(translate_view(session, 0x1000))
    assert numbered_rows(text) == list(range(1, 10))
    lines = text.splitlines()
    assert lines[0] == f"translate 0x1000: 4-level paging, CR3 0x10000, through {kind}"
    assert f"result: 0x1000 -> GPA 0x2000 -> HPA {hpa:#x}" in text
    assert f"9 steps; 24 entries read (4 guest, 20 {kind})" in text
    row = {n: line for line in lines if (m := re.match(r"^\s*(\d+)\s{2}", line)) for n in [int(m.group(1))]}
    pml4_hpa = session.machine.mem.hpa(0x10000)
    assert re.match(rf"1\s+{kind}: guest PML4E\s+0x10000 -> {pml4_hpa:#x}\s+0x[0-9a-f]+\s+R W X", row[1])
    assert re.match(rf"2\s+guest PML4E\s+read at {pml4_hpa:#x}\s+0x11023\s+table 0x11000, R W X, S$", row[2])
    assert re.match(r"8\s+guest PTE\s+read at 0x[0-9a-f]+\s+0x2023\s+page 0x2000, R W X, S, 4K$", row[8])
    assert re.match(rf"9\s+{kind}: final GPA\s+0x2000 -> {hpa:#x}\s", row[9])
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.parametrize("vendor", VENDORS)
def test_pane_shows_the_translation_under_the_trees(vendor):
    session = finished("paging.img", vendor)
    hpa = session.machine.mem.hpa(0x2000)

    async def check(pane, pilot):
        area = pane.query_one("#pt-translation")
        assert not area.display
        pane.show_translation(0x1000)
        await pilot.pause()
        assert area.display and area.region.height > 0
        assert area.region.y >= pane.guest_tree.region.bottom  # under the trees
        text = text_of(pane.translation.content)
        assert numbered_rows(text) == list(range(1, 10))
        assert f"-> HPA {hpa:#x}" in text
        pane.refresh_from(session)  # at the next stop the translation is redone
        await pilot.pause()
        assert f"-> HPA {hpa:#x}" in text_of(pane.translation.content)

    with_pane(session, check)


def test_translate_stops_at_a_guest_page_fault():
    session = finished("paging.img", "intel")
    text = text_of(translate_view(session, 0x400000))
    assert numbered_rows(text) == list(range(1, 7))
    assert "stopped at step 6: guest #PF: not present at PDE" in text


@pytest.mark.parametrize("vendor", VENDORS)
def test_translate_with_paging_off_is_the_second_level_translation_only(vendor):
    session = finished("memory.img", vendor)
    hpa = session.machine.mem.hpa(0x200010)
    text = text_of(translate_view(session, 0x200010))
    assert "paging is off (CR0.PG = 0)" in text
    assert numbered_rows(text) == [1]
    assert f"result: 0x200010 = GPA 0x200010 -> HPA {hpa:#x}" in text
    fault = text_of(translate_view(session, 0xC000_0000))
    violation = "EPT violation" if vendor == "intel" else "nested page fault"
    assert f"stopped at step 1: {violation} on the final GPA: not present" in fault


def test_translate_detail_lists_every_second_level_entry():
    session = finished("paging.img", "amd")
    text = text_of(translate_view(session, 0x1000, detail=True))
    assert len(re.findall(r"^\s+NPT (PML4E|PDPTE|PDE|PTE) \d+\s+read at", text, re.M)) == 20


# -- the Rich views for --script -------------------------------------------------------------------


def test_rich_guest_view_merges_runs_of_leaves():
    text = text_of(guest_tables_view(finished("paging.img", "intel")))
    assert "PTE 1: 0x1000-0x1fff -> 0x2000, R W X, S A, 4K" in text
    assert re.search(r"PTE 9-511: 0x9000-0x1fffff -> 0x9000-0x1fffff, R W X, S, 503 x\s+4K", text)
    assert len(text.splitlines()) < 20
    full = text_of(guest_tables_view(finished("paging.img", "intel"), compact=False), width=200)
    assert len(full.splitlines()) == 1 + 3 + 512


@pytest.mark.parametrize("vendor", VENDORS)
def test_rich_slat_view(vendor):
    session = finished("memory.img", vendor)
    text = text_of(slat_view(session), width=100)
    hpa = session.machine.mem.hpa(0x200000)
    wb = ", WB" if vendor == "intel" else ""
    heading = "EPT (GPA -> HPA): EPTP " if vendor == "intel" else "NPT (GPA -> HPA): nCR3 "
    assert text.splitlines()[0].startswith(heading)
    assert f"PDE 1: 0x200000-0x3fffff -> {hpa:#x}, R W X{wb}, 2M" in text
    base = session.machine.mem.hpa(0)
    assert f"PTE 0-159: 0x0-0x9ffff -> {base:#x}-{base + 0x9ffff:#x}, R W X{wb}, 160 x 4K" in text


# -- layout, state and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("size, side_by_side", [((160, 48), True), ((80, 40), False)])
def test_trees_side_by_side_when_wide_and_stacked_when_narrow(size, side_by_side):
    session = finished("paging.img", "intel")

    async def check(pane, pilot):
        assert pane.border_title == "page tables"
        guest, slat = pane.guest_tree.region, pane.slat_tree.region
        assert guest.width > 0 and slat.width > 0 and guest.height > 0 and slat.height > 0
        if side_by_side:
            assert guest.y == slat.y and slat.x >= guest.right
        else:
            assert guest.x == slat.x and slat.y >= guest.bottom
        assert pane.has_class("-narrow") is not side_by_side

    with_pane(session, check, size=size)


def test_refresh_keeps_what_was_expanded_and_collapsed():
    session = finished("memory.img", "intel")

    async def check(pane, pilot):
        pde0 = pane.find("slat", ("PML4E", 0), ("PDPTE", 0), ("PDE", 0))
        pde0.expand()
        pde1 = pane.find("slat", ("PML4E", 0), ("PDPTE", 0), ("PDE", 1))
        pde1.expand()
        await pilot.pause()
        before = pane.labels("slat")
        assert len(before) == 1 + 2 + 9 + 416 + 2
        pane.refresh_from(session)
        await pilot.pause()
        assert pane.labels("slat") == before
        assert pane.find("slat", ("PML4E", 0), ("PDPTE", 0), ("PDE", 1)).is_expanded
        pane.find("slat", ("PML4E", 0)).collapse()
        await pilot.pause()
        pane.refresh_from(session)
        await pilot.pause()
        assert not pane.slat_tree.root.children[0].is_expanded

    with_pane(session, check)


def test_a_failing_view_shows_its_error_inside_the_pane(monkeypatch):
    session = finished("paging.img", "intel")

    def broken():
        raise RuntimeError("boom")

    async def check(pane, pilot):
        monkeypatch.setattr(session.machine.slat, "tree", broken)
        pane.refresh_from(session)
        await pilot.pause()
        assert str(pane.slat_tree.root.label) == "EPT cannot be shown: RuntimeError: boom"
        assert len(pane.labels("guest")) > 500  # the other tree carries on
        monkeypatch.undo()
        pane.refresh_from(session)
        await pilot.pause()
        assert str(pane.slat_tree.root.label).startswith("EPT (GPA -> HPA)")

    with_pane(session, check)


def test_a_pane_refreshed_before_it_is_mounted_draws_when_mounted():
    session = finished("paging.img", "amd")
    hpa = session.machine.mem.hpa(0x2000)

    class EarlyApp(App):
        def compose(self) -> ComposeResult:
            pane = PageTablesPane()
            pane.refresh_from(session)
            pane.show_translation(0x1000)
            yield pane

    async def main() -> None:
        app = EarlyApp()
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            pane = app.query_one(PageTablesPane)
            assert str(pane.slat_tree.root.label).startswith("NPT (GPA -> HPA): nCR3 ")
            assert "PTE 1: 0x1000-0x1fff -> 0x2000, R W X, S A, 4K" in [label for _d, label in pane.labels("guest")]
            assert pane.query_one("#pt-translation").display
            assert f"-> HPA {hpa:#x}" in text_of(pane.translation.content)

    asyncio.run(main())
