"""The shape every pane shares: a title, a refresh from the session, errors shown inside.

A pane is a widget that renders the session when the engine stops
(`refresh_from(session)`). What it shows is built by a function in
`vmmtui.views` that returns Rich renderables, so `--script` prints the same thing
without a terminal. A pane whose view raises shows the error in its own area and
the rest of the screen carries on (as gdb-dashboard does).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.errors import EngineError

from ..session import Session


def error_text(what: str, e: Exception) -> Text:
    """What a pane shows instead of `what` when its view raised `e`: a state that will
    pass (a replay still re-running) as a note, a condition the engine explains (a
    replay that cannot rebuild a state) in its own words, anything else as a bug."""
    if getattr(e, "transient", False):
        return Text(str(e), style="italic dim")
    if isinstance(e, EngineError):
        return Text(f"{what} cannot be shown: {e}", style="yellow")
    return Text(f"{what} cannot be shown: {type(e).__name__}: {e}", style="bold red")


class Pane(Static):
    """A pane that renders a view of the session when the engine stops."""

    DEFAULT_CSS = """
    Pane {
        border: round $primary 40%;
        border-title-color: $text-muted;
        padding: 0 1;
        height: 1fr;
        overflow-y: auto;
    }
    Pane:focus-within, Pane:focus {
        border: round $accent;
        border-title-color: $accent;
    }
    """

    TITLE = "pane"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = self.TITLE
        self.can_focus = True

    def refresh_from(self, session: Session) -> None:
        """Re-render from the session; errors end up inside the pane."""
        try:
            self.update(self.render_view(session))
        except Exception as e:  # a broken view must not take the screen down
            self.update(error_text(self.TITLE, e))

    def render_view(self, session: Session):  # noqa: ANN201 - any Rich renderable
        """The pane's content; subclasses override."""
        raise NotImplementedError
