"""The exit-log pane: exact rows, header, title, cursor, selection, filters, follow,
and a million exits; plus the text views it shares with --script.

Textual's pilot drives a tiny App holding only the pane; each async scenario runs
under asyncio.run (no pytest-asyncio here).
"""

from __future__ import annotations

import asyncio
import io

import pytest
from conftest import GUESTS
from rich.console import Console
from textual.app import App, ComposeResult

from engine.config import MachineConfig
from engine.svm import exits as S
from engine.vmx import exits as X
from vmmtui.session import Session
from vmmtui.views.exit_log import exit_detail, exit_row_text, exits_table, qualification_text
from vmmtui.widgets.exit_log import ExitLogView

SIZE = (120, 30)  # the pane gets 118 x 28 inside its border: a header and 27 rows
PAGE = 27

HEADER_INTEL = "seq vcpu time reason name           rip    len qualification"
INTEL_ROWS = {  # seq -> the row exactly as drawn (trailing blanks stripped)
    0: "  0    0   13     10 CPUID          0x7e09   2 leaf=0x0",
    1: "  1    0   31     30 IO_INSTRUCTION 0x7c8c   1 port=0x3fd in 1B dx value=0x60",
    2: "  2    0   36     30 IO_INSTRUCTION 0x7c95   1 port=0x3f8 out 1B dx value=0x63",
    55: " 55    0  488     10 CPUID          0x7e3b   2 leaf=0x1",
    156: "156    0 1305     10 CPUID          0x7e5c   2 leaf=0x40000000",
    247: "247    0 2095     10 CPUID          0x7e9a   2 leaf=0x40000001",
    334: "334    0 2846     31 MSR_READ       0x7ebf   2 msr=0x1b read value=0xfee00900",
    403: "403    0 3495     32 MSR_WRITE      0x7ee3   2 msr=0x174 write value=0x10",
    404: "404    0 3498     31 MSR_READ       0x7eee   2 msr=0x174 read value=0x10",
    505: "505    0 4402     16 RDTSC          0x7f19   2 tsc=4402",
    561: "561    0 5873     30 IO_INSTRUCTION 0x7f55   2 port=0xf4 out 1B imm value=0x0",
}
HEADER_AMD = "seq vcpu time reason name  rip    len qualification"
AMD_ROWS = {
    0: "  0    0   13   0x72 CPUID 0x7e09   2 leaf=0x0",
    1: "  1    0   31   0x7b IOIO  0x7c8c   1 port=0x3fd in 1B value=0x60",
    403: "403    0 3495   0x7c MSR   0x7ee3   2 msr=0x174 write value=0x10",
    404: "404    0 3498   0x7c MSR   0x7eee   2 msr=0x174 read value=0x10",
    561: "561    0 5873   0x7b IOIO  0x7f55   2 port=0xf4 out 1B value=0x0",
}


def _session(vendor: str, max_exits: int | None = None) -> Session:
    session = Session.open(str(GUESTS / "cpuid.img"), MachineConfig(vendor=vendor))
    session.machine.run(max_exits=max_exits, timeout=30)
    return session


class ExitLogApp(App):
    """Only the pane, and a record of its Selected messages."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.selected: list[int] = []

    def compose(self) -> ComposeResult:
        yield ExitLogView(self.session)

    def on_exit_log_view_selected(self, message: ExitLogView.Selected) -> None:
        self.selected.append(message.seq)


def _run(session: Session, scenario) -> None:  # noqa: ANN001 - an async function of (pilot, view)
    async def main() -> None:
        app = ExitLogApp(session)
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(ExitLogView)
            view.refresh_count()
            await pilot.pause()
            await scenario(pilot, view)

    asyncio.run(main())


def _line(view: ExitLogView, y: int) -> str:
    return view.render_line(y).text.rstrip()


def _screen(view: ExitLogView) -> list[str]:
    """The rows on screen (not the header), blank lines dropped."""
    return [t for t in (_line(view, y) for y in range(1, view.size.height)) if t]


async def _filtered(pilot, view: ExitLogView, text: str) -> None:  # noqa: ANN001
    """Filter by `text` (unless it is the filter already) and wait for the result."""
    if view.filter_text != text.strip():
        view.set_filter(text)
    for _ in range(3000):  # a worker's result is applied on the UI thread; give up after ~60 s
        await pilot.pause(0.02 if view.filtering else None)
        if not view.filtering:
            break
    assert not view.filtering, f"filtering {text!r} did not finish"
    await pilot.pause()


@pytest.fixture(scope="module")
def intel() -> Session:
    return _session("intel")


@pytest.fixture(scope="module")
def amd() -> Session:
    return _session("amd")


# -- rows, header, title -------------------------------------------------------------

def test_rows_header_and_title_intel(intel: Session) -> None:
    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        assert view.border_title == "exit log (562 exits, 562 shown)"
        assert view.virtual_size.height == 563  # the rows and the header line
        # follow mode: opened on the last exit, the screen ends with it
        assert view.cursor_row == 561 and view.cursor_seq == 561
        assert _line(view, 0) == HEADER_INTEL
        assert _screen(view)[-1] == INTEL_ROWS[561]
        assert len(_screen(view)) == PAGE
        await pilot.press("home")
        assert _line(view, 0) == HEADER_INTEL  # the header does not scroll
        assert [_line(view, y) for y in (1, 2, 3)] == [INTEL_ROWS[0], INTEL_ROWS[1], INTEL_ROWS[2]]
        for seq in (334, 403, 505):
            assert view.show_seq(seq)
            await pilot.pause()
            y = 1 + view.row_of(seq) - view.scroll_offset.y
            assert _line(view, y) == INTEL_ROWS[seq]

    _run(intel, scenario)


def test_rows_and_header_amd(amd: Session) -> None:
    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        assert view.border_title == "exit log (562 exits, 562 shown)"
        assert _line(view, 0) == HEADER_AMD
        assert _screen(view)[-1] == AMD_ROWS[561]
        await pilot.press("home")
        assert [_line(view, 1), _line(view, 2)] == [AMD_ROWS[0], AMD_ROWS[1]]
        await _filtered(pilot, view, "msr index=0x174")
        assert _screen(view) == [AMD_ROWS[403], AMD_ROWS[404]]
        await _filtered(pilot, view, "msr index=0x174 write")  # AMD: one MSR exit, EXITINFO1 bit 0
        assert _screen(view) == [AMD_ROWS[403]]

    _run(amd, scenario)


def test_reason_names_are_coloured_by_kind(intel: Session) -> None:
    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        await pilot.press("home", "down", "down", "down")  # the cursor leaves rows 0 and 1 plain
        cpuid = {s.text.strip(): s.style for s in view.render_line(1)}["CPUID"]
        io = {s.text.strip(): s.style for s in view.render_line(2)}["IO_INSTRUCTION"]
        plain = list(view.render_line(2))[0].style  # the seq cell
        assert cpuid.color != io.color
        assert io.color != plain.color and cpuid.color != plain.color
        # the cursor row is drawn in the cursor style, end to end
        cursor = list(view.render_line(4))
        assert "".join(s.text for s in cursor).startswith("  3 ")
        assert len({s.style for s in cursor}) == 1
        assert cursor[0].style.bgcolor != plain.bgcolor

    _run(intel, scenario)


# -- cursor and selection ------------------------------------------------------------

def test_cursor_keys_and_selected_message(intel: Session) -> None:
    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        app = pilot.app
        await pilot.press("home", "down", "down")
        assert view.cursor_row == 2
        await pilot.press("enter")
        assert app.selected == [2]
        assert view.selected_seq == 2
        await pilot.press("pagedown")
        assert view.cursor_row == 2 + PAGE
        await pilot.press("pagedown", "pageup")
        assert view.cursor_row == 2 + PAGE
        await pilot.press("up")
        assert view.cursor_row == 1 + PAGE
        await pilot.press("end")
        assert view.cursor_row == 561
        assert _screen(view)[-1] == INTEL_ROWS[561]
        await pilot.press("down")  # no further than the last row
        assert view.cursor_row == 561
        await pilot.press("up", "enter")
        assert app.selected == [2, 560]
        await pilot.press("home", "up")
        assert view.cursor_row == 0 and view.scroll_offset.y == 0
        # a click on the third row (screen line 3 of the pane, after its border and the header)
        await pilot.click(ExitLogView, offset=(10, 4))
        assert view.cursor_row == 2
        assert app.selected == [2, 560, 2]
        await pilot.click(ExitLogView, offset=(10, 1))  # the header: nothing
        assert app.selected == [2, 560, 2]

    _run(intel, scenario)


# -- filters -------------------------------------------------------------------------

def test_filters(intel: Session) -> None:
    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        await pilot.press("home", "down", "down")  # the cursor on seq 2
        await _filtered(pilot, view, "cpuid")
        assert view.border_title == "exit log (562 exits, 4 shown)"
        assert view.border_subtitle == "filter: cpuid"
        assert _line(view, 0) == HEADER_INTEL
        assert _screen(view) == [INTEL_ROWS[0], INTEL_ROWS[55], INTEL_ROWS[156], INTEL_ROWS[247]]
        assert view.cursor_seq == 55  # seq 2 is hidden: the next exit shown
        assert view.filter_error is None

        await _filtered(pilot, view, "msr index=0x174 write")
        assert _screen(view) == [INTEL_ROWS[403]]
        assert view.border_title == "exit log (562 exits, 1 shown)"

        await _filtered(pilot, view, "io port=0xf4")
        assert _screen(view) == [INTEL_ROWS[561]]

        await _filtered(pilot, view, "cpuid leaf=0x40000000-0x40000100")
        assert _screen(view) == [INTEL_ROWS[156], INTEL_ROWS[247]]

        await _filtered(pilot, view, "vcpu=1")
        assert view.shown == 0 and _screen(view) == []
        await _filtered(pilot, view, "msr vcpu=0")
        assert _screen(view) == [INTEL_ROWS[334], INTEL_ROWS[403], INTEL_ROWS[404]]

        # not a filter: a case-insensitive substring of the row
        await _filtered(pilot, view, "0x7e3b")
        assert _screen(view) == [INTEL_ROWS[55]]
        assert view.filter_error is not None and "0x7e3b" in view.filter_error
        assert view.border_subtitle == "text: 0x7e3b"
        await _filtered(pilot, view, "msr_write")
        assert _screen(view) == [INTEL_ROWS[403]]
        await _filtered(pilot, view, "leaf=0x1 ")  # parses as a filter on any kind with leaf=1
        assert _screen(view) == [INTEL_ROWS[55]]

        # an unparseable filter that matches no row text
        await _filtered(pilot, view, "io port=zz")
        assert view.filter_error == "not a number: 'zz'"
        assert view.border_title == "exit log (562 exits, 0 shown)"
        assert _screen(view) == [] and view.cursor_seq is None
        await pilot.press("enter", "down", "end")  # keys on an empty list do nothing
        assert pilot.app.selected == []

        # back to every exit, the cursor on the exit it was on before the empty list
        await _filtered(pilot, view, "msr write")
        assert view.cursor_seq == 403
        await _filtered(pilot, view, "")
        assert view.border_title == "exit log (562 exits, 562 shown)"
        assert view.border_subtitle == ""
        assert view.cursor_seq == 403
        y = 1 + 403 - view.scroll_offset.y
        assert _line(view, y) == INTEL_ROWS[403]

    _run(intel, scenario)


# -- refresh_count and follow ----------------------------------------------------------

def test_refresh_count_follows_the_last_exit_and_extends_the_filter() -> None:
    session = _session("intel", max_exits=100)

    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        assert view.border_title == "exit log (100 exits, 100 shown)"
        assert view.cursor_seq == 99
        session.mark_stop(session.machine.run(max_exits=300, timeout=30))
        view.refresh_count()
        await pilot.pause()
        assert view.border_title == "exit log (300 exits, 300 shown)"
        assert view.cursor_seq == 299  # followed
        assert _screen(view)[-1].startswith("299 ")
        # the exits since the previous stop have their seq cell marked new
        await pilot.press("up")
        new = list(view.render_line(view.size.height - 1))
        assert new[0].text == "299" and new[0].style.bold
        view.show_seq(99)
        await pilot.press("up")  # the cursor on 98, exit 99 below it on screen
        old = list(view.render_line(1 + 99 - view.scroll_offset.y))
        assert old[0].text == " 99" and not old[0].style.bold
        assert new[0].style.color != old[0].style.color

        # off the last row: new exits do not move the cursor
        await pilot.press("home")
        session.machine.run(max_exits=400, timeout=30)
        view.refresh_count()
        await pilot.pause()
        assert view.cursor_seq == 0 and view.total == 400

        # a filter is extended with the new rows only, and follows when on its last row
        await _filtered(pilot, view, "cpuid")
        assert [r.split()[0] for r in _screen(view)] == ["0", "55", "156", "247"]
        await _filtered(pilot, view, "msr")
        assert [r.split()[0] for r in _screen(view)] == ["334"]
        await pilot.press("end")
        session.machine.run(timeout=30)
        view.refresh_count()
        await pilot.pause()
        assert view.border_title == "exit log (562 exits, 3 shown)"
        assert _screen(view) == [INTEL_ROWS[334], INTEL_ROWS[403], INTEL_ROWS[404]]
        assert view.cursor_seq == 404

    _run(session, scenario)


# -- a million exits -------------------------------------------------------------------

MILLION = 1_000_000
_OUT = X.io_qualification(port=0x3F8, size=1, is_in=False)
_IN = X.io_qualification(port=0x3FD, size=1, is_in=True)
_EPT = X.ept_violation_qualification(read=False, write=True, fetch=False, readable=False, writable=False,
                                     executable=False)

HEADER_MILLION = "   seq vcpu   time reason name           rip    len qualification"
MILLION_FIRST_ROWS = [
    "     0    0      0     30 IO_INSTRUCTION 0x1000   1 port=0x3f8 out 1B dx value=0x0",
    "     1    1      1     30 IO_INSTRUCTION 0x1004   1 port=0x3fd in 1B dx value=0x60",
    "     2    2      2     10 CPUID          0x1008   2 leaf=0x40000000",
    "     3    0      3     48 EPT_VIOLATION  0x100c   3 gpa=0x600000 write",
]
MILLION_LAST_ROW = "999999    0 999999     31 MSR_READ       0x1010   2 msr=0x1b read value=0xfee00900"


def _million() -> Session:
    """A session whose log holds a million made-up exits: exit i is, by i % 5, an OUT to
    0x3f8 (value i % 256), an IN from 0x3fd, a CPUID, an EPT violation, an MSR read;
    on vCPU i % 3."""
    session = Session.open(str(GUESTS / "cpuid.img"), MachineConfig(vendor="intel"))
    append = session.machine.exits.append
    for i in range(MILLION):
        p = i % 5
        if p == 0:
            append(i % 3, i, X.IO_INSTRUCTION, 0x1000, 1, _OUT, 0, i % 256, 0)
        elif p == 1:
            append(i % 3, i, X.IO_INSTRUCTION, 0x1004, 1, _IN, 0, 0x60, 0)
        elif p == 2:
            append(i % 3, i, X.CPUID, 0x1008, 2, 0, 0, 0x40000000, 0)
        elif p == 3:
            append(i % 3, i, X.EPT_VIOLATION, 0x100C, 3, _EPT, (i % 512) << 21, 0, 0)
        else:
            append(i % 3, i, X.MSR_READ, 0x1010, 2, 0, 0, 0x1B, 0xFEE00900)
    return session


def test_a_million_exits_scroll_and_filter() -> None:
    session = _million()

    async def scenario(pilot, view: ExitLogView) -> None:  # noqa: ANN001
        assert view.border_title == "exit log (1,000,000 exits, 1,000,000 shown)"
        assert view.cursor_seq == MILLION - 1
        assert _screen(view)[-1] == MILLION_LAST_ROW
        await pilot.press("home")
        assert _line(view, 0) == HEADER_MILLION
        assert _screen(view)[:4] == MILLION_FIRST_ROWS
        await pilot.press("end")
        assert view.cursor_seq == MILLION - 1 and _screen(view)[-1].split()[0] == "999999"
        for _ in range(3):
            await pilot.press("pageup")
        assert view.cursor_row == MILLION - 1 - 3 * PAGE

        # a filter on the kind alone: the reason column, names per distinct reason; over a
        # million rows it runs in a thread worker, the previous rows on screen meanwhile
        view.set_filter("io")
        assert view.filtering
        assert view.border_title.startswith("exit log (1,000,000 exits, filtering…")
        assert view.shown == MILLION
        await _filtered(pilot, view, "io")
        assert view.shown == 2 * MILLION // 5
        assert view.border_title == "exit log (1,000,000 exits, 400,000 shown)"
        await pilot.press("home")
        assert [r.split()[0] for r in _screen(view)[:4]] == ["0", "1", "5", "6"]
        await pilot.press("end")
        assert _screen(view)[-1].split()[0] == "999996"

        await _filtered(pilot, view, "ept vcpu=1")
        assert view.shown == len([i for i in range(3, MILLION, 5) if i % 3 == 1])
        await _filtered(pilot, view, "io port=0x3f8 value=0x41")
        assert view.shown == len([i for i in range(0, MILLION, 5) if i % 256 == 0x41])
        await pilot.press("home")
        assert _screen(view)[0].split()[0] == str(next(i for i in range(0, MILLION, 5) if i % 256 == 0x41))

        # more exits arrive: the filter is extended, not recomputed
        before = view.shown
        log = session.machine.exits
        log.append(0, MILLION, X.IO_INSTRUCTION, 0x1000, 1, _OUT, 0, 0x41, 0)
        log.append(0, MILLION + 1, X.CPUID, 0x1008, 2, 0, 0, 1, 0)
        view.refresh_count()
        await pilot.pause()
        assert view.total == MILLION + 2 and view.shown == before + 1

        # a newer filter replaces one still running; exits that arrive while a filter
        # runs are filtered when it ends
        view.set_filter("io port=0x3f8")
        assert view.filtering
        view.set_filter("cpuid")
        assert view.filtering
        log.append(1, MILLION + 2, X.CPUID, 0x1008, 2, 0, 0, 2, 0)
        view.refresh_count()
        await _filtered(pilot, view, "cpuid")
        assert view.total == MILLION + 3
        assert view.shown == MILLION // 5 + 2
        assert view.border_title == f"exit log (1,000,003 exits, {MILLION // 5 + 2:,} shown)"
        await pilot.press("end")
        assert [r.split()[0] for r in _screen(view)[-3:]] == ["999997", str(MILLION + 1), str(MILLION + 2)]

    _run(session, scenario)


# -- the text views (shared with --script) -------------------------------------------------

def test_qualification_lines_from_the_vendors_encodings(intel: Session, amd: Session) -> None:
    vmx = intel.machine.hw.decode
    svm = amd.machine.hw.decode

    def line(decode, vendor, *raw):  # noqa: ANN001, ANN202
        name, q = decode(*raw)
        return qualification_text(name, q, vendor)

    ept = X.ept_violation_qualification(read=False, write=True, fetch=False, readable=False, writable=False,
                                        executable=False)
    assert line(vmx, "intel", X.EPT_VIOLATION, ept, 0x200000, 0, 0) == "gpa=0x200000 write"
    ept_ro = X.ept_violation_qualification(read=False, write=True, fetch=False, readable=True, writable=False,
                                           executable=True)
    assert line(vmx, "intel", X.EPT_VIOLATION, ept_ro, 0x5000, 0, 0) == "gpa=0x5000 write allowed=r-x"
    cr3 = X.cr_qualification(cr=3, access=X.MOV_TO_CR, gpr=0)
    assert line(vmx, "intel", X.CR_ACCESS, cr3, 0, 0x10000, 0) == "cr3 mov-to-cr rax value=0x10000"
    assert line(vmx, "intel", X.MSR_WRITE, 0, 0, 0xC0000080, 0x100) == "msr=0xc0000080 write value=0x100"
    assert line(vmx, "intel", X.CPUID, 0, 0, 0x40000000, 0x1234) == "leaf=0x40000000"
    assert line(vmx, "intel", X.CPUID, 0, 0, 7, 0) == "leaf=0x7 subleaf=0x0"
    out = X.io_qualification(port=0x3F8, size=1, is_in=False)
    assert line(vmx, "intel", X.IO_INSTRUCTION, out, 0, 0x48, 0) == "port=0x3f8 out 1B dx value=0x48"
    rep = X.io_qualification(port=0x3F8, size=1, is_in=False, string=True, rep=True)
    assert line(vmx, "intel", X.IO_INSTRUCTION, rep, 0, 0, 12) == "port=0x3f8 out 1B dx rep string count=12"

    assert line(svm, "amd", S.NPF, S.npf_exitinfo1(present=False, write=True), 0x200000, 0, 0) == \
        "gpa=0x200000 write"
    assert line(svm, "amd", S.WRITE_CR0 + 3, S.cr_exitinfo1(gpr=0), 0, 0x10000, 0) == \
        "cr3 mov-to-cr rax value=0x10000"
    assert line(svm, "amd", S.MSR, 1, 0, 0xC0000080, 0x100) == "msr=0xc0000080 write value=0x100"
    assert line(svm, "amd", S.EXCP_BASE + 14, 0x2, 0x1000, 0, 0) == "#PF error_code=0x2 cr2=0x1000"

    e = intel.machine.exits[2]
    assert exit_row_text(e, "intel") == "port=0x3f8 out 1B dx value=0x63"


def _text(renderable) -> str:  # noqa: ANN001
    console = Console(width=120, file=io.StringIO())
    console.print(renderable)
    return console.file.getvalue()


def test_exit_detail_intel(intel: Session) -> None:
    text = _text(exit_detail(intel, 2))
    for expected in ("seq                     2", "vCPU                    0", "time                    36",
                     "exit reason             30 IO_INSTRUCTION", "RIP                     0x7c95",
                     "length                  1", "EXIT_QUALIFICATION      0x3f80000",
                     "GUEST_PHYSICAL_ADDRESS  0x0", "port       0x3f8 (1016)", "direction  out",
                     "value      0x63 (99) 'c'", "VMM handling", " 1. VMREAD VM_EXIT_REASON",
                     " 2. VMREAD EXIT_QUALIFICATION", " 7. VMRESUME"):
        assert expected in text, expected


def test_exit_detail_amd(amd: Session) -> None:
    text = _text(exit_detail(amd, 403))
    for expected in ("EXITCODE   0x7c MSR", "EXITINFO1  0x1", "EXITINFO2  0x0", "write  yes",
                     "msr    0x174 (372)", " 1. #VMEXIT", " 9. VMRUN"):
        assert expected in text, expected


def test_exits_table(intel: Session) -> None:
    text = _text(exits_table(intel, last=3))
    assert "exit log (562 exits, 562 shown)" in text
    assert ("│ 561 │    0 │ 5873 │     30 │ IO_INSTRUCTION │ 0x7f55 │   2 │ port=0xf4 out 1B imm value=0x0 │"
            in text)
    assert "the last 3 of 562" in text
    text = _text(exits_table(intel, last=20, filter_text="cpuid"))
    assert "exit log (562 exits, 4 shown)" in text
    assert "│ 156 │    0 │ 1305 │     10 │ CPUID │ 0x7e5c │   2 │ leaf=0x40000000 │" in text
    text = _text(exits_table(intel, filter_text="0x7e3b"))
    assert "exit log (562 exits, 1 shown)" in text and "text: 0x7e3b" in text
