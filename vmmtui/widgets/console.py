"""The serial console pane: the guest's output; keys typed here go to the UART."""

from __future__ import annotations

from textual import events

from ..session import Session
from ..views.console import console_view
from .pane import Pane


class ConsolePane(Pane):
    """What the guest printed; focus it and type to send input to the guest."""

    TITLE = "console"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session: Session | None = None

    def render_view(self, session: Session):  # noqa: ANN201
        self.session = session
        view = console_view(session, lines=max(self.size.height, 10))
        self.scroll_end(animate=False)
        return view

    def on_key(self, event: events.Key) -> None:
        if self.session is None or event.character is None or event.key in ("colon", "escape", "tab"):
            return
        data = b"\n" if event.key == "enter" else event.character.encode("utf-8", errors="ignore")
        if data:
            self.session.machine.send_serial(data)
            event.stop()
