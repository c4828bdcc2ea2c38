"""SVG snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot).

Update them with `pytest tests/test_tui_snapshots.py --snapshot-update` after a
deliberate change to the screens, and look at the report before committing."""

import pytest

from conftest import GUESTS
from engine.config import MachineConfig
from vmmtui.app import make_app


async def _settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause(0.2)  # let the exit log take in the last rows before the picture


def _app(guest, vendor="intel"):
    return make_app(GUESTS / guest, MachineConfig(vendor=vendor))


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_wide_after_the_first_exit(snap_compare, vendor):
    async def run_before(pilot):
        await pilot.press("n")
        await _settle(pilot)

    assert snap_compare(_app("cpuid.img", vendor), terminal_size=(160, 48), run_before=run_before)


def test_wide_memory_guest_finished(snap_compare):
    async def run_before(pilot):
        await pilot.press("c")
        await _settle(pilot)
        await pilot.app.workers.wait_for_complete()
        pilot.app.clear_notifications()
        # The exit log follows the last exit; its scrollbar can lag a frame behind
        # on a loaded machine: scroll to the end outright and let a frame pass.
        pilot.app.query_one("#exits").scroll_end(animate=False)
        await pilot.pause(0.3)
        await pilot.pause()

    assert snap_compare(_app("memory.img", "amd"), terminal_size=(160, 48), run_before=run_before)


@pytest.mark.parametrize("key", ["3", "2", "5", "1"])
def test_narrow_panes(snap_compare, key):
    async def run_before(pilot):
        await pilot.press("n")
        await _settle(pilot)
        await pilot.press("n")
        await _settle(pilot)
        await pilot.press(key)
        await pilot.pause()

    assert snap_compare(_app("paging.img"), terminal_size=(80, 24), run_before=run_before)


def test_wide_replay_with_the_state_re_run(snap_compare, tmp_path):
    # A replay at exit 150 of paging.img: registers from the trace; disassembly, page tables
    # with the EPT, the VMCS and memory from the guest re-run to that exit.
    from engine.loader import load
    from engine.machine import Machine
    from engine.trace import TraceWriter
    from vmmtui.replay import make_replay_app

    path = tmp_path / "paging.vmtrace"
    machine = Machine(MachineConfig())
    writer = TraceWriter(path, machine, load(machine, GUESTS / "paging.img"))
    writer.close(machine.run(timeout=30))

    async def run_before(pilot):
        await pilot.press("g", *"150", "enter")
        await _settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause(0.3)

    assert snap_compare(make_replay_app(str(path)), terminal_size=(160, 48), run_before=run_before)
