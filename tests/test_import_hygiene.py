"""The engine is a library: importing it must not pull in the UI (DESIGN.md)."""

import pkgutil
import subprocess
import sys

import engine


def _engine_modules() -> list[str]:
    return ["engine"] + [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]


def test_engine_imports_no_ui_in_a_fresh_interpreter():
    mods = _engine_modules()
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich', 'vmmtui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_linter_contract_holds():
    out = subprocess.run(["lint-imports"], capture_output=True, text=True, cwd=_repo_root())
    assert out.returncode == 0, out.stdout + out.stderr


def _repo_root() -> str:
    import pathlib

    return str(pathlib.Path(__file__).resolve().parents[1])
