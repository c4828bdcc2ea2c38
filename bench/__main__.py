"""The bench runner: `python -m bench` (full) or `python -m bench --quick` (< ~90 s).

Runs every workload of bench.figures.plan() in its own child process
(`python -m bench.worker ...`), interleaving the jobs of a group round by round,
keeps every sample, computes the figures, prints the table and writes
bench/results.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from . import figures, report
from .figures import Job

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = {"quick": 120, "full": 900}


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import unicorn

    from .kvm import KvmUnavailable, api_version

    try:
        modules = sorted(p.name for p in Path("/sys/module").glob("kvm*"))
        kvm = f"/dev/kvm API {api_version()}" + (f" ({', '.join(modules)})" if modules else "")
    except KvmUnavailable as e:
        kvm = str(e)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "unicorn": unicorn.__version__,
        "kvm": kvm,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def engine_fingerprint() -> dict[str, str]:
    """Which engine was measured (no VCS here): a digest of engine/**/*.py and the newest change."""
    import hashlib

    files = sorted((ROOT / "engine").rglob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    newest = max((f.stat().st_mtime for f in files), default=0.0)
    when = datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).isoformat(timespec="seconds")
    return {"sha256": digest.hexdigest()[:16], "newest_change": when}


def run_job(job: Job, timeout: float) -> dict[str, Any]:
    """One child process; its JSON result, with `wall` (the child's whole life) and `invalid`."""
    cmd = [sys.executable, "-m", "bench.worker", *job.argv()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "invalid": f"timed out after {timeout} s"}
    wall = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        result = {"error": f"worker died: {tail}"}
    result["wall"] = wall
    problem = figures.check(job, result)
    if problem:
        result["invalid"] = problem
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure vmmtui's engine against raw Unicorn and real KVM, and its TUI; print a table, "
                    "write results.json.",
        epilog="example: python -m bench --quick   (see bench/README.md for what each figure means)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, fewer runs of the exit-log pane: the whole run in under ~90 s")
    parser.add_argument("--out", type=Path, default=report.RESULTS, metavar="FILE",
                        help=f"where to write the results (default: {report.RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    sizes = figures.SIZES[mode]
    log = Console(stderr=True, highlight=False, soft_wrap=True)
    started = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_facts()
    groups = figures.plan(sizes)
    total = sum(j.rounds for _name, jobs in groups for j in jobs)
    samples: dict[str, list[dict[str, Any]]] = {j.key: [] for _name, jobs in groups for j in jobs}
    done = 0
    for name, jobs in groups:
        rounds = max(j.rounds for j in jobs)
        for r in range(rounds):
            for job in jobs:
                if r >= job.rounds:
                    continue
                result = run_job(job, CHILD_TIMEOUT[mode])
                samples[job.key].append(result)
                done += 1
                status = figures.status(job, result)
                log.print(f"[{done:2}/{total}] {name}, round {r + 1}/{rounds}: {job.label()}: {status} "
                          f"(child {result['wall']:.1f} s)")
    rows = figures.rows(samples, sizes)
    results = {
        "date": date,
        "mode": mode,
        "duration_s": time.perf_counter() - started,
        "machine": machine,
        "engine": engine_fingerprint(),
        "sizes": sizes,
        "rows": [dataclasses.asdict(row) for row in rows],
        "footnotes": [
            f"* The project's target is ≥ {figures.EXIT_TARGET:,} exits/s with recording on; (b) runs without "
            "recording (the exits held in machine.exits only), so it compares the no-recording figure"
            + ("; (f) gives the with-recording one."
               if any(r.figure.startswith("exits/s with recording on") for r in rows)
               else "; the with-recording figure comes with bench/trace_bench.py (f)."),
            "Ratios are vmmtui / the other side, both measured in this run, best of "
            f"{figures.ROUNDS} interleaved child processes each ({figures.SPEED_ROUNDS} for guest speed); "
            "guest time only (no set-up, no process start).",
            f"(d)-(f) are absolute figures on this machine: (d) from just before the spawn of `vmmtui` to its "
            f"first full frame, best and median of {figures.TUI_ROUNDS}; (e) each figure the best of "
            f"{sizes['log_rounds']} child processes; (f) one child process that alternates recording off and on "
            f"{sizes['trace_rounds']} times and keeps the best of each.",
        ],
        "samples": samples,
        "written_to": str(args.out),
    }
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    except OSError as e:
        log.print(f"bench: cannot write {args.out}: {e}")
        report.render(results)
        return 1
    report.render(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
