"""Shared fixtures: the reference data (the architectural oracle) and paths."""

from __future__ import annotations

import csv
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFDATA = ROOT / "tests" / "refdata"
GUESTS = ROOT / "guests"


def _csv(name: str) -> list[dict[str, str]]:
    with open(REFDATA / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def vmcs_fields_ref() -> list[dict[str, str]]:
    return _csv("vmcs_fields.csv")


@pytest.fixture(scope="session")
def vmx_exit_reasons_ref() -> dict[int, str]:
    return {int(r["number"]): r["name"] for r in _csv("vmx_exit_reasons.csv")}


@pytest.fixture(scope="session")
def svm_exit_codes_ref() -> dict[int, str]:
    return {int(r["code"], 16): r["name"] for r in _csv("svm_exit_codes.csv")}


@pytest.fixture(scope="session")
def vmcb_offsets_ref() -> dict[str, tuple[int, int]]:
    rows = _csv("vmcb_control.csv") + _csv("vmcb_save.csv")
    return {r["name"]: (int(r["offset"], 16), int(r["size"])) for r in rows}


def cli(capsys, *argv):
    """Run the vmmtui command line with `argv` (paths allowed); (status, stdout, stderr)."""
    from vmmtui.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_guest(image, vendor="intel", **config):
    """Load and run a guest to its end; returns (machine, stop)."""
    from engine.config import MachineConfig
    from engine.loader import load
    from engine.machine import Machine

    machine = Machine(MachineConfig(vendor=vendor, **config))
    load(machine, image)
    stop = machine.run(timeout=30)
    return machine, stop


def write_image(tmp_path, code: bytes, name: str = "t.img") -> pathlib.Path:
    """A raw boot image holding `code` at 0x7C00 (padded to a sector, signed)."""
    data = bytearray(code.ljust(510, b"\0")) + b"\x55\xaa" if len(code) <= 510 else bytearray(code)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


# 16-bit snippets for hand-made test guests.
DEBUG_EXIT_0 = bytes.fromhex("b000" "e6f4")  # mov al,0; out 0xf4,al
