"""A replay shows guest memory, the page tables and EPT / NPT, the VMCS / VMCB and the
code at a past exit by re-running the guest (engine.trace.rerun): exactly what a
live session stopped at that exit showed, or a clear reason why it cannot."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import sqlite3
import threading
import time

import pytest
from rich.console import Console

from conftest import GUESTS
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine
from engine.trace import TraceWriter, open_trace
from engine.trace.rerun import Rerun, RerunCancelled, RerunFailed
from vmmtui.cli import main
from vmmtui.commands import CommandError
from vmmtui.replay import NotInTrace, ReplaySession, execute, make_replay_app

# Code, data, stack and (paging.img) the guest's page tables at 0x10000-0x13fff.
LOW = (0, 0x20000)


def _record(path, image, **config):
    machine = Machine(MachineConfig(**config))
    writer = TraceWriter(path, machine, load(machine, image), batch=64)
    stop = machine.run(timeout=30)
    writer.close(stop, 0.1)
    return machine


def _state(machine: Machine) -> tuple:
    """What the memory, page-table and VMCS / VMCB panes read, per vCPU, in a comparable form."""
    return (hashlib.sha256(machine.read_gpa(*LOW)).hexdigest(),
            tuple(tuple(machine.structure_fields(v)) for v in range(machine.config.vcpus)),
            tuple(machine.registers(v)["efer"] for v in range(machine.config.vcpus)))


def _stepped_states(image, **config) -> tuple[Machine, dict[int, tuple]]:
    """The state after each stop of a live session's `next` (run_to_exit), by the last
    exit of the stop (one exit per stop, except where one exit makes another: an IPI's
    write and the exit it causes on its target)."""
    machine = Machine(MachineConfig(**config))
    load(machine, image)
    states = {}
    while machine.stop is None:
        machine.run_to_exit(timeout=30)
        if machine.exits:
            states[len(machine.exits) - 1] = _state(machine)
    return machine, states


@pytest.mark.parametrize("guest, config", [
    ("paging.img", {"vendor": "intel"}),
    ("paging.img", {"vendor": "amd"}),
    ("memory.img", {"vendor": "intel"}),
    ("smp.img", {"vendor": "amd", "vcpus": 2}),
])
def test_the_state_at_every_exit_is_the_live_sessions(tmp_path, guest, config):
    path = tmp_path / "t.vmtrace"
    recorded = _record(path, GUESTS / guest, **config)
    stepped, states = _stepped_states(GUESTS / guest, **config)
    n = len(recorded.exits)
    assert len(stepped.exits) == n and len(states) > 20 and n - len(states) <= config.get("vcpus", 1) * 2
    assert list(stepped.exits.column("rip")) == list(recorded.exits.column("rip"))
    session = ReplaySession(open_trace(path))
    # Forward through every exit, then jumps back and forth (a backward move re-runs from launch).
    order = list(range(n)) + [n // 2, 3, n - 1, 0, n // 3]
    for seq in order:
        session.goto(seq)
        # An exit that made another in the same stop (an ICR write and its INIT's exit)
        # shows the state after both, as a live session's stop there does.
        stop_end = min(k for k in states if k >= seq)
        assert _state(session.state("test")) == states[stop_end], seq
    assert session.rerun.restarts == 4  # the first run, then one per backward jump
    assert session.rerun.exits_run < 3 * n


def test_the_panes_read_the_re_run_through_the_replay_machine(tmp_path):
    path = tmp_path / "p.vmtrace"
    _record(path, GUESTS / "paging.img")
    stepped, _states = _stepped_states(GUESTS / "paging.img")
    session = ReplaySession(open_trace(path))
    seq = len(stepped.exits) // 2
    live = Machine(MachineConfig())
    load(live, GUESTS / "paging.img")
    live.run(max_exits=seq + 1)
    execute(session, f"goto {seq}")
    m = session.machine
    assert m.read_gpa(0x7C00, 64) == live.read_gpa(0x7C00, 64)
    assert m.read_gva(0x7C00, 64) == live.read_gva(0x7C00, 64)
    assert m.translate(0x7C00).gpa == live.translate(0x7C00).gpa == 0x7C00
    assert m.code_bits() == live.code_bits()
    assert m.registers()["efer"] == live.registers()["efer"]
    assert m.registers()["rip"] == session.regs["rip"]  # the rest are the trace's, at the exit
    out = _text(execute(session, "mem 0x10000 16").output)
    assert live.read_gpa(0x10000, 16)[:4].hex(" ") in out
    assert "4-level paging, CR3 0x10000" in _text(execute(session, "pagetables").output)
    assert "VM_EXIT_REASON" in _text(execute(session, "vmcs exit").output)
    assert "→" in _text(execute(session, "disasm").output)


def test_the_trace_carries_its_image(tmp_path):
    image = tmp_path / "moved.img"
    shutil.copy(GUESTS / "cpuid.img", image)
    path = tmp_path / "c.vmtrace"
    _record(path, image)
    image.unlink()
    trace = open_trace(path)
    name, data = trace.image()
    assert name == "moved.img" and data == (GUESTS / "cpuid.img").read_bytes()
    session = ReplaySession(trace)
    session.goto(10)
    assert session.machine.read_gpa(0x7C00, len(data)) == data
    assert main(["replay", "--verify", str(path)]) == 0  # verify falls back on the copy too
    assert f"carried in the trace ({len(data):,} bytes)" in _text(execute(session, "info").output)


def test_no_image_anywhere_is_a_clear_reason_not_a_crash(tmp_path, capsys):
    image = tmp_path / "gone.img"
    shutil.copy(GUESTS / "cpuid.img", image)
    path = tmp_path / "c.vmtrace"
    _record(path, image)
    image.unlink()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE image")
    session = ReplaySession(open_trace(path))
    regs = dict(session.regs)
    with pytest.raises(NotInTrace, match="guest memory at exit 0 comes from re-running the guest, which failed: "
                                         ".*gone.img: the trace's image is not there any more and the trace "
                                         "carries no copy"):
        session.machine.read_gpa(0x7C00, 16)
    with pytest.raises(CommandError, match="carries no copy"):
        execute(session, "mem 0x7c00")
    assert session.regs == regs and session.position == 0  # the trace's own data is untouched
    execute(session, "next")
    assert session.position == 1


def test_a_damaged_copy_of_the_image_is_named(tmp_path):
    path = tmp_path / "c.vmtrace"
    _record(path, GUESTS / "cpuid.img")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE image SET data = X'00'")
    session = ReplaySession(open_trace(path))
    with pytest.raises(NotInTrace, match="the guest image it carries does not match its SHA-256"):
        session.machine.read_gpa(0x7C00, 16)


def test_a_re_run_that_differs_says_where_and_the_exits_before_still_show(tmp_path):
    path = tmp_path / "c.vmtrace"
    recorded = _record(path, GUESTS / "cpuid.img")
    with sqlite3.connect(path) as db:  # as if another vmmtui had recorded exit 50 differently
        db.execute("UPDATE exits SET info2 = info2 + 1 WHERE seq = 50")
    session = ReplaySession(open_trace(path))
    session.goto(60)
    with pytest.raises(NotInTrace, match=r"differs from the trace at exit 50: info2: expected "
                                         rf"{recorded.exits.info2[50] + 1:#x}, got {recorded.exits.info2[50]:#x}"):
        session.machine.read_gpa(0x7C00, 16)
    session.goto(49)
    assert session.machine.read_gpa(0x7C00, 16) == (GUESTS / "cpuid.img").read_bytes()[:16]
    rerun = Rerun(open_trace(path))
    with pytest.raises(RerunFailed, match="exit 50"):
        rerun.seek(51)
    with pytest.raises(RerunFailed, match="exit 50"):  # remembered: no second re-run
        rerun.seek(70)
    assert rerun.restarts == 1


def _text(renderable, width=160) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_the_tui_re_runs_in_a_worker_and_the_panes_show_the_state(tmp_path):
    path = tmp_path / "p.vmtrace"
    recorded = _record(path, GUESTS / "paging.img")
    target = len(recorded.exits) - 5
    live = Machine(MachineConfig())
    load(live, GUESTS / "paging.img")
    live.run(max_exits=target + 1)

    async def go():
        app = make_replay_app(open_trace(path))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            session = app.session
            session.INLINE_RERUN = -1  # every re-run in the worker, as long ones are
            await pilot.press("g", *str(target), "enter")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert session.position == target and session.rerun.position == target
            memory = app.query_one("#memory")
            memory.show("gpa", 0x7C00, 32)
            memory.refresh_from(session)
            assert live.read_gpa(0x7C00, 8).hex(" ") in _text(memory.render_view(session))
            assert "→" in _text(app.query_one("#disasm").render_view(session))
            snapshot = app.query_one("#vmcs").snapshot
            assert snapshot is not None and snapshot.structure_name == "VMCS"
            reason = next(r for r in snapshot.rows if r.name == "VM_EXIT_REASON")
            assert reason.value == recorded.exits.reason[target]
            await pilot.press("q")

    asyncio.run(go())


def test_a_trace_started_mid_run_re_runs_from_launch(tmp_path):
    # The TUI's record toggle starts a trace at session exit F: its exit k is the session's F + k,
    # and the state there comes from a re-run from launch through the F unrecorded exits.
    machine = Machine(MachineConfig(vendor="amd"))
    image = load(machine, GUESTS / "paging.img")
    machine.run(max_exits=40)
    path = tmp_path / "mid.vmtrace"
    writer = TraceWriter(path, machine, image, mid_run=True)
    _stepped, states = _stepped_states(GUESTS / "paging.img", vendor="amd")
    writer.close(machine.run(timeout=30))
    session = ReplaySession(open_trace(path))
    assert session.trace.meta["first_seq"] == 40
    for k in (0, 17, len(session) - 1, 5):
        session.goto(k)
        assert _state(session.state("test")) == states[40 + k], k


def test_a_trace_of_the_old_time_model_says_why_it_cannot_be_re_run(tmp_path, capsys):
    path = tmp_path / "old.vmtrace"
    _record(path, GUESTS / "cpuid.img")
    with sqlite3.connect(path) as db:  # as a recorder from before instructions were counted wrote it
        db.execute("DELETE FROM meta WHERE key = 'time_per_exit'")
        db.execute("UPDATE exits SET time = (seq + 1) * 1000")
    session = ReplaySession(open_trace(path))
    with pytest.raises(NotInTrace, match="differs from the trace at exit 0: time: expected 1000, got .*recorded "
                                         "with the old time model, an exit costing 1000 ticks"):
        session.machine.read_gpa(0x7C00, 16)
    assert main(["replay", "--verify", str(path)]) == 1
    assert "note: the trace was recorded with the old time model" in capsys.readouterr().out


def test_a_long_re_run_can_be_cancelled_and_goes_on_from_where_it_stopped(tmp_path):
    data = bytearray((GUESTS / "bench_out.img").read_bytes())
    data[0x1F8:0x1FC] = (60_000).to_bytes(4, "little")  # 60,000 OUT exits, then the debug exit
    image = tmp_path / "out.img"
    image.write_bytes(bytes(data))
    path = tmp_path / "out.vmtrace"
    _record(path, image)
    rerun = Rerun(open_trace(path))
    last = len(rerun.trace) - 1

    def cancel_once_running():  # as the TUI does when the user moves on
        while not (rerun.machine is not None and len(rerun.machine.exits) > 1000):
            time.sleep(0.001)
        rerun.cancel()

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    with pytest.raises(RerunCancelled, match=f"the re-run to exit {last} was cancelled at exit"):
        rerun.seek(last)
    canceller.join()
    stopped = rerun.position
    assert stopped is not None and 0 < stopped < last and rerun.reached == stopped
    assert rerun.machine.exits.rip[stopped] == rerun.trace.exits.rip[stopped]
    ran = rerun.exits_run
    rerun.seek(last)  # on from there: no restart, no exit run twice
    assert rerun.restarts == 1 and rerun.exits_run == ran + (last - stopped)
    assert rerun.position == last
    rerun.cancel()  # nothing running: it does nothing
    assert rerun.seek(last) is rerun.machine
