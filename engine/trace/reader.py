"""Reading a trace: `Trace.open(path)` checks the file and gives the recorded
configuration, the exits (as columns, like the engine's `ExitLog`), the registers
at any exit (keyframe + deltas), the console output and the inputs.

Every way a file can be wrong ends in a `TraceError` with one line naming the
file: missing, not SQLite, not a trace, truncated, damaged, or written by a newer
format. A trace whose recorder was killed (`meta.ok` = 0) opens with every batch
it committed; `Trace.complete` says whether it was closed cleanly.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config import DEFAULT_QUANTUM, MachineConfig
from ..exitlog import ExitEvent
from .format import (
    BATCH, EXIT_COLUMNS, FORMAT_NAME, FORMAT_VERSION, TraceError, to_unsigned, u64, unpack_deltas,
)

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: What reading a damaged file can raise besides sqlite3's errors.
_DAMAGE = (UnicodeDecodeError, ValueError, TypeError, OverflowError, KeyError, IndexError)
_TYPECODES = {"vcpu": "H", "length": "B"}
#: The types of the meta values the reader uses (others are only shown).
_META_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("vcpus", "mem_size", "page_size", "time_per_exit", "batch", "ok", "exits", "end_time",
                     "serial_bytes", "image_size", "image_entry", "quantum", "fast"), (int,)),
    "stop_status": (int, type(None)),
    "elapsed_s": (int, float),
    **dict.fromkeys(("vendor", "image_path", "image_sha256", "stop", "stop_message", "structure", "created",
                     "exit_options", "controls", "hw_controls", "registers", "vmm_log", "id"), (str,)),
}
_TYPE_WORDS = {int: "an integer", float: "a number", str: "text", type(None): "null"}
Decoder = Callable[[int, int, int, int, int], tuple[str, dict[str, Any]]]
_HARDWARE: dict[str, Any] = {}


def hardware_for(vendor: str) -> Any:
    """The engine's `Hardware` of `vendor`, for decoding exits and naming VMM steps.

    It comes from an idle machine (never loaded, never run): the engine has no
    decoder that stands alone yet.
    """
    hw = _HARDWARE.get(vendor)
    if hw is None:
        from ..machine import Machine

        hw = Machine(MachineConfig(vendor=vendor, mem_size=2 << 20)).hw
        _HARDWARE[vendor] = hw
    return hw


class TraceExits:
    """The exits of a trace with the reading API of the engine's `ExitLog`:
    typed columns (`vcpu`, `time`, `reason`, ... as arrays), `len`, `log[seq]` ->
    `ExitEvent` decoded with the vendor's decoder, `reason_name`, `counts`."""

    COLUMNS = EXIT_COLUMNS

    def __init__(self, columns: dict[str, array], decoder: Decoder, names: dict[int, str]) -> None:
        self._cols = columns
        self._decode = decoder
        self._names = dict(names)
        self._len = len(columns["reason"])

    def column(self, name: str) -> array:
        return self._cols[name]

    def extend(self, columns: list[array]) -> None:
        """Append rows given as columns in EXIT_COLUMNS order (`aux2` last, so that a
        reader on another thread never sees a row with a column missing)."""
        for name, values in zip(EXIT_COLUMNS, columns):
            self._cols[name].extend(values)
        self._len = len(self._cols["aux2"])

    def flush(self) -> None:
        """Nothing to do (ExitLog compatibility)."""

    vcpu = property(lambda self: self._cols["vcpu"])
    time = property(lambda self: self._cols["time"])
    reason = property(lambda self: self._cols["reason"])
    rip = property(lambda self: self._cols["rip"])
    length = property(lambda self: self._cols["length"])
    info1 = property(lambda self: self._cols["info1"])
    info2 = property(lambda self: self._cols["info2"])
    aux1 = property(lambda self: self._cols["aux1"])
    aux2 = property(lambda self: self._cols["aux2"])

    def __len__(self) -> int:
        return self._len

    def row(self, seq: int) -> tuple[int, ...]:
        """(vcpu, time, reason, rip, length, info1, info2, aux1, aux2) of exit `seq`."""
        return tuple(self._cols[c][seq] for c in EXIT_COLUMNS)

    def __getitem__(self, seq: int) -> ExitEvent:
        if seq < 0:
            seq += self._len
        if not 0 <= seq < self._len:
            raise IndexError(f"no exit {seq}")
        c = self._cols
        name, decoded = self._decode(c["reason"][seq], c["info1"][seq], c["info2"][seq], c["aux1"][seq],
                                     c["aux2"][seq])
        return ExitEvent(seq, c["vcpu"][seq], c["time"][seq], c["reason"][seq], name, c["rip"][seq],
                         c["length"][seq], c["info1"][seq], c["info2"][seq], decoded)

    def __iter__(self) -> Iterator[ExitEvent]:
        for seq in range(self._len):
            yield self[seq]

    def name(self, seq: int) -> str:
        return self.reason_name(self._cols["reason"][seq])

    def reason_name(self, reason: int) -> str:
        name = self._names.get(reason)
        if name is None:
            name = self._names[reason] = self._decode(reason, 0, 0, 0, 0)[0]
        return name

    def counts(self) -> Counter[str]:
        by_reason = Counter(self._cols["reason"])
        return Counter({self.reason_name(r): n for r, n in by_reason.items()})

    def seq_at_time(self, time: int) -> int:
        """The first exit at or after virtual time `time` (len(self) if none)."""
        return bisect_left(self._cols["time"], time)


class Trace:
    """An open trace file (read-only)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self.meta: dict[str, Any] = {}
        self._exits: TraceExits | None = None
        self._chunks: OrderedDict[tuple[int, int], tuple[list[int], list[tuple[int, ...]]]] = OrderedDict()
        self._chunk_index: dict[int, list[tuple[int, int]]] | None = None

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Trace:
        """Open and check a trace; raises TraceError with one line for any bad file."""
        p = Path(path)
        if not p.exists():
            raise TraceError(f"{p}: no such file")
        if p.is_dir():
            raise TraceError(f"{p}: is a directory, not a trace")
        try:
            with open(p, "rb") as f:
                head = f.read(100)
            size = os.path.getsize(p)
        except OSError as e:
            raise TraceError(f"{p}: cannot read: {e.strerror}") from None
        if not head:
            raise TraceError(f"{p}: the file is empty, not a vmmtui trace")
        if not head.startswith(_SQLITE_MAGIC):
            raise TraceError(f"{p}: not a vmmtui trace (not an SQLite database)")
        if len(head) < 100:
            raise TraceError(f"{p}: truncated ({size} bytes): not even an SQLite header")
        _check_size(p, head, size)
        try:
            db = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise TraceError(f"{p}: cannot open: {e}") from None
        db.text_factory = lambda b: b.decode("utf-8", errors="replace")
        trace = cls(p, db)
        try:
            with trace._guard("read the trace's header tables"):
                trace._load_meta()
        except TraceError:
            db.close()
            raise
        return trace

    @contextmanager
    def _guard(self, what: str = "read") -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise TraceError(f"{self.path}: damaged trace: cannot {what}: {e}") from None
        except sqlite3.Error as e:
            raise TraceError(f"{self.path}: cannot {what}: {e}") from None
        except _DAMAGE as e:  # values a damaged file holds where numbers or text belong
            raise TraceError(f"{self.path}: damaged trace: cannot {what}: {type(e).__name__}: {e}") from None

    def _load_meta(self) -> None:
        p = self.path
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                if self._wal_missing():
                    raise TraceError(f"{p}: incomplete trace whose -wal file is missing (its recorder was "
                                     f"killed: copy {p.name}-wal along with it)")
                raise TraceError(f"{p}: not a vmmtui trace (an SQLite database without a meta table)")
            self.meta = dict(self._db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            raise TraceError(f"{p}: not a readable vmmtui trace: {e}") from None
        if self.meta.get("format") != FORMAT_NAME:
            raise TraceError(f"{p}: not a vmmtui trace (its meta table does not say so)")
        version = self.meta.get("format_version")
        if not isinstance(version, int):
            raise TraceError(f"{p}: damaged trace: no format version")
        if version > FORMAT_VERSION:
            raise TraceError(f"{p}: trace format version {version} is newer than this vmmtui reads "
                             f"(up to {FORMAT_VERSION}); upgrade vmmtui")
        missing = {"exits", "reasons", "registers", "keyframes", "regs", "serial", "inputs"} - tables
        if missing:
            raise TraceError(f"{p}: damaged trace: no {', '.join(sorted(missing))} table")
        with self._guard("read the register names"):
            self.register_names = tuple(name for _i, name in
                                        self._db.execute("SELECT idx, name FROM registers ORDER BY idx"))
            self.reason_names = dict(self._db.execute("SELECT reason, name FROM reasons"))
            count, last = self._db.execute("SELECT count(*), max(seq) FROM exits").fetchone()
        if count and last != count - 1:
            raise TraceError(f"{p}: damaged trace: {count} exits numbered up to {last}")
        self._count = count
        for key in ("vendor", "vcpus", "mem_size", "page_size"):
            if key not in self.meta:
                raise TraceError(f"{p}: damaged trace: no {key} in its meta table")
        if self.meta["vendor"] not in ("intel", "amd"):
            raise TraceError(f"{p}: damaged trace: meta vendor is {self.meta['vendor']!r}, not intel or amd")
        for key, types in _META_TYPES.items():
            if key in self.meta and not isinstance(self.meta[key], types) or isinstance(self.meta.get(key), bool):
                raise TraceError(f"{p}: damaged trace: meta {key} is {self.meta[key]!r}, not "
                                 f"{' or '.join(_TYPE_WORDS[t] for t in types)}")
        names = self.register_names
        if not names or not all(isinstance(n, str) and n.isidentifier() for n in names) \
                or len(set(names)) != len(names):
            raise TraceError(f"{p}: damaged trace: bad register names")
        with self._guard("read the keyframe columns"):
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(keyframes)")]
        if columns != ["seq", "vcpu", *names]:
            raise TraceError(f"{p}: damaged trace: the keyframes table does not hold the registers it names")
        if not all(type(r) is int and isinstance(n, str) for r, n in self.reason_names.items()):
            raise TraceError(f"{p}: damaged trace: bad exit reason names")

    @property
    def wal_missing(self) -> bool:
        """Whether this incomplete trace's -wal file (with its last batches) is absent."""
        return not self.complete and self._wal_missing()

    def _wal_missing(self) -> bool:
        """Whether the file is in WAL mode (killed recorder) and nothing is in its -wal."""
        wal = Path(str(self.path) + "-wal")
        try:
            with open(self.path, "rb") as f:
                head = f.read(20)
        except OSError:
            return False
        return head[18:20] == b"\x02\x02" and (not wal.exists() or wal.stat().st_size == 0)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what was recorded -------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Whether the recorder closed the trace (False: killed or crashed mid-run)."""
        return self.meta.get("ok") == 1

    @property
    def vendor(self) -> str:
        return str(self.meta["vendor"])

    @property
    def vcpus(self) -> int:
        return int(self.meta["vcpus"])

    @property
    def time_per_exit(self) -> int:
        return int(self.meta.get("time_per_exit", 1000))

    def config(self) -> MachineConfig:
        """The machine configuration of the recorded run."""
        with self._guard("read the configuration"):
            exits = json.loads(self.meta.get("exit_options") or "[]")
            return MachineConfig(vendor=self.vendor, mem_size=int(self.meta["mem_size"]), vcpus=self.vcpus,
                                 page_size=int(self.meta["page_size"]), exits=[str(e) for e in exits],
                                 quantum=int(self.meta.get("quantum") or DEFAULT_QUANTUM),
                                 fast=bool(int(self.meta.get("fast") or 0)))

    def json_meta(self, key: str, default: Any = None) -> Any:
        """A meta value stored as JSON (controls, registers, vmm_log, ...)."""
        raw = self.meta.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            raise TraceError(f"{self.path}: damaged trace: bad {key} in meta") from None

    def __len__(self) -> int:
        return self._count

    @property
    def hw(self) -> Any:
        """The vendor's decoder and VMM-step names (engine `Hardware`)."""
        return hardware_for(self.vendor)

    @property
    def exits(self) -> TraceExits:
        """Every exit, loaded as columns on first use."""
        if self._exits is None:
            self._exits = self._load_exits()
        return self._exits

    def _load_exits(self) -> TraceExits:
        exits = TraceExits({name: array(_TYPECODES.get(name, "Q")) for name in EXIT_COLUMNS}, self.hw.decode,
                           self.reason_names)
        for batch in self.exit_batches():
            exits.extend(batch)
        if len(exits) != self._count:
            raise TraceError(f"{self.path}: damaged trace: {len(exits)} exits read, {self._count} expected")
        return exits

    def exit_batches(self, size: int = BATCH) -> Iterator[list[array]]:
        """The exits in seq order, `size` at a time, as typed columns (EXIT_COLUMNS order)."""
        columns = ", ".join(EXIT_COLUMNS)
        with self._guard("read the exits"):
            cursor = self._db.execute(f"SELECT {columns} FROM exits ORDER BY seq")
            while True:
                rows = cursor.fetchmany(size)
                if not rows:
                    return
                yield [array(_TYPECODES[name], values) if name in _TYPECODES else to_unsigned(values)
                       for name, values in zip(EXIT_COLUMNS, zip(*rows))]

    def vmm_ns(self) -> array | None:
        """The host nanoseconds the VMM spent handling each exit (index: seq; 0: not
        measured), from `exits.vmm_ns`; None in traces written before it was measured.
        Wall time: it differs from run to run, and a replay never compares it."""
        with self._guard("read the exit costs"):
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(exits)")}
            if "vmm_ns" not in columns:
                return None
            return array("Q", [ns for (ns,) in self._db.execute("SELECT vmm_ns FROM exits ORDER BY seq")])

    # -- registers ---------------------------------------------------------------------

    def _index(self) -> dict[int, list[tuple[int, int]]]:
        """Per vCPU, the (first_seq, last_seq) of every register chunk, in order."""
        if self._chunk_index is None:
            index: dict[int, list[tuple[int, int]]] = {}
            with self._guard("read the register index"):
                for first, vcpu, last in self._db.execute(
                        "SELECT first_seq, vcpu, last_seq FROM regs ORDER BY first_seq, vcpu"):
                    if not all(type(v) is int for v in (first, vcpu, last)):
                        raise TraceError(f"{self.path}: damaged trace: a register chunk that is not numbered")
                    index.setdefault(vcpu, []).append((first, last))
            self._chunk_index = index
        return self._chunk_index

    def _chunk(self, vcpu: int, first: int) -> tuple[list[int], list[tuple[int, ...]]]:
        """(seqs, register tuples) of one chunk, decoded (an LRU keeps the last few)."""
        key = (vcpu, first)
        hit = self._chunks.get(key)
        if hit is not None:
            self._chunks.move_to_end(key)
            return hit
        with self._guard("read the registers"):
            row = self._db.execute("SELECT last_seq, count, changed, data FROM regs WHERE first_seq = ? AND vcpu = ?",
                                   (first, vcpu)).fetchone()
            kf = self._db.execute("SELECT * FROM keyframes WHERE seq = ?", (first,)).fetchone()
            if row is None or kf is None or kf[1] != vcpu:
                raise TraceError(f"{self.path}: damaged trace: no registers for exit {first}")
            last, count, changed, data = row
            keyframe = tuple(u64(v) for v in kf[2:])
            if len(keyframe) != len(self.register_names):
                raise TraceError(f"{self.path}: damaged trace: a keyframe has {len(keyframe)} registers")
            vcpus = self.exits.vcpu
            if not first <= last < len(vcpus):
                raise TraceError(f"{self.path}: damaged trace: registers for exits {first}..{last}, "
                                 f"beyond the last exit")
            seqs = [s for s in range(first, last + 1) if vcpus[s] == vcpu]
            if len(seqs) != count:
                raise TraceError(f"{self.path}: damaged trace: register chunk at exit {first} has {count} "
                                 f"entries for {len(seqs)} exits")
            try:
                tuples = unpack_deltas(keyframe, count, changed, bytes(data))
            except TraceError as e:
                raise TraceError(f"{self.path}: damaged trace: exit {first}: {e}") from None
        self._chunks[key] = (seqs, tuples)
        if len(self._chunks) > 8:
            self._chunks.popitem(last=False)
        return seqs, tuples

    def register_tuple(self, seq: int) -> tuple[int, ...]:
        """The registers at exit `seq`, in `register_names` order."""
        if not 0 <= seq < self._count:
            raise TraceError(f"no exit {seq} in this trace ({self._count} exits)")
        vcpu = self.exits.vcpu[seq]
        spans = self._index().get(vcpu, [])
        i = bisect_right(spans, (seq, 1 << 64)) - 1
        if i < 0 or not spans[i][0] <= seq <= spans[i][1]:
            raise TraceError(f"{self.path}: damaged trace: no registers for exit {seq}")
        seqs, tuples = self._chunk(vcpu, spans[i][0])
        k = bisect_left(seqs, seq)
        if k >= len(seqs) or seqs[k] != seq:
            raise TraceError(f"{self.path}: damaged trace: no registers for exit {seq}")
        return tuples[k]

    def registers(self, seq: int) -> dict[str, int]:
        """The registers at exit `seq` by name (rip, rflags, rax, ..., cr0, cr3, ...)."""
        return dict(zip(self.register_names, self.register_tuple(seq)))

    def previous_of_vcpu(self, seq: int) -> int | None:
        """The exit of the same vCPU before exit `seq`, or None."""
        vcpus = self.exits.vcpu
        v = vcpus[seq]
        for s in range(seq - 1, -1, -1):
            if vcpus[s] == v:
                return s
        return None

    def register_chunks(self) -> Iterator[tuple[int, list[int], list[tuple[int, ...]]]]:
        """Every chunk in seq order: (vcpu, seqs, register tuples)."""
        for vcpu_first in sorted((first, vcpu) for vcpu, spans in self._index().items() for first, _ in spans):
            first, vcpu = vcpu_first
            seqs, tuples = self._chunk(vcpu, first)
            yield vcpu, seqs, tuples

    # -- console and inputs -----------------------------------------------------------------

    def serial_chunks(self) -> list[tuple[int, bytes]]:
        """(virtual time, bytes) of everything the guest wrote to the console, in order."""
        with self._guard("read the console output"):
            return [(t, bytes(d)) for t, d in self._db.execute("SELECT time, data FROM serial ORDER BY id")]

    def serial(self, upto_time: int | None = None) -> bytes:
        """The console output, all of it or what was written up to virtual time `upto_time`."""
        return b"".join(d for t, d in self.serial_chunks() if upto_time is None or t <= upto_time)

    def inputs(self) -> list[tuple[int, str, bytes]]:
        """(virtual time, kind, bytes) of what entered the machine from outside, in order."""
        with self._guard("read the inputs"):
            return [(t, k, bytes(d)) for t, k, d in self._db.execute("SELECT time, kind, data FROM inputs ORDER BY id")]

    def injections(self) -> list[tuple[int, int, int]]:
        """(time, vcpu, vector) of every interrupt the VMM injected; empty in traces
        written before interrupts were modelled (they have no such table)."""
        with self._guard("read the injections"):
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "injections" not in tables:
                return []
            return list(self._db.execute("SELECT time, vcpu, vector FROM injections ORDER BY id"))

    def schedule(self) -> list[tuple[int, int, int, int | None, int | None, str | None]]:
        """(vcpu, start, end, first_seq, last_seq, why) slices; empty in traces written
        before the scheduler, whose table has no `why` (read as None)."""
        with self._guard("read the schedule"):
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(schedule)")}
            why = "why" if "why" in columns else "NULL"
            return list(self._db.execute(f"SELECT vcpu, start, end, first_seq, last_seq, {why} FROM schedule "
                                         "ORDER BY start, id"))

    def image(self) -> tuple[str, bytes] | None:
        """(file name, bytes) of the guest image the trace carries, checked against
        `meta.image_sha256`; None in traces written before images were kept."""
        with self._guard("read the guest image"):
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "image" not in tables:
                return None
            row = self._db.execute("SELECT name, data FROM image WHERE sha256 = ?",
                                   (str(self.meta.get("image_sha256", "")),)).fetchone()
        if row is None:
            return None
        name, data = str(row[0]), bytes(row[1])
        if hashlib.sha256(data).hexdigest() != self.meta.get("image_sha256"):
            raise TraceError(f"{self.path}: damaged trace: the guest image it carries does not match its SHA-256")
        return name, data

    def describe(self) -> str:
        """One line: what the trace holds."""
        stop = self.meta.get("stop")
        state = f"stopped: {stop}" if stop else "incomplete: the recorder did not close it"
        return (f"{self.path.name}: {self._count:,} exits, {self.vendor}, "
                f"{Path(str(self.meta.get('image_path', '?'))).name}, {state}")


def _check_size(p: Path, head: bytes, size: int) -> None:
    """Catch a truncated database file from its header, before SQLite reads zeros."""
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise TraceError(f"{p}: damaged trace: bad page size in the SQLite header")
    pages = int.from_bytes(head[28:32], "big")
    valid = head[92:96] == head[24:28]  # the in-header size is valid when the change counters agree
    if size % page_size:
        raise TraceError(f"{p}: truncated trace: {size} bytes is not a whole number of {page_size}-byte pages")
    if valid and pages and size < pages * page_size:
        raise TraceError(f"{p}: truncated trace: {size} bytes, the database needs {pages * page_size}")


def open_trace(path: str | Path) -> Trace:
    """`Trace.open(path)`."""
    return Trace.open(path)


__all__ = ["BATCH", "Trace", "TraceExits", "hardware_for", "open_trace"]
