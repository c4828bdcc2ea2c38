"""Selecting the rows of an exit log that a filter keeps, fast enough for a million.

Filters (`FilterPlan.compile(text)`)
    The text is an `engine.exitfilter` filter ("io port=0x3f8 dir=out",
    "msr index=0x174 write", "vcpu=1", ...) when it parses; otherwise a
    case-insensitive substring of the row's text (`ExitRows.text`: the row's cells
    joined by single spaces, so it does not depend on column widths). Either way a
    plan gives exactly the rows that testing each row by itself would give; it only
    decides each distinct value once and reads rows as byte masks (one byte per
    row, combined with big-integer AND / OR, small values mapped with
    `bytes.translate`, positions read with `itertools.compress` or `bytes.find`).

    A filter runs in stages, chunk by chunk:
    1. its kind and any `reason=` condition are decided once per distinct reason,
       from its name, and matched against the `reason` column;
    2. `vcpu=` and `rip=` conditions are decided once per distinct value of their
       column; `seq=` narrows the range;
    3. the rest (flags such as `write`, `cr 3`, qualification values such as
       `port=`) is decided once per distinct encoding (reason, info1, info2, aux1,
       aux2), and rows are read by the code of their encoding (`EncodingIndex`):
       one 16-bit column instead of five 64-bit ones. Rows not coded yet are read
       from their five columns, only those that passed stages 1-2 when few did.
    A substring without spaces lies inside one cell: the text of the row's encoding
    (decided per encoding), its RIP (per distinct RIP, and only for a needle of hex
    digits and x), or a number cell (only an all-digit needle: seq and time are then
    formatted per row). A substring with spaces is decided per encoding when it lies
    in the encoding's text; other rows are tested whole only when they hold each of
    its pieces.

    Measured here with Python 3.11 on a shared 2-CPU machine, a million rows of
    bench/exit_log_view.py (which prints current figures; the machine's speed
    varies up to 2x between runs): a kind ~45 ms; a qualification condition
    ~75 ms with the rows coded, ~200 ms not; a substring ~80 ms coded, ~170 ms
    not; coding the rows ~0.2 us a row, once (the pane does it in a thread
    worker once the rows stop arriving). An all-digit needle or one with spaces
    that many rows hold whole formats those rows (~1.5 us each). The pane runs
    any plan it estimates (pessimistically, from the row count) above ~50 ms in a
    thread worker.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
import threading
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

from engine.exitfilter import Condition, ExitFilter, FilterError, parse
from engine.exitlog import ExitEvent, ExitLog

if TYPE_CHECKING:
    from .exit_log import ExitRows


class Memo(dict):
    """A dict that computes missing values with `fn` and forgets everything past `limit`."""

    def __init__(self, fn: Callable[[Any], Any], limit: int = 65536) -> None:
        super().__init__()
        self.fn = fn
        self.limit = limit

    def __missing__(self, key: Any) -> Any:
        value = self.fn(key)
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


_OVERFLOW = 0xFFFF  # the code of an encoding (or RIP) first seen after its index was full
Key = tuple[int, int, int, int, int]  # an exit's encoding: reason, info1, info2, aux1, aux2


class _Coder(dict):
    """key -> code: 0, 1, ... in the order keys are first seen; past `limit` keys, _OVERFLOW."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.keys: list[Any] = []  # code -> key; only ever appended to
        self.limit = limit

    def __missing__(self, key: Any) -> int:
        n = len(self.keys)
        if n >= self.limit:
            return _OVERFLOW
        self.keys.append(key)
        self[key] = n
        return n


def _encodings(log: ExitLog, a: int, b: int) -> Iterable[Key]:
    return zip(log.reason[a:b], log.info1[a:b], log.info2[a:b], log.aux1[a:b], log.aux2[a:b])


class EncodingIndex:
    """Per row of an exit log, a 16-bit code of its encoding and one of its RIP.

    A run repeats a few encodings (reason, info1, info2, aux1, aux2) a great many
    times, so a filter decides each distinct encoding once and then reads one
    small code per row instead of five 64-bit columns: about 0.03 us a row
    instead of 0.1. Coding costs about as much as one pass over the five columns,
    once per row; `extend` codes rows ahead of any filter (the pane runs it in a
    thread worker once exits stop arriving), and a filter reads the codes of the
    rows coded so far (`coded_encodings`, `coded_rips`) and the other rows directly.

    The first `LIMIT` distinct encodings (and RIPs) get codes; later new ones get
    `_OVERFLOW`, and a filter decides those rows one by one. Rows whose aux1 / aux2
    `update_aux` completed after they were coded are coded again
    (`ExitLog.aux_changes`) before their codes are read. One index may serve
    several threads (the pane and its workers): it locks itself.
    """

    BLOCK = 16384  # rows coded per hold of the lock
    LIMIT = _OVERFLOW

    def __init__(self, log: ExitLog, limit: int = LIMIT) -> None:
        self.log = log
        self._limit = min(limit, self.LIMIT)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._enc = _Coder(self._limit)
        self._enc_codes = array("H")
        self._rip = _Coder(self._limit)
        self._rip_codes = array("H")
        self._aux_seen = 0

    @property
    def coded(self) -> int:
        """Rows whose encodings and RIPs are both coded."""
        return min(len(self._enc_codes), len(self._rip_codes))

    def coded_encodings(self, lo: int, hi: int) -> tuple[array, list[Key]]:
        """(the encoding codes of the coded rows of [lo, hi) -- those from `lo` to
        at most `hi` --, the encodings by code)."""
        with self._lock:
            self._check()
            return self._enc_codes[lo:hi], self._enc.keys

    def coded_rips(self, lo: int, hi: int) -> tuple[array, list[int]]:
        """(the RIP codes of the coded rows of [lo, hi), the RIPs by code)."""
        with self._lock:
            self._check()
            return self._rip_codes[lo:hi], self._rip.keys

    def extend(self, hi: int, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Code the rows up to `hi` (complete rows only); False if `cancelled()` became true."""
        log = self.log
        while True:
            if cancelled():
                return False
            with self._lock:
                self._check()
                a = len(self._enc_codes)
                if a < hi:
                    b = min(hi, a + self.BLOCK)
                    self._enc_codes.extend(array("H", map(self._enc.__getitem__, _encodings(log, a, b))))
                    continue
                a = len(self._rip_codes)
                if a >= hi:
                    return True
                b = min(hi, a + self.BLOCK)
                self._rip_codes.extend(array("H", map(self._rip.__getitem__, log.rip[a:b])))

    def _check(self) -> None:
        """Start over if the log lost rows; code again the rows update_aux changed (the lock held)."""
        log = self.log
        if len(log) < max(len(self._enc_codes), len(self._rip_codes)):
            self._reset()  # not the rows it was built from
            return
        changes = getattr(log, "aux_changes", None)
        if changes is None:  # a log whose rows never change (a trace)
            return
        version, changed = changes(self._aux_seen)
        if version == self._aux_seen:
            return
        n = len(self._enc_codes)
        for seqs in changed:
            a, b = seqs.start, min(seqs.stop, n)
            if a < b:
                self._enc_codes[a:b] = array("H", map(self._enc.__getitem__, _encodings(log, a, b)))
        self._aux_seen = version


# -- masks: one byte per row: 0 / 1, or bits; _UNDECIDED: "decide this row by itself" --------

_UNDECIDED = 0xFF

_DECIMAL_CHARS = frozenset("0123456789")
_HEX_CHARS = frozenset("0123456789abcdefx")


class _Lookup(Memo):
    """value -> fn(value) (a mask byte), computed once per value (up to 2^17 values)."""

    def __init__(self, fn: Callable[[Any], int]) -> None:
        super().__init__(fn, limit=1 << 17)


class _ByCode:
    """A `_Lookup` of codes of an index's key list, through `by_key` (a memo by key).

    Renewed if the index starts over (a new key list), so a code never means
    another key. _OVERFLOW -> _UNDECIDED: the rows to decide one by one.
    """

    def __init__(self, by_key: dict[Any, int]) -> None:
        self.by_key = by_key
        self.keys: list[Any] | None = None
        self.lookup: _Lookup | None = None

    def __call__(self, keys: list[Any]) -> _Lookup:
        if keys is not self.keys or self.lookup is None:
            by_key = self.by_key
            self.keys = keys
            self.lookup = _Lookup(lambda code: _UNDECIDED if code == _OVERFLOW else by_key[keys[code]])
        return self.lookup


def _low_plane(column: array) -> tuple[int, bytes] | None:
    """(base, low): every value of `column` is base + its byte in `low`, when only
    the lowest byte varies; else None."""
    size = column.itemsize
    raw = column.tobytes()
    if size == 1 or not raw:
        return 0, raw
    lowest = 0 if sys.byteorder == "little" else size - 1
    n = len(column)
    for k in range(size):
        if k != lowest:
            plane = raw[k::size]
            if plane.count(plane[0]) != n:
                return None
    return column[0] & ~0xFF, raw[lowest::size]


def _mask(column: array, lookup: dict[int, int]) -> bytes:
    """lookup[value] for each value of `column`, one byte each.

    When only the lowest byte varies: `bytes.translate` with a table of the values
    present; otherwise a C-level loop over the dict.
    """
    plane = _low_plane(column)
    if plane is None:
        return bytes(map(lookup.__getitem__, column))
    base, low = plane
    table = bytearray(256)
    for v in set(low):
        table[v] = lookup[base | v]
    return low.translate(table)


def _settle(mask: bytes, start: int, decide: Callable[[list[int]], Iterable[int]]) -> bytes:
    """`mask` with every _UNDECIDED replaced by the decision for its row (decide(seqs), one each)."""
    i = mask.find(_UNDECIDED)
    if i < 0:
        return mask
    out = bytearray(mask)
    where = []
    while i >= 0:
        where.append(i)
        i = out.find(_UNDECIDED, i + 1)
    for i, d in zip(where, decide([start + i for i in where])):
        out[i] = d
    return bytes(out)


def _and(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _or(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _add_seqs(out: array, mask: bytes, start: int) -> None:
    """Append to `out` the seq (start + i) of every 1 in `mask`."""
    n = len(mask)
    hits = mask.count(1)
    if hits == 0:
        return
    if hits == n:
        out.extend(range(start, start + n))
    elif hits * 8 < n:  # few: jump from one to the next
        find = mask.find
        append = out.append
        i = find(1)
        while i >= 0:
            append(start + i)
            i = find(1, i + 1)
    else:
        out.extend(compress(range(start, start + n), mask))


def _column_at(log: ExitLog, name: str, seqs: list[int]) -> Iterable[int]:
    return map(getattr(log, name).__getitem__, seqs)


def _encodings_at(log: ExitLog, seqs: list[int]) -> Iterable[Key]:
    return zip(*(map(getattr(log, c).__getitem__, seqs) for c in ("reason", "info1", "info2", "aux1", "aux2")))


def _encoding_mask(rows: ExitRows, start: int, end: int, by_code: _ByCode, only: bytes | None = None) -> bytes:
    """by_code.by_key[encoding] for each row of [start, end), decided once per distinct encoding:
    coded rows by their codes, the others (not coded yet) by their five columns.

    With `only` (a 0 / 1 mask of the same rows), a row not coded whose byte in
    `only` is 0 gets 0 without its encoding being read: for a filter whose earlier
    stages keep few rows.
    """
    log = rows.log
    by_key = by_code.by_key
    codes, keys = rows.index.coded_encodings(start, end)
    mask = b""
    if codes:
        mask = _settle(_mask(codes, by_code(keys)), start,
                       lambda seqs: map(by_key.__getitem__, _encodings_at(log, seqs)))
    a = start + len(mask)
    if a == end:
        return mask
    if only is not None:
        only = only[a - start:]
        if only.count(1) * 4 < len(only):  # few rows: read those alone
            seqs = array("Q")
            _add_seqs(seqs, only, a)
            rest = bytearray(len(only))
            for seq, d in zip(seqs, map(by_key.__getitem__, _encodings_at(log, list(seqs)))):
                rest[seq - a] = d
            return mask + rest
    return mask + bytes(map(by_key.__getitem__, _encodings(log, a, end)))


def _rip_mask(rows: ExitRows, start: int, end: int, by_code: _ByCode) -> bytes:
    """by_code.by_key[rip] for each row of [start, end), decided once per distinct RIP.

    The code of a small guest (every RIP of the chunk in one 256-byte window) needs
    no index: its lowest byte goes through `bytes.translate`.
    """
    log = rows.log
    by_rip = by_code.by_key
    column = log.rip[start:end]
    if _low_plane(column) is not None:
        return _mask(column, by_rip)
    codes, rips = rows.index.coded_rips(start, end)
    mask = b""
    if codes:
        mask = _settle(_mask(codes, by_code(rips)), start,
                       lambda seqs: map(by_rip.__getitem__, _column_at(log, "rip", seqs)))
    if len(mask) < end - start:
        mask += bytes(map(by_rip.__getitem__, column[len(mask):]))
    return mask


# -- filtering -----------------------------------------------------------------------

_COLUMN_KEYS = ("vcpu", "rip")  # conditions read straight from a column
_ROW_NS = 60  # per row and per column or reason test (pessimistic: ~20-35 ns measured)
_DECODE_NS = 400  # per row for a filter that decides encodings (~0.15 us a row not coded, ~0.05 us coded)
_TEXT_NS = 500  # per row for a substring without spaces that is not all digits
_SLOW_TEXT_NS = 2500  # per row for one with spaces or all digits (formats rows; ~1.5-6.5 us)


@dataclass(frozen=True)
class FilterPlan:
    """A compiled exit-log filter; `select` runs it over a range of seqs.

    `parsed` is the engine filter when the text parses; otherwise `needle` is the
    lower-cased substring and `error` says why the text is not a filter.
    """

    text: str
    parsed: ExitFilter | None = None
    needle: str | None = None
    error: str | None = None
    #: the kind part of the filter (for deciding per distinct reason), or None
    kind_filter: ExitFilter | None = None
    reason_conditions: tuple[Condition, ...] = ()
    seq_conditions: tuple[Condition, ...] = ()
    column_conditions: tuple[Condition, ...] = ()
    #: what needs decoding: the filter without its column conditions, or None
    residual: ExitFilter | None = None

    @classmethod
    def compile(cls, text: str) -> FilterPlan | None:
        """The plan for `text`; None for an empty text (every exit)."""
        text = text.strip()
        if not text:
            return None
        try:
            f = parse(text)
        except FilterError as e:
            return cls(text, needle=text.lower(), error=str(e))
        by_key: dict[str, list[Condition]] = {"reason": [], "seq": [], "column": [], "rest": []}
        for c in f.conditions:
            if c.key == "reason" or c.key == "seq":
                by_key[c.key].append(c)
            elif c.key in _COLUMN_KEYS:
                by_key["column"].append(c)
            else:
                by_key["rest"].append(c)
        kind_filter = ExitFilter(f.text, kind=f.kind) if f.kind is not None else None
        residual = None
        if f.cr is not None or f.flags or by_key["rest"]:
            residual = dataclasses.replace(f, conditions=tuple(by_key["rest"]))
        return cls(text, parsed=f, kind_filter=kind_filter, reason_conditions=tuple(by_key["reason"]),
                   seq_conditions=tuple(by_key["seq"]), column_conditions=tuple(by_key["column"]),
                   residual=residual)

    @property
    def decodes(self) -> bool:
        """Whether the plan decodes or formats rows (stage 3 or 4)."""
        return self.residual is not None or self.needle is not None

    def estimate_ns(self, rows: int) -> float:
        """A pessimistic estimate of `select` over `rows` rows, in nanoseconds."""
        tests = (self.kind_filter is not None or bool(self.reason_conditions)) + len(self.column_conditions)
        per_row = _ROW_NS * tests
        if self.residual is not None:
            per_row += _DECODE_NS
        if self.needle is not None:
            fast = " " not in self.needle and not set(self.needle) <= _DECIMAL_CHARS
            per_row += _TEXT_NS if fast else _SLOW_TEXT_NS
        return rows * per_row

    # -- running --------------------------------------------------------------------

    def _reason_ok(self, reason: int, name: str) -> bool:
        if self.kind_filter is not None:
            probe = ExitEvent(0, 0, 0, reason, name, 0, 0, 0, 0, {})
            if not self.kind_filter.matches(probe):
                return False
        return all(c.holds(reason) for c in self.reason_conditions)

    def _seq_range(self, lo: int, hi: int) -> tuple[int, int] | None:
        """[lo, hi) narrowed by the seq conditions, or None when they need a per-row test."""
        for c in self.seq_conditions:
            if c.hi is None:
                if not isinstance(c.lo, int):
                    return (lo, lo)
                lo, hi = max(lo, c.lo), min(hi, c.lo + 1)
            else:
                lo, hi = max(lo, c.lo), min(hi, c.hi)
        return (lo, max(lo, hi))

    def select(self, rows: ExitRows, lo: int, hi: int, *, chunk: int = 65536,
               cancelled: Callable[[], bool] = lambda: False,
               progress: Callable[[int], None] | None = None) -> array | None:
        """The seqs in [lo, hi) that pass, as array('Q'); None if `cancelled()` became true.

        Works chunk by chunk, asking `cancelled()` and calling `progress(done_rows)`
        between chunks (for a thread worker). The result is exactly that of testing
        each row by itself (`ExitFilter.matches` on the decoded exit, or the needle
        in `ExitRows.text(seq).lower()`), only computed per distinct encoding.
        """
        out = array("Q")
        lo, hi = self._seq_range(lo, hi) or (lo, hi)
        run = self._substring(rows) if self.needle is not None else self._filter(rows)
        start = lo
        while start < hi:
            if cancelled():
                return None
            end = min(hi, start + chunk)
            run(start, end, out)
            if progress is not None:
                progress(end - lo)
            start = end
        return out

    def _filter(self, rows: ExitRows) -> Callable[[int, int, array], None]:
        """The chunk runner of a parsed filter.

        1. each distinct reason is decided once, from its name (kind, `reason=`);
        2. `vcpu=` / `rip=` read their columns, once per distinct value;
        3. the rest (flags, qualification values) is decided once per distinct
           encoding, and rows are read by their encoding codes (EncodingIndex).
        Each stage gives a mask of the chunk; the masks are ANDed. A decoder that
        raises makes the filter raise where testing row by row would: for a reason,
        when a row of it is in the chunk; for an encoding, when a row of it passes
        stages 1-2.
        """
        log = rows.log
        by_reason = self.kind_filter is not None or bool(self.reason_conditions)
        residual = self.residual
        decode = rows.decode
        reason_failed: dict[int, Exception] = {}
        failed: dict[Key, Exception] = {}

        def reason_passes(reason: int) -> int:
            try:
                return 1 if self._reason_ok(reason, rows.name_of(reason)) else 0
            except Exception as e:  # noqa: BLE001 - raised below if the reason is in the chunk
                reason_failed[reason] = e
                return 0

        reason_ok = _Lookup(reason_passes)

        def passes(key: Key) -> int:
            if by_reason and not reason_ok[key[0]]:
                return 0
            assert residual is not None
            try:
                name, q = decode(*key)
                return 1 if residual.matches(ExitEvent(0, 0, 0, key[0], name, 0, 0, key[1], key[2], q)) else 0
            except Exception as e:  # noqa: BLE001 - raised below if a row of it is selected
                failed[key] = e
                return 1

        by_encoding = _ByCode(Memo(passes))
        by_rip = [_ByCode(_Lookup(lambda v, c=c: 1 if c.holds(v) else 0))
                  for c in self.column_conditions if c.key == "rip"]
        by_value = {id(c): _Lookup(lambda v, c=c: 1 if c.holds(v) else 0) for c in self.column_conditions}

        def run(start: int, end: int, out: array) -> None:
            masks: list[bytes] = []
            if by_reason:
                masks.append(_mask(log.reason[start:end], reason_ok))
            rips = iter(by_rip)
            for c in self.column_conditions:
                if c.key == "rip":
                    masks.append(_rip_mask(rows, start, end, next(rips)))
                else:
                    masks.append(_mask(getattr(log, c.key)[start:end], by_value[id(c)]))
            if residual is not None:
                only = reduce(_and, masks) if masks else None
                masks.append(_encoding_mask(rows, start, end, by_encoding, only))
            if reason_failed and not reason_failed.keys().isdisjoint(log.reason[start:end]):
                raise next(e for r, e in reason_failed.items() if r in set(log.reason[start:end]))
            if not masks:
                out.extend(range(start, end))
                return
            mask = reduce(_and, masks)
            if not failed:
                _add_seqs(out, mask, start)
                return
            kept = array("Q")
            _add_seqs(kept, mask, start)
            for key in _encodings_at(log, list(kept)):
                if key in failed:
                    raise failed[key]
            out.extend(kept)

        return run

    def _substring(self, rows: ExitRows) -> Callable[[int, int, array], None]:
        """The chunk runner of a substring (the needle in each row's text): see `_text_masker`."""
        assert self.needle is not None
        mask = _text_masker(rows, self.needle)

        def run(start: int, end: int, out: array) -> None:
            _add_seqs(out, mask(start, end), start)

        return run

    def describe(self) -> str:
        """How the pane says what it filters by."""
        if self.needle is not None:
            return f"text: {self.text}"
        return f"filter: {self.text}"


def _piece_cost(piece: str) -> int:
    """0: only an encoding's text can hold `piece`; 1: or a RIP; 2: or any number cell."""
    chars = set(piece)
    return 2 if chars <= _DECIMAL_CHARS else 1 if chars <= _HEX_CHARS else 0


_BIT = [bytes(1 if v >> i & 1 else 0 for v in range(256)) for i in range(8)]  # translate: bit i -> 0 / 1
_NOT = bytes([1, 0]) + bytes(254)  # translate: 0 <-> 1
_MAX_PIECES = 6
_WHOLE = 1 << _MAX_PIECES  # in an encoding's bits: the whole needle is in its text


def _text_masker(rows: ExitRows, needle: str) -> Callable[[int, int], bytes]:
    """mask(start, end): 1 for each row of [start, end) whose text (`ExitRows.text`,
    lower-cased) holds `needle`.

    A row's text is its cells joined by single spaces. A piece of text without a
    space lies inside one cell, so a row holds it when its encoding's text does
    (reason, name, qualification: decided per distinct encoding), or its RIP (per
    distinct RIP; only a piece of hex digits and x can be there), or seq, vCPU,
    time or length (only an all-digit piece: seq and time are formatted per row).
    A needle without a space is such a piece. A needle with spaces is held by the
    rows whose encoding's text holds it whole, and by those whose text holds each
    of its pieces and then, tested row by row, the whole needle.
    """
    log = rows.log
    parts = rows._searchable  # encoding -> ("reason name", qualification), lower-cased
    spaced = " " in needle
    if spaced:  # the pieces each matching row holds; the cheap ones, or the longest
        pieces = [p for p in needle.split(" ") if p]
        cheap = sorted({p for p in pieces if _piece_cost(p) < 2}, key=len, reverse=True)
        pieces = cheap[:_MAX_PIECES] or [max(pieces, key=len)]
    else:
        pieces = [needle]
    in_rip = [i for i, p in enumerate(pieces) if _piece_cost(p) >= 1]
    in_number = [i for i, p in enumerate(pieces) if _piece_cost(p) >= 2]

    def encoding_bits(key: Key) -> int:  # bit i: pieces[i] is in the encoding's text; _WHOLE
        head, qual = parts[key]
        bits = 0
        for i, p in enumerate(pieces):
            if p in head or p in qual:
                bits |= 1 << i
        if spaced and (needle in head or needle in qual):
            bits |= _WHOLE
        return bits

    def rip_bits(rip: int) -> int:
        text = f"{rip:#x}"
        return sum(1 << i for i in in_rip if pieces[i] in text)

    by_encoding = _ByCode(Memo(encoding_bits))
    by_rip = _ByCode(_Lookup(rip_bits))
    by_number = {i: {name: _Lookup(lambda v, p=pieces[i]: 1 if p in str(v) else 0) for name in ("vcpu", "length")}
                 for i in in_number}

    def mask(start: int, end: int) -> bytes:
        encoding = _encoding_mask(rows, start, end, by_encoding)
        rip = _rip_mask(rows, start, end, by_rip) if in_rip else b""
        held = b""  # rows holding every piece
        for i, p in enumerate(pieces):
            m = encoding.translate(_BIT[i])
            if i in in_rip:
                m = _or(m, rip.translate(_BIT[i]))
            if i in in_number:
                for name, lookup in by_number[i].items():  # few distinct values
                    m = _or(m, _mask(getattr(log, name)[start:end], lookup))
                for values in (range(start, end), log.time[start:end]):  # (nearly) all distinct: per row
                    m = _or(m, bytes(map(operator.contains, map(str, values), repeat(p))))
            held = _and(held, m) if held else m
        if not spaced:
            return held
        inside = encoding.translate(_BIT[_MAX_PIECES])
        rest = _and(held, inside.translate(_NOT))  # rows to test whole
        hits = rest.count(1)
        if not hits:
            return inside
        if hits * 4 > len(rest):  # most rows: format them all, in the faster loop
            texts = rows.search_texts(range(start, end))
            return _or(inside, bytes(map(operator.and_, rest, map(operator.contains, texts, repeat(needle)))))
        kept = array("Q")
        _add_seqs(kept, rest, start)
        out = bytearray(inside)
        for seq in compress(kept, map(operator.contains, rows.search_texts(kept), repeat(needle))):
            out[seq - start] = 1
        return bytes(out)

    return mask


def last_matching(plan: FilterPlan | None, rows: ExitRows, count: int, last: int) -> tuple[list[int], int]:
    """(the last `last` seqs below `count` that pass `plan`, how many pass in all)."""
    if plan is None:
        return list(range(max(0, count - last), count)), count
    seqs = plan.select(rows, 0, count)
    assert seqs is not None
    return list(seqs[max(0, len(seqs) - last):]), len(seqs)


# -- renderables for --script and the detail pane ------------------------------------
