"""The memory pane: a hex view by GPA or GVA (set with the `mem` command)."""

from __future__ import annotations

from ..session import Session
from ..views.memory import memory_view
from .pane import Pane


class MemoryPane(Pane):
    """Guest memory in hex."""

    TITLE = "memory"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.address = 0x7C00
        self.size_bytes = 256
        self.space = "gpa"

    def show(self, space: str, address: int, size: int) -> None:
        """Look at another range."""
        self.space, self.address, self.size_bytes = space, address, size
        self.border_title = f"memory ({space.upper()} {address:#x})"

    def render_view(self, session: Session):  # noqa: ANN201
        return memory_view(session, self.address, self.size_bytes, self.space, width=self.size.width or 80)
