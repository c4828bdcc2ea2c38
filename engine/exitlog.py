"""The exit stream: every VM exit of a run, stored as columns, decoded on demand.

Each exit is a row of integers (the architectural reason, the raw qualification /
EXITINFO values, the guest RIP, ...) appended in a few microseconds; the decoded
form (`ExitEvent`, with the refdata name and the qualification split into its
parts) is built only when someone reads the row. A million exits take a few tens
of megabytes.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
    """Append-only columns of exits; rows are numbered from 0 (the `seq`)."""

    COLUMNS = ("vcpu", "time", "reason", "rip", "length", "info1", "info2", "aux1", "aux2")

    def __init__(self, decoder: Decoder) -> None:
        self._decode = decoder
        self.vcpu = array("H")
        self.time = array("Q")
        self.reason = array("Q")
        self.rip = array("Q")
        self.length = array("B")
        self.info1 = array("Q")
        self.info2 = array("Q")
        self.aux1 = array("Q")
        self.aux2 = array("Q")
        self._listeners: list[Callable[[int], None]] = []

    def append(self, vcpu: int, time: int, reason: int, rip: int, length: int,
               info1: int, info2: int, aux1: int = 0, aux2: int = 0) -> int:
        """Store one exit; returns its seq."""
        seq = len(self.reason)
        self.vcpu.append(vcpu)
        self.time.append(time)
        self.reason.append(reason)
        self.rip.append(rip)
        self.length.append(length)
        self.info1.append(info1 & 0xFFFF_FFFF_FFFF_FFFF)
        self.info2.append(info2 & 0xFFFF_FFFF_FFFF_FFFF)
        self.aux1.append(aux1 & 0xFFFF_FFFF_FFFF_FFFF)
        self.aux2.append(aux2 & 0xFFFF_FFFF_FFFF_FFFF)
        for listener in self._listeners:
            listener(seq)
        return seq

    def update_aux(self, seq: int, aux1: int | None = None, aux2: int | None = None) -> None:
        """Complete an exit's operands after the VMM handled it (an IN's value, a REP count)."""
        if aux1 is not None:
            self.aux1[seq] = aux1 & 0xFFFF_FFFF_FFFF_FFFF
        if aux2 is not None:
            self.aux2[seq] = aux2 & 0xFFFF_FFFF_FFFF_FFFF

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call `listener(seq)` for every exit appended from now on (it runs on the exit path)."""
        self._listeners.append(listener)

    def __len__(self) -> int:
        return len(self.reason)

    def __getitem__(self, seq: int) -> ExitEvent:
        if seq < 0:
            seq += len(self)
        name, decoded = self._decode(self.reason[seq], self.info1[seq], self.info2[seq],
                                     self.aux1[seq], self.aux2[seq])
        return ExitEvent(seq, self.vcpu[seq], self.time[seq], self.reason[seq], name,
                         self.rip[seq], self.length[seq], self.info1[seq], self.info2[seq], decoded)

    def __iter__(self) -> Iterator[ExitEvent]:
        for seq in range(len(self)):
            yield self[seq]

    def name(self, seq: int) -> str:
        """The exit's name without decoding its qualification."""
        return self._decode(self.reason[seq], 0, 0, 0, 0)[0]

    def counts(self) -> Counter[str]:
        """How many exits of each name."""
        by_reason = Counter(self.reason)
        return Counter({self._decode(r, 0, 0, 0, 0)[0]: n for r, n in by_reason.items()})
