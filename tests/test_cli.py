"""`vmmtui run`: output, JSON, process status, and one clear line for every bad input."""

import json
import subprocess
import sys

import pytest

from conftest import GUESTS, write_image
from vmmtui.cli import EXIT_MAX_EXITS, EXIT_USAGE, main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_run_prints_the_greeting_and_a_summary(capsys, vendor):
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.img"), "--vendor", vendor)
    assert code == 0
    assert out == "Hello from the guest\n"
    assert ("IO_INSTRUCTION" if vendor == "intel" else "IOIO") in err
    assert "43" in err and "debug-exit" in err


def test_run_json(capsys):
    code, out, _err = _run(capsys, "run", str(GUESTS / "cpuid.img"), "--vendor", "amd", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["vendor"] == "amd" and doc["stop"] == "debug-exit" and doc["exit_status"] == 0
    assert doc["serial"].startswith("cpuid: vendor AuthenticAMD\n")
    assert doc["counts"] == {"IOIO": 553, "CPUID": 4, "MSR": 3, "RDTSC": 2}
    first = doc["exits"][0]
    assert {"seq", "vcpu", "reason", "name", "rip", "qualification"} <= set(first)
    assert (first["seq"], first["vcpu"], first["reason"], first["name"], first["rip"]) == (0, 0, 0x72, "CPUID", 0x7E09)
    assert first["qualification"] == {"leaf": 0, "subleaf": 0}
    assert len(doc["exits"]) == sum(doc["counts"].values())
    assert doc["controls"]["io"] is True and doc["controls"]["exceptions"] == []


def test_exit_status_is_the_guests(capsys, tmp_path):
    image = write_image(tmp_path, bytes.fromhex("b02a" "e6f4" "faf4"))  # out 0xf4 <- 42
    code, _out, _err = _run(capsys, "run", str(image))
    assert code == 42


def test_max_exits(capsys):
    code, out, err = _run(capsys, "run", str(GUESTS / "hello.img"), "--max-exits", "5", "--json")
    doc = json.loads(out)
    assert code == EXIT_MAX_EXITS and doc["stop"] == "max-exits" and len(doc["exits"]) == 5


@pytest.mark.parametrize("argv,message", [
    (["run", "missing.img"], "missing.img: no such file"),
    (["run", "{guests}/hello.img", "--vendor", "via"], "invalid choice: 'via'"),
    (["run", "{guests}/hello.img", "--mem", "lots"], "not a size: 'lots'"),
    (["run", "{guests}/hello.img", "--mem", "5G"], "guest memory must be a multiple of 2 MiB from 2M to 3072M"),
    (["run", "{guests}/hello.img", "--mem", "3M"], "guest memory must be a multiple of 2 MiB"),
    (["run", "{guests}/hello.img", "--page-size", "8K"], "--page-size is 4K or 2M"),
    (["run", "{guests}/hello.img", "--exit", "warp=on"], "unknown exit control 'warp'"),
    (["run", "{guests}/hello.img", "--exit", "io"], "--exit takes NAME=on|off, not 'io'"),
    (["run", "{guests}/hello.img", "--exit", "cpuid=off"], "cpuid exits unconditionally under VT-x"),
    (["run", "{guests}/hello.img", "--max-exits", "0"], "--max-exits must be at least 1"),
    (["run", "{guests}/hello.img", "--timeout", "-1"], "--timeout must be positive"),
    (["frobnicate"], "frobnicate: no such file"),
    (["run"], "the following arguments are required: GUEST"),
])
def test_bad_command_lines_give_one_line(capsys, argv, message):
    argv = [a.replace("{guests}", str(GUESTS)) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vmmtui: error: ") and message in err


def test_console_script_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"\x7fELF" + b"\x01" * 20)
    proc = subprocess.run([sys.executable, "-m", "vmmtui.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("vmmtui: error: ")
