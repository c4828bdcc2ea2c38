"""The measured workloads. Each runs one guest once, in the calling process, and
returns a JSON-able dict; `bench.worker` calls exactly one of them per child
process, so every measurement starts from a fresh interpreter and its peak RSS
is its own.

Only the guest's execution is timed (`machine.run()`, `emu_start`, the KVM_RUN
loop), never the set-up (building the machine, loading the image, process start).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .images import image_bytes, write_image

REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")


def _engine_machine(image: str, count: int | None, vendor: str, tmp: Path) -> Any:
    from engine import loader
    from engine.config import MachineConfig
    from engine.machine import Machine

    machine = Machine(MachineConfig(vendor=vendor))
    loader.load(machine, write_image(image, count, tmp))
    return machine


def engine(image: str, count: int | None, vendor: str = "intel") -> dict[str, Any]:
    """vmmtui: `machine.run()` with no exit budget and no breaks (the fast mode)."""
    import time

    with tempfile.TemporaryDirectory(prefix="vmmtui-bench-") as tmp:
        machine = _engine_machine(image, count, vendor, Path(tmp))
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


WORKLOADS = {"engine": engine, "idle": idle, "raw": raw, "kvm": kvm}
