"""Exit traces: recording cost, bytes per exit, replay speed, and the overhead
model's constants (docs/trace-format.md, "Performance" and "Statistics").

    python bench/trace_bench.py              # 1,000,000 exits, text
    python bench/trace_bench.py --quick      # 100,000 exits
    python bench/trace_bench.py --json       # the dict measure() returns
    python bench/trace_bench.py --verify     # also time `replay --verify` of the big trace

Standalone: it needs the engine only (run it from the repository root). The
bench runner (`python -m bench`, figure (f)) calls `measure()` in a child process.

What is measured, all in one process and one run (the machine is shared and
noisy: compare figures from the same run, not across runs):

- exits/s of guests/bench_out.img (its loop count patched at image offset
  0x1F8: N x OUT 0x80 + OUT 0xF4) with recording off and on, alternating, best
  of `rounds`; `machine.run()` only (not building the machine), and for the
  recording side including `TraceWriter.close()`;
- the trace's size on disk over its exits;
- replay (read) speed: opening the trace and reading every exit as columns,
  then decoding every exit's registers from keyframes and deltas;
- the replay's re-run (engine/trace/rerun.py): the guest re-run from launch to
  the trace's last exit, checked against it, for the memory / page-table /
  VMCS panes there (what a backward move from the end costs);
- the overhead model's costs on this engine, each as the median over fresh
  machines of (run with the exits) - (the same run without them), per exit:
  an I/O exit (the bench_out loop: OUT to a port with no device, the bare
  guest -> VMM -> guest round trip), an EPT violation (first touch of 200
  2 MiB pieces; and of 200 4 KiB pages with --page-size 4K), an
  exception exit (UD2 with the #UD intercept on, the one interrupt-related exit
  the engine can take: it delivers no interrupts yet; measured against an I/O
  exit at the same point of a fresh run, so it is the extra cost), and a VM entry
  through Unicorn (a debugger stop and resume: `run_to_exit` over bench_out
  minus the in-hook exit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import MachineConfig  # noqa: E402
from engine.loader import load  # noqa: E402
from engine.machine import Machine  # noqa: E402
from engine.trace import TraceWriter, open_trace  # noqa: E402
from engine.trace.rerun import Rerun  # noqa: E402

COUNT_OFFSET = 0x1F8
BUILT_COUNT = 1_000_000


def bench_out(directory: Path, count: int) -> Path:
    """guests/bench_out.img with its loop count set to `count`."""
    data = bytearray((ROOT / "guests" / "bench_out.img").read_bytes())
    built = struct.unpack_from("<I", data, COUNT_OFFSET)[0]
    if built != BUILT_COUNT:
        raise SystemExit(f"bench_out.img: the dword at {COUNT_OFFSET:#x} is {built}, not {BUILT_COUNT}: "
                         "has its layout changed? (guests/README.md, 'Bench guests')")
    struct.pack_into("<I", data, COUNT_OFFSET, count)
    path = directory / f"bench_out_{count}.img"
    path.write_bytes(bytes(data))
    return path


def _boot_sector(code: bytes) -> bytes:
    return code.ljust(510, b"\0") + b"\x55\xaa"


def touch_guest(count: int, stride: int, start: int = 0x200000) -> bytes:
    """A boot sector that enters 32-bit protected mode and writes one byte every
    `stride` bytes from `start`, `count` times, then OUT 0xF4 (status 0).
    With stride 0 it writes the same byte every time: the same instructions,
    one first touch."""
    code = bytearray(b"\xfa")  # cli
    code += b"\x0f\x01\x16\0\0"  # lgdt [gdtr]
    lgdt = len(code) - 2
    code += b"\x0f\x20\xc0" b"\x0c\x01" b"\x0f\x22\xc0"  # mov eax,cr0; or al,1; mov cr0,eax
    code += b"\x66\xea\0\0\0\0\x08\x00"  # jmp dword 0x08:pm32
    struct.pack_into("<I", code, len(code) - 6, 0x7C00 + len(code))
    code += b"\x66\xb8\x10\x00" b"\x8e\xd8" b"\x8e\xc0" b"\x8e\xd0"  # ds = es = ss = 0x10
    code += b"\xb9" + struct.pack("<I", count) + b"\xbb" + struct.pack("<I", start)  # ecx, ebx
    loop = len(code)
    code += b"\x88\x03" b"\x81\xc3" + struct.pack("<I", stride) + b"\x49"  # mov [ebx],al; add ebx,s; dec ecx
    code += b"\x75" + bytes([(loop - len(code) - 2) & 0xFF])  # jnz loop
    code += b"\xb0\x00\xe6\xf4\xf4"  # mov al,0; out 0xf4,al; hlt
    while len(code) % 8:
        code += b"\x90"
    gdt = 0x7C00 + len(code)
    code += struct.pack("<QQQ", 0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF)
    struct.pack_into("<H", code, lgdt, 0x7C00 + len(code))
    code += struct.pack("<HI", 23, gdt)
    return _boot_sector(bytes(code))


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _timed_run(image: Path, config: MachineConfig, expect_exits: int | None = None,
               trace: Path | None = None) -> tuple[float, Machine]:
    machine = Machine(config)
    loaded = load(machine, image)
    writer = TraceWriter(trace, machine, loaded, force=True) if trace is not None else None
    started = time.perf_counter()
    stop = machine.run()
    if writer is not None:
        writer.close(stop, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    if stop.reason.value != "debug-exit" or stop.status != 0:
        raise RuntimeError(f"{image.name}: stopped with {stop.reason.value} ({stop.message})")
    if expect_exits is not None and len(machine.exits) != expect_exits:
        raise RuntimeError(f"{image.name}: {len(machine.exits)} exits, expected {expect_exits}")
    return elapsed, machine


class _Enough(Exception):
    """Raised by a listener to end a run at once."""


def _second_exit_gap(image: Path, config: MachineConfig, name: str) -> float:
    """Seconds between the first and the second exit's listener calls (the run ends there)."""
    machine = Machine(config)
    load(machine, image)
    times: list[float] = []

    def listener(seq: int, vcpu: int, regs: tuple[int, ...]) -> None:
        times.append(time.perf_counter())
        if seq == 1:
            raise _Enough

    machine.on_exit(listener)
    try:
        machine.run()
    except _Enough:
        pass
    if len(times) != 2 or machine.exits.name(1) != name:
        raise RuntimeError(f"{image.name}: expected a second exit {name}, got {dict(machine.exits.counts())}")
    return times[1] - times[0]


def _median_difference(a: list[float], b: list[float]) -> float:
    return statistics.median(a) - statistics.median(b)


def measure_costs(directory: Path, samples: int = 7, out_count: int = 200_000) -> dict[str, float]:
    """Wall-clock microseconds per exit kind on this engine (see the module docstring)."""
    out: dict[str, float] = {}
    # I/O exit: bench_out, N OUT exits, vs the same image with N = 1.
    big, one = bench_out(directory, out_count), bench_out(directory, 1)
    t_big = [_timed_run(big, MachineConfig(), out_count + 1)[0] for _ in range(3)]
    t_one = [_timed_run(one, MachineConfig(), 2)[0] for _ in range(samples)]
    out["io_exit_us"] = (min(t_big) - statistics.median(t_one)) / (out_count - 1) * 1e6
    # EPT violations: 200 first touches vs one.
    n = 200
    for label, stride, page, mem in (("ept_2m_exit_us", 0x20_0000, 2 << 20, 1 << 30),
                                     ("ept_4k_exit_us", 0x1000, 4 << 10, 64 << 20)):
        touching = _write(directory, f"touch_{label}.img", touch_guest(n, stride))
        same = _write(directory, f"same_{label}.img", touch_guest(n, 0))
        cfg = MachineConfig(mem_size=mem, page_size=page)
        a = [_timed_run(touching, cfg, n + 2)[0] for _ in range(samples)]
        b = [_timed_run(same, cfg, 3)[0] for _ in range(samples)]
        out[label] = _median_difference(a, b) / (n - 1) * 1e6
    # An exception exit (#UD intercepted) vs an I/O exit, each the second exit of a fresh
    # machine after an OUT 0x80, timed between the two exits' listeners. (An exception
    # exit ends the run, as the engine delivers no exceptions yet, so it cannot be repeated
    # in one run; timing stops at the listener because the engine's stop after a #UD is slow.)
    ud = _write(directory, "ud.img", _boot_sector(bytes.fromhex("b000" "e680" "0f0b")))  # out 0x80; ud2
    io = _write(directory, "io.img", _boot_sector(bytes.fromhex("b000" "b90200" "e680" "e2fc")))  # 2x out 0x80
    a, b = [], []
    for _ in range(samples * 20):
        a.append(_second_exit_gap(ud, MachineConfig(exits=["ud=on"]), "EXCEPTION_NMI"))
        b.append(_second_exit_gap(io, MachineConfig(), "IO_INSTRUCTION"))
    out["exception_exit_extra_us"] = _median_difference(a, b) * 1e6
    # A VM entry through Unicorn: run_to_exit over bench_out (a stop and an emu_start per exit).
    k = 20_000
    m = Machine(MachineConfig())
    load(m, big)
    t = time.perf_counter()
    for _ in range(k):
        m.run_to_exit()
    per_stop = (time.perf_counter() - t) / k * 1e6
    out["vm_entry_us"] = per_stop - out["io_exit_us"]
    out["run_to_exit_us"] = per_stop
    # The overhead model's constants (engine/trace/stats.py, CONSTANTS).
    out["c1_us"] = out["ept_2m_exit_us"] - out["io_exit_us"]
    out["c2_us"] = out["exception_exit_extra_us"]
    out["c3_us"] = out["io_exit_us"]
    return out


def measure(count: int = 1_000_000, rounds: int = 2, costs: bool = True, verify: bool = False) -> dict[str, Any]:
    """Every figure, as a JSON-ready dict (what the bench runner records)."""
    result: dict[str, Any] = {"exits": count + 1, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="trace_bench.") as tmp:
        d = Path(tmp)
        image = bench_out(d, count)
        path = d / "bench.vmtrace"
        off, on = [], []
        for _ in range(rounds):  # alternate, so both sides see the same machine weather
            off.append(_timed_run(image, MachineConfig(), count + 1)[0])
            on.append(_timed_run(image, MachineConfig(), count + 1, trace=path)[0])
        result["exits_per_s_recording_off"] = (count + 1) / min(off)
        result["exits_per_s_recording_on"] = (count + 1) / min(on)
        result["recording_on_off_ratio"] = min(off) / min(on)
        result["recording_cost_us_per_exit"] = (min(on) - min(off)) / (count + 1) * 1e6
        size = path.stat().st_size
        result["trace_bytes"] = size
        result["bytes_per_exit"] = size / (count + 1)
        # Replay: open + every exit as columns; then every exit's registers.
        started = time.perf_counter()
        trace = open_trace(path)
        n = len(trace.exits)
        t_exits = time.perf_counter() - started
        started = time.perf_counter()
        regs = sum(len(seqs) for _v, seqs, _t in trace.register_chunks())
        t_regs = time.perf_counter() - started
        if regs != n or n != count + 1:
            raise RuntimeError(f"replay read {n} exits and {regs} register sets, expected {count + 1}")
        result["replay_exits_per_s"] = n / t_exits
        result["replay_registers_per_s"] = n / t_regs
        result["replay_open_s"] = t_exits
        # The replay's re-run for memory / page tables / VMCS at the last exit: the worst case,
        # what a backward move from there costs (engine/trace/rerun.py).
        started = time.perf_counter()
        Rerun(trace).seek(n - 1)
        t_rerun = time.perf_counter() - started
        result["rerun_exits_per_s"] = n / t_rerun
        result["rerun_to_last_s"] = t_rerun
        if verify:
            from engine.trace.verify import verify as verify_trace

            started = time.perf_counter()
            report = verify_trace(trace)
            if not report.identical:
                raise RuntimeError(report.report())
            result["verify_exits_per_s"] = n / (time.perf_counter() - started)
        trace.close()
        if costs:
            result.update(measure_costs(d))
    return result


def _report(r: dict[str, Any]) -> str:
    lines = [
        f"bench_out.img, {r['exits']:,} exits (best of {r['rounds']}):",
        f"  recording off   {r['exits_per_s_recording_off']:>12,.0f} exits/s",
        f"  recording on    {r['exits_per_s_recording_on']:>12,.0f} exits/s  "
        f"({r['recording_on_off_ratio']:.2f}x; +{r['recording_cost_us_per_exit']:.2f} us per exit)",
        f"  trace size      {r['trace_bytes']:>12,} bytes = {r['bytes_per_exit']:.1f} bytes per exit",
        f"  replay read     {r['replay_exits_per_s']:>12,.0f} exits/s (open + every exit as columns: "
        f"{r['replay_open_s']:.2f} s)",
        f"  replay regs     {r['replay_registers_per_s']:>12,.0f} exits/s (registers from keyframes + deltas)",
    ]
    lines.append(f"  replay re-run   {r['rerun_exits_per_s']:>12,.0f} exits/s (memory etc. at the last exit: "
                 f"{r['rerun_to_last_s']:.2f} s)")
    if "verify_exits_per_s" in r:
        lines.append(f"  replay --verify {r['verify_exits_per_s']:>12,.0f} exits/s")
    if "c1_us" in r:
        lines += [
            "costs per exit on this engine (wall clock, medians over fresh machines):",
            f"  I/O exit (OUT, no device)          {r['io_exit_us']:8.2f} us   = c3 (a bare context switch)",
            f"  EPT violation, 2 MiB first touch   {r['ept_2m_exit_us']:8.2f} us   -> c1 = {r['c1_us']:.2f} us",
            f"  EPT violation, 4 KiB first touch   {r['ept_4k_exit_us']:8.2f} us",
            f"  exception exit (#UD), extra        {r['exception_exit_extra_us']:8.2f} us   = c2",
            f"  VM entry through Unicorn (a stop)  {r['vm_entry_us']:8.2f} us   (run_to_exit: "
            f"{r['run_to_exit_us']:.2f} us per exit)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Trace recording / replay figures and the overhead constants.")
    p.add_argument("--quick", action="store_true", help="100,000 exits instead of 1,000,000")
    p.add_argument("--count", type=int, help="bench_out.img loop count (overrides --quick)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds off / on (default 2)")
    p.add_argument("--no-costs", action="store_true", help="skip the per-exit cost measurements")
    p.add_argument("--verify", action="store_true", help="also time replay --verify of the big trace")
    p.add_argument("--json", action="store_true", help="print measure()'s dict as JSON")
    args = p.parse_args(argv)
    count = args.count or (100_000 if args.quick else 1_000_000)
    r = measure(count, rounds=args.rounds, costs=not args.no_costs, verify=args.verify)
    print(json.dumps(r, indent=1) if args.json else _report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
