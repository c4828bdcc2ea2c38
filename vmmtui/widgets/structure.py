"""The VMCS / VMCB pane: a filter above the fields, one collapsible section per group.

At each stop `refresh_from(session)` takes a `StructureSnapshot` (the only time
the pane reads the machine); typing in the filter re-draws from that snapshot.
The view (`vmmtui.views.structure`) owns what a row says and how it is styled;
`--script` prints the same through `structure_view`. A view that raises shows its
error inside the pane, as every pane does (`vmmtui.widgets.pane`).

Keys: `/` focuses the filter, `escape` in the filter clears it.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Collapsible, Input, Static

from ..session import Session
from .pane import error_text
from ..views.structure import (
    StructureSnapshot, group_table, group_title, structure_snapshot, structure_title,
)


class StructurePane(Widget):
    """The selected vCPU's VMCS (Intel) or VMCB (AMD), field by field."""

    DEFAULT_CSS = """
    StructurePane {
        border: round $primary 40%;
        border-title-color: $text-muted;
        padding: 0 1;
        height: 1fr;
        layout: vertical;
    }
    StructurePane:focus-within {
        border: round $accent;
        border-title-color: $accent;
    }
    StructurePane > #structure-filter {
        height: 1;
        margin-bottom: 1;
    }
    StructurePane > #structure-title {
        height: auto;
    }
    StructurePane > #structure-body {
        height: 1fr;
    }
    StructurePane > #structure-error {
        display: none;
        height: auto;
    }
    StructurePane.-error > #structure-error {
        display: block;
    }
    StructurePane.-error > #structure-body {
        display: none;
    }
    StructurePane Collapsible {
        padding: 0;
        border-top: none;
    }
    StructurePane Collapsible > Contents {
        padding: 0 0 0 1;
    }
    StructurePane .structure-group {
        width: 1fr;
    }
    """

    BINDINGS = [Binding("slash", "focus_filter", "filter", show=False)]

    TITLE = "VMCS / VMCB"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.border_title = self.TITLE
        self.filter_text = ""
        self.snapshot: StructureSnapshot | None = None
        self._sections: dict[str, tuple[Collapsible, Static]] = {}
        self._ready = False  # children composed (Widget.is_mounted turns true only after on_mount)
        self._pending_error: Exception | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter fields…  (=text: decoding or value)", id="structure-filter",
                    compact=True)
        yield Static(id="structure-title")
        yield VerticalScroll(id="structure-body")
        yield Static(id="structure-error")

    # -- public ------------------------------------------------------------------

    def refresh_from(self, session: Session) -> None:
        """Take the structure at this stop and draw it; errors end up inside the pane."""
        try:
            snapshot = structure_snapshot(session)
        except Exception as e:  # a broken view must not take the screen down
            self._pending_error = e
            if self._ready:
                self._show_error(e)
            return
        self._pending_error = None
        self.snapshot = snapshot
        self.border_title = snapshot.structure_name
        self._draw()

    def set_filter(self, text: str) -> None:
        """Show only the fields that match `text` (see `vmmtui.views.structure`)."""
        if text == self.filter_text:
            return
        self.filter_text = text
        if not self._ready:
            return  # on_mount draws
        filter_input = self.query_one("#structure-filter", Input)
        if filter_input.value != text:
            filter_input.value = text
        self._draw()

    def section(self, group: str) -> Collapsible | None:
        """The collapsible section of a group ("guest-state", "state-save", …)."""
        entry = self._sections.get(group)
        return entry[0] if entry else None

    # -- events ------------------------------------------------------------------

    def on_mount(self) -> None:
        self._ready = True
        if self.filter_text:
            self.query_one("#structure-filter", Input).value = self.filter_text
        if self._pending_error is not None:
            self._show_error(self._pending_error)
        else:
            self._draw()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "structure-filter":
            event.stop()
            self.set_filter(event.value)

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.query_one("#structure-filter", Input).has_focus and self.filter_text:
            event.stop()
            self.set_filter("")

    def action_focus_filter(self) -> None:
        self.query_one("#structure-filter", Input).focus()

    # -- drawing -----------------------------------------------------------------

    def _draw(self) -> None:
        snapshot = self.snapshot
        if snapshot is None or not self._ready:
            return
        try:
            self._draw_snapshot(snapshot)
        except Exception as e:  # a broken view must not take the screen down
            self._show_error(e)
        else:
            self.remove_class("-error")

    def _draw_snapshot(self, snapshot: StructureSnapshot) -> None:
        self.query_one("#structure-title", Static).update(structure_title(snapshot, self.filter_text))
        body = self.query_one("#structure-body", VerticalScroll)
        groups = snapshot.groups
        if list(self._sections) != groups:
            # First stop, or another vendor's structure: build the sections anew
            # (classes, not ids: the old sections may still be on their way out).
            body.remove_children()
            self._sections = {}
            for group in groups:
                content = Static(classes=f"structure-group structure-group-{group}")
                section = Collapsible(content, title=group_title(snapshot.vendor, group), collapsed=False,
                                      classes=f"structure-section structure-section-{group}")
                self._sections[group] = (section, content)
            body.mount_all([section for section, _ in self._sections.values()])
        rows = snapshot.filtered(self.filter_text)
        filtering = bool(self.filter_text.strip())
        for group in groups:
            section, content = self._sections[group]
            total = sum(1 for row in snapshot.rows if row.group == group)
            group_rows = [row for row in rows if row.group == group]
            count = f"{len(group_rows)} of {total}" if filtering else str(total)
            section.title = f"{group_title(snapshot.vendor, group)} ({count})"
            section.display = bool(group_rows)
            content.update(group_table(snapshot, group_rows))
        if not rows:
            self.query_one("#structure-title", Static).update(
                Text.assemble(structure_title(snapshot, self.filter_text), "\n",
                              (f"no field matches {self.filter_text.strip()!r}", "italic")))

    def _show_error(self, e: Exception) -> None:
        self.add_class("-error")
        self.query_one("#structure-error", Static).update(error_text(self.border_title, e))
