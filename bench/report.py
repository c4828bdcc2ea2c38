"""The bench's table (Rich), from the results dict that bench/results.json holds.

    python -m bench.report [bench/results.json]    # print a saved run again
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

RESULTS = Path(__file__).resolve().parent / "results.json"


def console() -> Console:
    """A console that is wide enough for the table even when not writing to a terminal."""
    c = Console()
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(width=160)
    return c


def _number(value: float, unit: str) -> str:
    if unit == "MIPS":
        return f"{value:,.0f} MIPS"
    if unit == "exits/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "s":
        return f"{value:,.3f} s"
    if unit == "ms":
        return f"{value:,.0f} ms" if value >= 100 else f"{value:,.1f} ms"
    if unit == "B/exit":
        return f"{value:,.1f} B/exit"
    if unit == "x":
        return f"{value:,.2f}x"
    return f"{value:,.3g} {unit}"


def _measured(row: dict[str, Any]) -> Text:
    if row.get("value") is None:
        text = row.get("text") or "—"
        if text.startswith("measured"):  # a figure whose value is in the note
            return Text(text)
        style = "dim" if text.startswith("not built") else ("yellow" if text.startswith(("skipped", "KVM")) else "red")
        return Text(text, style=style)
    return Text(_number(row["value"], row["unit"]), style="bold")


def _compared(row: dict[str, Any]) -> str:
    lines = []
    for c in row.get("compared", []):
        if "value" in c:
            lines.append(f"{c['name']}: {_number(c['value'], c['unit'])}")
        else:
            lines.append(f"{c['name']}: {c['text']}")
    return "\n".join(lines)


def _ratio(row: dict[str, Any]) -> str:
    ratios = row.get("ratio", [])
    if len(ratios) == 1:
        return f"{ratios[0]['value']:.3f}x"
    return "\n".join(f"{r['name']}: {r['value']:.3f}x" for r in ratios)


def _met(row: dict[str, Any]) -> Text:
    if row.get("met") is None:
        return Text("")
    return Text("✓", style="bold green") if row["met"] else Text("✗", style="bold red")


def table(results: dict[str, Any]) -> Table:
    t = Table(title=f"vmmtui bench ({results['mode']}), {results['date']}", show_lines=True, expand=False)
    t.add_column("#", justify="center", no_wrap=True)
    t.add_column("figure", ratio=4)
    t.add_column("measured", justify="right", min_width=12, ratio=2)
    t.add_column("compared with", ratio=4)
    t.add_column("ratio", justify="right", ratio=2)
    t.add_column("target", ratio=2)
    t.add_column("", justify="center", no_wrap=True)
    t.add_column("note", ratio=5, style="dim")
    for row in results["rows"]:
        t.add_row(f"({row['id']})", row["figure"], _measured(row), _compared(row), _ratio(row),
                  row.get("target") or "", _met(row), row.get("note", ""))
    return t


def render(results: dict[str, Any], out: Console | None = None) -> None:
    out = out or console()
    m = results["machine"]
    out.print(f"[bold]machine[/]: {m['cpu']} ({m['cpus']} CPUs), Linux {m['kernel']}, "
              f"Python {m['python']}, unicorn {m['unicorn']}, KVM: {m['kvm']}, "
              f"load average at start {m['loadavg']}")
    if "engine" in results:
        e = results["engine"]
        out.print(f"[bold]engine[/]: sources sha256 {e['sha256']}, last changed {e['newest_change']}", highlight=False)
    out.print(table(results))
    for line in results.get("footnotes", []):
        out.print(line, highlight=False)
    out.print(f"took {results['duration_s']:.0f} s; results in {results.get('written_to', RESULTS)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else RESULTS
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"bench.report: cannot read {path}: {e}", file=sys.stderr)
        return 1
    render(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
