"""The vCPU schedule pane: lanes over virtual time, zoom with + and -, pan with < and >."""

from __future__ import annotations

from textual.binding import Binding

from ..session import Session
from ..views.schedule import schedule_view, time_span
from .pane import Pane


class SchedulePane(Pane):
    """One lane per vCPU; exits as ticks."""

    TITLE = "vCPU schedule"
    BINDINGS = [
        Binding("plus,equals_sign", "zoom(0.5)", "zoom in", show=False),
        Binding("minus", "zoom(2)", "zoom out", show=False),
        Binding("less_than_sign,left", "pan(-0.25)", "pan left", show=False),
        Binding("greater_than_sign,right", "pan(0.25)", "pan right", show=False),
        Binding("0", "fit", "fit", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.window: tuple[int, int] | None = None  # None: the whole run
        self.session: Session | None = None

    def render_view(self, session: Session):  # noqa: ANN201
        self.session = session
        start, end = self.window or time_span(session)
        self.border_title = f"vCPU schedule (virtual time {start}–{end})"
        return schedule_view(session, start, end, max(self.size.width - 12, 20))

    def action_zoom(self, factor: float) -> None:
        if self.session is None:
            return
        start, end = self.window or time_span(self.session)
        mid, half = (start + end) / 2, max((end - start) * factor / 2, 10)
        self.window = (max(0, int(mid - half)), int(mid + half))
        self.refresh_from(self.session)

    def action_pan(self, fraction: float) -> None:
        if self.session is None:
            return
        start, end = self.window or time_span(self.session)
        shift = int((end - start) * fraction)
        shift = max(shift, -start)
        self.window = (start + shift, end + shift)
        self.refresh_from(self.session)

    def action_fit(self) -> None:
        self.window = None
        if self.session is not None:
            self.refresh_from(self.session)
