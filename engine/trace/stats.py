"""Statistics of a trace, as `perf kvm stat report` gives them for KVM: per exit
reason the count, the share, the time spent in the VMM (min / avg / max) and in
the guest, for all vCPUs and per vCPU; and the overhead model

    overhead = c1 x (address-translation exits) + c2 x (interrupt-related exits)
             + c3 x (context switches)

with constants measured on this engine (bench/trace_bench.py; the figures and
how they were taken are in docs/trace-format.md, "Statistics").

The guest time is the engine's virtual time (README, "Virtual time"):
deterministic, so the same trace gives the same figures on every machine. Traces
recorded now carry `time_per_exit` 0 and their unit is the guest instruction
retired: an exit takes no virtual time, and the guest time before an exit is the
virtual time since the previous exit of any vCPU (they take turns on one host
thread and one clock): the instructions retired in between, plus any stretch the
machine skipped while every vCPU was halted waiting for a timer. The guest times
of all exits add up to the time of the last exit.

The VMM time of those traces is measured instead: the host wall-clock time the
VMM spent handling each exit, which the recorder keeps in the `exits.vmm_ns` column
(0: not measured, left out). The VMM columns show its min / avg / max / total in
microseconds, and say so; the JSON has it as `vmm_host_us` beside `vmm_time` (in
virtual time: 0), with the unit in `vmm_host_unit`. Wall time is not
deterministic: it differs from run to run and from machine to machine. Traces
without `vmm_ns` (recorded before it was measured) show the virtual-time VMM
columns, 0, and `vmm_host_*` is null (the VMM's cost shows in the overhead model
only).

Older traces (no `time_per_exit` meta, read as 1000) charged 1000 ticks to every
exit and counted 1 tick per RDTSC; they are read with that model: an exit's VMM
time is the span [time - time_per_exit, time]; the guest time before an exit is
the span from the end of the previous exit of the same vCPU (or 0) to the start
of this one.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from .reader import Trace

TIME_UNIT = "guest instruction"
TIME_MODEL = "deterministic virtual time: guest instructions retired; an exit takes no virtual time"
OLD_TIME_MODEL = ("deterministic virtual time: each VM exit costs {tpe} ticks in the VMM, each RDTSC without "
                  "an exit 1 tick; guest instructions are not counted")
HOST_UNIT = "host wall-clock microsecond"
HOST_MODEL = ("measured: the host wall-clock time the VMM spent handling each exit (exits.vmm_ns); "
              "not deterministic: it differs from run to run and from machine to machine")

#: Exit names counted as address-translation exits (second-level translation faults).
ADDRESS_TRANSLATION = frozenset({"EPT_VIOLATION", "EPT_MISCONFIG", "NPF"})
#: Exit names counted as interrupt-related (plus every AMD EXCP_n).
INTERRUPT_RELATED = frozenset({
    "EXCEPTION_NMI", "EXTERNAL_INTERRUPT", "INTERRUPT_WINDOW", "NMI_WINDOW", "TPR_BELOW_THRESHOLD",
    "APIC_ACCESS", "EOI_INDUCED", "APIC_WRITE", "VIRTUALIZED_EOI",
    "INTR", "NMI", "VINTR", "IRET", "SWINT",
})


@dataclass(frozen=True)
class OverheadConstants:
    """Wall-clock costs on this engine, in microseconds (see docs/trace-format.md)."""

    c1_us: float  # extra cost of an address-translation exit over a bare switch
    c2_us: float  # extra cost of an interrupt-related exit over a bare switch
    c3_us: float  # one context switch guest -> VMM -> guest (the bare exit round trip)
    source: str


#: Measured with bench/trace_bench.py (`python bench/trace_bench.py --constants`); the
#: docs give the run (machine, date, counts) these come from.
CONSTANTS = OverheadConstants(
    c1_us=50.1, c2_us=46.5, c3_us=4.5,
    source="bench/trace_bench.py, median of 3 runs, 2026-11-25, Unicorn 2.1.4, Python 3.11 "
           "(docs/trace-format.md, Statistics)",
)


def _number(value: Any) -> float | int | None:
    """A meta value that should be a number, or None (absent, or damaged)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_address_translation(name: str) -> bool:
    return name in ADDRESS_TRANSLATION


def is_interrupt_related(name: str) -> bool:
    return name in INTERRUPT_RELATED or name.startswith("EXCP_")


class _Acc:
    """min / max / total of a series of spans."""

    __slots__ = ("count", "total", "min", "max")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value

    def as_json(self, whole: int) -> dict[str, Any]:
        return {"min": self.min or 0, "avg": self.total / self.count if self.count else 0.0, "max": self.max or 0,
                "total": self.total, "share": self.total / whole if whole else 0.0}


def _host_json(acc: _Acc | None, whole: int) -> dict[str, Any]:
    """Measured nanoseconds as microseconds, with how many exits were measured."""
    acc = acc or _Acc()
    figures = acc.as_json(whole)
    return {**{k: figures[k] / 1000 for k in ("min", "avg", "max", "total")}, "share": figures["share"],
            "measured": acc.count}


def _table(reasons: list[int], vcpus: Any, times: Any, tpe: int, names: dict[int, str],
           only_vcpu: int | None, costs: array | None = None) -> dict[str, Any]:
    """Per-reason figures over the exits (of `only_vcpu`, or all).

    `tpe` 0 (format 1): an exit takes no time; the guest time before an exit is the
    virtual time since the previous exit of any vCPU (the vCPUs take turns on one
    clock), so the guest times of all exits add up to the time of the last one.
    `tpe` > 0 (older traces): an exit's VMM time is [time - tpe, time]; the guest
    time before it runs from the end of the same vCPU's previous exit.
    `costs`: the measured host nanoseconds per exit (0: not measured, left out)."""
    vmm: dict[int, _Acc] = {}
    host: dict[int, _Acc] = {}
    guest: dict[int, _Acc] = {}
    counts: dict[int, int] = {}
    end: dict[int, int] = {}  # tpe > 0: the end of each vCPU's previous exit
    last = 0  # tpe 0: the time of the previous exit of any vCPU
    for reason, vcpu, t, ns in zip(reasons, vcpus, times, repeat(0) if costs is None else costs):
        if tpe:
            before = max(0, t - tpe - end.get(vcpu, 0))
            end[vcpu] = t
        else:
            before = max(0, t - last)
            last = t
        if only_vcpu is not None and vcpu != only_vcpu:
            continue
        counts[reason] = counts.get(reason, 0) + 1
        if reason not in vmm:
            vmm[reason], guest[reason] = _Acc(), _Acc()
        vmm[reason].add(tpe)
        guest[reason].add(before)
        if ns:
            host.setdefault(reason, _Acc()).add(ns)
    n = sum(counts.values())
    vmm_total = sum(a.total for a in vmm.values())
    host_total = sum(a.total for a in host.values())
    guest_total = sum(a.total for a in guest.values())
    rows = []
    for reason, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append({"reason": reason, "name": names.get(reason, "?"), "count": count,
                     "share": count / n if n else 0.0,
                     "vmm_time": vmm[reason].as_json(vmm_total),
                     "vmm_host_us": None if costs is None else _host_json(host.get(reason), host_total),
                     "guest_time": guest[reason].as_json(guest_total)})
    return {"exits": n, "vmm_time": vmm_total, "vmm_host_us": None if costs is None else host_total / 1000,
            "guest_time": guest_total, "reasons": rows}


def compute(trace: Trace, constants: OverheadConstants = CONSTANTS) -> dict[str, Any]:
    """Every figure `vmmtui stats` prints, as a JSON-ready dict."""
    exits = trace.exits
    tpe = trace.time_per_exit
    reasons, vcpus, times = exits.reason, exits.vcpu, exits.time
    costs = trace.vmm_ns()
    names = {r: exits.reason_name(r) for r in set(reasons)}
    whole = _table(list(reasons), vcpus, times, tpe, names, None, costs)
    per_vcpu = {str(v): _table(list(reasons), vcpus, times, tpe, names, v, costs) for v in sorted(set(vcpus))}
    translation = sum(r["count"] for r in whole["reasons"] if is_address_translation(r["name"]))
    interrupt = sum(r["count"] for r in whole["reasons"] if is_interrupt_related(r["name"]))
    final = trace.meta.get("stop") in ("debug-exit", "hypercall-exit", "halt", "shutdown", "error")
    switches = max(0, len(exits) - (1 if final and len(exits) else 0))
    overhead = constants.c1_us * translation + constants.c2_us * interrupt + constants.c3_us * switches
    return {
        "trace": str(trace.path),
        "vendor": trace.vendor,
        "vcpus": trace.vcpus,
        "exits": len(exits),
        "complete": trace.complete,
        "stop": trace.meta.get("stop"),
        "stop_status": trace.meta.get("stop_status"),
        "time_unit": TIME_UNIT if tpe == 0 else "virtual tick",
        "time_model": TIME_MODEL if tpe == 0 else OLD_TIME_MODEL.format(tpe=tpe),
        "time_per_exit": tpe,
        "vmm_host_unit": None if costs is None else HOST_UNIT,
        "vmm_host_model": None if costs is None else HOST_MODEL,
        "end_time": _number(trace.meta.get("end_time")) or (times[-1] if len(times) else 0),
        "all": whole,
        "per_vcpu": per_vcpu,
        "overhead_model": {
            "formula": "c1 x address-translation exits + c2 x interrupt-related exits + c3 x context switches",
            "c1_us": constants.c1_us, "c2_us": constants.c2_us, "c3_us": constants.c3_us,
            "address_translation_exits": translation,
            "interrupt_related_exits": interrupt,
            "context_switches": switches,
            "overhead_us": overhead,
            "recorded_wall_s": _number(trace.meta.get("elapsed_s")),
            "constants_source": constants.source,
        },
    }


def _tick(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def _reason_text(reason: int, vendor: str) -> str:
    return str(reason) if vendor == "intel" else f"{reason:#x}"


def _us(v: float) -> str:
    return f"{v:,.2f}"


def _lines(table: dict[str, Any], vendor: str) -> list[str]:
    """One table; the VMM columns in measured host microseconds when the trace has them."""
    label = "reason" if vendor == "intel" else "EXITCODE"
    host = table.get("vmm_host_us") is not None
    key, vmm_label, show, w = ("vmm_host_us", "VMM us min", _us, 11) if host else ("vmm_time", "VMM min", _tick, 8)
    head = (f"  {'exit':<22}{label:>9}{'count':>10}{'share':>8}   "
            f"{vmm_label:>{w}}{'avg':>{w}}{'max':>{w}}{'total':>13}{'share':>8}   "
            f"{'guest min':>9}{'avg':>9}{'max':>9}{'total':>11}{'share':>8}")
    out = [head]
    for r in table["reasons"]:
        v, g = r[key], r["guest_time"]
        out.append(f"  {r['name']:<22}{_reason_text(r['reason'], vendor):>9}{r['count']:>10,}{r['share']:>8.1%}   "
                   f"{show(v['min']):>{w}}{show(v['avg']):>{w}}{show(v['max']):>{w}}{show(v['total']):>13}"
                   f"{v['share']:>8.1%}   "
                   f"{_tick(g['min']):>9}{_tick(g['avg']):>9}{_tick(g['max']):>9}{_tick(g['total']):>11}"
                   f"{g['share']:>8.1%}")
    out.append(f"  {'total':<22}{'':>9}{table['exits']:>10,}{'':>8}   {'':>{3 * w}}{show(table[key]):>13}"
               f"{'':>8}   {'':>27}{_tick(table['guest_time']):>11}")
    return out


def format_report(s: dict[str, Any]) -> str:
    """The statistics as text, in the manner of `perf kvm stat report`."""
    vendor = s["vendor"]
    stop = s["stop"] or "none (the recorder did not close the trace)"
    status = f", status {s['stop_status']}" if s.get("stop_status") is not None else ""
    lines = [
        f"{s['trace']}: {s['exits']:,} VM exits, {vendor}, {s['vcpus']} vCPU{'s' if s['vcpus'] != 1 else ''}, "
        f"stopped: {stop}{status}",
        f"time unit: {s['time_unit']} ({s['time_model']}); the run ended at time {s['end_time']:,}",
        *([f"VMM time unit: {s['vmm_host_unit']} ({s['vmm_host_model']})"] if s.get("vmm_host_unit") else []),
        "",
        "all vCPUs" + (" (= vCPU 0)" if len(s["per_vcpu"]) == 1 else ""),
        *_lines(s["all"], vendor),
    ]
    if len(s["per_vcpu"]) > 1:
        for v, table in s["per_vcpu"].items():
            lines += ["", f"vCPU {v}", *_lines(table, vendor)]
    m = s["overhead_model"]
    wall = f"; the recorded run took {m['recorded_wall_s'] * 1e3:,.1f} ms of wall clock" \
        if m.get("recorded_wall_s") else ""
    lines += [
        "",
        "overhead model (wall-clock microseconds on this engine):",
        "  overhead = c1 x address-translation exits + c2 x interrupt-related exits + c3 x context switches",
        f"           = {m['c1_us']} x {m['address_translation_exits']:,} + {m['c2_us']} x "
        f"{m['interrupt_related_exits']:,} + {m['c3_us']} x {m['context_switches']:,}"
        f" = {m['overhead_us'] / 1e3:,.2f} ms{wall}",
        "  address-translation: EPT_VIOLATION, EPT_MISCONFIG, NPF; interrupt-related: EXCEPTION_NMI, "
        "EXTERNAL_INTERRUPT, interrupt/NMI windows, APIC exits, INTR, NMI, VINTR, EXCP_n;",
        "  context switches: VM exits the guest was resumed from (a guest -> VMM -> guest round trip each)",
        f"  constants: {m['constants_source']}",
    ]
    return "\n".join(lines)
