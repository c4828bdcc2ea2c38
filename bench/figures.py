"""What the bench measures (the plan of child-process jobs) and how the samples
become the figures of the table (rows).

A figure is a ratio taken inside one run of the bench: both sides of it are
measured in the same run, interleaved round by round (a round runs every job of
a group once), and each side keeps the best of its samples (the shortest guest
time), because this machine is shared and noisy: the best run is the one the
neighbours disturbed least.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import loop_instructions

ROUNDS = 3
#: The guest-speed runs last ~0.1 s, and at that scale this machine's speed is
#: bimodal (a run, either side, takes 1x or ~2.5x, whether timed by the wall
#: clock or by CPU time): more cheap rounds so both sides catch a fast one.
SPEED_ROUNDS = 7
COUNTED_SHARE = 10  # (c) runs a tenth of the loop: counting costs about 16x
EXIT_TARGET = 250_000  # exits/s, with recording on (the project's target)
SPEED_TARGET = 0.5  # x raw Unicorn
RSS_TARGET_MB = 300

FRAME_TARGET_S = 1.0  # launch to the first TUI frame
FILTER_TARGET_MS = 200  # filtering a million exits
TRACE_BYTES_TARGET = 48  # trace bytes per exit
TUI_ROUNDS = 5  # launches of the TUI (best and median)
TUI_GUEST = "hello.img"

#: How big each workload is, per mode. The RSS run and the exit-log pane always
#: hold a million exits; --quick runs the pane (about 13 s a run) fewer times.
#: The trace bench is one child process that alternates recording off and on
#: `trace_rounds` times itself (bench/trace_bench.py, measure(count, rounds)):
#: about 5 s a round at 1,000,000 exits.
SIZES = {
    "full": {"loop_iterations": 20_000_000, "exits": 1_000_000, "rss_exits": 1_000_000,
             "log_exits": 1_000_000, "log_rounds": 3, "trace_exits": 1_000_000, "trace_rounds": 3},
    "quick": {"loop_iterations": 10_000_000, "exits": 100_000, "rss_exits": 1_000_000,
              "log_exits": 1_000_000, "log_rounds": 2, "trace_exits": 100_000, "trace_rounds": 3},
}


@dataclass(frozen=True)
class Job:
    """One child process: `python -m bench.worker WORKLOAD [--image IMAGE] [--count N] ...`."""

    key: str
    workload: str
    image: str | None = None
    count: int | None = None
    vendor: str | None = None
    hooks: str | None = None
    module: str | None = None
    inner_rounds: int | None = None  # trace: rounds inside the child
    rounds: int = ROUNDS
    mode: str | None = None  # engine: exact (default) or fast
    vcpus: int | None = None  # engine

    def argv(self) -> list[str]:
        args = [self.workload]
        if self.image:
            args += ["--image", self.image]
        if self.count is not None:
            args += ["--count", str(self.count)]
        if self.vendor:
            args += ["--vendor", self.vendor]
        if self.hooks:
            args += ["--hooks", self.hooks]
        if self.module:
            args += ["--module", self.module]
        if self.inner_rounds:
            args += ["--rounds", str(self.inner_rounds)]
        if self.mode:
            args += ["--mode", self.mode]
        if self.vcpus:
            args += ["--vcpus", str(self.vcpus)]
        return args

    def label(self) -> str:
        parts = [self.workload, self.image or "", f"x{self.count:,}" if self.count is not None else "",
                 self.vendor or self.hooks or self.module or ""]
        return " ".join(p for p in parts if p)


def plan(sizes: dict[str, int]) -> list[tuple[str, list[Job]]]:
    """Groups of jobs; the runner interleaves the jobs of a group round by round."""
    it, n, rss = sizes["loop_iterations"], sizes["exits"], sizes["rss_exits"]
    return [
        ("guest speed", [
            Job("loop/engine", "engine", "bench_loop.img", it, vendor="intel", mode="fast", rounds=SPEED_ROUNDS),
            Job("loop/raw", "raw", "bench_loop.img", it, hooks="stop", rounds=SPEED_ROUNDS),
        ]),
        ("deterministic mode", [
            Job("det/engine/1", "engine", "bench_loop.img", it // COUNTED_SHARE, vendor="intel"),
            Job("det/engine/4", "engine", "bench_loop.img", it // COUNTED_SHARE, vendor="intel", vcpus=4),
            Job("det/raw", "raw", "bench_loop.img", it // COUNTED_SHARE, hooks="counted"),
        ]),
        ("exit throughput", [
            Job("out/engine/intel", "engine", "bench_out.img", n, vendor="intel"),
            Job("out/engine/amd", "engine", "bench_out.img", n, vendor="amd"),
            Job("out/raw", "raw", "bench_out.img", n, hooks="out"),
            Job("out/kvm", "kvm", "bench_out.img", n),
            Job("cpuid/engine/intel", "engine", "bench_cpuid.img", n, vendor="intel"),
            Job("cpuid/engine/amd", "engine", "bench_cpuid.img", n, vendor="amd"),
            Job("cpuid/raw", "raw", "bench_cpuid.img", n, hooks="cpuid"),
            Job("cpuid/kvm", "kvm", "bench_cpuid.img", n),
        ]),
        ("memory", [
            Job("rss/idle", "idle", "bench_out.img", rss, vendor="intel", rounds=1),
            Job("rss/engine", "engine", "bench_out.img", rss, vendor="intel", rounds=1),
        ]),
        ("first TUI frame", [
            Job("tui/vmmtui", "tui", TUI_GUEST, rounds=TUI_ROUNDS),
            Job("tui/import-textual", "pyimport", module="textual", rounds=TUI_ROUNDS),
            Job("tui/import-textual-app", "pyimport", module="textual.app", rounds=TUI_ROUNDS),
        ]),
        ("exit log", [
            Job("log/exit-log", "exit_log", count=sizes["log_exits"], rounds=sizes["log_rounds"]),
        ]),
    ] + ([("trace", [Job("trace", "trace", count=sizes["trace_exits"], inner_rounds=sizes["trace_rounds"],
                         rounds=1)])] if trace_bench_state() is None else [])


def trace_bench_state() -> str | None:
    """None when bench/trace_bench.py offers `measure()` (read, not imported); else why not."""
    path = Path(__file__).resolve().parent / "trace_bench.py"
    try:
        source = path.read_text()
    except OSError:
        return "bench/trace_bench.py does not exist"
    if not re.search(r"^def measure\(", source, re.M):
        return "bench/trace_bench.py has no measure() yet"
    return None


# -- checking samples -------------------------------------------------------------------

def check(job: Job, result: dict[str, Any]) -> str | None:
    """Why a sample is not a valid measurement of its job, or None."""
    if "error" in result:
        return result["error"]
    if "skipped" in result:
        return None
    if job.workload in ("idle", "tui", "pyimport"):
        return None  # tui and pyimport report a failed launch as `error`
    if job.workload == "trace":
        want = None if job.count is None else job.count + 1  # N OUT exits + the debug exit
        if want is not None and "exits" in result and result["exits"] != want:
            return f"the trace bench ran {result['exits']!r} exits, expected {want:,}"
        return None
    if job.workload == "exit_log":
        n = job.count
        if result.get("rows") != n:
            return f"the pane held {result.get('rows')!r} rows, expected {n:,}"
        if result.get("end_seq") != n - 1:
            return f"End went to exit {result.get('end_seq')!r}, expected {n - 1:,}"
        for key in result.get("filters", {}):
            shown = result.get(f"filter_{key}_shown")
            if not isinstance(shown, int) or not 0 < shown < n:
                return f"the {key} filter kept {shown!r} of {n:,} rows"
        return None
    if result.get("status") != 0:
        return f"the guest ended with status {result.get('status')!r}"
    n = job.count
    if job.workload == "engine":
        if result["stop"] != "debug-exit":
            return f"stopped by {result['stop']}, not the debug exit"
        want = 1 if job.image == "bench_loop.img" else n + 1
        if result["exits"] != want:
            return f"{result['exits']:,} exits, expected {want:,}"
    elif job.workload == "raw" and job.hooks in ("out", "cpuid") and result["hooked"] != n:
        return f"{result['hooked']:,} hook calls, expected {n:,}"
    elif job.workload == "kvm":
        want = n if job.image == "bench_out.img" else 0
        if result["io_exits"] != want or result["other_exits"]:
            return (f"{result['io_exits']:,} I/O exits and {result['other_exits']} others "
                    f"(last {result['last_exit']}), expected {want:,} I/O exits")
    return None


def best(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The valid sample with the shortest guest time."""
    valid = [s for s in samples if not s.get("invalid") and "elapsed" in s]
    return min(valid, key=lambda s: s["elapsed"]) if valid else None


def _problem(samples: list[dict[str, Any]]) -> str:
    for s in samples:
        if s.get("skipped"):
            return f"skipped: {s['skipped']}"
    for s in samples:
        if s.get("invalid"):
            return f"failed: {s['invalid']}"
    return "failed: no sample"


# -- rows ---------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table (and of results.json)."""

    id: str
    figure: str
    value: float | None = None  # the measured figure
    unit: str = ""
    text: str | None = None  # shown instead of a value (not built, skipped, ...)
    compared: list[dict[str, Any]] = field(default_factory=list)  # [{name, value, unit}] or {name, text}
    ratio: list[dict[str, Any]] = field(default_factory=list)  # [{name, value}]: measured / compared
    target: str | None = None
    met: bool | None = None
    note: str = ""


def _rate(sample: dict[str, Any] | None, events: int) -> float | None:
    return None if sample is None else events / sample["elapsed"]


def rows(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> list[Row]:
    out: list[Row] = []
    out.append(_guest_speed(samples, sizes))
    out += _exit_rows(samples, sizes, "out", "OUT to port 0x80", "raw Unicorn + 1 Python OUT hook")
    out += _exit_rows(samples, sizes, "cpuid", "CPUID leaf 0", "raw Unicorn + 1 Python CPUID hook")
    out += _deterministic_rows(samples, sizes)
    out.append(_first_frame(samples))
    out += _exit_log_rows(samples, sizes)
    out += _trace_rows(samples)
    out.append(_rss(samples, sizes))
    return out


def _deterministic_rows(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> list[Row]:
    """(c): the default, instruction-counting mode against Unicorn's own counted mode."""
    insns = loop_instructions(sizes["loop_iterations"] // COUNTED_SHARE)
    raw = best(samples["det/raw"])
    raw_mips = None if raw is None else insns / raw["elapsed"] / 1e6
    out = []
    for vcpus in (1, 4):
        who = "4 vCPUs (quantum 10,000)" if vcpus > 1 else "1 vCPU"
        row = Row("c", f"deterministic mode, {who}: bench_loop.img, {insns:,} instructions", unit="MIPS")
        eng = best(samples[f"det/engine/{vcpus}"])
        if eng is None:
            row.text = _problem(samples[f"det/engine/{vcpus}"])
            out.append(row)
            continue
        row.value = insns / eng["elapsed"] / 1e6
        if raw_mips is None:
            row.compared.append({"name": "Unicorn's counted mode", "text": _problem(samples["det/raw"])})
        else:
            row.compared.append({"name": "Unicorn's counted mode (emu_start count=N)", "value": raw_mips,
                                 "unit": "MIPS"})
            row.ratio.append({"name": "vmmtui / counted Unicorn", "value": row.value / raw_mips})
        row.note = ("the APs wait for a SIPI that never comes, so this is the cost of the turns" if vcpus == 4
                    else "every instruction counted; virtual time exact after every stop")
        if raw is not None and any(eng["regs"][r] != raw["regs"][r] for r in ("rbx", "rdx", "rsi", "rdi")):
            row.note += "; WARNING: the hash registers differ from Unicorn's"
        out.append(row)
    return out


def _guest_speed(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> Row:
    insns = loop_instructions(sizes["loop_iterations"])
    row = Row("a", f"guest speed: bench_loop.img, {insns:,} instructions, --fast mode", unit="MIPS",
              target=f"≥ {SPEED_TARGET}x raw Unicorn")
    eng, raw = best(samples["loop/engine"]), best(samples["loop/raw"])
    if eng is None:
        row.text = _problem(samples["loop/engine"])
        return row
    row.value = insns / eng["elapsed"] / 1e6
    if raw is None:
        row.compared.append({"name": "raw Unicorn, no hooks", "text": _problem(samples["loop/raw"])})
        return row
    raw_mips = insns / raw["elapsed"] / 1e6
    row.compared.append({"name": "raw Unicorn, no hooks", "value": raw_mips, "unit": "MIPS"})
    ratio = row.value / raw_mips
    row.ratio.append({"name": "vmmtui / raw", "value": ratio})
    row.met = ratio >= SPEED_TARGET
    same = all(eng["regs"][r] == raw["regs"][r] for r in ("rbx", "rdx", "rsi", "rdi"))
    row.note = (f"best of {len(samples['loop/engine'])} each, interleaved; "
                + ("both end with the same hash registers" if same else "WARNING: the hash registers differ"))
    return row


def _exit_rows(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int], kind: str, what: str,
               raw_name: str) -> list[Row]:
    n = sizes["exits"]
    raw = best(samples[f"{kind}/raw"])
    raw_rate = _rate(raw, n)
    rows_: list[Row] = []
    engine_rates: dict[str, float] = {}
    for vendor in ("intel", "amd"):
        key = f"{kind}/engine/{vendor}"
        row = Row("b", f"{what}: exits/s, vmmtui --vendor {vendor}", unit="exits/s",
                  target=f"≥ {EXIT_TARGET:,} exits/s *")
        eng = best(samples[key])
        if eng is None:
            row.text = _problem(samples[key])
            rows_.append(row)
            continue
        row.value = eng["exits"] / eng["elapsed"]
        engine_rates[vendor] = row.value
        row.met = row.value >= EXIT_TARGET
        row.note = f"{n:,} {what.split()[0]} exits + the debug exit; best of {len(samples[key])}"
        if raw_rate is None:
            row.compared.append({"name": raw_name, "text": _problem(samples[f"{kind}/raw"])})
        else:
            row.compared.append({"name": raw_name, "value": raw_rate, "unit": "exits/s"})
            row.ratio.append({"name": "vmmtui / raw", "value": row.value / raw_rate})
        rows_.append(row)
    key = f"{kind}/kvm"
    row = Row("b", f"{what}: real KVM (/dev/kvm, Python KVM_RUN loop)", unit="exits/s")
    kvm = best(samples[key])
    if kvm is None:
        row.text = _problem(samples[key])
    elif kind == "cpuid":
        row.text = "no exit to userspace: KVM handles CPUID in the kernel"
        row.note = (f"{n:,} CPUIDs ran in {kvm['elapsed']:.3f} s with no KVM_EXIT before the debug exit "
                    f"({kvm['elapsed'] / n * 1e6:.2f} µs each, all in the kernel); not an exit rate")
    else:
        row.value = kvm["io_exits"] / kvm["elapsed"]
        row.note = f"{n:,} KVM_EXIT_IO round trips to Python; best of {len(samples[key])}"
        for vendor, rate in engine_rates.items():
            row.compared.append({"name": f"vmmtui --vendor {vendor}", "value": rate, "unit": "exits/s"})
            row.ratio.append({"name": f"vmmtui {vendor} / KVM", "value": rate / row.value})
    rows_.append(row)
    return rows_


def _rss(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> Row:
    n = sizes["rss_exits"]
    row = Row("g", f"peak RSS, {n // 1_000_000}M exits in memory (not recorded)", unit="MB",
              target=f"< {RSS_TARGET_MB} MB")
    runs = [s for s in samples["rss/engine"] if not s.get("invalid")]
    if not runs:
        row.text = _problem(samples["rss/engine"])
        return row
    run = runs[0]
    row.value = run["maxrss_kib"] * 1024 / 1e6
    row.met = row.value < RSS_TARGET_MB
    idle = [s for s in samples["rss/idle"] if not s.get("invalid")]
    if idle:
        base = idle[0]["maxrss_kib"] * 1024 / 1e6
        row.compared.append({"name": "the same machine loaded, not run", "value": base, "unit": "MB"})
        row.note = (f"bench_out.img, {run['exits']:,} exits held in machine.exits; "
                    f"≈ {(row.value - base) * 1e6 / max(run['exits'], 1):.0f} bytes per exit over the idle machine")
    return row


def _valid(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in samples if not s.get("invalid") and not s.get("skipped") and "error" not in s]


def _first_frame(samples: dict[str, list[dict[str, Any]]]) -> Row:
    runs = samples.get("tui/vmmtui", [])
    row = Row("d", f"first TUI frame: `vmmtui guests/{TUI_GUEST}` in a 160x48 pty, launch to the first full frame",
              unit="s", target=f"< {FRAME_TARGET_S:g} s")
    valid = [s for s in _valid(runs) if "elapsed" in s]
    if not valid:
        row.text = _problem(runs)
        return row
    top = min(valid, key=lambda s: s["elapsed"])
    times = sorted(s["elapsed"] for s in valid)
    median = statistics.median(times)
    row.value = top["elapsed"]
    row.met = row.value < FRAME_TARGET_S
    row.compared.append({"name": f"median of {len(valid)}", "value": median, "unit": "s"})
    for key, code in (("tui/import-textual", "import textual"), ("tui/import-textual-app", "import textual.app")):
        floor = best(samples.get(key, []))
        name = f'python -c "{code}", best'
        if floor is None:
            row.compared.append({"name": name, "text": _problem(samples.get(key, []))})
        else:
            row.compared.append({"name": name, "value": floor["elapsed"], "unit": "s"})
    failed = len(runs) - len(valid)
    quits = [s.get("quit_s", 0.0) for s in valid]
    killed = sum(1 for s in valid if s.get("killed"))
    bad_status = sorted({s.get("status") for s in valid if not s.get("killed") and s.get("status") != 0}, key=str)
    row.note = (f"best of {len(runs)}" + (f" ({failed} failed: {_problem(runs)})" if failed else "")
                + f"; all runs {', '.join(f'{t:.2f}' for t in times)} s; the median "
                + ("also meets" if median < FRAME_TARGET_S else "misses") + " the target. Best run: the app's first "
                f"byte at {top.get('first_output_s', float('nan')):.2f} s, the titles at "
                f"{top.get('titles_s', float('nan')):.2f} s, all rows drawn at {top['elapsed']:.2f} s "
                f"({top.get('frame_bytes', 0):,} bytes). "
                + (f"\"q\" quit in {min(quits):.2f}-{max(quits):.2f} s" if quits else "")
                + (f"; {killed} run(s) did not quit within the timeout and were killed" if killed else "")
                + (f"; exit status {', '.join(map(str, bad_status))} after \"q\"" if bad_status else ""))
    return row


#: The exit_log_view.py filters shown as rows (the others stay in results.json's samples).
LOG_FILTER_ROWS = ("kind", "condition", "substring")


def _exit_log_rows(samples: dict[str, list[dict[str, Any]]], sizes: dict[str, int]) -> list[Row]:
    runs = samples.get("log/exit-log", [])
    n = sizes["log_exits"]
    valid = _valid(runs)
    if not valid:
        return [Row("e", f"{n:,}-exit log pane: first frame, End, filters", text=_problem(runs))]

    def low(key: str) -> float | None:  # the best (lowest) of a figure, each figure on its own
        values = [s[key] for s in valid if isinstance(s.get(key), (int, float))]
        return min(values) if values else None

    of = f"best of {len(valid)}" + (f" ({len(runs) - len(valid)} failed: {_problem(runs)})"
                                     if len(valid) < len(runs) else "")
    first = valid[0]
    size = first.get("size", "?")
    out: list[Row] = []

    row = Row("e", f"exit-log pane: first frame with {n:,} exits", unit="ms")
    if (v := low("first_frame_s")) is None:
        row.text = "not reported by exit_log_view.measure()"
    else:
        row.value = v * 1000
        build = low("build_log_s")
        if build is not None:
            row.compared.append({"name": "building the log (ExitLog.append), not counted", "value": build,
                                 "unit": "s"})
        row.note = (f"bench/exit_log_view.py measure(): a tiny App holding only ExitLogView, Textual run_test at "
                    f"{size}, app start to the first frame; {of}")
    out.append(row)

    row = Row("e", f"exit-log pane: End (cursor to the last of {n:,} exits)", unit="ms")
    if (v := low("scroll_to_end_s")) is None:
        row.text = "not reported by exit_log_view.measure()"
    else:
        row.value = v * 1000
        press = low("baseline_press_ms")
        if press is not None:
            row.compared.append({"name": "a key press in a one-Static app (the harness's cost)", "value": press,
                                 "unit": "ms"})
        extra = []
        if (pd := low("page_down_x100_s")) is not None:
            extra.append(f"PageDown x100 {pd:.2f} s in the app"
                         + (f", {pane:.3f} s the pane alone" if (pane := low("page_down_x100_pane_s")) is not None
                            else ""))
        if (frame := low("uncached_frame_ms")) is not None:
            extra.append(f"a frame of unseen rows {frame:.1f} ms")
        row.note = (f"the pilot presses End and waits until the app is idle; cursor on exit "
                    f"{first.get('end_seq', '?'):,}; " + "; ".join(extra) + f"; {of}")
    out.append(row)

    filters: dict[str, str] = first.get("filters", {})
    for key in LOG_FILTER_ROWS:
        text = filters.get(key, "?")
        row = Row("e", f"exit-log pane: filter by {key}, {text!r}, {n:,} exits", unit="ms",
                  target=f"< {FILTER_TARGET_MS} ms")
        if (v := low(f"filter_{key}_s")) is None:
            row.text = "not reported by exit_log_view.measure()"
            out.append(row)
            continue
        row.value = v * 1000
        row.met = row.value < FILTER_TARGET_MS
        if (alone := low(f"filter_{key}_compute_s")) is not None:
            row.compared.append({"name": "the filter alone (FilterPlan.select, no UI)", "value": alone * 1000,
                                 "unit": "ms"})
        row.note = (f"{first.get(f'filter_{key}_shown', 0):,} rows kept; in the app: set_filter until the result "
                    f"is shown (thread worker included); {of}")
        out.append(row)
    others = [k for k in filters if k not in LOG_FILTER_ROWS and low(f"filter_{k}_s") is not None]
    if others and out[-1].value is not None:
        out[-1].note += "; also measured: " + ", ".join(
            f"{k} {filters[k]!r} {low(f'filter_{k}_s') * 1000:,.0f} ms" for k in others)
    return out


# -- (f): what bench/trace_bench.py's measure() reports -------------------------------------

#: measure()'s keys shown as figures; every other key goes into the last row's note.
TRACE_ON, TRACE_OFF, TRACE_BPE, TRACE_REPLAY = ("exits_per_s_recording_on", "exits_per_s_recording_off",
                                                "bytes_per_exit", "replay_exits_per_s")
_TRACE_SHOWN = {TRACE_ON, TRACE_OFF, TRACE_BPE, TRACE_REPLAY, "recording_on_off_ratio", "trace_bytes",
                "replay_registers_per_s", "replay_open_s", "exits", "rounds", "called_with",
                "recording_cost_us_per_exit", "maxrss_kib", "wall", "rerun_exits_per_s", "rerun_to_last_s"}


def _trace_rows(samples: dict[str, list[dict[str, Any]]]) -> list[Row]:
    title = "trace bytes per exit / replay speed"
    if "trace" not in samples:
        state = trace_bench_state()
        return [Row("f", title, text=f"not built yet ({state})" if state else
                    "not run: bench/trace_bench.py got its measure() after this run had begun")]
    runs = samples["trace"]
    valid = _valid(runs)
    if not valid:
        return [Row("f", title, text=_problem(runs))]
    r = valid[0]  # one child; it alternates recording off / on itself and keeps the best of each
    num = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    exits = num.get("exits")
    of = (f"bench/trace_bench.py measure({', '.join(f'{k}={v}' for k, v in r.get('called_with', {}).items())}): "
          f"bench_out.img, {exits:,} exits, recording off and on alternating, best of {r.get('rounds', '?')} each")
    out: list[Row] = []
    if TRACE_ON in num:
        row = Row("f", "exits/s with recording on (TraceWriter, bench_out.img)", value=num[TRACE_ON],
                  unit="exits/s", target=f"≥ {EXIT_TARGET:,} exits/s", met=num[TRACE_ON] >= EXIT_TARGET,
                  note=of + (f"; recording adds {num['recording_cost_us_per_exit']:.2f} µs per exit"
                             if "recording_cost_us_per_exit" in num else "") + "; TraceWriter.close() included")
        if TRACE_OFF in num:
            row.compared.append({"name": "recording off", "value": num[TRACE_OFF], "unit": "exits/s"})
            row.ratio.append({"name": "on / off", "value": num[TRACE_ON] / num[TRACE_OFF]})
        out.append(row)
    if TRACE_BPE in num:
        row = Row("f", "trace bytes per exit (the trace file over its exits)", value=num[TRACE_BPE],
                  unit="B/exit", target=f"≤ {TRACE_BYTES_TARGET} bytes", met=num[TRACE_BPE] <= TRACE_BYTES_TARGET)
        if "trace_bytes" in num:
            row.compared.append({"name": "the trace file", "value": num["trace_bytes"] / 1e6, "unit": "MB"})
        row.note = f"{exits:,} exits of bench_out.img (OUT 0x80), the file after TraceWriter.close()"
        out.append(row)
    if TRACE_REPLAY in num:
        row = Row("f", "replay speed: open the trace, read every exit", value=num[TRACE_REPLAY], unit="exits/s")
        if "replay_registers_per_s" in num:
            row.compared.append({"name": "every exit's registers (keyframes + deltas)",
                                 "value": num["replay_registers_per_s"], "unit": "exits/s"})
        row.note = (f"{exits:,} exits" + (f", {num['replay_open_s']:.2f} s" if "replay_open_s" in num else "")
                    + "; reading, not re-running the guest")
        out.append(row)
    if "rerun_exits_per_s" in num:
        out.append(Row("f", "replay re-run to the last exit (memory, page tables, VMCS / VMCB there)",
                       value=num["rerun_exits_per_s"], unit="exits/s",
                       note=f"{exits:,} exits re-run and checked against the trace in "
                            f"{num.get('rerun_to_last_s', 0):.2f} s: what a backward move from the end costs"))
    rest = {k: v for k, v in r.items() if k not in _TRACE_SHOWN}
    shown = "; ".join(f"{k} = {_show(v)}" for k, v in sorted(rest.items()))
    if not out:
        out.append(Row("f", title, text="measured: see the note", note=f"{of}: {shown}"))
    elif shown:
        out[-1].note += f"; it also reports: {shown}"
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def status(job: Job, result: dict[str, Any]) -> str:
    """One line of progress for a finished sample (the runner prints it)."""
    if result.get("invalid") or result.get("skipped"):
        return str(result.get("invalid") or result["skipped"])
    if job.workload == "tui":
        return f"first full frame at {result['elapsed']:.3f} s, quit in {result.get('quit_s', 0):.2f} s"
    if job.workload == "pyimport":
        return f"{result['elapsed']:.3f} s"
    if job.workload == "exit_log":
        return (f"first frame {result.get('first_frame_s', 0) * 1000:.0f} ms, End "
                f"{result.get('scroll_to_end_s', 0) * 1000:.0f} ms, filters "
                + ", ".join(f"{k} {result.get(f'filter_{k}_s', 0) * 1000:.0f} ms" for k in result.get("filters", {})))
    if job.workload == "trace" and TRACE_ON in result:
        return (f"recording on {result[TRACE_ON]:,.0f} exits/s, off {result.get(TRACE_OFF, 0):,.0f} exits/s, "
                f"{result.get(TRACE_BPE, 0):.1f} bytes per exit, replay {result.get(TRACE_REPLAY, 0):,.0f} exits/s")
    if "elapsed" in result:
        return f"{result['elapsed']:.3f} s in the guest"
    return "ok"
