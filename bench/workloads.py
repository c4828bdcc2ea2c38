"""The measured workloads. Each runs one guest once, in the calling process, and
returns a JSON-able dict; `bench.worker` calls exactly one of them per child
process, so every measurement starts from a fresh interpreter and its peak RSS
is its own.

Only the guest's execution is timed (`machine.run()`, `emu_start`, the KVM_RUN
loop), never the set-up (building the machine, loading the image, process start).
The TUI workloads time what a user waits instead: `tui` and `pyimport` from just
before a spawn (bench.tui), `exit_log` and `trace` whatever the standalone
scripts bench/exit_log_view.py and bench/trace_bench.py time in their `measure()`.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from .images import image_bytes, write_image

REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")


def _engine_machine(image: str, count: int | None, vendor: str, tmp: Path, mode: str = "exact",
                    vcpus: int = 1) -> Any:
    from engine import loader
    from engine.config import MachineConfig
    from engine.machine import Machine

    machine = Machine(MachineConfig(vendor=vendor, fast=mode == "fast", vcpus=vcpus))
    loader.load(machine, write_image(image, count, tmp))
    return machine


def engine(image: str, count: int | None, vendor: str = "intel", mode: str = "exact", vcpus: int = 1) -> dict[str, Any]:
    """vmmtui: `machine.run()` with no exit budget and no breaks, in the deterministic
    (`exact`, counted: the default) or the `fast` mode, with `vcpus` vCPUs."""
    import time

    with tempfile.TemporaryDirectory(prefix="vmmtui-bench-") as tmp:
        machine = _engine_machine(image, count, vendor, Path(tmp), mode, vcpus)
        start = time.perf_counter()
        stop = machine.run()
        elapsed = time.perf_counter() - start
    regs = machine.registers()
    return {
        "elapsed": elapsed,
        "exits": len(machine.exits),
        "exit_counts": dict(machine.exits.counts()),
        "stop": stop.reason.value,
        "status": stop.status,
        "regs": {r: regs[r] for r in REGS},
    }


def idle(image: str, count: int | None, vendor: str = "intel") -> dict[str, Any]:
    """The machine built and the image loaded, not run: the RSS every engine run starts from."""
    with tempfile.TemporaryDirectory(prefix="vmmtui-bench-") as tmp:
        machine = _engine_machine(image, count, vendor, Path(tmp))
    return {"exits": len(machine.exits)}


def raw(image: str, count: int | None, hooks: str = "stop") -> dict[str, Any]:
    """The same bytes on a bare Unicorn (bench.rawuc): no hooks but the final OUT, or one counting hook."""
    from .rawuc import RawGuest

    run = RawGuest(image_bytes(image, count), hooks).run()
    return {"elapsed": run.elapsed, "hooked": run.hooked, "status": run.status, "regs": run.regs}


def kvm(image: str, count: int | None) -> dict[str, Any]:
    """The same bytes under real KVM through /dev/kvm (bench.kvm)."""
    from .kvm import KvmGuest, KvmUnavailable

    try:
        guest = KvmGuest(image_bytes(image, count))
    except KvmUnavailable as e:
        return {"skipped": str(e)}
    try:
        run = guest.run()
    finally:
        guest.close()
    return {"elapsed": run.elapsed, "io_exits": run.io_exits, "other_exits": run.other_exits,
            "status": run.status, "last_exit": run.last_exit}


def tui(image: str, count: int | None = None) -> dict[str, Any]:
    """`vmmtui guests/IMAGE` under a 160x48 pty: seconds from just before the spawn to the first full frame."""
    from .tui import first_frame, vmmtui_argv

    return first_frame(vmmtui_argv(image))


def pyimport(image: str | None, count: int | None = None, module: str = "textual") -> dict[str, Any]:
    """`python -c "import MODULE"` in a fresh interpreter, timed like `tui` (spawn to exit)."""
    from .tui import python_c

    result = python_c(f"import {module}")
    result["module"] = module
    return result


BENCH_DIR = Path(__file__).resolve().parent


def script(name: str) -> ModuleType | None:
    """bench/NAME.py loaded by path (the standalone scripts), or None when there is no such file."""
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_log(image: str | None, count: int | None = None) -> dict[str, Any]:
    """bench/exit_log_view.py's measure(): the exit-log pane with `count` synthetic exits, headless."""
    module = script("exit_log_view")
    if module is None or not hasattr(module, "measure"):
        return {"skipped": "bench/exit_log_view.py has no measure()"}
    result = module.measure(count) if count else module.measure()
    result["filters"] = {key: text for key, text in getattr(module, "FILTERS", ())}  # key -> filter text
    return result


def trace(image: str | None, count: int | None = None, rounds: int | None = None) -> dict[str, Any]:
    """bench/trace_bench.py's measure(count, rounds, costs=False), whatever it reports (bench.figures reads it).

    Only the parameters its measure() takes are passed (the script is young). The
    per-exit cost constants (costs=True) are not figure (f) and take a minute.
    """
    import inspect

    module = script("trace_bench")
    if module is None:
        return {"skipped": "bench/trace_bench.py does not exist"}
    if not hasattr(module, "measure"):
        return {"skipped": "bench/trace_bench.py has no measure()"}
    params = inspect.signature(module.measure).parameters
    wanted = {"count": count, "rounds": rounds, "costs": False}
    kwargs = {k: v for k, v in wanted.items() if v is not None and k in params}
    result = module.measure(**kwargs)
    if not isinstance(result, dict):
        return {"error": f"trace_bench.measure() returned {type(result).__name__}, not a dict"}
    result["called_with"] = kwargs
    return result


WORKLOADS = {"engine": engine, "idle": idle, "raw": raw, "kvm": kvm, "tui": tui, "pyimport": pyimport,
             "exit_log": exit_log, "trace": trace}
