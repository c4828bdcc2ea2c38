"""The registers pane."""

from __future__ import annotations

from ..session import Session
from ..views.registers import registers_view
from .pane import Pane


class RegistersPane(Pane):
    """GPRs, RIP, RFLAGS, segments, control registers; changes since the last stop in colour."""

    TITLE = "registers"

    def render_view(self, session: Session):  # noqa: ANN201
        return registers_view(session, wide=self.size.width >= 44 or self.size.width == 0)
