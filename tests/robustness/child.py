"""The child process of the robustness runs: runs guest cases and reports JSON.

A native crash (a signal from Unicorn / QEMU) or a hang can only be observed
from outside, so every case runs here, in a separate Python process, and the
parent (`runner.py`) enforces a wall-clock limit.

Usage (from the repository root):

    python -m tests.robustness.child --serve        # JSON case per stdin line -> JSON result per line
    python -m tests.robustness.child CASE.json      # one case from a file ('-' = stdin), result pretty-printed
    python -m tests.robustness.child '{"mode": "long", "vendor": "amd", "code": "0f01d9"}'

A case (see `strategies.case`): mode ("real", "protected", "long"), vendor ("intel",
"amd"), code (hex), and optionally base (ELF load address), mem (MiB), page_size
(bytes), exits (["io=off", ...]), max_exits, timeout (seconds of the run).

The result: stop (reason), status, message, exits (count), elapsed, escaped (the
traceback of a Python exception that left the engine, else null), problems (every
finding of the case: escaped exceptions, a stop reason `run()` must not give,
errors inspecting the machine after the run, canary violations).
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import canary
from .images import SUFFIX, image

#: Stop reasons `Machine.run()` may give without breakpoints, exit breaks or pause().
RUN_STOPS = {"debug-exit", "hypercall-exit", "halt", "shutdown", "max-exits", "timeout", "error"}
DEFAULTS = {"base": None, "mem": 16, "page_size": 2 << 20, "exits": [], "max_exits": 10_000, "timeout": 2.0}
#: A run may overrun its timeout by this much (seconds) before that is a finding.
OVERRUN_SLACK = 3.0
_INSPECT_EXITS = 200  # decode the first and last N exits (all of them is slow on 10,000)

_tmpdir: Path | None = None


def _workdir() -> Path:
    """This process's scratch directory, removed when it exits."""
    global _tmpdir
    if _tmpdir is None:
        import atexit
        import shutil

        _tmpdir = Path(tempfile.mkdtemp(prefix="vmmtui-robust-"))
        atexit.register(shutil.rmtree, _tmpdir, True)
    return _tmpdir


def _image_path(case: dict[str, Any]) -> Path:
    _workdir()
    path = _workdir() / f"guest-{os.getpid()}{SUFFIX[case['mode']]}"
    path.write_bytes(image(case["mode"], bytes.fromhex(case["code"]), case.get("base")))
    return path


def _inspect(machine: Any, stop: Any) -> None:
    """What `vmmtui run --json`, the summary and the TUI panes read after a run."""
    from vmmtui.cli import exit_status, run_json

    exit_status(stop)
    log = machine.exits
    n = len(log)
    doc = run_json(machine, stop, "0" * 64)
    doc["exits"] = []  # decoded below, in part
    json.dumps(doc)
    counts = dict(log.counts())
    rows = set(range(min(n, _INSPECT_EXITS))) | set(range(max(0, n - _INSPECT_EXITS), n))
    seen: set[int] = set()
    for seq in range(n) if n <= 2 * _INSPECT_EXITS else sorted(rows):
        e = log[seq]
        json.dumps(e.as_json())
        if e.reason not in seen:
            seen.add(e.reason)
            machine.hw.handling_steps(e.reason)
    del counts
    machine.registers()
    machine.guest_state()
    machine.code_bits()
    machine.hw.structure_fields(0)
    machine.structure()


def run_cli_case(case: dict[str, Any]) -> dict[str, Any]:
    """A `vmmtui` command line on files given as hex: {"argv": [...], "image": hex, "name": "x.elf"}
    or {"argv": [...], "files": {"trace.vmtrace": hex, "script.txt": hex}}.

    "{image}" in argv is replaced by the image's path, "{trace}" by that of
    "trace.<anything>", and so on. The result: status, stdout
    (the first 2,000 characters), stderr, problems (a traceback, an internal error,
    an error that is not one line, a status no table lists)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from vmmtui.cli import main as cli_main

    _workdir()
    files = dict(case.get("files") or {})
    if "image" in case:
        files[case.get("name", "guest.elf")] = case["image"]
        placeholders = {"{image}": case.get("name", "guest.elf")}
    else:
        placeholders = {}
    placeholders.update({"{" + name.split(".")[0] + "}": name for name in files})
    for name, data in files.items():
        (_workdir() / f"{os.getpid()}-{name}").write_bytes(bytes.fromhex(data))
        for suffix in ("-wal", "-shm"):  # no sidecar left from an earlier case
            (_workdir() / f"{os.getpid()}-{name}{suffix}").unlink(missing_ok=True)
    argv = [str(_workdir() / f"{os.getpid()}-{placeholders[a]}") if a in placeholders else a for a in case["argv"]]
    out_bytes = io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="replace", write_through=True)
    err = io.StringIO()
    problems: list[str] = []
    status: int | None = None
    started = time.monotonic()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = cli_main(argv)
    except SystemExit as e:  # argparse --help / --version, not expected here
        status = e.code if isinstance(e.code, int) else 2
    except BaseException:
        problems.append("cli: a Python exception escaped main(): "
                        + traceback.format_exc().strip().splitlines()[-1])
        err.write(traceback.format_exc())
    elapsed = time.monotonic() - started
    text = err.getvalue()
    problems += cli_problems(status, text)
    if "Traceback" in out_bytes.getvalue().decode("utf-8", "replace"):
        problems.append("cli: a traceback on stdout")
    return {"status": status, "stdout": out_bytes.getvalue()[:2000].decode("utf-8", "replace"),
            "stderr": text[-4000:], "elapsed": round(elapsed, 3), "problems": problems}


def cli_problems(status: int | None, stderr: str) -> list[str]:
    """What is wrong with how a `vmmtui` command ended (empty: nothing)."""
    problems = []
    if "Traceback" in stderr:
        problems.append("cli: a traceback on stderr")
    if "internal error" in stderr or status == 70:
        line = next((l for l in stderr.splitlines() if "internal error" in l), "")
        problems.append(f"cli: internal error (status {status}): {line.strip()}")
    if "vmmtui: error:" in stderr:
        if status != 2:
            problems.append(f"cli: an error message with status {status}, not 2")
        # warnings ("vmmtui: warning: ...", one line each) may come first
        rest = "".join(l for l in stderr.splitlines(keepends=True) if not l.startswith("vmmtui: warning: "))
        if not rest.startswith("vmmtui: error:") or rest.count("\n") != 1 or not rest.endswith("\n"):
            problems.append(f"cli: the error is not one line on its own: {stderr[:300]!r}")
    elif status == 2 and "stop: debug-exit" not in stderr and "stop: hypercall-exit" not in stderr:
        problems.append(f"cli: status 2 without a 'vmmtui: error:' line: {stderr[-300:]!r}")
    if status is None or not 0 <= status <= 255:
        problems.append(f"cli: status {status}")
    return problems


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this process; never raises (everything is in the result)."""
    if "argv" in case:
        return run_cli_case(case)
    if "selftest" in case:  # the runner's own tests: die, or hang
        if case["selftest"] == "crash":
            import ctypes

            ctypes.string_at(0)  # a read of address 0: SIGSEGV
        time.sleep(3600)
    from engine.config import MachineConfig
    from engine.errors import EngineError
    from engine.loader import load
    from engine.machine import Machine

    case = {**DEFAULTS, **case}
    result: dict[str, Any] = {"stop": None, "status": None, "message": "", "exits": 0, "elapsed": 0.0,
                              "escaped": None, "problems": [], "serial": 0}
    problems: list[str] = result["problems"]
    config = MachineConfig(vendor=case["vendor"], mem_size=case["mem"] << 20, page_size=case["page_size"],
                           exits=list(case["exits"]))
    path = _image_path(case)
    with canary.install():
        try:
            machine = Machine(config)
        except EngineError as e:
            result["config_error"] = str(e)
            return result
        except BaseException:
            result["escaped"] = traceback.format_exc()
            problems.append("machine: a Python exception escaped Machine(): "
                            + traceback.format_exc().strip().splitlines()[-1])
            return result
    canary.watch(machine)
    try:
        load(machine, path)
    except EngineError as e:
        # A generated image is valid: the loader refusing it is a finding.
        problems.append(f"load: the loader refused a generated image: {e}")
        return result
    except BaseException:
        result["escaped"] = traceback.format_exc()
        problems.append("load: a Python exception escaped load(): " + traceback.format_exc().strip().splitlines()[-1])
        return result
    canary.snapshot(machine)
    started = time.monotonic()
    stop = None
    try:
        stop = machine.run(max_exits=case["max_exits"], timeout=case["timeout"])
    except BaseException:
        result["escaped"] = traceback.format_exc()
        problems.append("run: a Python exception escaped run(): " + traceback.format_exc().strip().splitlines()[-1])
    elapsed = time.monotonic() - started
    result["elapsed"] = round(elapsed, 3)
    result["exits"] = len(machine.exits)
    result["serial"] = len(machine.serial)
    if stop is not None:
        result.update(stop=stop.reason.value, status=stop.status, message=stop.message)
        if stop.reason.value not in RUN_STOPS:
            problems.append(f"run: stop reason {stop.reason.value!r} from a plain run()")
        n = len(machine.exits)
        limit = case["max_exits"]
        if stop.reason.value == "max-exits" and n != limit:
            problems.append(f"run: stopped for max-exits {limit} after {n} exits")
        if stop.reason.value != "max-exits" and limit is not None and n > limit:
            problems.append(f"run: {n} exits taken with max_exits={limit} (stop {stop.reason.value})")
        if stop.final and stop.exit_seq is not None and stop.exit_seq != n - 1:
            later = [machine.exits[i].name for i in range(stop.exit_seq + 1, min(n, stop.exit_seq + 4))]
            problems.append(f"run: {n - 1 - stop.exit_seq} exit(s) logged after the exit that ended the run "
                            f"(stop {stop.reason.value} at exit {stop.exit_seq}; then {', '.join(later)})")
        if elapsed > case["timeout"] + OVERRUN_SLACK:
            problems.append(f"run: took {elapsed:.1f} s with timeout={case['timeout']} s (stop {stop.reason.value})")
        # The machine after the stop: run on (or see the same final stop again), then inspect.
        try:
            again = machine.run(max_exits=None if limit is None else n + 100, timeout=0.05)
            if stop.final and again != stop:
                problems.append(f"run again: a final stop {stop.reason.value} was followed by {again}")
        except BaseException:
            result["escaped"] = traceback.format_exc()
            problems.append("run again: a Python exception escaped run(): "
                            + traceback.format_exc().strip().splitlines()[-1])
        try:
            _inspect(machine, stop)
        except BaseException:
            result["inspect_error"] = traceback.format_exc()
            problems.append("inspect: " + traceback.format_exc().strip().splitlines()[-1])
    try:
        problems.extend(f"canary: {p}" for p in canary.check(machine))
    except BaseException:
        problems.append("canary: the check itself failed: " + traceback.format_exc().strip().splitlines()[-1])
    del machine
    return result


def serve() -> None:
    """Answer cases from stdin, one JSON line each, on the original stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        sys.stderr.write(f"case {json.dumps(case)}\n")
        sys.stderr.flush()
        try:
            result = run_case(case)
        except BaseException:
            result = {"problems": ["child: the case runner failed: "
                                   + traceback.format_exc().strip().splitlines()[-1]],
                      "escaped": traceback.format_exc()}
        out.write(json.dumps(result, default=str) + "\n")
        gc.collect()


def main(argv: list[str]) -> int:
    faulthandler.enable()
    if argv == ["--serve"]:
        serve()
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    arg = argv[0]
    if arg == "-":
        case = json.load(sys.stdin)
    elif arg.lstrip().startswith("{"):
        case = json.loads(arg)
    else:
        case = json.loads(Path(arg).read_text())
    result = run_case(case)
    print(json.dumps(result, indent=2))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
