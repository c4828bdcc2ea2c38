"""`vmmtui GUEST --script FILE`: run debugger commands from a file with no terminal.

Each command is echoed, then what it shows is printed (the same views the panes
use); commands that run the guest print why it stopped. A command that fails
prints its error and the script goes on; the process status is then 1.

`record [FILE]` works as in the TUI; a recording still on when the script ends
(or quits) is closed there, so the trace is complete.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.text import Text

from engine.errors import EngineError

from .commands import LIVE, CommandError, CommandTable, describe_stop
from .session import Session

_UI_ONLY = {"pane", "theme", "pause"}


def run_script(session: Session, lines: Iterable[str], console: Console, table: CommandTable = LIVE) -> int:
    """Run each command line of `table` (the live debugger's, or a replay's); returns 0,
    or 1 if any command failed."""
    status = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        console.print(Text(f"({number}) {line}", style="bold"))
        try:
            outcome = table.execute(session, line)
        except CommandError as e:
            console.print(Text(f"error: {e}", style="red"))
            status = 1
            continue
        if outcome.run is not None:
            stop = outcome.run()
            session.mark_stop(stop)
            console.print(describe_stop(session, stop))
            check = getattr(session, "check_recording", None)
            failure = check() if check is not None else None
            if failure is not None:
                console.print(Text(f"error: {failure}", style="red"))
                status = 1
        if outcome.output is not None:
            console.print(outcome.output)
        elif outcome.ui and outcome.ui[0] in _UI_ONLY:
            console.print(Text(f"({outcome.ui[0]}: nothing to do without a screen)", style="dim"))
        if outcome.ui and outcome.ui[0] == "quit":
            break
    if getattr(session, "recorder", None) is not None:
        try:
            info = session.stop_recording()
        except EngineError as e:
            console.print(Text(f"error: {e}", style="red"))
            return 1
        console.print(Text(f"recording stopped at the end of the script: {info['path']} holds "
                           f"{info['exits']:,} exits", style="bold"))
    return status
