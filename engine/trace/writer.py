"""Recording a run: a `TraceWriter` subscribes to a machine's exits and console and
writes them to a trace file in batches.

The exit listener only appends the register snapshot to a list; every `BATCH`
exits it writes the batch in one transaction (exits, register keyframe and
deltas, new reason names, console output and inputs so far) and commits. The
database is in WAL mode with synchronous=NORMAL, so a run killed at any point
(SIGKILL included) leaves a trace that opens with every committed batch; `close`
writes the rest, sets `meta.ok = 1` and turns the file back into a single file
(journal_mode=DELETE) that can be copied on its own.

A batch never includes the exit being taken: the engine may still complete its
operands (an IN's value, a hypercall's result) after the listener returns, so a
batch ends at the exit before it. Each exit's row also holds `vmm_ns` (the host
nanoseconds the VMM spent on it, `ExitLog.vmm_ns`), handled by then.

A recorder attached to a machine that has already taken exits (`mid_run=True`,
the TUI's record toggle) records from the next exit on: the trace numbers its
exits from 0 and counts time from the moment recording started, so every reader
sees an ordinary trace, and `meta.first_seq` / `meta.start_time` say how to get
back to the session's numbers (session seq = seq + first_seq, session time =
time + start_time). The inputs fed before recording started can be given as
`prior_inputs`: they are kept (with times <= 0) so that a re-run from launch can
reach the first recorded exit.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import json
import os
import platform
import sqlite3
import threading
import uuid
from array import array
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..vcpu import SNAPSHOT_REGS
from .format import BATCH, EXIT_COLUMNS, FORMAT_NAME, FORMAT_VERSION, TraceError, pack_deltas, s64, schema, to_signed

if TYPE_CHECKING:
    from ..loader import LoadedImage
    from ..machine import Machine, Stop

_INSERT_EXITS = "INSERT INTO exits VALUES (?,?,?,?,?,?,?,?,?,?,?)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def remove_trace_files(path: Path) -> None:
    """Delete a trace and the files SQLite keeps beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


class TraceWriter:
    """Records every exit of `machine` (loaded with `image`, not yet run) into `path`.

    With `mid_run=True` the machine may already have taken exits (it must be stopped):
    the trace then holds the exits from the next one on (see the module docstring).
    `prior_inputs` are the (virtual time, kind, data) inputs fed to the machine before
    the recorder was attached. With `listen=False` the recorder does not subscribe
    to the machine: the caller forwards the exits and the console output to
    `on_exit` / `on_serial` (a front end that records several times in one session
    subscribes once).
    """

    def __init__(self, path: str | Path, machine: Machine, image: LoadedImage, *,
                 batch: int = BATCH, force: bool = False, mid_run: bool = False,
                 prior_inputs: Iterable[tuple[int, str, bytes]] = (), listen: bool = True) -> None:
        self.path = Path(path)
        self.machine = machine
        self.batch = batch
        #: The session's number of the trace's exit 0, and the virtual time the trace counts from.
        self.first_seq = len(machine.exits)
        self.start_time = machine.time if self.first_seq else 0
        self.start_serial_bytes = len(machine.serial)
        if self.first_seq and not mid_run:
            raise TraceError("the recorder must be attached before the machine's first exit")
        if self.path.is_dir():
            raise TraceError(f"{self.path}: is a directory")
        if self.path.exists():
            if not force:
                raise TraceError(f"{self.path}: already exists (use --force to overwrite it)")
            remove_trace_files(self.path)
        self.registers = SNAPSHOT_REGS
        created = False
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            created = True
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN")
            for statement in schema(self.registers).split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.executemany("INSERT INTO registers VALUES (?, ?)", enumerate(self.registers))
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", self._initial_meta(image).items())
            if image.data:  # the trace carries its guest: replay re-runs it for memory, without the file
                self._db.execute("INSERT INTO image VALUES (?, ?, ?)",
                                 (image.sha256, Path(image.path).name, image.data))
            self._db.execute("COMMIT")
            # The schema and meta into the main file at once: a run killed before the
            # first automatic checkpoint still leaves a file that says what it is.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (sqlite3.Error, OSError) as e:
            if created:  # leave nothing behind: a half-made file is not a trace
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                remove_trace_files(self.path)
            why = e.strerror if isinstance(e, OSError) else str(e)
            raise TraceError(f"{self.path}: cannot create the trace: {why}") from None
        self._lo = self.first_seq  # the first exit not written yet (the session's number)
        self._next_flush = self.first_seq + batch
        self._snaps: list[tuple[int, ...]] = []
        self._serial: list[tuple[int, bytes]] = []
        self._inputs: list[tuple[int, str, bytes]] = [
            (t - self.start_time, kind, bytes(data)) for t, kind, data in prior_inputs]
        # A front end may feed input from its own thread while the engine runs (and
        # flushes) in another: the inputs list changes hands under a lock.
        self._inputs_lock = threading.Lock()
        self._injections: list[tuple[int, int, int]] = []
        self._reasons: set[int] = set()
        self._serial_bytes = 0
        self.closed = False
        self._end_seq: int | None = None  # len(machine.exits) when the recording ended
        self.error: Exception | None = None
        if listen:
            machine.on_exit(self.on_exit)
            machine.on_serial(self.on_serial)
            machine.on_inject(self.on_inject)

    def _initial_meta(self, image: LoadedImage) -> dict[str, Any]:
        m = self.machine
        cfg = m.config
        try:
            import unicorn

            uc_version = unicorn.__version__
        except Exception:  # pragma: no cover - only informative
            uc_version = "?"
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "id": str(uuid.uuid4()),
            "vmmtui_version": __version__,
            "unicorn_version": uc_version,
            "python_version": platform.python_version(),
            "created": _now(),
            "vendor": cfg.vendor,
            "vcpus": cfg.vcpus,
            "mem_size": cfg.mem_size,
            "page_size": cfg.page_size,
            "exit_options": json.dumps(list(cfg.exits)),
            "controls": json.dumps(m.controls.as_json()),
            "hw_controls": json.dumps(m.hw.controls_json()),
            "structure": m.hw.structure_name,
            "image_path": str(Path(image.path).resolve()),
            "image_sha256": image.sha256,
            "image_kind": image.kind,
            "image_size": image.size,
            "image_entry": image.entry,
            "registers": json.dumps(list(self.registers)),
            "time_per_exit": 0,  # exits take no virtual time (README, "Virtual time")
            "quantum": cfg.quantum,
            "fast": int(cfg.fast),
            "batch": self.batch,
            "first_seq": self.first_seq,
            "start_time": self.start_time,
            "start_serial_bytes": self.start_serial_bytes,
            "ok": 0,
        }

    # -- listeners (on the exit path: keep them cheap) ------------------------------

    def on_exit(self, seq: int, vcpu: int, snapshot: tuple[int, ...]) -> None:
        """The exit listener (`Machine.on_exit`)."""
        if self.closed:
            return
        self._snaps.append(snapshot)
        if seq >= self._next_flush:
            try:
                self._flush(seq)
            except TraceError as e:
                # Inside a Unicorn hook an exception must not escape: stop recording,
                # pause the run, and let the caller find `error` (close() raises it).
                self.error = e
                self.abort()
                self.machine.pause()

    def on_inject(self, time: int, vcpu: int, vector: int) -> None:
        """The injection listener (`Machine.on_inject`)."""
        if not self.closed:
            self._injections.append((time - self.start_time, vcpu, vector))

    def on_serial(self, data: bytes) -> None:
        """The console listener (`Machine.on_serial`)."""
        if not self.closed:
            self._serial.append((self.machine.now() - self.start_time, bytes(data)))

    def record_input(self, kind: str, data: bytes) -> None:
        """Note something that entered the machine from outside (e.g. kind "serial": bytes
        typed into the UART) at the current virtual time; call it when you feed it."""
        if not self.closed:
            with self._inputs_lock:
                self._inputs.append((self.machine.now() - self.start_time, kind, bytes(data)))

    # -- writing ----------------------------------------------------------------------

    def _flush(self, hi: int) -> None:
        """Write exits [lo, hi) (the session's numbers) with their registers, and the
        console output so far."""
        lo = self._lo
        n = hi - lo
        if len(self._snaps) < n:
            raise TraceError(f"the recorder missed exits: {len(self._snaps)} snapshots for exits {lo}..{hi - 1}")
        db = self._db
        with self._inputs_lock:
            inputs, self._inputs = self._inputs, []
        try:
            db.execute("BEGIN")
            if n > 0:
                self._write_exits(lo, hi)
            if self._serial:
                db.executemany("INSERT INTO serial (time, data) VALUES (?, ?)", self._serial)
                self._serial_bytes += sum(len(d) for _t, d in self._serial)
            if inputs:
                db.executemany("INSERT INTO inputs (time, kind, data) VALUES (?, ?, ?)", inputs)
            if self._injections:
                db.executemany("INSERT INTO injections (time, vcpu, vector) VALUES (?, ?, ?)", self._injections)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with self._inputs_lock:
                self._inputs[:0] = inputs
            raise TraceError(f"{self.path}: cannot write the trace: {e}") from None
        del self._snaps[:n]
        self._serial.clear()
        self._injections.clear()
        self._lo = hi
        self._next_flush = hi + self.batch

    def _write_exits(self, lo: int, hi: int) -> None:
        db = self._db
        log = self.machine.exits
        cols = [log.column(name)[lo:hi] for name in EXIT_COLUMNS]
        if self.start_time:
            cols[1] = array(cols[1].typecode, [t - self.start_time for t in cols[1]])
        signed = [to_signed(c) if c.typecode == "Q" else c for c in cols]
        base = self.first_seq
        db.executemany(_INSERT_EXITS, zip(range(lo - base, hi - base), *signed, log.vmm_ns(lo, hi)))
        reasons = set(cols[2]) - self._reasons
        if reasons:
            db.executemany("INSERT OR IGNORE INTO reasons VALUES (?, ?)",
                           [(r, log.reason_name(r)) for r in sorted(reasons)])
            self._reasons |= reasons
        snaps = self._snaps[:hi - lo]
        vcpus = cols[0]
        if vcpus.count(vcpus[0]) == len(vcpus):
            groups = {vcpus[0]: (lo, hi - 1, snaps)}
        else:
            by_vcpu: dict[int, list[int]] = {}
            for i, v in enumerate(vcpus):
                by_vcpu.setdefault(v, []).append(i)
            groups = {v: (lo + idx[0], lo + idx[-1], [snaps[i] for i in idx]) for v, idx in by_vcpu.items()}
        placeholders = ",".join("?" * (2 + len(self.registers)))
        for vcpu, (first, last, group) in sorted(groups.items()):
            db.execute(f"INSERT INTO keyframes VALUES ({placeholders})",
                       (first - base, vcpu, *map(s64, group[0])))
            changed, data = pack_deltas(group)
            db.execute("INSERT INTO regs VALUES (?, ?, ?, ?, ?, ?)",
                       (first - base, vcpu, last - base, len(group), changed, data))

    def flush(self) -> None:
        """Commit every exit so far; call it while the machine is stopped (between runs)."""
        if not self.closed:
            self._flush(len(self.machine.exits))

    def _schedule_rows(self) -> list[tuple[int, int, int, int | None, int | None, str]]:
        """The scheduler's slices since recording started, each with the first and last
        of its vCPU's exits inside it (times and seqs as the trace counts them)."""
        m = self.machine
        times, vcpus = m.exits.time, m.exits.vcpu
        rows = []
        for s in m.sched.slices:
            if s.end < self.start_time or (s.end == s.start and s.why == "running"):
                continue
            lo = max(bisect_left(times, s.start), self.first_seq)
            hi = bisect_right(times, s.end)
            mine = [seq for seq in range(lo, hi) if vcpus[seq] == s.vcpu]
            first, last = (mine[0] - self.first_seq, mine[-1] - self.first_seq) if mine else (None, None)
            rows.append((s.vcpu, max(s.start, self.start_time) - self.start_time, s.end - self.start_time,
                         first, last, s.why))
        return rows

    def close(self, stop: Stop | None = None, elapsed: float | None = None) -> dict[str, Any]:
        """Write the rest, record how the run stopped, set `ok`; returns a summary
        (exits, bytes, bytes_per_exit, path)."""
        if self.error is not None:
            raise self.error if isinstance(self.error, TraceError) else TraceError(str(self.error))
        if self.closed:
            return self._summary()
        m = self.machine
        self._flush(len(m.exits))
        meta: dict[str, Any] = {
            "ok": 1,
            "closed": _now(),
            "exits": len(m.exits) - self.first_seq,
            "serial_bytes": self._serial_bytes,
            "end_time": m.time - self.start_time,
            "vmm_log": json.dumps(m.hw.vmm_log),
        }
        self._end_seq = len(m.exits)
        if stop is not None:
            meta.update(stop=stop.reason.value, stop_status=stop.status, stop_message=stop.message)
        if elapsed is not None:
            meta["elapsed_s"] = round(elapsed, 6)
        self.closed = True
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO schedule (vcpu, start, end, first_seq, last_seq, why) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", self._schedule_rows())
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            self._db.execute("COMMIT")
            self._db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file again
            self._db.close()
        except sqlite3.Error as e:
            raise TraceError(f"{self.path}: cannot finish the trace: {e}") from None
        return self._summary()

    def abort(self) -> None:
        """Stop recording after an error: keep what was committed, leave `ok` at 0."""
        if not self.closed:
            self.closed = True
            self._end_seq = self._lo
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    @property
    def exits(self) -> int:
        """The exits recorded: so far, or up to the close (the machine may run on)."""
        end = self._end_seq if self._end_seq is not None else len(self.machine.exits)
        return end - self.first_seq

    def _summary(self) -> dict[str, Any]:
        exits = self.exits
        size = os.path.getsize(self.path) if self.path.exists() else 0
        return {"path": str(self.path), "exits": exits, "bytes": size,
                "bytes_per_exit": size / exits if exits else 0.0}

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.close()
        else:
            self.abort()
