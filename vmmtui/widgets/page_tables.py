"""The page-tables pane: the guest's own paging structures beside the host's EPT / NPT.

Two Textual `Tree`s, side by side when the pane is at least `WIDE` columns wide
and stacked otherwise; under them, the two-dimensional walk of an address when
the `translate ADDR` command asked for one (`show_translation`). Labels come
from `vmmtui.views.page_tables`, one node per entry (the Rich views merge runs of
leaves; the trees do not). A node's children are built when it is first
expanded, so a tree with thousands of entries costs only what is on screen.
Leaves expand to two detail lines: the raw entry with its address, and every
decoded field.

`refresh_from(session)` rebuilds both trees at each stop and keeps what was
expanded, by the path of (level, index) pairs from the root; the first time a
tree has entries, chains of single entries are opened so the first leaves show.
A view that raises shows its error in the tree's heading (or in the
translation area), and the rest of the pane carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from ..session import Session
from .pane import error_text
from ..views import page_tables as views

Path = tuple[tuple[str, int], ...]


@dataclass
class _Item:
    """What a tree node stands for: an entry (guest or second-level) and how to build its children."""

    kind: str  # "guest" | "slat" | "detail" | "more"
    entry: Any
    path: Path
    table: int = 0  # the HPA of the table holding a second-level entry (for its details)
    loaded: bool = False


class PageTablesPane(Widget):
    """The guest's page tables and the host's EPT / NPT, with a translation under them."""

    TITLE = "page tables"
    WIDE = 100
    """At this many columns or more the two trees sit side by side."""

    DEFAULT_CSS = """
    PageTablesPane {
        border: round $primary 40%;
        border-title-color: $text-muted;
        padding: 0 1;
        height: 1fr;
        layout: vertical;
    }
    PageTablesPane:focus-within {
        border: round $accent;
        border-title-color: $accent;
    }
    PageTablesPane > #pt-trees {
        layout: horizontal;
        height: 1fr;
    }
    PageTablesPane.-narrow > #pt-trees {
        layout: vertical;
    }
    PageTablesPane #pt-trees > Tree {
        width: 1fr;
        height: 1fr;
    }
    PageTablesPane > #pt-translation {
        height: auto;
        max-height: 50%;
        display: none;
    }
    PageTablesPane > #pt-translation.-shown {
        display: block;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = self.TITLE
        self.session: Session | None = None
        self.translation_gva: int | None = None
        self._mode = "none"
        self._ready = False  # mounted: the trees exist

    def compose(self) -> ComposeResult:
        with Container(id="pt-trees"):
            guest: Tree[_Item] = Tree("guest page tables", id="pt-guest")
            slat: Tree[_Item] = Tree("EPT / NPT", id="pt-slat")
            for tree in (guest, slat):
                tree.guide_depth = 2
                tree.root.expand()
                yield tree
        with VerticalScroll(id="pt-translation"):
            yield Static(id="pt-translation-text")

    # -- the parts ------------------------------------------------------------------------------

    @property
    def guest_tree(self) -> Tree[_Item]:
        return self.query_one("#pt-guest", Tree)

    @property
    def slat_tree(self) -> Tree[_Item]:
        return self.query_one("#pt-slat", Tree)

    @property
    def translation(self) -> Static:
        return self.query_one("#pt-translation-text", Static)

    def on_resize(self) -> None:
        self.set_class(self.outer_size.width < self.WIDE, "-narrow")

    # -- the pane protocol ----------------------------------------------------------------------

    def render_view(self, session: Session) -> RenderableType:
        """What `--script` prints for this pane: both trees (runs of leaves merged)."""
        return Group(views.guest_tables_view(session), views.slat_view(session))

    def on_mount(self) -> None:
        self._ready = True
        if self.session is not None:  # refreshed before it was mounted
            self.refresh_from(self.session)

    def refresh_from(self, session: Session) -> None:
        """Rebuild both trees from the session (the engine is stopped); keep what was expanded.

        Before the pane is mounted this only remembers the session: it draws when mounted.
        """
        self.session = session
        if not self._ready:
            return
        self._rebuild(self.guest_tree, lambda: self._guest_items(session), "guest page tables")
        kind = "EPT" if session.machine.vendor == "intel" else "NPT"
        self._rebuild(self.slat_tree, lambda: self._slat_items(session), kind)
        if self.translation_gva is not None:
            self.show_translation(self.translation_gva)

    def show_translation(self, gva: int) -> None:
        """Show the two-dimensional walk of `gva` under the trees (the `translate ADDR` command)."""
        self.translation_gva = gva
        if not self._ready:
            return  # drawn by refresh_from when mounted
        self._render_translation()
        self.query_one("#pt-translation").add_class("-shown")

    def hide_translation(self) -> None:
        self.translation_gva = None
        if self._ready:
            self.query_one("#pt-translation").remove_class("-shown")

    # -- building ---------------------------------------------------------------------------------

    def _render_translation(self) -> None:
        gva = self.translation_gva
        assert gva is not None
        if self.session is None:
            self.translation.update(Text(f"translate {gva:#x}: no machine yet", style="italic"))
            return
        try:
            self.translation.update(views.translate_view(self.session, gva))
        except Exception as e:  # a broken view must not take the pane down
            self.translation.update(error_text(f"translation of {gva:#x}", e))

    def _guest_items(self, session: Session) -> tuple[str, list[tuple[Text, _Item, bool]]]:
        mode, nodes = views.guest_nodes(session)
        self._mode = mode
        items = [self._guest_child(node, ()) for node in nodes]
        if mode != "none" and not nodes:
            items.append((Text("no present entry in the top-level table", style="italic"),
                          _Item("more", None, ()), False))
        return views.guest_root_label(session), items

    def _guest_child(self, node: Any, parent: Path) -> tuple[Text, _Item, bool]:
        if node.truncated:
            return Text(node.decoded["note"], style="italic"), _Item("more", node, parent), False
        path = parent + ((node.level, node.index),)
        label = Text(views.guest_node_label(node, self._mode), style="" if node.leaf else "bold")
        return label, _Item("guest", node, path), node.leaf or bool(node.children)

    def _slat_items(self, session: Session) -> tuple[str, list[tuple[Text, _Item, bool]]]:
        slat = session.machine.slat
        nodes = slat.tree()
        items = [self._slat_child(node, (), slat.root) for node in nodes]
        if not nodes:
            items.append((Text("no entry in use", style="italic"), _Item("more", None, ()), False))
        return views.slat_root_label(session), items

    def _slat_child(self, node: Any, parent: Path, table: int) -> tuple[Text, _Item, bool]:
        assert self.session is not None
        slat = self.session.machine.slat
        item = _Item("slat", node, parent + ((node.level, node.index),), table)
        leaf = _is_leaf(item)
        label = Text(views.slat_node_label(node, slat), style="" if leaf else "bold")
        return label, item, leaf or bool(node.children)

    def _children(self, item: _Item) -> list[tuple[Text, _Item, bool]]:
        if item.kind == "guest":
            node = item.entry
            if node.leaf:
                return self._details(item, views.guest_details(node))
            return [self._guest_child(child, item.path) for child in node.children]
        if item.kind == "slat":
            node = item.entry
            if _is_leaf(item):
                return self._details(item, views.slat_details(node, item.table))
            assert self.session is not None
            below = self.session.machine.slat.address(node.value)
            return [self._slat_child(child, item.path, below) for child in node.children]
        return []

    def _details(self, item: _Item, lines: list[str]) -> list[tuple[Text, _Item, bool]]:
        return [(Text(line, style="dim"), _Item("detail", None, item.path + (("detail", i),)), False)
                for i, line in enumerate(lines)]

    def _load(self, node: TreeNode[_Item]) -> None:
        item = node.data
        if item is None or item.loaded:
            return
        item.loaded = True
        for label, child, expandable in self._children(item):
            if expandable:
                node.add(label, child, allow_expand=True)
            else:
                node.add_leaf(label, child)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[_Item]) -> None:
        self._load(event.node)

    def _rebuild(self, tree: Tree[_Item], build: Any, what: str) -> None:
        expanded = {n.data.path for n in _walk(tree.root) if n.is_expanded and n.data is not None}
        had_entries = any(n.data is not None and n.data.kind in ("guest", "slat") for n in tree.root.children)
        cursor = tree.cursor_node.data.path if tree.cursor_node is not None and tree.cursor_node.data else None
        tree.clear()
        try:
            heading, items = build()
        except Exception as e:  # a broken view shows its error inside the pane
            tree.root.set_label(error_text(what, e))
            return
        tree.root.set_label(Text(heading, style="bold"))
        tree.root.data = _Item("root", None, (), loaded=True)
        for label, item, expandable in items:
            if expandable:
                tree.root.add(label, item, allow_expand=True)
            else:
                tree.root.add_leaf(label, item)
        if had_entries:
            self._reopen(tree.root, expanded)
        else:
            self._open_chains(tree.root)
        tree.root.expand()
        if cursor is not None:
            for n in _walk(tree.root):
                if n.data is not None and n.data.path == cursor:
                    tree.move_cursor(n)
                    break

    def _reopen(self, node: TreeNode[_Item], expanded: set[Path]) -> None:
        for child in node.children:
            if child.data is not None and child.data.path in expanded and child.allow_expand:
                self._load(child)
                child.expand()
                self._reopen(child, expanded)

    def _open_chains(self, node: TreeNode[_Item]) -> None:
        """Open an entry that is the only one of its table and points at a table, all the way down."""
        entries = [c for c in node.children if c.data is not None and c.data.kind in ("guest", "slat")]
        if len(entries) != 1:
            return
        only = entries[0]
        if _is_leaf(only.data) or not only.allow_expand:
            return
        self._load(only)
        only.expand()
        self._open_chains(only)

    # -- for tests and the app ------------------------------------------------------------------

    def labels(self, which: str = "guest") -> list[tuple[int, str]]:
        """(depth, label) of every node built so far in the "guest" or "slat" tree, in order."""
        tree = self.guest_tree if which == "guest" else self.slat_tree
        out: list[tuple[int, str]] = []

        def visit(node: TreeNode[_Item], depth: int) -> None:
            out.append((depth, str(node.label)))
            for child in node.children:
                visit(child, depth + 1)

        visit(tree.root, 0)
        return out

    def find(self, which: str, *path: tuple[str, int]) -> TreeNode[_Item] | None:
        """The node at `path` ((level, index) pairs from the root), expanding and building on the way."""
        tree = self.guest_tree if which == "guest" else self.slat_tree
        node = tree.root
        for step in path:
            self._load(node)
            found = next((c for c in node.children if c.data is not None and c.data.path[-1:] == (step,)), None)
            if found is None:
                return None
            if node is not tree.root:
                node.expand()
            node = found
        self._load(node)
        return node


def _is_leaf(item: _Item) -> bool:
    if item.kind == "guest":
        return bool(item.entry.leaf)
    if item.kind == "slat":
        return item.entry.level == "PTE" or bool(item.entry.decoded.get("large"))
    return True


def _walk(node: TreeNode[_Item]) -> list[TreeNode[_Item]]:
    out = [node]
    for child in node.children:
        out.extend(_walk(child))
    return out
