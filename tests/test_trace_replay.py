"""`vmmtui replay TRACE`: the debugger on a trace, headless and in the TUI — stepping,
jumping by number and by virtual time, filtering, registers at the selected exit;
what a replay refuses."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from conftest import GUESTS
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine
from engine.trace import TraceWriter, open_trace
from vmmtui.cli import main
from vmmtui.commands import CommandError
from vmmtui.replay import ReplaySession, execute, make_replay_app


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """cpuid.img recorded, with the snapshots taken at each exit for comparison."""
    path = tmp_path_factory.mktemp("replay") / "cpuid.vmtrace"
    machine = Machine(MachineConfig())
    writer = TraceWriter(path, machine, load(machine, GUESTS / "cpuid.img"), batch=128)
    snaps = []
    machine.on_exit(lambda seq, vcpu, regs: snaps.append(dict(zip(open_trace_names(), regs))))
    stop = machine.run()
    writer.close(stop, 0.1)
    return path, machine, snaps


def open_trace_names():
    from engine.vcpu import SNAPSHOT_REGS

    return SNAPSHOT_REGS


def _text(renderable, width=160) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_moving_through_the_trace(recorded):
    path, machine, snaps = recorded
    s = ReplaySession(open_trace(path))
    assert s.position == 0 and s.regs == snaps[0]
    execute(s, "next")
    assert s.position == 1 and s.regs == snaps[1]
    assert s.changed_registers() == {k for k in snaps[1] if snaps[1][k] != snaps[0][k]}
    execute(s, "next 10")
    assert s.position == 11
    execute(s, "prev 3")
    assert s.position == 8 and s.regs == snaps[8]
    execute(s, "goto 300")
    assert s.position == 300 and s.regs == snaps[300]  # across register chunks (batch 128)
    times = machine.exits.time
    assert times[50] > times[49] + 1  # virtual time is instructions retired: the guest ran between them
    execute(s, f"goto time {times[49] + 1}")  # the first exit at or after that time
    assert s.position == 50
    execute(s, "goto last")
    assert s.position == 561
    with pytest.raises(CommandError, match="already at the last exit"):
        execute(s, "next")
    with pytest.raises(CommandError, match="no exit 9999"):
        execute(s, "goto 9999")


def test_filter_breakpoints_and_continue(recorded):
    path, machine, _snaps = recorded
    s = ReplaySession(open_trace(path))
    cpuids = [e.seq for e in machine.exits if e.name == "CPUID"]
    assert s.position == cpuids[0] == 0 and len(cpuids) == 4
    execute(s, "filter cpuid")
    execute(s, "next")
    assert s.position == cpuids[1]
    execute(s, "next 2")
    assert s.position == cpuids[3]
    execute(s, "prev")
    assert s.position == cpuids[2]
    execute(s, "filter")
    execute(s, "goto 0")
    execute(s, "break exit msr write")
    execute(s, "continue")
    msr_write = next(e.seq for e in machine.exits if e.name == "MSR_WRITE")
    assert s.position == msr_write
    execute(s, "continue")  # no other: the last exit
    assert s.position == len(machine.exits) - 1
    execute(s, "rcontinue")
    assert s.position == msr_write


def test_the_console_shows_what_was_written_by_the_selected_exit(recorded):
    path, machine, _snaps = recorded
    s = ReplaySession(open_trace(path))
    outs = [e.seq for e in machine.exits if e.name == "IO_INSTRUCTION" and e.qualification["port"] == 0x3F8]
    # Each byte is stored with the time of the exit that wrote it (the OUT's: the instructions
    # retired before it), so the console at an exit holds what that exit and the ones before wrote.
    chunks = s.trace.serial_chunks()
    assert [t for t, _d in chunks] == [machine.exits.time[seq] for seq in outs]
    assert b"".join(d for _t, d in chunks) == bytes(machine.serial)
    s.goto(outs[2])
    assert s.machine.serial == bytes(machine.serial[:3])
    s.goto(len(machine.exits) - 1)
    assert s.machine.serial == bytes(machine.serial)


def test_what_a_replay_cannot_do(recorded):
    path, _machine, _snaps = recorded
    s = ReplaySession(open_trace(path))
    with pytest.raises(CommandError, match="send: not in a replay .nothing runs: the guest cannot take input"):
        execute(s, "send hi")
    with pytest.raises(CommandError, match="vcpu: not in a replay .the panes show the vCPU of the selected exit"):
        execute(s, "vcpu 1")
    assert s.position == 0 and s.rerun.machine is None  # refused before anything ran


def test_replay_script_through_the_cli(capsys, recorded, tmp_path):
    path, machine, _snaps = recorded
    script = tmp_path / "s.txt"
    script.write_text("goto 55\nregs\nexit 156\ninfo\ngoto 100000\n")
    code = main(["replay", str(path), "--script", str(script)])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""  # the last command fails
    # The status shows exit 55's virtual time as the recording run took it: the guest instructions
    # retired before that CPUID (488 with today's cpuid.img).
    t55 = machine.exits.time[55]
    assert 55 < t55 < machine.exits.time[56]
    assert f"replay exit 55 of 562: CPUID at rip 0x7e3b, vCPU 0, time {t55:,}  leaf=0x1" in out
    assert "exit 156: CPUID" in out and "leaf" in out
    assert "image_sha256" in out and "error: no exit 100000 (the trace has 562: 0 to 561)" in out


def test_the_tui_on_a_trace(recorded):
    path, machine, snaps = recorded

    async def go():
        app = make_replay_app(open_trace(path))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            session = app.session
            assert session.position == 0
            assert "replay exit 0 of 562: CPUID" in _text(app.query_one("#status").content)
            await pilot.press("n", "n")
            await pilot.pause()
            assert session.position == 2 and app.query_one("#detail").seq == 2
            assert app.query_one("#exits").cursor_seq == 2
            await pilot.press("N")
            await pilot.pause()
            assert session.position == 1
            # `goto time T` selects the first exit at or after virtual time T: a time between exits
            # 98 and 99 (the guest retired instructions between them) lands on 99.
            times = machine.exits.time
            assert times[99] - times[98] > 1
            await pilot.press("g", *f"time {times[98] + 1}", "enter")
            await pilot.pause()
            assert session.position == 99 and app.query_one("#exits").cursor_seq == 99
            regs = _text(app.query_one("#registers").render_view(session))
            assert f"rsi {snaps[99]['rsi']:016x}" in regs and "at exit 99" in regs
            detail = _text(app.query_one("#detail").render_view(session))
            assert "exit 99: IO_INSTRUCTION" in detail
            # Memory and code come from the guest re-run to exit 99 (tests/test_replay_state.py).
            assert session.rerun.position == 99
            assert "fa 31 c0" in _text(app.query_one("#memory").render_view(session))  # cpuid.img at 0x7c00
            assert "→" in _text(app.query_one("#disasm").render_view(session))
            console = _text(app.query_one("#console").render_view(session))
            assert console.startswith(machine.serial[:20].decode())
            await pilot.press("colon", *"filter cpuid", "enter")
            await pilot.pause()
            await pilot.press("n")
            await pilot.pause()
            cpuids = [e.seq for e in machine.exits if e.name == "CPUID"]
            assert session.position == next(c for c in cpuids if c > 99)
            here = session.position
            app.query_one("#exits").focus()
            await pilot.press("down", "enter")  # choosing a row in the exit log moves there
            await pilot.pause()
            assert session.position == next(c for c in cpuids if c > here)
            await pilot.press("q")

    asyncio.run(go())
