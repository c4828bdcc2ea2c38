"""`vmmtui GUEST --script FILE`: the debugger's commands with no terminal."""

import io

import pytest
from rich.console import Console

from conftest import GUESTS
from engine.config import MachineConfig
from vmmtui.cli import main
from vmmtui.commands import CommandError, complete, lookup
from vmmtui.script import run_script
from vmmtui.session import Session


def _script(text, guest="hello.img", vendor="intel"):
    session = Session.open(str(GUESTS / guest), MachineConfig(vendor=vendor))
    out = io.StringIO()
    status = run_script(session, text.splitlines(), Console(file=out, width=120, highlight=False))
    return status, out.getvalue(), session


def test_break_on_exit_and_continue():
    status, out, session = _script("break exit io port=0x3f8 dir=out\ncontinue\ncontinue\nconsole\n")
    assert status == 0
    assert "breakpoint 1: on exits matching 'io port=0x3f8 dir=out'" in out
    assert "stopped: exit — exit #1 IO_INSTRUCTION at rip 0x7c43" in out
    assert "stopped: exit — exit #3 IO_INSTRUCTION at rip 0x7c43" in out
    assert out.rstrip().endswith("He")
    assert session.machine.serial == b"He"


def test_address_breakpoint_step_and_delete():
    status, out, session = _script("break 0000:7c3a\ncontinue\nstep 3\ndelete all\ncontinue\n")
    assert status == 0
    assert "breakpoint 1: at 0x7c3a" in out
    assert "stopped: breakpoint — breakpoint at 0x7c3a  [rip 0x7c3a, 0 exits]" in out
    assert "stopped: step  [rip 0x7c3f, 1 exits]" in out
    assert "stopped: debug-exit (status 0)" in out
    assert session.machine.serial == b"Hello from the guest\n"


def test_errors_keep_the_script_going():
    status, out, _ = _script("bogus\nstep 0\nmem\nregs\n")
    assert status == 1
    assert "error: unknown command 'bogus' (type help)" in out
    assert "error: step takes a positive count" in out
    assert "error: mem needs an address" in out
    assert "rip 0000000000007c00" in out


def test_regs_disasm_and_mem_show_exact_values():
    _status, out, _ = _script("regs\ndisasm 0x7c00 3\nmem 0x7c00 16\n")
    assert "rdx 0000000000000080" in out and "mode real" in out
    assert "7c00  fa" in out and "cli" in out and "xor ax, ax" in out and "mov ds, ax" in out
    assert "0000007c00  fa 31 c0 8e d8 8e c0 8e d0 bc 00 70 ea 11 7c 00" in out


def test_lookup_and_complete():
    assert lookup("c").name == "continue" and lookup("cont").name == "continue"
    assert lookup("b").name == "break" and lookup("del").name == "delete"
    with pytest.raises(CommandError, match="'brea' is ambiguous: break, breakpoints"):
        lookup("brea")
    assert "step" in complete("st")
    assert complete("break e") == ["break exit ", "break exit io ", "break exit cpuid ", "break exit msr ",
                                   "break exit ept ", "break exit cr ", "break exit hlt "]


def test_cli_script_file(tmp_path, capsys):
    script = tmp_path / "demo.vmmtui"
    script.write_text("# comment\nnext\n")
    code = main([str(GUESTS / "cpuid.img"), "--vendor", "amd", "--script", str(script)])
    out = capsys.readouterr().out
    assert code == 0
    assert "stopped: exit — exit #0 CPUID at rip 0x7e09" in out


def test_cli_script_missing_file(capsys):
    code = main([str(GUESTS / "hello.img"), "--script", "/nonexistent/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vmmtui: error: /nonexistent/x")
