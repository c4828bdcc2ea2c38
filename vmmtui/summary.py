"""The exit summary `vmmtui run` prints on stderr: one row per exit reason."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from engine.machine import Machine, Stop


def print_summary(machine: Machine, stop: Stop, elapsed: float) -> None:
    """Print the run's exits by reason, and why it stopped, on stderr."""
    console = Console(stderr=True)
    log = machine.exits
    total = len(log)
    by_reason: dict[int, int] = {}
    for reason in log.reason:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    structure = machine.hw.structure_name
    label = "exit reason" if machine.vendor == "intel" else "EXITCODE"
    table = Table(title=f"VM exits ({machine.vendor}, {structure})", title_justify="left")
    table.add_column("name")
    table.add_column(label, justify="right")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for reason, count in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        name = machine.hw.decode(reason, 0, 0, 0, 0)[0]
        code = str(reason) if machine.vendor == "intel" else f"{reason:#x}"
        table.add_row(name, code, str(count), f"{100 * count / total:.1f}%")
    table.add_row("[b]total[/b]", "", f"[b]{total}[/b]", "")
    console.print(table)
    rate = f", {total / elapsed:,.0f} exits/s" if elapsed > 0 and total else ""
    status = "" if stop.status is None else f" (status {stop.status})"
    console.print(f"stop: [b]{stop.reason.value}[/b]{status} — {stop.message} — {elapsed * 1000:.1f} ms{rate}")
