"""The exit-log pane: every VM exit of the run, one row each, for a million exits.

`ExitLogView` is a `ScrollView` drawn with the Line API (as toolong draws huge
logs): `render_line` builds only the rows on screen, straight from the engine's
columnar `ExitLog`, and keeps rendered rows in an LRU cache of strips. There is
no widget per row and no decoding of rows that are not on screen, so the pane
opens, scrolls and follows a run of a million exits as fast as one of a hundred.

Rows come from `vmmtui.views.exit_log` and filtering from `vmmtui.views.exit_select` (shared with `--script`);
see that module for what a filter decodes and what it costs. A filter estimated
above ~50 ms runs in a thread worker while the title says "filtering…".

Once no rows have arrived for `INDEX_DELAY` seconds (a stop, or a trace opened),
another thread worker codes the encodings of the new rows (`EncodingIndex.extend`,
~0.2 us a row, in blocks that hold the GIL a few ms each), so that filters read
one small code per row. It never runs while exits keep arriving (it would take
time from the guest), and a filter never waits for it: rows not coded yet are
decided from their columns, only more slowly (bench/exit_log_view.py, "cold").

Layout: line 0 is the fixed header; row r of the (filtered) list is line r + 1
of the virtual canvas, so `virtual_size` is (row width, rows shown + 1).

The app calls `refresh_count()` from a timer while the guest runs and at every
stop (after `Session.mark_stop`): it picks up appended exits, extends the filter
index with the new rows only, and — in follow mode, with the cursor on the last
row — keeps the cursor on the last row. Rows appended since the previous stop
have their seq highlighted.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import Worker, WorkerState, get_current_worker

from ..session import Session
from ..views.exit_log import HEADERS, KINDS, ExitRows, complete_rows, reason_text
from ..views.exit_select import EncodingIndex, FilterPlan

#: Filters estimated above this run in a thread worker.
SYNC_LIMIT_NS = 50_000_000
#: Width given to the qualification column in the virtual canvas (longer text is
#: still drawn when the pane is wider).
QUALIFICATION_WIDTH = 60
_FILTER_GROUP = "exit-log-filter"
_INDEX_GROUP = "exit-log-index"
#: Seconds without new rows before the pane codes the rows' encodings.
INDEX_DELAY = 1.0

# Row states in the strip cache key (bit 2 = new since the last stop).
_PLAIN, _CURSOR, _CURSOR_BLURRED, _SELECTED, _NEW = 0, 1, 2, 3, 4


class ExitLogView(ScrollView, can_focus=True):
    """Every exit of `session.machine.exits`, one row each, with a cursor and a filter."""

    DEFAULT_CSS = """
    ExitLogView {
        border: round $primary 40%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        height: 1fr;
    }
    ExitLogView:focus {
        border: round $accent;
        border-title-color: $accent;
    }
    ExitLogView > .exit-log--header {
        text-style: bold;
        color: $text-muted;
        background: $panel;
    }
    ExitLogView > .exit-log--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    ExitLogView > .exit-log--cursor-blurred {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
        text-style: $block-cursor-blurred-text-style;
    }
    ExitLogView > .exit-log--selected { background: $accent 25%; }
    ExitLogView > .exit-log--new { color: $text-accent; text-style: bold; }
    ExitLogView > .exit-log--io { color: $text-success; }
    ExitLogView > .exit-log--msr { color: $text-warning; }
    ExitLogView > .exit-log--cr { color: $text-accent; }
    ExitLogView > .exit-log--ept { color: $text-secondary; }
    ExitLogView > .exit-log--cpuid { color: $text-primary; }
    ExitLogView > .exit-log--hlt { color: $text-muted; }
    ExitLogView > .exit-log--exception { color: $text-error; }
    ExitLogView > .exit-log--shutdown { color: $text-error; text-style: bold; }
    ExitLogView > .exit-log--hypercall { color: $text-primary; text-style: italic; }
    ExitLogView > .exit-log--other { }
    """

    COMPONENT_CLASSES = {
        "exit-log--header", "exit-log--cursor", "exit-log--cursor-blurred", "exit-log--selected",
        "exit-log--new", *(f"exit-log--{kind}" for kind in KINDS),
    }

    BINDINGS = [
        Binding("up", "cursor_up", "Previous exit", show=False, id="exit_log.cursor_up"),
        Binding("down", "cursor_down", "Next exit", show=False, id="exit_log.cursor_down"),
        Binding("pageup", "page_up", "Page up", show=False, id="exit_log.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="exit_log.page_down"),
        Binding("home", "first", "First exit", show=False, id="exit_log.first"),
        Binding("end", "last", "Last exit", show=False, id="exit_log.last"),
        Binding("enter", "select", "Show exit", id="exit_log.select"),
    ]

    class Selected(Message):
        """The user chose an exit (enter or a click): `seq` is its number in the log."""

        def __init__(self, exit_log: ExitLogView, seq: int) -> None:
            super().__init__()
            self.exit_log = exit_log
            self.seq = seq

        @property
        def control(self) -> ExitLogView:
            return self.exit_log

    def __init__(self, session: Session, *, follow: bool = True, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.session = session
        machine = session.machine
        self._log = machine.exits
        self._decode = machine.hw.decode
        self._vendor = machine.vendor
        #: codes of the rows' encodings, shared by the pane and its workers (it locks itself)
        self._encodings = EncodingIndex(self._log)
        self._indexing = False  # an index worker runs
        self._index_timer = None
        self._rows = ExitRows(self._log, self._decode, self._vendor, self._encodings)
        #: In follow mode a cursor on the last row stays on the last row as exits arrive.
        self.follow = follow
        self._ready = False  # mounted: rows can be picked up and workers started
        self._total = 0  # complete rows picked up so far
        self._plan: FilterPlan | None = None
        self._index: array | None = None  # seqs shown, or None for every seq
        self._filtered_upto = 0  # rows below this have been through the plan
        self._filter_gen = 0
        self._filtering = False
        self._filter_span = (0, 0)
        self._filter_done_rows = 0  # written by the worker thread, read by the title timer
        self._progress_timer = None
        self.filter_error: str | None = None  # why the last filter text was taken as a substring
        self._cursor = 0
        self._selected_seq: int | None = None
        # "new since the last stop"
        self._stop_seen = session.last_stop
        self._count_at_stop = 0
        self._new = (0, 0)
        # column widths, grown as rows arrive
        self._names: dict[int, str] = {}
        self._max_time = 0
        self._max_rip = 0
        self._widths = self._compute_widths()
        self._cache: LRUCache[tuple[int, int], tuple[Strip, Style]] = LRUCache(1024)
        self._header: Strip | None = None
        self._styles: dict[str, Style] = {}
        self._update_title()

    # -- public API ------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Exits in the log (as of the last `refresh_count`)."""
        return self._total

    @property
    def shown(self) -> int:
        """Rows the filter lets through."""
        return self._total if self._index is None else len(self._index)

    @property
    def filtering(self) -> bool:
        """Whether a filter is still being computed in a worker."""
        return self._filtering

    @property
    def filter_text(self) -> str:
        return self._plan.text if self._plan is not None else ""

    @property
    def cursor_row(self) -> int:
        """The cursor's row in the filtered list (0 when the list is empty)."""
        return self._cursor

    @property
    def cursor_seq(self) -> int | None:
        """The seq of the exit under the cursor, or None when no row is shown."""
        return self.seq_at(self._cursor) if self.shown else None

    @property
    def selected_seq(self) -> int | None:
        """The exit last chosen with enter or a click."""
        return self._selected_seq

    def seq_at(self, row: int) -> int:
        """The seq of the exit on row `row` of the filtered list."""
        return row if self._index is None else self._index[row]

    def row_of(self, seq: int) -> int | None:
        """The row showing exit `seq`, or None if the filter hides it."""
        if self._index is None:
            return seq if 0 <= seq < self._total else None
        i = bisect_left(self._index, seq)
        return i if i < len(self._index) and self._index[i] == seq else None

    def move_cursor(self, row: int) -> None:
        """Put the cursor on row `row` (clamped) and scroll it into view."""
        row = max(0, min(row, self.shown - 1))
        if row != self._cursor:
            self._cursor = row
            self.refresh()
        self._scroll_to_cursor()

    def show_seq(self, seq: int) -> bool:
        """Put the cursor on exit `seq`; False if the filter hides it."""
        row = self.row_of(seq)
        if row is None:
            return False
        self.move_cursor(row)
        return True

    def refresh_from(self, session: Session) -> None:
        """The pane protocol (see widgets/pane.py): the same as `refresh_count`."""
        self.refresh_count()

    def refresh_count(self) -> int:
        """Pick up exits appended since the last call; returns the number of exits.

        Only the new rows go through the filter. Call it after `Session.mark_stop`
        at a stop, so rows since the previous stop are marked new.
        """
        log = self._log
        n = complete_rows(log)
        if not self._ready:
            return n  # on_mount picks the rows up
        self._check_stop(n)
        if n < self._total:  # a different run in the same log object: start over
            self._total = 0
            self._names.clear()
            self._max_time = self._max_rip = 0
            self._rows.forget()
            self._cache.clear()
            self._refilter()
        if n == self._total:
            self._update_title()
            return n
        old = self._total
        was_at_end = self._at_end()
        self._note_rows(old, n)
        # The last rows seen may have been completed since (an IN's value, a REP count).
        for seq in range(max(0, old - 2), old):
            for state in range(8):
                self._cache.discard((seq, state))
        self._total = n
        self._schedule_index()
        if self._plan is None:
            self._rows_changed(was_at_end, None, fresh=False)
        elif not self._filtering:
            self._run_plan(self._filtered_upto, n)
        else:
            self._update_title()
        return n

    def set_filter(self, text: str) -> None:
        """Show only the exits that pass `text` (empty: every exit).

        `text` is an exit filter ("io port=0x3f8 dir=out", "msr index=0x174 write",
        "vcpu=1", ...) when it parses, otherwise a case-insensitive substring of the
        row. Slow filters run in a thread worker; the title says "filtering…"
        meanwhile and the previous rows stay on screen.
        """
        plan = FilterPlan.compile(text)
        self._plan = plan
        self.filter_error = plan.error if plan is not None else None
        self.border_subtitle = plan.describe() if plan is not None else ""
        if self._ready:  # otherwise on_mount filters
            self._refilter()

    # -- filtering -------------------------------------------------------------------

    def _refilter(self) -> None:
        self._filter_gen += 1
        self._stop_filtering()
        self.workers.cancel_group(self, _FILTER_GROUP)
        if self._plan is None:
            was_at_end = self._at_end()
            keep = self.cursor_seq
            self._index = None
            self._filtered_upto = self._total
            self._rows_changed(was_at_end, keep, fresh=True)
        else:
            self._filtered_upto = 0
            self._run_plan(0, self._total)

    def _run_plan(self, lo: int, hi: int) -> None:
        plan = self._plan
        assert plan is not None
        gen = self._filter_gen
        if plan.estimate_ns(hi - lo) <= SYNC_LIMIT_NS:
            result = plan.select(self._rows, lo, hi)
            assert result is not None
            self._filter_done(gen, lo, hi, result)
            return
        self._filtering = True
        self._filter_span = (lo, hi)
        self._filter_done_rows = 0
        if self._progress_timer is None:
            self._progress_timer = self.set_interval(0.25, self._update_title)
        self._update_title()
        self._filter_worker(plan, gen, lo, hi)

    @work(thread=True, exclusive=True, group=_FILTER_GROUP, exit_on_error=False, description="filter the exit log")
    def _filter_worker(self, plan: FilterPlan, gen: int, lo: int, hi: int) -> None:
        worker = get_current_worker()
        # its own memos (not shared across threads); the index is shared
        rows = ExitRows(self._log, self._decode, self._vendor, self._encodings)

        def progress(done: int) -> None:
            self._filter_done_rows = done

        result = plan.select(rows, lo, hi, cancelled=lambda: worker.is_cancelled, progress=progress)
        if result is not None and not worker.is_cancelled:
            try:
                self.app.call_from_thread(self._filter_done, gen, lo, hi, result)
            except RuntimeError:  # the app closed meanwhile
                pass

    def _schedule_index(self) -> None:
        """Code the rows' encodings once no rows have arrived for INDEX_DELAY seconds."""
        if self._index_timer is not None:
            self._index_timer.stop()
        self._index_timer = self.set_timer(INDEX_DELAY, self._index_rows)

    def _index_rows(self) -> None:
        """Code the encodings of the rows picked up so far, in a thread worker (one at a time)."""
        self._index_timer = None
        if self._indexing or not self.is_mounted or self._encodings.coded >= self._total:
            return
        self._indexing = True
        self._index_worker()

    @work(thread=True, group=_INDEX_GROUP, exit_on_error=False, description="index the exit log")
    def _index_worker(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and self._encodings.coded < self._total:
            self._encodings.extend(self._total, cancelled=lambda: worker.is_cancelled)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == _INDEX_GROUP and event.state in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                                  WorkerState.CANCELLED):
            self._indexing = False
            if event.state == WorkerState.SUCCESS and self._encodings.coded < self._total:
                self._schedule_index()  # rows that arrived meanwhile
            return
        if event.worker.group == _FILTER_GROUP and event.state == WorkerState.ERROR:
            self._stop_filtering()
            self.filter_error = f"{type(event.worker.error).__name__}: {event.worker.error}"
            self.border_subtitle = f"filter failed: {self.filter_error}"
            self._update_title()

    def _filter_done(self, gen: int, lo: int, hi: int, result: array) -> None:
        if gen != self._filter_gen:
            return  # a newer filter replaced this one
        was_at_end = self._at_end()
        keep = self.cursor_seq
        fresh = lo == 0
        if fresh or self._index is None:
            self._index = result
        else:
            self._index.extend(result)
        self._filtered_upto = hi
        self._stop_filtering()
        self._rows_changed(was_at_end, keep, fresh=fresh)
        if self._total > hi:  # rows arrived meanwhile: filter those too
            self._run_plan(hi, self._total)

    def _stop_filtering(self) -> None:
        self._filtering = False
        if self._progress_timer is not None:
            self._progress_timer.stop()
            self._progress_timer = None

    # -- bookkeeping -----------------------------------------------------------------

    def _at_end(self) -> bool:
        return self._cursor >= self.shown - 1

    def _rows_changed(self, was_at_end: bool, keep_seq: int | None, *, fresh: bool) -> None:
        shown = self.shown
        if fresh and keep_seq is not None:  # a new filter: stay on the same exit, or the next shown
            self._cursor = keep_seq if self._index is None else bisect_left(self._index, keep_seq)
        elif self.follow and was_at_end:
            self._cursor = max(0, shown - 1)
        self._cursor = max(0, min(self._cursor, shown - 1))
        self.virtual_size = Size(self._line_width(), shown + 1)
        self._update_title()
        self._scroll_to_cursor()
        # The new virtual size reaches the scroll limits only at the next layout:
        # scroll again then, or the last rows can stay below the view.
        self.call_after_refresh(self._scroll_to_cursor)
        self.refresh()

    def _check_stop(self, n: int) -> None:
        stop = self.session.last_stop
        if stop is not self._stop_seen:
            self._stop_seen = stop
            self._new = (self._count_at_stop, n)
            self._count_at_stop = n
            self._cache.clear()
            self.refresh()

    def _note_rows(self, lo: int, hi: int) -> None:
        log = self._log
        for reason in set(log.reason[lo:hi]) - self._names.keys():
            self._names[reason] = self._rows.name_of(reason)
        self._max_time = max(self._max_time, max(log.time[lo:hi]))
        self._max_rip = max(self._max_rip, max(log.rip[lo:hi]))
        widths = self._compute_widths(hi)
        if widths != self._widths:
            self._widths = widths
            self._cache.clear()
            self._header = None

    def _compute_widths(self, count: int = 0) -> tuple[int, int, int, int, int, int]:
        reason_w = max([6] + [len(reason_text(r, self._vendor)) for r in self._names])
        name_w = max([4] + [len(n) for n in self._names.values()])
        return (max(3, len(str(max(0, count - 1)))), 4, max(4, len(str(self._max_time))), reason_w, name_w,
                max(3, len(f"{self._max_rip:#x}")))

    def _line_width(self) -> int:
        return sum(self._widths) + 3 + len(self._widths) + 1 + QUALIFICATION_WIDTH

    def _update_title(self) -> None:
        if self._filtering:
            lo, hi = self._filter_span
            pct = 100 * self._filter_done_rows // max(1, hi - lo)
            self.border_title = f"exit log ({self._total:,} exits, filtering… {pct}%)"
        else:
            self.border_title = f"exit log ({self._total:,} exits, {self.shown:,} shown)"

    # -- rendering -------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._cache.clear()
        self._header = None

    def _base_style(self) -> Style:
        style = self._styles.get("")
        if style is None:
            style = self._styles[""] = self.rich_style
        return style

    def _style(self, component: str, partial: bool = False) -> Style:
        key = f"{component}/{partial}"
        style = self._styles.get(key)
        if style is None:
            style = self.get_component_rich_style(component, partial=partial)
            self._styles[key] = style
        return style

    def _page(self) -> int:
        return self.scrollable_content_region.height - 1

    def _scroll_to_cursor(self) -> None:
        page = self._page()
        if page <= 0:
            return
        top = self.scroll_offset.y
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, force=True)
        elif self._cursor >= top + page:
            self.scroll_to(y=self._cursor - page + 1, animate=False, force=True)

    def _header_strip(self) -> Strip:
        if self._header is None:
            w_seq, w_vcpu, w_time, w_reason, w_name, w_rip = self._widths
            h = HEADERS
            text = (f"{h[0]:>{w_seq}} {h[1]:>{w_vcpu}} {h[2]:>{w_time}} {h[3]:>{w_reason}} {h[4]:<{w_name}} "
                    f"{h[5]:<{w_rip}} {h[6]:>3} {h[7]}")
            self._header = Strip([Segment(text, self._style("exit-log--header"))], len(text))
        return self._header

    def _row_state(self, row: int, seq: int) -> int:
        if row == self._cursor:
            state = _CURSOR if self.has_focus else _CURSOR_BLURRED
        elif seq == self._selected_seq:
            state = _SELECTED
        else:
            state = _PLAIN
        if self._new[0] <= seq < self._new[1]:
            state |= _NEW
        return state

    def _row_strip(self, row: int) -> tuple[Strip, Style]:
        seq = self.seq_at(row)
        state = self._row_state(row, seq)
        key = (seq, state)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        base = state & 3
        if base == _CURSOR:
            row_style = self._style("exit-log--cursor")
        elif base == _CURSOR_BLURRED:
            row_style = self._style("exit-log--cursor-blurred")
        elif base == _SELECTED:
            row_style = self._base_style() + self._style("exit-log--selected", partial=True)
        else:
            row_style = self._base_style()
        w_seq, w_vcpu, w_time, w_reason, w_name, w_rip = self._widths
        try:
            c = self._rows.cells(seq)
            mid = f" {c.vcpu:>{w_vcpu}} {c.time:>{w_time}} {c.reason:>{w_reason}} "
            rest = f" {c.rip:<{w_rip}} {c.length:>3} {c.qualification}"
            name, kind = c.name, c.kind
        except Exception as e:  # a row that cannot be read shows why; the pane carries on
            mid, name, kind, rest = " ", "<error>", "exception", f" {type(e).__name__}: {e}"
        seq_text = f"{seq:>{w_seq}}"
        name_text = f"{name:<{w_name}}"
        seq_style = name_style = row_style
        if base not in (_CURSOR, _CURSOR_BLURRED):
            name_style = row_style + self._style(f"exit-log--{kind}", partial=True)
            if state & _NEW:
                seq_style = row_style + self._style("exit-log--new", partial=True)
        segments = [Segment(seq_text, seq_style), Segment(mid, row_style), Segment(name_text, name_style),
                    Segment(rest, row_style)]
        strip = Strip(segments, len(seq_text) + len(mid) + len(name_text) + len(rest))
        self._cache.set(key, (strip, row_style))
        return strip, row_style

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            return self._header_strip().crop_extend(scroll_x, scroll_x + width, self._style("exit-log--header"))
        row = scroll_y + y - 1
        if row >= self.shown:
            return Strip.blank(width, self._base_style())
        strip, style = self._row_strip(row)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    # -- input -----------------------------------------------------------------------

    def on_mount(self) -> None:
        self._ready = True
        self._count_at_stop = complete_rows(self._log)  # what "new since the last stop" starts from
        self.refresh_count()

    def on_resize(self, event: events.Resize) -> None:
        self._scroll_to_cursor()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_cursor_up(self) -> None:
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        page = max(1, self._page())
        self.scroll_to(y=self.scroll_offset.y - page, animate=False, force=True)
        self.move_cursor(self._cursor - page)

    def action_page_down(self) -> None:
        page = max(1, self._page())
        self.scroll_to(y=self.scroll_offset.y + page, animate=False, force=True)
        self.move_cursor(self._cursor + page)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(self.shown - 1)

    def action_select(self) -> None:
        self._select_cursor()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return  # a border or the header
        row = self.scroll_offset.y + offset.y - 1
        if 0 <= row < self.shown:
            self.move_cursor(row)
            self._select_cursor()

    def _select_cursor(self) -> None:
        seq = self.cursor_seq
        if seq is None:
            return
        self._selected_seq = seq
        self.refresh()
        self.post_message(self.Selected(self, seq))


__all__ = ["ExitLogView"]
