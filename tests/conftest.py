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
