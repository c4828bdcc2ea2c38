"""The trace file: what a recording holds, read back exactly; the schema a sqlite3
user sees; a recorder killed with SIGKILL; truncated, corrupt and foreign files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GUESTS, ROOT, cli, write_image
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine
from engine.trace import FORMAT_VERSION, TraceError, TraceWriter, open_trace
from engine.trace.format import BATCH, pack_deltas, unpack_deltas
from engine.vcpu import SNAPSHOT_REGS
from vmmtui.cli import EXIT_USAGE


def record(image, path, vendor="intel", batch=BATCH, **config):
    """Record a whole run in-process; returns (machine, snapshots, stop, summary)."""
    machine = Machine(MachineConfig(vendor=vendor, **config))
    loaded = load(machine, image)
    writer = TraceWriter(path, machine, loaded, batch=batch, force=True)
    snaps = []
    machine.on_exit(lambda seq, vcpu, regs: snaps.append(regs))
    stop = machine.run(timeout=60)
    summary = writer.close(stop, 0.5)
    return machine, snaps, stop, summary


def bench_out(tmp_path, count):
    """guests/bench_out.img with its loop count patched (guests/README.md, "Bench guests")."""
    data = bytearray((GUESTS / "bench_out.img").read_bytes())
    data[0x1F8:0x1FC] = count.to_bytes(4, "little")
    path = tmp_path / f"bench_out_{count}.img"
    path.write_bytes(bytes(data))
    return path


# -- register deltas ------------------------------------------------------------------------

_u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[_u64] * 5), min_size=1, max_size=40))
def test_register_deltas_round_trip(snapshots):
    changed, data = pack_deltas(snapshots)
    assert unpack_deltas(snapshots[0], len(snapshots), changed, data) == snapshots
    for j in range(5):
        assert bool(changed >> j & 1) == (len({s[j] for s in snapshots}) > 1)


def test_unchanged_registers_cost_nothing():
    snaps = [(0x7C00, 2, 5)] * 100
    assert pack_deltas(snaps) == (0, b"")
    snaps = [(0x7C00, 2, 1000 - i) for i in range(100)]
    changed, data = pack_deltas(snaps)
    assert changed == 0b100 and len(data) < 100


# -- a recording read back ---------------------------------------------------------------------

@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("guest", ["cpuid.img", "memory.img", "hello64.elf"])
def test_a_recording_reads_back_exactly(tmp_path, vendor, guest):
    path = tmp_path / "run.vmtrace"
    machine, snaps, stop, summary = record(GUESTS / guest, path, vendor, batch=64)
    trace = open_trace(path)
    assert trace.complete and len(trace) == len(machine.exits) == len(snaps) == summary["exits"]
    for name in machine.exits.COLUMNS:
        assert list(trace.exits.column(name)) == list(machine.exits.column(name)), name
    assert [trace.register_tuple(seq) for seq in range(len(trace))] == snaps
    assert trace.registers(3)["rip"] == snaps[3][SNAPSHOT_REGS.index("rip")]
    assert trace.serial() == bytes(machine.serial)
    assert trace.exits[5] == machine.exits[5]  # decoded the same way
    assert trace.exits.counts() == machine.exits.counts()
    m = trace.meta
    assert m["format_version"] == FORMAT_VERSION and m["ok"] == 1 and m["vendor"] == vendor
    assert m["stop"] == stop.reason.value == "debug-exit" and m["stop_status"] == 0
    assert m["image_sha256"] == load(Machine(MachineConfig(vendor=vendor)), GUESTS / guest).sha256
    assert trace.json_meta("controls") == machine.controls.as_json()
    assert trace.json_meta("registers") == list(SNAPSHOT_REGS)
    assert trace.config() == machine.config
    assert m["end_time"] == machine.time


def test_unsigned_values_survive_sqlite(tmp_path):
    """Hypercall results of all ones and other values >= 2**63 come back unsigned."""
    path = tmp_path / "hc.vmtrace"
    machine, _snaps, _stop, _ = record(GUESTS / "hypercall.img", path)
    trace = open_trace(path)
    assert max(trace.exits.aux2) == max(machine.exits.aux2)
    assert list(trace.exits.aux2) == list(machine.exits.aux2)


def test_the_sqlite3_shell_view(tmp_path):
    path = tmp_path / "cpuid.vmtrace"
    machine, _snaps, _stop, _ = record(GUESTS / "cpuid.img", path)
    db = sqlite3.connect(path)
    counts = {name: n for _reason, name, n, _pct in db.execute("SELECT * FROM exit_counts")}
    assert counts == dict(machine.exits.counts())
    first = db.execute("SELECT seq, name, rip, aux1 FROM exit_names WHERE seq = 0").fetchone()
    assert first == (0, "CPUID", "0x7e09", "0")
    (text,) = db.execute("SELECT text FROM serial_text").fetchone()
    assert text == machine.serial.decode()
    # One vCPU that never halts: one slice from 0 to the end, ended by the debug-exit port.
    assert db.execute("SELECT vcpu, start, end, first_seq, last_seq, why FROM schedule").fetchall() == \
        [(0, 0, machine.time, 0, len(machine.exits) - 1, "exit")]
    names = [n for (n,) in db.execute("SELECT name FROM registers ORDER BY idx")]
    assert names == list(SNAPSHOT_REGS)
    (journal,) = db.execute("PRAGMA journal_mode").fetchone()
    assert journal == "delete"  # a closed trace is one file
    assert not (tmp_path / "cpuid.vmtrace-wal").exists()


def test_bytes_per_exit_of_a_long_run(tmp_path):
    """The issue's budget: at most 48 bytes per exit on disk, registers included."""
    path = tmp_path / "out.vmtrace"
    _machine, _snaps, _stop, summary = record(bench_out(tmp_path, 20000), path)
    assert summary["exits"] == 20001
    assert summary["bytes_per_exit"] <= 48


def test_an_existing_trace_is_not_overwritten(tmp_path):
    path = tmp_path / "run.vmtrace"
    path.write_bytes(b"keep me")
    machine = Machine(MachineConfig())
    loaded = load(machine, GUESTS / "hello.img")
    with pytest.raises(TraceError, match="already exists"):
        TraceWriter(path, machine, loaded)
    assert path.read_bytes() == b"keep me"


def test_the_recorder_must_see_every_exit(tmp_path):
    machine = Machine(MachineConfig())
    loaded = load(machine, GUESTS / "hello.img")
    machine.run(max_exits=2)
    with pytest.raises(TraceError, match="before the machine's first exit"):
        TraceWriter(tmp_path / "late.vmtrace", machine, loaded)


# -- a recorder killed mid-run ---------------------------------------------------------------

_KILLED = textwrap.dedent("""
    import sys
    from engine.config import MachineConfig
    from engine.loader import load
    from engine.machine import Machine
    from engine.trace import TraceWriter
    machine = Machine(MachineConfig())
    writer = TraceWriter(sys.argv[2], machine, load(machine, sys.argv[1]), batch=int(sys.argv[3]))
    def near_the_end(seq, vcpu, regs):
        if seq == int(sys.argv[4]):
            print("ready", flush=True)
            sys.stdin.readline()  # wait here, mid-run, to be killed
    machine.on_exit(near_the_end)
    machine.run()
""")


def _killed_recording(tmp_path, image, batch, kill_at):
    path = tmp_path / "killed.vmtrace"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(image), str(path), str(batch), str(kill_at)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return path


def test_sigkill_leaves_a_trace_readable_up_to_its_last_batch(tmp_path):
    image = bench_out(tmp_path, 3000)
    full_path = tmp_path / "full.vmtrace"
    machine, snaps, _stop, _ = record(image, full_path, batch=256)
    path = _killed_recording(tmp_path, image, 256, 2000)
    trace = open_trace(path)
    assert not trace.complete and trace.meta.get("stop") is None
    # Exit 2000 was being taken: batches up to exit 1792 are committed, nothing after.
    assert len(trace) == 1792
    for name in machine.exits.COLUMNS:
        assert list(trace.exits.column(name)) == list(machine.exits.column(name))[:1792]
    assert [trace.register_tuple(s) for s in range(len(trace))] == snaps[:1792]
    assert "incomplete" in trace.describe()


def test_a_killed_trace_whose_wal_is_truncated_opens_at_a_batch_boundary(tmp_path):
    image = bench_out(tmp_path, 3000)
    path = _killed_recording(tmp_path, image, 128, 2500)
    wal = path.with_name(path.name + "-wal")
    full = open_trace(path)
    reference = list(full.exits.rip), [full.register_tuple(s) for s in range(len(full))]
    full.close()
    size = wal.stat().st_size
    seen = set()
    for i in range(12):
        cut = size * i // 12
        d = tmp_path / f"cut{i}"
        d.mkdir()
        copy = d / path.name
        shutil.copy(path, copy)
        shutil.copy(wal, d / wal.name)
        with open(d / wal.name, "r+b") as f:
            f.truncate(cut)
        try:
            trace = open_trace(copy)
            n = len(trace)
            assert n % 128 == 0
            assert list(trace.exits.rip) == reference[0][:n]
            assert [trace.register_tuple(s) for s in range(n)] == reference[1][:n]
            seen.add(n)
        except TraceError as e:
            assert str(e).startswith(str(copy))
    assert len(seen) > 3  # the cuts land in different batches


# -- bad files -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "cpuid.vmtrace"
    record(GUESTS / "cpuid.img", path, batch=64)
    return path


def _read_everything(path):
    """What every command reads: exits, registers, console, inputs, statistics, exports."""
    import io

    from engine.trace.export import FORMATS, export
    from engine.trace.stats import compute, format_report

    trace = open_trace(path)
    try:
        len(trace.exits)
        [trace.register_tuple(s) for s in range(len(trace))]
        trace.serial()
        trace.inputs()
        trace.config()
        format_report(compute(trace))
        for fmt in FORMATS:
            export(trace, fmt, io.StringIO(), registers=fmt != "chrome")
    finally:
        trace.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(min_value=0.0, max_value=0.9999))
def test_a_truncated_trace_fails_with_one_clear_line(clean_trace, tmp_path_factory, fraction):
    data = clean_trace.read_bytes()
    cut = int(len(data) * fraction)
    path = tmp_path_factory.mktemp("cut") / "cut.vmtrace"
    path.write_bytes(data[:cut])
    with pytest.raises(TraceError) as e:
        _read_everything(path)
    message = str(e.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_truncation_at_every_page_boundary(clean_trace, tmp_path):
    data = clean_trace.read_bytes()
    for cut in range(0, len(data), 4096):
        path = tmp_path / f"p{cut}.vmtrace"
        path.write_bytes(data[:cut])
        with pytest.raises(TraceError, match="truncated|empty|not"):
            _read_everything(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=100, max_value=60000), junk=st.binary(min_size=1, max_size=64))
def test_a_corrupt_trace_reads_or_fails_with_one_clear_line(clean_trace, tmp_path_factory, offset, junk):
    data = bytearray(clean_trace.read_bytes())
    offset %= len(data)
    data[offset:offset + len(junk)] = junk
    path = tmp_path_factory.mktemp("junk") / "junk.vmtrace"
    path.write_bytes(bytes(data[:len(clean_trace.read_bytes())]))
    try:
        _read_everything(path)
    except TraceError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("command", [["stats"], ["export", "--format", "csv", "-o", "-"], ["replay", "--verify"]])
@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_bytes(b"hello, not a database at all" * 10), "not an SQLite database"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(), "without a meta table"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_bad_trace_files_give_one_line(capsys, tmp_path, command, make, message):
    path = tmp_path / "bad.vmtrace"
    make(path)
    code, out, err = cli(capsys, *command[:1], path, *command[1:])
    assert code == EXIT_USAGE and out == ""
    assert err.count("\n") == 1 and err.startswith("vmmtui: error: ") and message in err


def test_a_newer_format_is_refused(capsys, tmp_path, clean_trace):
    path = tmp_path / "future.vmtrace"
    shutil.copy(clean_trace, path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (FORMAT_VERSION + 1,))
    db.commit()
    db.close()
    code, out, err = cli(capsys, "stats", path)
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert f"trace format version {FORMAT_VERSION + 1} is newer than this vmmtui reads (up to " \
           f"{FORMAT_VERSION}); upgrade vmmtui" in err


def test_a_truncated_trace_through_the_cli(capsys, tmp_path, clean_trace):
    path = tmp_path / "half.vmtrace"
    path.write_bytes(clean_trace.read_bytes()[: clean_trace.stat().st_size // 2])
    for argv in (["stats", path], ["export", path, "--format", "chrome", "-o", tmp_path / "x.json"],
                 ["replay", path, "--verify"]):
        code, out, err = cli(capsys, *argv)
        assert code == EXIT_USAGE and err.count("\n") == 1 and "truncated trace" in err, argv
        assert "Traceback" not in err


def test_a_killed_trace_without_its_wal_says_so(tmp_path):
    image = bench_out(tmp_path, 3000)
    path = _killed_recording(tmp_path, image, 256, 1000)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(path, lone / path.name)  # the -wal left behind
    trace = open_trace(lone / path.name)  # the schema and meta were checkpointed at creation
    assert not trace.complete and len(trace) == 0


def test_record_cli_behaves_like_run(capsys, tmp_path):
    path = tmp_path / "hello.vmtrace"
    code, out, err = cli(capsys, "record", GUESTS / "hello.img", "-o", path, "--vendor", "amd")
    assert code == 0 and out == "Hello from the guest\n"
    assert "IOIO" in err and f"trace: {path}: 43 exits" in err
    assert open_trace(path).vendor == "amd"
    code, _out, err = cli(capsys, "record", GUESTS / "hello.img", "-o", path)
    assert code == EXIT_USAGE and "already exists (use --force to overwrite it)" in err
    code, _out, _err = cli(capsys, "record", GUESTS / "hello.img", "-o", path, "--force", "--max-exits", "5")
    assert code == 72 and len(open_trace(path)) == 5 and open_trace(path).meta["stop"] == "max-exits"


def test_record_keeps_the_guests_status(capsys, tmp_path):
    image = write_image(tmp_path, bytes.fromhex("b02a" "e6f4" "faf4"))  # out 0xf4 <- 42
    code, _out, _err = cli(capsys, "record", image, "-o", tmp_path / "s.vmtrace")
    assert code == 42
    assert json.loads(open_trace(tmp_path / "s.vmtrace").meta["exit_options"]) == []
