"""The serial console pane: the guest's output; press i to type to the guest (esc stops)."""

from __future__ import annotations

from textual import events
from textual.binding import Binding

from ..session import Session
from ..views.console import console_view
from .pane import Pane


class ConsolePane(Pane):
    """What the guest printed. With `i`, keys typed here go to the UART until escape."""

    TITLE = "console"
    BINDINGS = [Binding("i", "typing(True)", "type to the guest", id="console-type")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session: Session | None = None
        self.typing = False

    def render_view(self, session: Session):  # noqa: ANN201
        self.session = session
        view = console_view(session, lines=max(self.size.height, 10))
        self.scroll_end(animate=False)
        return view

    def action_typing(self, on: bool) -> None:
        self.typing = on
        self.border_title = "console — typing to the guest (esc stops)" if on else self.TITLE

    def on_blur(self) -> None:
        self.action_typing(False)

    def on_key(self, event: events.Key) -> None:
        if not self.typing or self.session is None:
            return
        if event.key == "escape":
            self.action_typing(False)
        elif event.key == "enter":
            self.session.machine.send_serial(b"\n")
        elif event.character is not None and event.is_printable:
            self.session.machine.send_serial(event.character.encode("utf-8", errors="ignore"))
        else:
            return
        event.stop()
        event.prevent_default()
