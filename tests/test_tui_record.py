"""The record toggle of the live TUI (issue 5): `r` and `:record [FILE]` start and
stop recording the exit trace; the status line says so while it records; a trace
started mid-run holds exactly the exits run while recording, numbered from 0 with
`meta.first_seq` giving the session's number; stats, export and replay read it;
a bad path is one line and changes nothing; quitting closes the trace; and a
`--script` file takes the same command."""

import asyncio
import io

import pytest
from rich.console import Console

from conftest import GUESTS
from engine.config import MachineConfig
from engine.trace import open_trace
from engine.trace.format import EXIT_COLUMNS
from vmmtui.app import make_app
from vmmtui.commands import LIVE, complete
from vmmtui.script import run_script
from vmmtui.session import Session


def run(coro):
    return asyncio.run(coro)


async def _settle(app, pilot):
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def _status(app) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.query_one("#status").content)
    return console.export_text()


def _notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def _command(pilot, line: str) -> None:
    await pilot.press("colon")
    await pilot.press(*line)
    await pilot.press("enter")


def _assert_same_exits(trace, session, first: int) -> None:
    """The trace's exit k is the session's exit first + k, field by field (time shifted)."""
    live = session.machine.exits
    start = trace.meta["start_time"]
    for name in EXIT_COLUMNS:
        got = list(trace.exits.column(name))
        want = list(live.column(name)[first:first + len(trace)])
        if name == "time":
            want = [t - start for t in want]
        assert got == want, name


# -- the key and the command ----------------------------------------------------------------

def test_r_toggles_recording_with_the_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n")
            await _settle(app, pilot)
            await pilot.press("r")
            await pilot.pause()
            session = app.session
            assert session.recording and session.recorder.first_seq == 1
            assert "● REC hello-1.vmtrace 0 exits" in _status(app)
            assert (tmp_path / "hello-1.vmtrace").exists()
            for _ in range(3):
                await pilot.press("n")
                await _settle(app, pilot)
            status = _status(app)
            assert "● REC hello-1.vmtrace 3 exits" in status and "exit #3" in status
            await pilot.press("r")
            await pilot.pause()
            assert not session.recording
            assert "REC" not in _status(app)
            assert "hello-1.vmtrace holds 3 exits" in str(app.query_one("#output").content)
            # The trace: exactly the three exits run while recording, numbered 0..2.
            trace = open_trace(tmp_path / "hello-1.vmtrace")
            assert trace.complete and len(trace) == 3
            assert trace.meta["first_seq"] == 1 and trace.meta["exits"] == 3
            assert trace.meta["stop"] == "exit"
            _assert_same_exits(trace, session, 1)
            for k in range(3):
                assert trace.registers(k)["rip"] == trace.exits.rip[k]
            assert trace.exits.time[0] > 0  # counted from the start of the recording
            # r again: a new file, the first free number.
            await pilot.press("r")
            await pilot.pause()
            assert session.recorder.path.name == "hello-2.vmtrace"
            await pilot.press("n")
            await _settle(app, pilot)
            await pilot.press("r")
            await pilot.pause()
            second = open_trace(tmp_path / "hello-2.vmtrace")
            assert len(second) == 1 and second.meta["first_seq"] == 4
            _assert_same_exits(second, session, 4)
    run(go())


def test_record_command_to_a_file_then_run_to_the_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.vmtrace"

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(2):
                await pilot.press("n")
                await _settle(app, pilot)
            await _command(pilot, "record run.vmtrace")
            await pilot.pause()
            assert app.session.recording and path.exists()
            await pilot.press("c")
            await _settle(app, pilot)
            session = app.session
            assert session.last_stop.reason.value == "debug-exit"
            total = len(session.machine.exits)
            assert f"● REC run.vmtrace {total - 2} exits" in _status(app)
            await _command(pilot, "record off")
            await pilot.pause()
            assert not session.recording
            trace = open_trace(path)
            assert trace.complete and len(trace) == total - 2
            assert trace.meta["first_seq"] == 2 and trace.meta["stop"] == "debug-exit"
            assert trace.meta["stop_status"] == 0
            _assert_same_exits(trace, session, 2)
            # The console output since recording started.
            start = trace.meta["start_serial_bytes"]
            assert trace.serial() == bytes(session.machine.serial[start:])
            assert b"Hello from the guest" in bytes(session.machine.serial)
            # The guest has ended: nothing left to record, said in one line.
            await pilot.press("r")
            await pilot.pause()
            assert not session.recording
            assert any("nothing left to record" in n for n in _notices(app))
    run(go())


def test_a_trace_recorded_from_the_first_exit_verifies_identical(tmp_path):
    from engine.trace.verify import verify

    path = tmp_path / "whole.vmtrace"

    async def go():
        app = make_app(GUESTS / "cpuid.img", MachineConfig(vendor="amd"))
        async with app.run_test(size=(160, 48)) as pilot:
            app.run_line(f"record {path}")
            await pilot.press("c")
            await _settle(app, pilot)
            await pilot.press("r")
            await pilot.pause()
            return len(app.session.machine.exits)

    total = run(go())
    trace = open_trace(path)
    assert len(trace) == total and trace.meta["first_seq"] == 0 and trace.meta["start_time"] == 0
    result = verify(trace)
    assert result.identical, result.report()


# -- what reads a trace started mid-run --------------------------------------------------------

@pytest.fixture
def mid_run_trace(tmp_path):
    """cpuid.img: 20 exits, then recording to the end; (path, session)."""
    session = Session.open(str(GUESTS / "cpuid.img"), MachineConfig())
    path = tmp_path / "mid.vmtrace"
    out = Console(record=True, width=200, file=io.StringIO())
    status = run_script(session, ["next"] * 20 + [f"record {path}", "continue", "record"], out)
    assert status == 0, out.export_text()
    return path, session


def test_stats_export_and_replay_read_a_mid_run_trace(mid_run_trace, tmp_path):
    from engine.trace.export import export
    from engine.trace.stats import compute, format_report
    from vmmtui.replay import REPLAY, ReplaySession

    path, session = mid_run_trace
    trace = open_trace(path)
    n = len(session.machine.exits) - 20
    assert len(trace) == n and trace.meta["first_seq"] == 20
    _assert_same_exits(trace, session, 20)
    # stats: as `vmmtui stats` computes them.
    figures = compute(trace)
    assert figures["exits"] == n
    assert sum(r["count"] for r in figures["all"]["reasons"]) == n
    assert all(r["guest_time"]["min"] >= 0 for r in figures["all"]["reasons"])
    assert "VM exits" in format_report(figures)
    # export: each format, as `vmmtui export` writes it.
    for fmt in ("csv", "json", "chrome"):
        out = io.StringIO()
        count = export(trace, fmt, out, fmt != "chrome")
        assert count >= n and out.getvalue()
    rows = io.StringIO()
    export(trace, "csv", rows, False)
    lines = rows.getvalue().splitlines()
    assert len(lines) == n + 1 and lines[1].startswith("0,") and lines[-1].startswith(f"{n - 1},")
    # replay: as `vmmtui replay TRACE --script` runs it.
    console = Console(record=True, width=200, file=io.StringIO())
    status = run_script(ReplaySession(open_trace(path)), ["goto first", "regs", "goto last", "console"], console,
                        REPLAY)
    text = console.export_text()
    assert status == 0, text
    assert f"replay exit 0 of {n}" in text and f"replay exit {n - 1} of {n}" in text


def test_a_mid_run_trace_holds_what_a_rerun_from_launch_needs(tmp_path):
    """Inputs fed before recording started are kept (time <= 0); those fed while
    recording are in the trace's time."""
    session = Session.open(str(GUESTS / "hello.img"), MachineConfig())
    path = tmp_path / "in.vmtrace"
    out = Console(record=True, width=200, file=io.StringIO())
    status = run_script(session, ["next", "send early", "next", f"record {path}", "next", "send late", "next",
                                  "record off"], out)
    assert status == 0, out.export_text()
    trace = open_trace(path)
    inputs = trace.inputs()
    assert [d for _t, _k, d in inputs] == [b"early\n", b"late\n"]
    assert inputs[0][0] <= 0 <= inputs[1][0]
    start = trace.meta["start_time"]
    assert [(t + start, k, d) for t, k, d in inputs] == session.inputs
    assert trace.meta["first_seq"] == 2 and len(trace) == 2


def test_replay_verify_checks_a_mid_run_trace_from_launch(tmp_path):
    from engine.trace.verify import verify

    session = Session.open(str(GUESTS / "hello.img"), MachineConfig())
    path = tmp_path / "v.vmtrace"
    out = Console(record=True, width=200, file=io.StringIO())
    status = run_script(session, ["next", "send early", "next", f"record {path}", "next", "send late",
                                  "continue", "record off"], out)
    assert status == 0, out.export_text()
    result = verify(open_trace(path))
    assert result.identical, result.report()
    assert result.checked == len(session.machine.exits) - 2


def test_replay_verify_finds_where_a_changed_guest_leaves_a_mid_run_trace(tmp_path):
    """hello.img recorded from exit 5 on, verified against an image one byte different
    ('g' -> 'G' in its message): the first divergence is the UART poll (IN) just before
    the OUT that prints it (the flags of `test al,al` on the character: PF), named by
    its number in the trace (the session's number - 5)."""
    from conftest import write_image
    from engine.trace.verify import verify

    session = Session.open(str(GUESTS / "hello.img"), MachineConfig())
    path = tmp_path / "mid.vmtrace"
    out = Console(record=True, width=200, file=io.StringIO())
    assert run_script(session, ["next"] * 5 + [f"record {path}", "continue", "record off"], out) == 0
    original = (GUESTS / "hello.img").read_bytes()
    at = original.index(b"the guest") + len(b"the ")
    changed = write_image(tmp_path, original[:at] + b"G" + original[at + 1:], "changed.img")
    live = session.machine.exits
    printed_g = next(seq for seq in range(5, len(live))  # the session's exit that writes the 'g'
                     if live.name(seq) in ("IO_INSTRUCTION", "IOIO") and live.aux1[seq] == ord("g"))
    trace = open_trace(path)
    assert trace.meta["first_seq"] == 5
    result = verify(trace, changed, allow_image_change=True)
    d = result.divergence
    poll = printed_g - 1 - 5  # in the trace's numbers
    assert d is not None and d.seq == poll, result.report()
    assert live.name(printed_g - 1) == trace.exits.name(poll) and trace.exits.rip[poll] == live.rip[printed_g - 1]
    assert (d.field, d.expected, d.got) == ("rflags", 0x2, 0x6)  # PF: 'g' has odd parity, 'G' even
    assert result.checked == poll and result.image_changed
    report = result.report()
    assert report.startswith(f"diverged at exit {poll}: rflags")
    assert "recorded from exit 5 of a session" in report and "exits 0 to 4 unchecked" in report
    # The unchanged image: identical, with the same note.
    same = verify(open_trace(path))
    assert same.identical and same.checked == len(live) - 5, same.report()
    assert "exits 0 to 4 unchecked" in same.report()


def test_replay_verify_of_a_mid_run_trace_says_when_the_rerun_never_reaches_it(tmp_path):
    from conftest import write_image
    from engine.trace.verify import verify

    session = Session.open(str(GUESTS / "hello.img"), MachineConfig())
    path = tmp_path / "mid.vmtrace"
    out = Console(record=True, width=200, file=io.StringIO())
    assert run_script(session, ["next"] * 5 + [f"record {path}", "next", "record off"], out) == 0
    # mov al,0; out 0xf4,al; cli; hlt: one exit, then the guest ends.
    short = write_image(tmp_path, bytes.fromhex("b000" "e6f4" "faf4"), "short.img")
    result = verify(open_trace(path), short, allow_image_change=True)
    d = result.divergence
    assert d is not None and d.seq == 0 and d.field == "exit" and result.checked == 0, result.report()
    report = result.report()
    assert "the session's exit 5, where the recording started" in report
    assert "none: the re-run stopped (debug-exit" in report and "before reaching it" in report
    assert "never reached it" in report


# -- failures -----------------------------------------------------------------------------------

def test_a_path_that_cannot_be_written_is_one_line_and_changes_nothing(tmp_path):
    existing = tmp_path / "taken.vmtrace"
    existing.write_bytes(b"keep me")

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n")
            await _settle(app, pilot)
            before = _status(app)
            bad = [(tmp_path / "no" / "such" / "dir" / "x.vmtrace", "no directory"),
                   (tmp_path, "is a directory"),
                   (existing, "already exists"),
                   (existing / "x.vmtrace", "is not a directory")]
            for target, why in bad:
                app.run_line(f"record {target}")  # as typed at ':' (long paths: typing them is slow)
                await pilot.pause()
                notices = _notices(app)
                assert why in notices[-1] and "\n" not in notices[-1], notices[-1]
                assert not app.session.recording
                assert _status(app) == before
            assert existing.read_bytes() == b"keep me"
            assert not (tmp_path / "no").exists()
            assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.vmtrace"]
            # --force overwrites, as `vmmtui record --force` does.
            app.run_line(f"record --force {existing}")
            await pilot.pause()
            assert app.session.recording
            await pilot.press("r")
            await pilot.pause()
            assert open_trace(existing).complete
    run(go())


def test_recording_refuses_while_the_guest_runs():
    async def go():
        app = make_app(GUESTS / "bench_out.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("c")
            await pilot.pause()
            assert app.running
            await pilot.press("r")
            await pilot.pause()
            assert not app.session.recording
            assert any("pause it first" in n for n in _notices(app))
            await pilot.press("p")
            await _settle(app, pilot)
    run(go())


# -- quitting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["q", "ctrl+q"])
def test_quitting_while_recording_a_running_guest_leaves_a_complete_trace(tmp_path, how):
    path = tmp_path / "quit.vmtrace"
    seen = {}

    async def go():
        app = make_app(GUESTS / "bench_out.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n")  # a stop before the recording: the trace must not take it for its own
            await _settle(app, pilot)
            app.run_line(f"record {path}")
            await pilot.pause()
            await pilot.press("c")
            for _ in range(50):  # let the guest run past a batch or two
                await asyncio.sleep(0.05)
                if len(app.session.machine.exits) > 10_000:
                    break
            assert app.running
            assert "● REC quit.vmtrace" in _status(app)
            await pilot.press(how)
            await pilot.pause()
            seen["exits"] = len(app.session.machine.exits)
            seen["session"] = app.session
        seen["return"] = app.return_code

    run(go())
    trace = open_trace(path)
    assert trace.complete and trace.meta["ok"] == 1
    assert len(trace) == seen["exits"] - 1 and len(trace) > 10_000
    assert trace.meta["first_seq"] == 1 and trace.meta["stop"] == "pause"
    _assert_same_exits(trace, seen["session"], 1)
    assert not seen["session"].recording


def test_the_app_ending_any_other_way_closes_the_trace(tmp_path):
    path = tmp_path / "end.vmtrace"

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("n")
            await _settle(app, pilot)
            app.run_line(f"record {path}")
            await pilot.press("n")
            await _settle(app, pilot)
            assert app.session.recording
            app.exit()  # no q: the app is torn down with the recording on
            await pilot.pause()

    run(go())
    trace = open_trace(path)
    assert trace.complete and len(trace) == 1 and trace.meta["first_seq"] == 1


# -- the command table, help, completion, the footer, scripts -------------------------------------

def test_record_is_a_command_with_help_completion_and_a_key():
    cmd = LIVE.lookup("record")
    assert cmd.key == "r" and "record" in cmd.usage and "off" in cmd.usage
    assert LIVE.lookup("rec") is cmd
    assert complete("rec") == ["record"]
    assert complete("record o") == ["record off"]
    assert "record --force " in complete("record ")
    help_text = LIVE.help(["record"], "commands").output.plain
    assert "key: r" in help_text

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            keys = {k: ab.binding.description for k, ab in app.active_bindings.items()
                    if ab.binding.show and ab.enabled}
            assert keys.get("r") == "record"
    run(go())


def test_the_replay_app_has_no_record_key(tmp_path):
    from vmmtui.replay import make_replay_app

    session = Session.open(str(GUESTS / "hello.img"), MachineConfig())
    path = tmp_path / "t.vmtrace"
    run_script(session, [f"record {path}", "continue", "record"], Console(file=io.StringIO()))

    async def go():
        app = make_replay_app(path)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            assert "r" not in {k for k, ab in app.active_bindings.items() if ab.enabled}
    run(go())


def test_a_script_records_and_closes_the_trace_at_its_end(tmp_path):
    session = Session.open(str(GUESTS / "hello.img"), MachineConfig(vendor="amd"))
    first, second = tmp_path / "a.vmtrace", tmp_path / "b.vmtrace"
    console = Console(record=True, width=200, file=io.StringIO())
    status = run_script(session, ["next", f"record {first}", "next", "next", "record off",
                                  f"record {second}", "next", "record nope/x.vmtrace"], console)
    text = console.export_text()
    assert status == 1  # the second `record` failed (already recording): the script says so
    assert "already recording" in text
    assert f"recording stopped: {first} holds 2 exits" in text
    assert "recording stopped at the end of the script" in text
    a, b = open_trace(first), open_trace(second)
    assert (len(a), a.meta["first_seq"], len(b), b.meta["first_seq"]) == (2, 1, 1, 3)
    _assert_same_exits(a, session, 1)
    _assert_same_exits(b, session, 3)
    assert not session.recording


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
def test_the_status_line_is_on_screen_above_the_footer(size):
    """The REC indicator lives in the status line: it must not sit under the footer
    (docked to the same edge, Textual would draw them on top of each other)."""
    from textual.widgets import Footer

    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            status, cmdline = app.query_one("#status").region, app.query_one("#cmdline").region
            footer = app.query_one(Footer).region
            assert status.height == 1 and cmdline.height == 1
            assert status.bottom <= cmdline.y and cmdline.bottom <= footer.y
            assert status.y >= app.query_one("#main").region.bottom
    run(go())
