"""The exit-trace file: an SQLite database, its schema, its version, and the packed
register deltas.

One table per kind of record, each with a sorted `seq` or `time` column
(docs/trace-format.md documents every table and column):

- `meta`       key / value: the format version, the machine configuration, the
               image's SHA-256, how the run stopped, and `ok` (set on clean close);
- `exits`      one row per VM exit, the engine's exit stream as it is;
- `reasons`    the name of every exit reason that occurs (from the engine's decoder);
- `registers`  the register names, in the order the other tables use;
- `keyframes`  every register of a vCPU at the first of its exits in each batch;
- `regs`       per batch and vCPU, the registers that changed between consecutive
               exits, XOR-packed and compressed (`pack_deltas` / `unpack_deltas`);
- `serial`     what the guest wrote to the console, with the virtual time;
- `inputs`     what entered the machine from outside (serial input), with the time;
- `injections` the interrupts the VMM injected (virtual time, vCPU, vector);
- `schedule`   the vCPUs' turns on the host thread, in virtual time, with their exits;
- views        `exit_names`, `exit_counts`, `serial_text` for the sqlite3 shell.

`FORMAT_VERSION` changes only when an older reader could misread a newer file;
adding a table, a column or a meta key keeps the version (readers ignore what
they do not know). A reader refuses a file whose version is newer than its own.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence

from ..errors import EngineError

FORMAT_VERSION = 1
#: What `meta.format` holds in every trace (tells a trace from other SQLite files).
FORMAT_NAME = "vmmtui exit trace"
#: Exits per write transaction (and per register keyframe of each vCPU).
BATCH = 4096
#: zlib level of the register deltas (6: about 3x smaller than 1 at 2x its cost; see the docs).
ZLIB_LEVEL = 6
U64 = 0xFFFF_FFFF_FFFF_FFFF

EXIT_COLUMNS = ("vcpu", "time", "reason", "rip", "length", "info1", "info2", "aux1", "aux2")


class TraceError(EngineError):
    """A trace that cannot be written or read; `str()` is one clear line (newlines in
    a quoted SQLite message are folded into spaces)."""

    title = "bad trace"

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def schema(register_names: Sequence[str]) -> str:
    """The SQL that creates an empty trace whose snapshots hold `register_names`."""
    kf_columns = ",\n    ".join(f"{name} INTEGER NOT NULL" for name in register_names)
    return f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);
CREATE TABLE exits (
    seq    INTEGER PRIMARY KEY,
    vcpu   INTEGER NOT NULL,
    time   INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    rip    INTEGER NOT NULL,
    length INTEGER NOT NULL,
    info1  INTEGER NOT NULL,
    info2  INTEGER NOT NULL,
    aux1   INTEGER NOT NULL,
    aux2   INTEGER NOT NULL,
    vmm_ns INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE reasons (
    reason INTEGER PRIMARY KEY,
    name   TEXT NOT NULL
);
CREATE TABLE registers (
    idx  INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE keyframes (
    seq  INTEGER PRIMARY KEY,
    vcpu INTEGER NOT NULL,
    {kf_columns}
);
CREATE TABLE regs (
    first_seq INTEGER NOT NULL,
    vcpu      INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    changed   INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (first_seq, vcpu)
);
CREATE TABLE serial (
    id   INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE inputs (
    id   INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE injections (
    id     INTEGER PRIMARY KEY,
    time   INTEGER NOT NULL,
    vcpu   INTEGER NOT NULL,
    vector INTEGER NOT NULL
);
CREATE TABLE schedule (
    id        INTEGER PRIMARY KEY,
    vcpu      INTEGER NOT NULL,
    start     INTEGER NOT NULL,
    end       INTEGER NOT NULL,
    first_seq INTEGER,
    last_seq  INTEGER,
    why       TEXT
);
CREATE TABLE image (
    sha256 TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    data   BLOB NOT NULL
);
CREATE VIEW exit_names AS
    SELECT e.seq, e.vcpu, e.time, e.reason, r.name, printf('%#x', e.rip) AS rip, e.length,
           printf('%#x', e.info1) AS info1, printf('%#x', e.info2) AS info2,
           printf('%#x', e.aux1) AS aux1, printf('%#x', e.aux2) AS aux2
    FROM exits AS e LEFT JOIN reasons AS r USING (reason);
CREATE VIEW exit_counts AS
    SELECT e.reason, r.name, count(*) AS count,
           round(100.0 * count(*) / (SELECT count(*) FROM exits), 2) AS percent
    FROM exits AS e LEFT JOIN reasons AS r USING (reason)
    GROUP BY e.reason ORDER BY count DESC, e.reason;
CREATE VIEW serial_text AS
    SELECT group_concat(CAST(data AS TEXT), '') AS text FROM (SELECT data FROM serial ORDER BY id);
"""


# -- unsigned 64-bit values in SQLite's signed integers ---------------------------------

def to_signed(values: array) -> array:
    """An array('Q') as array('q') with the same bits (SQLite integers are signed)."""
    return array("q", values.tobytes())


def to_unsigned(values: Sequence[int]) -> array:
    """Signed 64-bit values read back from SQLite as array('Q') with the same bits."""
    return array("Q", array("q", values).tobytes())


def u64(value: int) -> int:
    """One value read from SQLite as unsigned 64-bit."""
    return value & U64


def s64(value: int) -> int:
    """One unsigned 64-bit value as SQLite stores it (two's complement)."""
    value &= U64
    return value - (1 << 64) if value >> 63 else value


# -- register deltas ---------------------------------------------------------------------

def pack_deltas(snapshots: Sequence[tuple[int, ...]]) -> tuple[int, bytes]:
    """Pack the registers of consecutive exits of one vCPU after the first (the keyframe).

    Returns (`changed`, `data`): bit j of `changed` is set when register j takes
    more than one value among `snapshots`; `data` is zlib-compressed, for each
    such register in ascending j, the (n - 1) little-endian u64 values
    r[k][j] XOR r[k-1][j] for k = 1 .. n-1. A register that stays as in the
    keyframe costs nothing; one that does not change between two exits costs a
    zero that compresses away.
    """
    n = len(snapshots)
    if n < 2:
        return 0, b""
    columns = list(zip(*snapshots))
    changed = 0
    parts = []
    whole = struct.Struct(f"<{n}Q")
    for j, column in enumerate(columns):
        if column.count(column[0]) == n:
            continue
        changed |= 1 << j
        raw = whole.pack(*column)
        x = int.from_bytes(raw[8:], "little") ^ int.from_bytes(raw[:-8], "little")
        parts.append(x.to_bytes(8 * (n - 1), "little"))
    return changed, zlib.compress(b"".join(parts), ZLIB_LEVEL) if parts else b""


def unpack_deltas(keyframe: Sequence[int], count: int, changed: int, data: bytes) -> list[tuple[int, ...]]:
    """The `count` register tuples of one vCPU's exits in a batch, keyframe first."""
    if count < 1:
        raise TraceError("register chunk with no exits")
    width = len(keyframe)
    columns: list[Sequence[int]] = [(v,) * count for v in keyframe]
    if changed:
        if changed >> width:
            raise TraceError("register chunk names a register the trace does not have")
        try:
            raw = zlib.decompress(data)
        except zlib.error as e:
            raise TraceError(f"register chunk cannot be decompressed: {e}") from None
        per = 8 * (count - 1)
        js = [j for j in range(width) if changed >> j & 1]
        if len(raw) != per * len(js):
            raise TraceError("register chunk has the wrong size")
        for i, j in enumerate(js):
            xs = array("Q")
            xs.frombytes(raw[i * per:(i + 1) * per])
            if sys.byteorder == "big":
                xs.byteswap()
            value = keyframe[j]
            out = [value]
            append = out.append
            for x in xs:
                value ^= x
                append(value)
            columns[j] = out
    return list(zip(*columns))
