"""The exit stream: every VM exit of a run, stored as columns, decoded on demand.

Each exit is a row of integers (the architectural reason, the raw qualification /
EXITINFO values, the guest RIP, ...) appended in a few microseconds; the decoded
form (`ExitEvent`, with the refdata name and the qualification split into its
parts) is built only when someone reads the row. A million exits take a few tens
of megabytes.
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

_U64 = 0xFFFF_FFFF_FFFF_FFFF
#: decode(reason, info1, info2, aux1, aux2) -> (name, decoded qualification)
Decoder = Callable[[int, int, int, int, int], tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """One VM exit, decoded.

    `reason` is the architectural number (Intel basic exit reason; AMD EXITCODE);
    `info1`/`info2` are the raw exit qualification and guest-physical / linear
    address (Intel) or EXITINFO1 / EXITINFO2 (AMD); `qualification` their decoding
    together with the operands the VMM read from guest registers (port data, MSR
    index and value, CPUID leaf).
    """

    seq: int
    vcpu: int
    time: int
    reason: int
    name: str
    rip: int
    length: int
    info1: int
    info2: int
    qualification: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The exit as the `--json` output and the trace export write it."""
        return {"seq": self.seq, "vcpu": self.vcpu, "time": self.time, "reason": self.reason,
                "name": self.name, "rip": self.rip, "length": self.length,
                "qualification": self.qualification}


class ExitLog:
    """Append-only columns of exits; rows are numbered from 0 (the `seq`).

    Appends go to a list of row tuples first (the exit path pays ~0.2 us) and move
    into the typed columns in batches, or whenever anything reads the log. One
    thread appends (the engine's); others may read at the same time (the UI while
    the guest runs): moving rows and completing a row's operands hold a lock.

    Only `update_aux` changes a stored row; `aux_changes` tells a reader that keeps
    something derived from the rows (the exit-log pane's index of encodings) which
    rows it changed, so that the reader reads those again instead of everything.

    Beside the rows, `vmm_ns` keeps the host wall-clock nanoseconds the VMM spent
    handling each exit (`set_vmm_ns`, 0: not measured, or not finished yet). It is
    not one of `COLUMNS`: wall time differs from run to run, and `COLUMNS` are what
    a replay compares. Only the engine's thread writes it, so it needs no lock.
    """

    COLUMNS = ("vcpu", "time", "reason", "rip", "length", "info1", "info2", "aux1", "aux2")
    _BATCH = 4096
    #: `aux_changes` names changed rows by blocks of this many seqs.
    AUX_BLOCK = 4096

    def __init__(self, decoder: Decoder) -> None:
        self._decode = decoder
        self._cols = {
            "vcpu": array("H"), "time": array("Q"), "reason": array("Q"), "rip": array("Q"),
            "length": array("B"), "info1": array("Q"), "info2": array("Q"), "aux1": array("Q"),
            "aux2": array("Q"),
        }
        self._order = [self._cols[c] for c in self.COLUMNS]
        self._vmm_ns = array("Q")  # grown by set_vmm_ns only (the engine's thread)
        self._pending: list[tuple[int, ...]] = []
        self._flushed = 0  # rows in the columns
        self._count = 0  # rows in all
        self._lock = threading.Lock()
        self._aux_version = 0  # how many times update_aux changed a row already in the columns
        self._aux_blocks: dict[int, int] = {}  # seq // AUX_BLOCK -> _aux_version after its last change

    def append(self, vcpu: int, time: int, reason: int, rip: int, length: int,
               info1: int, info2: int, aux1: int = 0, aux2: int = 0) -> int:
        """Store one exit; returns its seq. Values are unsigned 64-bit."""
        seq = self._count
        self._pending.append((vcpu, time, reason, rip, length, info1 & _U64, info2 & _U64, aux1 & _U64,
                              aux2 & _U64))
        self._count = seq + 1
        if seq + 1 - self._flushed >= self._BATCH:
            self.flush()
        return seq

    def flush(self) -> None:
        """Move appended rows into the columns."""
        with self._lock:
            pending = self._pending
            n = len(pending)  # rows appended meanwhile by the engine stay for the next flush
            if not n:
                return
            for column, values in zip(self._order, zip(*pending[:n])):
                column.extend(values)
            del pending[:n]
            self._flushed += n

    def column(self, name: str) -> array:
        """One column (an `array`), complete up to the last exit."""
        self.flush()
        return self._cols[name]

    vcpu = property(lambda self: self.column("vcpu"))
    time = property(lambda self: self.column("time"))
    reason = property(lambda self: self.column("reason"))
    rip = property(lambda self: self.column("rip"))
    length = property(lambda self: self.column("length"))
    info1 = property(lambda self: self.column("info1"))
    info2 = property(lambda self: self.column("info2"))
    aux1 = property(lambda self: self.column("aux1"))
    aux2 = property(lambda self: self.column("aux2"))

    def update_aux(self, seq: int, aux1: int | None = None, aux2: int | None = None) -> None:
        """Complete an exit's operands after the VMM handled it (an IN's value, a REP count)."""
        with self._lock:
            i = seq - self._flushed
            if i >= 0:
                row = self._pending[i]
                self._pending[i] = row[:7] + (row[7] if aux1 is None else aux1 & _U64,
                                              row[8] if aux2 is None else aux2 & _U64)
                return
            if aux1 is not None:
                self._cols["aux1"][seq] = aux1 & _U64
            if aux2 is not None:
                self._cols["aux2"][seq] = aux2 & _U64
            # Rows still pending were never visible to a reader; these were.
            self._aux_version += 1
            self._aux_blocks[seq // self.AUX_BLOCK] = self._aux_version

    def set_vmm_ns(self, seq: int, ns: int) -> None:
        """Keep the host nanoseconds the VMM spent handling exit `seq` (engine thread only)."""
        col = self._vmm_ns
        if seq == len(col):  # the usual case: the last exit
            col.append(ns)
        elif seq < len(col):  # an exit handled around a later one (an MMIO write's IPI)
            col[seq] = ns
        else:
            col.frombytes(bytes(8 * (seq - len(col))))  # exits whose handling was not measured
            col.append(ns)

    def add_vmm_ns(self, seq: int, ns: int) -> None:
        """Add to exit `seq`'s VMM time (the later elements of a string I/O exit)."""
        col = self._vmm_ns
        self.set_vmm_ns(seq, (col[seq] if seq < len(col) else 0) + ns)

    def vmm_ns(self, start: int = 0, stop: int | None = None) -> array:
        """The VMM's host nanoseconds of exits [start, stop) (default: all), a copy;
        0 where not measured or not yet finished."""
        n = len(self) if stop is None else stop
        values = self._vmm_ns[start:n]
        values.frombytes(bytes(8 * max(0, n - start - len(values))))
        return values

    def aux_changes(self, since: int = 0) -> tuple[int, list[range]]:
        """(a version, the seqs whose aux1 / aux2 may have changed after version `since`).

        The seqs come as ranges of whole `AUX_BLOCK` blocks (clipped to the log).
        Ask before reading the rows, and pass the version back next time: a change
        made while the rows are read is then reported again, never lost.
        """
        with self._lock:
            version = self._aux_version
            blocks = sorted(b for b, v in self._aux_blocks.items() if v > since)
        n = self._count
        return version, [range(b * self.AUX_BLOCK, min(n, (b + 1) * self.AUX_BLOCK)) for b in blocks]

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, seq: int) -> ExitEvent:
        if seq < 0:
            seq += len(self)
        if not 0 <= seq < len(self):
            raise IndexError(f"no exit {seq}")
        self.flush()
        c = self._cols
        name, decoded = self._decode(c["reason"][seq], c["info1"][seq], c["info2"][seq],
                                     c["aux1"][seq], c["aux2"][seq])
        return ExitEvent(seq, c["vcpu"][seq], c["time"][seq], c["reason"][seq], name,
                         c["rip"][seq], c["length"][seq], c["info1"][seq], c["info2"][seq], decoded)

    def __iter__(self) -> Iterator[ExitEvent]:
        for seq in range(len(self)):
            yield self[seq]

    def name(self, seq: int) -> str:
        """The exit's name without decoding its qualification."""
        return self.reason_name(self.reason[seq])

    def reason_name(self, reason: int) -> str:
        """The name of an exit reason / exit code."""
        return self._decode(reason, 0, 0, 0, 0)[0]

    def counts(self) -> Counter[str]:
        """How many exits of each name."""
        by_reason = Counter(self.reason)
        return Counter({self._decode(r, 0, 0, 0, 0)[0]: n for r, n in by_reason.items()})
