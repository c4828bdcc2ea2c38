"""The serial console: what the guest wrote to the UART (and the VMM's hypercall prints)."""

from __future__ import annotations

from rich.text import Text

from ..session import Session


def console_view(session: Session, lines: int = 200) -> Text:
    """The last `lines` lines of the guest's console output."""
    text = session.machine.serial.decode("utf-8", errors="replace")
    tail = "\n".join(text.splitlines()[-lines:])
    if not text:
        return Text("(no output yet)", style="dim")
    return Text(tail + ("\n" if text.endswith("\n") else ""))
