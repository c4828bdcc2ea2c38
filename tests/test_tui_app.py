"""The whole app through Textual's pilot: every binding and the command line,
with exact values in the panes."""

import asyncio
import io

import pytest

from conftest import GUESTS
from engine.config import MachineConfig
from vmmtui.app import VmmApp, make_app
from vmmtui.widgets.exit_log import ExitLogView


def _static(widget) -> str:
    """What a Static shows, as plain text."""
    from rich.console import Console

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def _pane_text(app: VmmApp, pane_id: str) -> str:
    from rich.console import Console

    session = app.session
    pane = app.query_one(f"#{pane_id}")
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(pane.render_view(session))
    return console.export_text()


async def _settle(app, pilot):
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_break_exit_cpuid_then_continue_shows_the_exit_in_the_vmcs_pane(vendor):
    async def go():
        app = make_app(GUESTS / "cpuid.img", MachineConfig(vendor=vendor))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("colon")
            await pilot.press(*"break exit cpuid leaf=0x40000000")
            await pilot.press("enter")
            await pilot.press("c")
            await _settle(app, pilot)
            stop = app.session.last_stop
            assert stop.reason.value == "exit"
            e = app.session.machine.exits[stop.exit_seq]
            assert e.qualification["leaf"] == 0x40000000 and e.rip == 0x7E5C
            from vmmtui.views.structure import structure_view
            from rich.console import Console
            console = Console(width=160, record=True, file=io.StringIO())
            console.print(structure_view(app.session))
            text = console.export_text()
            if vendor == "intel":
                assert "VM_EXIT_REASON" in text and "10 CPUID" in text
                assert any("GUEST_RIP" in line and "0x7e5c" in line for line in text.splitlines())
            else:
                assert any("EXITCODE" in line and "0x72" in line and "CPUID" in line for line in text.splitlines())
                assert any("NEXT_RIP" in line and "0x7e5e" in line for line in text.splitlines())
            status = _static(app.query_one("#status"))
            assert "exit #156 CPUID at rip 0x7e5c" in status
    run(go())


def test_step_next_continue_pause_keys():
    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("s")
            await _settle(app, pilot)
            assert app.session.regs["rip"] == 0x7C01
            assert "rip 0000000000007c01" in _pane_text(app, "registers")
            await pilot.press("n")
            await _settle(app, pilot)
            assert app.session.last_stop.reason.value == "exit"
            assert len(app.session.machine.exits) == 1
            log = app.query_one(ExitLogView)
            assert log.total == 1
            await pilot.press("c")
            await _settle(app, pilot)
            assert app.session.last_stop.reason.value == "debug-exit"
            assert log.total == 43
            assert "Hello from the guest" in _pane_text(app, "console")
            await pilot.press("p")  # nothing runs: a notice, no crash
            await pilot.pause()
    run(go())


def test_breakpoint_key_and_disassembly_marks():
    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("b")
            await pilot.press(*"0x7c3a")
            await pilot.press("enter")
            await pilot.press("c")
            await _settle(app, pilot)
            assert app.session.last_stop.reason.value == "breakpoint"
            text = _pane_text(app, "disasm")
            assert "●→" in text and "7c3a" in text and "in al, dx" in text
            await pilot.press("colon")
            await pilot.press(*"delete 1")
            await pilot.press("enter")
            await pilot.press("c")
            await _settle(app, pilot)
            assert app.session.last_stop.reason.value == "debug-exit"
    run(go())


def test_narrow_screen_switches_panes():
    async def go():
        app = make_app(GUESTS / "memory.img")
        async with app.run_test(size=(80, 24)) as pilot:
            assert app.screen.has_class("narrow")
            for key, pane in (("1", "registers"), ("2", "vmcs"), ("3", "exits"), ("5", "pagetables"),
                              ("9", "memory")):
                await pilot.press(key)
                assert app.active_pane == pane
                assert app.query_one(f"#{pane}").display
                others = [p for p in ("registers", "vmcs", "exits", "pagetables", "memory") if p != pane]
                assert not any(app.query_one(f"#{p}").styles.display == "block" and
                               app.query_one(f"#{p}").has_class("active") for p in others)
            await pilot.press("colon")
            await pilot.press(*"translate 0x200000")
            await pilot.press("enter")
            await pilot.pause()
            assert app.active_pane == "pagetables"
    run(go())


def test_commands_filter_mem_theme_help_and_errors():
    async def go():
        app = make_app(GUESTS / "cpuid.img")
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("c")
            await _settle(app, pilot)
            for line in ("filter msr", "mem 0x7c00 32", "theme light", "help", "bogus"):
                await pilot.press("colon")
                await pilot.press(*line)
                await pilot.press("enter")
                await pilot.pause()
            log = app.query_one(ExitLogView)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert log.shown == 3  # rdmsr, wrmsr, rdmsr
            assert app.theme == "textual-light"
            assert "0000007c00  fa 31 c0" in _pane_text(app, "memory")
            assert "commands" in _static(app.query_one("#output"))
            await pilot.press("t")
            assert app.theme == "textual-dark"
    run(go())


def test_bad_image_shows_a_message_in_the_app(tmp_path):
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"")

    async def go():
        app = make_app(bad)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "the image is empty" in _static(app.query_one("#output"))
            await pilot.press("q")
    run(go())


def test_triple_fault_is_a_message_not_a_crash(tmp_path):
    image = tmp_path / "ud.img"
    # lidt with limit 0, then UD2: neither #UD nor #DF can be delivered.
    code = bytes.fromhex("0f011e207c0f0bfaf4").ljust(0x20, b"\x90") + bytes(6)
    image.write_bytes(code.ljust(510, b"\0") + b"\x55\xaa")

    async def go():
        app = make_app(image)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("c")
            await _settle(app, pilot)
            assert app.session.last_stop.reason.value == "shutdown"
            assert "triple fault" in _static(app.query_one("#status"))
            await pilot.press("c")  # the machine has finished: continuing says so again
            await _settle(app, pilot)
    run(go())


def test_every_command_and_pane_key_through_the_pilot():
    """Each command at ':' and each pane key, with what it shows checked where it has a value."""
    async def go():
        app = make_app(GUESTS / "paging.img")
        async with app.run_test(size=(160, 48)) as pilot:
            async def command(line):
                await pilot.press("colon")
                await pilot.press(*line)
                await pilot.press("enter")
                await _settle(app, pilot)

            await command("step 3")
            assert app.session.regs["rip"] == 0x7C05
            await command("next")
            assert app.session.last_stop.reason.value == "exit"
            await command("break exit cr 3")
            await command("breakpoints")
            assert "cr 3" in _static(app.query_one("#output"))
            await command("continue")
            e = app.session.machine.exits[app.session.last_stop.exit_seq]
            assert e.qualification["cr"] == 3 and e.qualification["value"] == 0x10000
            await command("delete all")
            await command("exit 0")
            assert app.query_one("#detail").seq == 0
            await command("exits 5 cr")
            await command("vmcs guest cr")
            await command("regs")
            assert app.active_pane == "registers"
            await command("vcpu 0")
            assert "vCPU 0 of 1" in _static(app.query_one("#output"))
            await command("pagetables")
            assert app.active_pane == "pagetables"
            await command("disasm 0x7c00 4")
            assert app.active_pane == "disasm"
            await command("console")
            assert app.active_pane == "console"
            await command("send hi")
            assert app.session.machine.uart.pending_input == 3
            await command("pane schedule")
            assert app.active_pane == "schedule"
            for key, pane in (("4", "detail"), ("6", "disasm"), ("7", "schedule"), ("8", "console")):
                await pilot.press(key)
                assert app.active_pane == pane
            await pilot.press("i", "o", "k", "enter", "escape")  # type to the guest, then stop typing
            assert app.session.machine.uart.pending_input == 3 + 3
            await pilot.press("3")
            await pilot.press("slash")
            assert app.query_one("#cmdline").value == "filter "
            await pilot.press("escape")
            assert app.query_one("#cmdline").value == ""
            await command("pause")  # nothing runs: a notice
            await command("quit")
        assert app.return_code in (0, None)
    run(go())


def test_the_palette_lists_the_commands():
    async def go():
        app = make_app(GUESTS / "hello.img")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"translate")
            await pilot.pause(0.3)
            from textual.command import CommandPalette
            assert isinstance(app.screen, CommandPalette)
            await pilot.press("escape")
    run(go())


def test_vcpu_command_turns_the_panes_to_another_vcpu():
    async def go():
        app = make_app(GUESTS / "smp.img", MachineConfig(vcpus=4))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("c")
            await _settle(app, pilot)
            assert "vCPU 0" in _static(app.query_one("#registers"))
            await pilot.press("colon")
            await pilot.press(*"vcpu 2")
            await pilot.press("enter")
            await _settle(app, pilot)
            shown = _static(app.query_one("#registers"))
            assert "vCPU 2" in shown and "vCPU 0" not in shown
            assert app.session.machine.registers(2)["rip"] == 0x80BA  # the AP, past its HLT at 0x80B9
    run(go())
