"""The disassembly pane."""

from __future__ import annotations

from ..session import Session
from ..views.disasm import disasm_view
from .pane import Pane


class DisasmPane(Pane):
    """Instructions from RIP, in the guest's current mode; breakpoints marked."""

    TITLE = "disassembly"

    def render_view(self, session: Session):  # noqa: ANN201
        return disasm_view(session, count=max(8, self.size.height - 2))
