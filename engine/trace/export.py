"""Exporting a trace: Chrome / Perfetto Trace Event Format, CSV, JSON.

- `chrome`: a JSON object with `traceEvents`: one process (the guest), one thread
  (track) per vCPU named "vCPU n". Each exit is an event named after its reason,
  `cat` "exit", with `args` holding the exit's fields and decoded qualification.
  In traces recorded now (`time_per_exit` 0: virtual time counts guest
  instructions and an exit takes none of it) an exit is an instant event
  ("ph": "i", thread scope) at its time, and the guest's time before it, since
  the previous exit of any vCPU (one clock, the vCPUs take turns), is a complete
  event ("ph": "X") named "guest" on the exiting vCPU's track (omitted when
  empty). In older traces (`time_per_exit` 1000) an exit is a complete event
  lasting the VMM's `time_per_exit` ticks, and "guest" spans the time between
  two exits of the same vCPU. One unit of virtual time (a guest instruction, or
  an old tick) is shown as a nanosecond (`ts` and `dur` are in microseconds, so
  a unit is 0.001). In traces with measured VMM times (`exits.vmm_ns`) an exit is
  a complete event lasting the host nanoseconds the VMM spent on it (`args`
  `vmm_ns`; one not measured stays an instant), and every event after it moves
  on by that much: the axis is guest instructions plus the VMM's measured time,
  so nothing overlaps; `args` `time` keeps each exit's virtual time. Opens in
  https://ui.perfetto.dev and chrome://tracing.
- `csv`: one row per exit: seq, vcpu, time, reason, name, rip, length, info1,
  info2, aux1, aux2 (decimal) and the decoded qualification as compact JSON;
  with registers, one column per register after them (reg_rip, reg_rflags, ...).
- `json`: {"meta": ..., "exits": [...], "serial": "...", "inputs": [...]}, each
  exit as in `vmmtui run --json` plus info1, info2, aux1, aux2 (and registers).

Everything is written as it is produced, so a million exits need no more memory
than the trace's columns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from .format import TraceError
from .reader import Trace

FORMATS = ("chrome", "csv", "json")
_PID = 1


def _decoder(trace: Trace) -> Callable[[tuple[int, int, int, int, int]], tuple[str, dict[str, Any]]]:
    """decode((reason, info1, info2, aux1, aux2)), memoised per distinct encoding."""
    decode = trace.hw.decode
    memo: dict[tuple[int, int, int, int, int], tuple[str, dict[str, Any]]] = {}

    def get(key: tuple[int, int, int, int, int]) -> tuple[str, dict[str, Any]]:
        hit = memo.get(key)
        if hit is None:
            if len(memo) > 65536:
                memo.clear()
            hit = memo[key] = decode(*key)
        return hit

    return get


def _rows(trace: Trace) -> Iterator[tuple[int, int, int, int, int, int, int, int, int, int, str, dict[str, Any]]]:
    """(seq, vcpu, time, reason, rip, length, info1, info2, aux1, aux2, name, qualification) per exit."""
    e = trace.exits
    decode = _decoder(trace)
    for seq, (vcpu, t, reason, rip, length, info1, info2, aux1, aux2) in enumerate(
            zip(e.vcpu, e.time, e.reason, e.rip, e.length, e.info1, e.info2, e.aux1, e.aux2)):
        name, q = decode((reason, info1, info2, aux1, aux2))
        yield seq, vcpu, t, reason, rip, length, info1, info2, aux1, aux2, name, q


def _registers(trace: Trace) -> Iterator[tuple[int, ...]]:
    """The register tuple of every exit, in seq order."""
    pending: dict[int, tuple[int, ...]] = {}
    seq = 0
    for _vcpu, seqs, tuples in trace.register_chunks():
        pending.update(zip(seqs, tuples))
        while seq in pending:
            yield pending.pop(seq)
            seq += 1
    if seq != len(trace):
        raise TraceError(f"{trace.path}: damaged trace: registers stop at exit {seq}")


def _json_value(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def export_chrome(trace: Trace, out: IO[str]) -> int:
    """Trace Event Format; returns the number of events written."""
    tpe = trace.time_per_exit
    unit = "virtual tick" if tpe else "guest instruction"
    costs = None if tpe else trace.vmm_ns()
    scale = f"1 {unit} shown as 1 ns"
    if costs is not None:
        scale += "; an exit lasts the VMM's measured host time (wall-clock ns), which shifts what follows"
    image = str(trace.meta.get("image_path", "guest")).rsplit("/", 1)[-1]
    meta_events = [
        {"name": "process_name", "ph": "M", "pid": _PID, "tid": 0,
         "args": {"name": f"{image} ({trace.vendor}, {trace.meta.get('structure', '')})"}},
    ]
    for v in range(trace.vcpus):
        meta_events.append({"name": "thread_name", "ph": "M", "pid": _PID, "tid": v, "args": {"name": f"vCPU {v}"}})
        meta_events.append({"name": "thread_sort_index", "ph": "M", "pid": _PID, "tid": v, "args": {"sort_index": v}})
    out.write('{"displayTimeUnit": "ns", "otherData": ')
    json.dump({"generator": "vmmtui export", "trace": str(trace.path), "vendor": trace.vendor,
               "time_unit": scale, "image_sha256": trace.meta.get("image_sha256"),
               "format_version": trace.meta.get("format_version")}, out, default=str)
    out.write(',\n"traceEvents": [\n')
    count = 0
    first = True

    def emit(event: dict[str, Any]) -> None:
        nonlocal first, count
        if not first:
            out.write(",\n")
        first = False
        out.write(json.dumps(event, separators=(",", ":")))
        count += 1

    for event in meta_events:
        emit(event)
    end: dict[int, int] = {}  # old traces: the end of each vCPU's previous exit
    last = 0  # time_per_exit 0: the time of the previous exit of any vCPU
    shift = 0  # the measured VMM nanoseconds of the exits so far: what follows moves on by them
    for seq, vcpu, t, reason, rip, length, info1, info2, aux1, aux2, name, q in _rows(trace):
        start = t - tpe
        prev = end.get(vcpu, 0) if tpe else last
        if start > prev:
            emit({"name": "guest", "cat": "guest", "ph": "X", "pid": _PID, "tid": vcpu, "ts": (prev + shift) / 1000,
                  "dur": (start - prev) / 1000})
        args = {"seq": seq, "time": t, "reason": reason, "rip": f"{rip:#x}", "length": length,
                "info1": f"{info1:#x}", "info2": f"{info2:#x}", "aux1": f"{aux1:#x}", "aux2": f"{aux2:#x}"}
        args.update({k: _json_value(v) for k, v in q.items()})
        event: dict[str, Any] = {"name": name, "cat": "exit", "pid": _PID, "tid": vcpu, "ts": (start + shift) / 1000}
        ns = costs[seq] if costs is not None else 0
        if tpe:
            event.update(ph="X", dur=tpe / 1000)
        elif ns:  # the VMM's measured host time
            event.update(ph="X", dur=ns / 1000)
            args["vmm_ns"] = ns
        else:  # an exit takes no virtual time: a point on the vCPU's track
            event.update(ph="i", s="t")
        event["args"] = args
        emit(event)
        end[vcpu] = t
        last = max(last, t)
        shift += ns
    out.write("\n]}\n")
    return count


def export_csv(trace: Trace, out: IO[str], registers: bool = False) -> int:
    """One row per exit; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    header = ["seq", "vcpu", "time", "reason", "name", "rip", "length", "info1", "info2", "aux1", "aux2",
              "qualification"]
    regs_iter = _registers(trace) if registers else None
    writer.writerow(header + ([f"reg_{name}" for name in trace.register_names] if registers else []))
    n = 0
    for seq, vcpu, t, reason, rip, length, info1, info2, aux1, aux2, name, q in _rows(trace):
        row = [seq, vcpu, t, reason, name, rip, length, info1, info2, aux1, aux2,
               json.dumps({k: _json_value(v) for k, v in q.items()}, separators=(",", ":"))]
        if regs_iter is not None:
            row += list(next(regs_iter))
        writer.writerow(row)
        n += 1
    return n


def export_json(trace: Trace, out: IO[str], registers: bool = False) -> int:
    """The meta, every exit, the console output and the inputs; returns the number of exits."""
    meta = dict(trace.meta)
    for key in ("controls", "hw_controls", "exit_options", "registers", "vmm_log"):
        if key in meta:
            meta[key] = trace.json_meta(key)
    out.write('{"meta": ')
    json.dump(meta, out, default=str)
    out.write(',\n"exits": [\n')
    regs_iter = _registers(trace) if registers else None
    names = trace.register_names
    n = 0
    for seq, vcpu, t, reason, rip, length, info1, info2, aux1, aux2, name, q in _rows(trace):
        e = {"seq": seq, "vcpu": vcpu, "time": t, "reason": reason, "name": name, "rip": rip, "length": length,
             "info1": info1, "info2": info2, "aux1": aux1, "aux2": aux2,
             "qualification": {k: _json_value(v) for k, v in q.items()}}
        if regs_iter is not None:
            e["registers"] = dict(zip(names, next(regs_iter)))
        out.write(("" if n == 0 else ",\n") + json.dumps(e, separators=(",", ":")))
        n += 1
    out.write("\n],\n")
    out.write('"serial": ' + json.dumps(trace.serial().decode("utf-8", errors="replace")) + ",\n")
    out.write('"inputs": ' + json.dumps([{"time": t, "kind": k, "data": d.decode("utf-8", errors="replace")}
                                         for t, k, d in trace.inputs()]) + "}\n")
    return n


def export(trace: Trace, fmt: str, out: IO[str], registers: bool = False) -> int:
    """Write `trace` to `out` in `fmt` (one of FORMATS); returns events / rows / exits written."""
    if fmt == "chrome":
        return export_chrome(trace, out)
    if fmt == "csv":
        return export_csv(trace, out, registers)
    if fmt == "json":
        return export_json(trace, out, registers)
    raise TraceError(f"unknown export format {fmt!r} (chrome, csv or json)")
