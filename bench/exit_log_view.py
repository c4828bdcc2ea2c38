"""The exit-log pane with a million exits: open, scroll, page and filter.

    python bench/exit_log_view.py            # 1,000,000 exits, 160x48 headless
    python bench/exit_log_view.py --rows 200000

Builds a synthetic exit log (made-up Intel exits of a few reasons, appended with
`ExitLog.append` to a real machine's log), opens a tiny App holding only
`ExitLogView` with Textual's headless `run_test`, and times what a user feels:
the first frame, End, PageDown x100, and filters by kind, by a qualification
condition, by a column condition and by substring. `measure()` returns the
figures as a dict for the bench runner; `main()` prints them as a table.

Times include Textual's own work for the key press or the frame (the pilot waits
until the app is idle); filters include waiting for the thread worker.

Once no rows have arrived for a second, the pane codes the rows' encodings in a
thread worker (`EncodingIndex.extend`; here during PageDown x100); filters read
those codes. The bench waits for that
worker before the filters (it is normally done long before: `index_wait_s`),
times the coding alone (`index_build_s`, a fresh index in this process), and
times each filter alone twice: as the pane's worker runs it, with the pane's
index (`..._compute_s`), and cold, with an index that has coded nothing
(`..._cold_s`: every row decided from its columns, as a filter issued before
the coding ended would).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import MachineConfig  # noqa: E402
from engine.exitlog import ExitLog  # noqa: E402
from engine.vmx import exits as X  # noqa: E402
from vmmtui.session import Session  # noqa: E402

ROWS = 1_000_000
SIZE = (160, 48)
IMAGE = str(ROOT / "guests" / "cpuid.img")

# The synthetic run: exit i has the pattern i % 10 (60% port I/O, half of it
# OUT to the UART's 0x3f8), vCPU (i // 10) % 2, time 1000 * (i + 1).
_OUT = X.io_qualification(port=0x3F8, size=1, is_in=False)
_IN = X.io_qualification(port=0x3FD, size=1, is_in=True)
_CR3 = X.cr_qualification(cr=3, access=X.MOV_TO_CR, gpr=0)
_EPT = X.ept_violation_qualification(read=False, write=True, fetch=False, readable=False, writable=False,
                                     executable=False)


def fill(log: ExitLog, rows: int) -> None:
    """Append `rows` made-up Intel exits to `log`."""
    append = log.append
    for i in range(rows):
        p = i % 10
        vcpu = (i // 10) % 2
        t = 1000 * (i + 1)
        rip = 0x7C00 + (i % 64)
        if p < 3:
            append(vcpu, t, X.IO_INSTRUCTION, rip, 1, _OUT, 0, 0x20 + (i // 10) % 95, 0)
        elif p < 6:
            append(vcpu, t, X.IO_INSTRUCTION, rip, 1, _IN, 0, 0x60, 0)
        elif p == 6:
            append(vcpu, t, X.CPUID, rip, 2, 0, 0, 0x40000000 + (i // 10) % 2, 0)
        elif p == 7:
            append(vcpu, t, X.MSR_WRITE if i % 20 == 7 else X.MSR_READ, rip, 2, 0, 0, 0x174, 0x10)
        elif p == 8:
            append(vcpu, t, X.EPT_VIOLATION, rip, 3, _EPT, (i % 4096) << 21, 0, 0)
        else:
            append(vcpu, t, X.CR_ACCESS, rip, 3, _CR3, 0, (i % 256) << 12, 0)


def build_session(rows: int = ROWS) -> Session:
    """A session on the cpuid guest (not run) whose log holds `rows` synthetic exits."""
    session = Session.open(IMAGE, MachineConfig(vendor="intel"))
    fill(session.machine.exits, rows)
    return session


FILTERS = (("kind", "io"), ("condition", "io port=0x3f8"), ("column", "vcpu=1"), ("flag", "msr write"),
           ("substring", "0x7c3f"))


async def _until_filtered(pilot: Any, view: Any) -> None:
    while view.filtering:  # the worker's result is applied on the UI thread
        await pilot.pause(0.005)
    await pilot.pause()


async def _baseline_press(size: tuple[int, int], presses: int = 20) -> float:
    """Seconds per pilot key press in an app with one Static: the harness's own cost."""
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    class Baseline(App):
        def compose(self) -> ComposeResult:
            yield Static("baseline")

    async with Baseline().run_test(size=size) as pilot:
        await pilot.pause()
        t = time.perf_counter()
        for _ in range(presses):
            await pilot.press("pagedown")
        return (time.perf_counter() - t) / presses


async def _run(session: Session, size: tuple[int, int]) -> dict[str, Any]:
    from textual.app import App, ComposeResult

    from vmmtui.views.exit_log import ExitRows
    from vmmtui.views.exit_select import EncodingIndex, FilterPlan
    from vmmtui.widgets.exit_log import ExitLogView

    class Bench(App):
        def compose(self) -> ComposeResult:
            yield ExitLogView(session)

    out: dict[str, Any] = {"baseline_press_ms": await _baseline_press(size) * 1000}
    app = Bench()
    t0 = time.perf_counter()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        view = app.query_one(ExitLogView)
        out["first_frame_s"] = time.perf_counter() - t0
        out["rows"] = view.total
        lines = view.size.height

        def frame() -> None:  # what a redraw asks of the pane
            for y in range(lines):
                view.render_line(y)

        # One frame of rows never seen (an empty strip cache): the cost of a redraw.
        view._cache.clear()
        t = time.perf_counter()
        frame()
        out["uncached_frame_ms"] = (time.perf_counter() - t) * 1000

        await pilot.press("home")
        t = time.perf_counter()
        await pilot.press("end")
        await pilot.pause()
        out["scroll_to_end_s"] = time.perf_counter() - t
        out["end_seq"] = view.cursor_seq

        await pilot.press("home")
        t = time.perf_counter()
        for _ in range(100):
            await pilot.press("pagedown")
        await pilot.pause()
        out["page_down_x100_s"] = time.perf_counter() - t
        out["page_down_row"] = view.cursor_row

        # The pane's own share of a page down: the action and a frame of new rows.
        view.action_first()
        t = time.perf_counter()
        for _ in range(100):
            view.action_page_down()
            frame()
        out["page_down_x100_pane_s"] = time.perf_counter() - t

        machine = session.machine
        t = time.perf_counter()
        while view._indexing or view._encodings.coded < view.total:  # the pane's coding of the rows
            await pilot.pause(0.01)  # (it starts INDEX_DELAY s after the rows arrived)
        out["index_wait_s"] = time.perf_counter() - t
        index = view._encodings
        out["indexed_rows"] = index.coded
        t = time.perf_counter()
        EncodingIndex(machine.exits).extend(view.total)
        out["index_build_s"] = time.perf_counter() - t
        for key, text in FILTERS:
            await pilot.press("home")
            t = time.perf_counter()
            view.set_filter(text)
            await _until_filtered(pilot, view)
            out[f"filter_{key}_s"] = time.perf_counter() - t
            out[f"filter_{key}_shown"] = view.shown
            view.set_filter("")
            await pilot.pause()
            # The filter alone, as the worker runs it (fresh memos, the pane's index),
            # and cold (an index that has coded nothing).
            plan = FilterPlan.compile(text)
            assert plan is not None
            for figure, rows_index in (("compute", index), ("cold", EncodingIndex(machine.exits))):
                rows = ExitRows(machine.exits, machine.hw.decode, machine.vendor, rows_index)
                t = time.perf_counter()
                seqs = plan.select(rows, 0, view.total)
                out[f"filter_{key}_{figure}_s"] = time.perf_counter() - t
                assert seqs is not None and len(seqs) == out[f"filter_{key}_shown"], (key, figure)
    return out


def measure(rows: int = ROWS, size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """Build a log of `rows` exits and time the pane on it; the figures as a dict.

    Keys (seconds unless the name says ms): build_log_s, first_frame_s,
    uncached_frame_ms, scroll_to_end_s, page_down_x100_s, page_down_x100_pane_s,
    baseline_press_ms, filter_<kind|condition|column|flag|substring>_s (in the app,
    worker included), ..._compute_s (the filter alone, with the pane's index),
    ..._cold_s (alone, nothing coded) and ..._shown (rows kept); index_wait_s,
    index_build_s; plus rows, size, end_seq, page_down_row, indexed_rows.
    """
    t = time.perf_counter()
    session = build_session(rows)
    build_s = time.perf_counter() - t
    figures = asyncio.run(_run(session, size))
    figures["build_log_s"] = build_s
    figures["size"] = f"{size[0]}x{size[1]}"
    return figures


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=ROWS, help="exits in the synthetic log (default %(default)s)")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    f = measure(args.rows)
    table = Table(title=f"exit-log pane, {f['rows']:,} exits, {f['size']} (headless)", title_justify="left")
    table.add_column("what")
    table.add_column("in the app", justify="right")
    table.add_column("pane alone", justify="right")
    table.add_column("alone, cold", justify="right")
    table.add_column("rows shown", justify="right")
    table.add_row("build the log (ExitLog.append)", "", _ms(f["build_log_s"]), "", "")
    table.add_row("app start to first frame", _ms(f["first_frame_s"]), "", "", "")
    table.add_row("one frame of unseen rows", "", f"{f['uncached_frame_ms']:.1f} ms", "", "")
    table.add_row("End (cursor to the last exit)", _ms(f["scroll_to_end_s"]), "", "", "")
    table.add_row("PageDown x100", _ms(f["page_down_x100_s"]), _ms(f["page_down_x100_pane_s"]), "", "")
    table.add_row("(a key press in a one-Static app)", f"{f['baseline_press_ms']:.1f} ms", "", "", "")
    table.add_row("code the encodings (EncodingIndex)", f"waited {_ms(f['index_wait_s'])}",
                  _ms(f["index_build_s"]), "", f"{f['indexed_rows']:,}")
    for key, text in FILTERS:
        table.add_row(f"filter by {key}: {text}", _ms(f[f"filter_{key}_s"]), _ms(f[f"filter_{key}_compute_s"]),
                      _ms(f[f"filter_{key}_cold_s"]), f"{f[f'filter_{key}_shown']:,}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
