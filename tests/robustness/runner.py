"""The parent side: a pool of child processes that run cases under a wall-clock limit.

A child (`python -m tests.robustness.child --serve`) runs one case after another:
starting a Python process with Unicorn for every case would cost ~0.3 s, more
than most cases. When a child dies (a signal: a native crash in Unicorn / QEMU)
or does not answer within the limit (a hang), the parent records a finding for
the case it was running, kills that child (by its own pid) and starts a fresh
one for the next case; it also reruns the case alone in a fresh one-shot child to
say whether it reproduces without the cases before it. Children are recycled
every `RECYCLE` cases so that one case's leftovers cannot pile up.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WALL_LIMIT = 10.0  # seconds a child may take for one case (the run itself has its own timeout)
RECYCLE = 300


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def repro_command(case: dict[str, Any]) -> str:
    """A shell command that reruns `case` by hand, from the repository root."""
    return f"python -m tests.robustness.child '{json.dumps(case, separators=(',', ':'))}'"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Child:
    """One serving child process."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.robustness.child", "--serve"], cwd=ROOT,
                                     env=_child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log)
        self.served = 0
        self._buffer = b""

    def stderr_tail(self, lines: int = 25) -> str:
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace").splitlines()
        # the child logs "case {...}" before each case: keep what follows the last one
        for i in range(len(text) - 1, -1, -1):
            if text[i].startswith("case {"):
                text = text[i + 1 :]
                break
        return "\n".join(text[-lines:])

    def ask(self, case: dict[str, Any], limit: float) -> dict[str, Any]:
        """Run `case`; the result, or {"crash": ...} / {"hang": ...} when the child failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.served += 1
        try:
            self.proc.stdin.write((json.dumps(case) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"hang": limit, "stderr": self.stderr_tail()}
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return self._dead()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _dead(self) -> dict[str, Any]:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        what = _signal_name(code) if code is not None and code < 0 else f"exit status {code}"
        return {"crash": what, "stderr": self.stderr_tail()}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its pid
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.kill()
        self.log.close()


def run_alone(case: dict[str, Any], limit: float = WALL_LIMIT) -> dict[str, Any]:
    """Run `case` in a fresh child of its own (used to confirm a crash or hang)."""
    child = Child()
    try:
        return child.ask(case, limit)
    finally:
        if child.proc.poll() is None:
            child.close()
        else:
            child.log.close()


class Pool:
    """Runs cases in a serving child, replacing it after a crash, a hang or RECYCLE cases."""

    def __init__(self, limit: float = WALL_LIMIT) -> None:
        self.limit = limit
        self.child: Child | None = None
        self.cases = 0
        self.findings: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def run(self, case: dict[str, Any]) -> dict[str, Any]:
        """The result of `case`, with "problems" covering crashes and hangs too."""
        if self.child is None or self.child.served >= RECYCLE or self.child.proc.poll() is not None:
            if self.child is not None:
                self.child.close()
            self.child = Child()
        self.cases += 1
        result = self.child.ask(case, self.limit)
        if "crash" in result or "hang" in result:
            self.child.close()
            self.child = None
            again = run_alone(case, self.limit)
            alone = "crash" in again or "hang" in again
            if "crash" in result:
                problem = f"child: native crash ({result['crash']})"
            else:
                problem = f"child: no answer within {self.limit:.0f} s (hang)"
            problem += "; reproduces alone in a fresh child" if alone else "; did NOT reproduce alone in a fresh child"
            result = {**result, "problems": [problem], "alone": again}
        if result.get("problems"):
            self.findings.append((case, result))
        return result

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None


FINDINGS_DIR = Path(tempfile.gettempdir()) / "vmmtui-robustness"


def save_case(case: dict[str, Any]) -> Path:
    """Write `case` to a JSON file (for `python -m tests.robustness.child FILE`); its path."""
    import hashlib

    text = json.dumps(case, sort_keys=True)
    FINDINGS_DIR.mkdir(parents=True, exist_ok=True)
    path = FINDINGS_DIR / f"case-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    path.write_text(text)
    return path


def describe(case: dict[str, Any], result: dict[str, Any]) -> str:
    """A finding as text: the case, how to rerun it, what happened."""
    big = "files" in case or "image" in case
    shown = {k: v for k, v in case.items() if k not in ("files", "image")}
    lines = [f"mode={case.get('mode')} vendor={case.get('vendor')} code={case.get('code')}",
             f"  case: {json.dumps(shown, separators=(',', ':'))}"]
    if big:
        lines.append(f"  rerun: python -m tests.robustness.child {save_case(case)}")
    else:
        lines.append(f"  rerun: {repro_command(case)}")
    if "argv" in case:
        lines.append(f"  status: {result.get('status')}, {result.get('elapsed')} s")
    else:
        lines.append(f"  stop: {result.get('stop')} ({result.get('message', '')}) after {result.get('exits')} "
                     f"exits, {result.get('elapsed')} s")
    lines += [f"  problem: {p}" for p in result.get("problems", [])]
    for key in ("escaped", "inspect_error", "stderr"):
        if result.get(key):
            text = str(result[key]).rstrip().splitlines()[-30:]
            lines.append(f"  {key}:\n" + "\n".join("    " + s for s in text))
    return "\n".join(lines)
