"""The vCPU schedule: one lane per vCPU on a shared virtual-time axis.

Each column of a lane covers a span of virtual time and is drawn by what the vCPU
did in it: guest running in one of its turns (─), the VMM handling exits (▁▄█,
coloured by the kind of the exit; taller for more exits in the column), not
running (blank: another vCPU's turn, halted, waiting for a SIPI), finished (·).
Turns come from the scheduler's slices (the trace's, in a replay); exits are
found by bisecting the exit log's time column, so a million exits cost nothing
to draw.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from rich.console import Group
from rich.text import Text

from ..session import Session

KIND_STYLES = (
    (("IO_INSTRUCTION", "IOIO"), "blue"),
    (("EPT_VIOLATION", "NPF", "EPT_MISCONFIG"), "magenta"),
    (("MSR_READ", "MSR_WRITE", "MSR"), "yellow"),
    (("CPUID",), "cyan"),
    (("HLT",), "bright_black"),
)


_DENSITY = "▁▂▃▄▅▆▇█"  # 1, 2, ... 8 or more exits in one column


def kind_style(name: str) -> str:
    """The colour of an exit kind, shared with the exit log."""
    for names, style in KIND_STYLES:
        if name in names:
            return style
    if name.startswith(("CR_", "READ_CR", "WRITE_CR")):
        return "green"
    if name.startswith("EXC") or name in ("TRIPLE_FAULT", "SHUTDOWN"):
        return "red"
    return "white"


def time_span(session: Session) -> tuple[int, int]:
    """The whole run so far, in virtual time."""
    end = max(session.machine.time, 1)
    return 0, end + max(end // 20, 10)  # a margin, so the last exit shows


def turns(machine: Any) -> dict[int, tuple[list[int], list[int]]] | None:
    """Per vCPU, the (starts, ends) of its turns in time order; None if unknown."""
    if hasattr(machine, "sched"):
        slices = [(s.vcpu, s.start, s.end) for s in machine.sched.slices]
    elif hasattr(machine, "trace"):
        slices = [(v, a, b) for v, a, b, *_ in machine.trace.schedule()]
    else:
        return None
    if not slices:
        return None
    out: dict[int, tuple[list[int], list[int]]] = {}
    for v, a, b in slices:
        starts, ends = out.setdefault(v, ([], []))
        starts.append(a)
        ends.append(b)
    return out


def _running(lanes: dict[int, tuple[list[int], list[int]]] | None, vcpu: int, a: int, b: int) -> bool:
    """Whether one of the vCPU's turns overlaps [a, b)."""
    if lanes is None:
        return True
    starts, ends = lanes.get(vcpu, ([], []))
    i = bisect_right(starts, max(a, b - 1)) - 1  # the last turn starting in or before the column
    return i >= 0 and ends[i] > a or (i >= 0 and starts[i] >= a)


def schedule_view(session: Session, start: int, end: int, width: int) -> Group:
    """Lanes for every vCPU over virtual time [start, end) in `width` columns."""
    m = session.machine
    log = m.exits
    times = log.time
    width = max(width, 10)
    end = max(end, start + width)
    step = (end - start) / width
    finished = m.stop is not None
    slices = turns(m)
    lanes = []
    axis = Text(f"{'':8}{start:<{width // 2}}{end:>{width - width // 2}}", style="dim")
    for vcpu in range(m.config.vcpus):
        lane = Text(f"vCPU {vcpu:<3}", style="bold")
        for col in range(width):
            a = int(start + col * step)
            b = int(start + (col + 1) * step)
            lo, hi = bisect_left(times, a), bisect_left(times, b)
            seqs = [s for s in range(lo, min(hi, lo + 64)) if log.vcpu[s] == vcpu]
            if seqs:
                n = hi - lo
                glyph = _DENSITY[min(n, len(_DENSITY)) - 1]
                lane.append(glyph, style=kind_style(log.name(seqs[0])))
            elif finished and a >= m.time:
                lane.append("·", style="bright_black")
            elif a > m.time or not _running(slices, vcpu, a, b):
                lane.append(" ")
            else:
                lane.append("─", style="green")
        lanes.append(lane)
    legend = Text("─ guest (its turns)  ▁▄█ exits (VMM), more is taller  · finished   ", style="dim")
    for label, style in (("io", "blue"), ("ept/npf", "magenta"), ("msr", "yellow"), ("cpuid", "cyan"),
                         ("cr", "green"), ("exc", "red")):
        legend.append("■", style=style)
        legend.append(f"{label} ", style="dim")
    return Group(axis, *lanes, legend)
