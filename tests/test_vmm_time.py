"""The VMM's measured time per exit: kept by the engine beside the exit stream (never
compared by a replay), recorded in the trace's `exits.vmm_ns` column, and shown by
`vmmtui stats` (host microseconds, said so) and the chrome export (exit durations)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from array import array

import pytest

from conftest import GUESTS, cli, write_image
from engine.config import MachineConfig
from engine.exitlog import ExitLog
from engine.loader import load
from engine.machine import Machine
from engine.trace import TraceWriter, open_trace
from engine.trace.export import export
from engine.trace.stats import HOST_UNIT, compute, format_report
from engine.trace.verify import verify
from vmmtui.cli import main

GUEST_NAMES = ("cpuid.img", "hello.img")
#: xor ax,ax; mov ds,ax; mov si,msg; mov cx,5; mov dx,0x3f8; rep outsb; mov al,0; out 0xf4,al; cli; hlt; msg
REP_OUTSB = bytes.fromhex("31c08ed8be157cb90500baf803f36eb000e6f4faf4") + b"hello"


@pytest.fixture(scope="module", params=["intel", "amd"])
def traces(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"vmm_time_{request.param}")
    out = {}
    for guest in GUEST_NAMES:
        path = d / f"{guest}.vmtrace"
        assert main(["record", str(GUESTS / guest), "-o", str(path), "--vendor", request.param]) == 0
        out[guest] = path
    return request.param, out


def _sql(path, query):
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def _without_costs(src, dst):
    """A copy of `src` as a recorder from before the measurement wrote it."""
    shutil.copy(src, dst)
    db = sqlite3.connect(dst)
    db.execute("ALTER TABLE exits DROP COLUMN vmm_ns")
    db.commit()
    db.close()
    return dst


# -- the engine ------------------------------------------------------------------------

def test_the_exit_log_keeps_vmm_time_beside_its_columns():
    log = ExitLog(lambda *row: ("X", {}))
    for i in range(5):
        log.append(0, i, 1, 0x7C00, 1, 0, 0)
    log.set_vmm_ns(0, 100)
    log.set_vmm_ns(2, 300)  # exit 1 not measured: 0
    log.set_vmm_ns(1, 200)  # handled around a later exit
    log.add_vmm_ns(2, 5)  # a later element of a string I/O exit
    assert log.vmm_ns() == array("Q", [100, 200, 305, 0, 0])  # 3 and 4: not finished yet
    assert log.vmm_ns(1, 4) == array("Q", [200, 305, 0])
    assert "vmm_ns" not in ExitLog.COLUMNS  # wall time: never compared by a replay


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_every_exit_of_a_run_is_measured(vendor):
    machine = Machine(MachineConfig(vendor=vendor))
    load(machine, GUESTS / "memory.img")  # I/O, CPUID, first touches of RAM, an APIC read (MMIO)
    machine.run(timeout=30)
    costs = machine.exits.vmm_ns()
    assert len(costs) == len(machine.exits) > 0
    assert all(ns > 0 for ns in costs)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_a_string_io_exit_is_measured_once_for_all_its_elements(tmp_path, vendor):
    machine = Machine(MachineConfig(vendor=vendor))
    load(machine, write_image(tmp_path, REP_OUTSB))
    machine.run(timeout=30)
    assert machine.serial == b"hello"
    assert len(machine.exits) == 2  # REP OUTSB folds into one exit; then OUT 0xF4
    assert machine.exits.aux2[0] == 5  # its elements
    assert all(ns > 0 for ns in machine.exits.vmm_ns())


# -- the trace ---------------------------------------------------------------------------

def test_every_exit_row_has_its_measured_vmm_time(traces):
    _vendor, paths = traces
    for path in paths.values():
        costs = _sql(path, "SELECT seq, vmm_ns FROM exits ORDER BY seq")
        assert costs and all(ns > 0 for _seq, ns in costs)
        assert list(open_trace(path).vmm_ns()) == [ns for _seq, ns in costs]


def test_vmm_times_in_several_batches_and_from_mid_run(tmp_path):
    machine = Machine(MachineConfig())
    image = load(machine, GUESTS / "cpuid.img")
    machine.run(max_exits=20)
    path = tmp_path / "mid.vmtrace"
    writer = TraceWriter(path, machine, image, batch=50, mid_run=True)
    stop = machine.run(timeout=30)
    writer.close(stop)
    trace = open_trace(path)
    assert trace.meta["first_seq"] == 20 and len(trace) == len(machine.exits) - 20 > 100
    # The trace numbers its exit costs as its exits, from 0.
    assert trace.vmm_ns() == machine.exits.vmm_ns(20)
    assert all(ns > 0 for ns in trace.vmm_ns())


def test_a_trace_without_vmm_times_opens_and_verifies(tmp_path, traces):
    _vendor, paths = traces
    old = open_trace(_without_costs(paths["cpuid.img"], tmp_path / "old.vmtrace"))
    assert old.vmm_ns() is None
    assert verify(old).identical


def test_replay_verify_ignores_the_wall_time(capsys, tmp_path, traces):
    _vendor, paths = traces
    path = tmp_path / "changed.vmtrace"
    shutil.copy(paths["hello.img"], path)
    db = sqlite3.connect(path)
    db.execute("UPDATE exits SET vmm_ns = vmm_ns * 7 + 1")  # another host, another load
    db.commit()
    db.close()
    for p in (paths["hello.img"], path):
        code, out, err = cli(capsys, "replay", "--verify", p)
        assert code == 0, out + err


# -- stats ----------------------------------------------------------------------------------

def test_stats_show_the_measured_vmm_time_per_reason(traces):
    _vendor, paths = traces
    for path in paths.values():
        s = compute(open_trace(path))
        assert s["vmm_host_unit"] == HOST_UNIT == "host wall-clock microsecond"
        assert "not deterministic" in s["vmm_host_model"]
        expected = {reason: (n, mean, lo, hi) for reason, n, mean, lo, hi in _sql(
            path, "SELECT reason, count(*), avg(vmm_ns), min(vmm_ns), max(vmm_ns) FROM exits GROUP BY reason")}
        rows = s["all"]["reasons"]
        assert {r["reason"] for r in rows} == set(expected)
        for r in rows:
            host = r["vmm_host_us"]
            n, mean, lo, hi = expected[r["reason"]]
            assert r["count"] == host["measured"] == n
            assert host["min"] <= host["avg"] <= host["max"]
            assert host["avg"] == pytest.approx(mean / 1000)
            assert (host["min"], host["max"]) == (lo / 1000, hi / 1000)
            # The guest time stays in guest instructions; the virtual VMM time is 0.
            assert r["vmm_time"]["total"] == 0
        total_ns = _sql(path, "SELECT sum(vmm_ns) FROM exits")[0][0]
        assert s["all"]["vmm_host_us"] == pytest.approx(total_ns / 1000)
        assert sum(r["vmm_host_us"]["share"] for r in rows) == pytest.approx(1.0)
        assert s["time_unit"] == "guest instruction"


def test_stats_per_vcpu_split_the_measured_time(tmp_path):
    path = tmp_path / "smp.vmtrace"
    assert main(["record", str(GUESTS / "smp.img"), "-o", str(path), "--vcpus", "2"]) == 0
    s = compute(open_trace(path))
    assert set(s["per_vcpu"]) == {"0", "1"}
    for (vcpu, reason, n, mean) in _sql(path, "SELECT vcpu, reason, count(*), avg(vmm_ns) FROM exits "
                                              "GROUP BY vcpu, reason"):
        row = next(r for r in s["per_vcpu"][str(vcpu)]["reasons"] if r["reason"] == reason)
        assert row["count"] == row["vmm_host_us"]["measured"] == n
        assert row["vmm_host_us"]["avg"] == pytest.approx(mean / 1000)
    assert sum(t["vmm_host_us"] for t in s["per_vcpu"].values()) == pytest.approx(s["all"]["vmm_host_us"])


def test_stats_cli_says_the_unit(capsys, traces):
    _vendor, paths = traces
    code, out, err = cli(capsys, "stats", paths["cpuid.img"])
    assert code == 0 and err == ""
    assert "VMM time unit: host wall-clock microsecond (measured" in out and "not deterministic" in out
    assert "VMM us min" in out
    code, out, _err = cli(capsys, "stats", paths["cpuid.img"], "--json")
    doc = json.loads(out)
    assert code == 0 and doc["vmm_host_unit"] == "host wall-clock microsecond"
    assert "measured" in doc["vmm_host_model"] and doc["time_unit"] == "guest instruction"
    assert all(r["vmm_host_us"]["max"] > 0 for r in doc["all"]["reasons"])


def test_stats_of_a_trace_without_vmm_times_are_as_before(capsys, tmp_path, traces):
    _vendor, paths = traces
    path = _without_costs(paths["cpuid.img"], tmp_path / "old.vmtrace")
    s = compute(open_trace(path))
    assert s["vmm_host_unit"] is None and s["vmm_host_model"] is None and s["all"]["vmm_host_us"] is None
    for r in s["all"]["reasons"]:
        assert r["vmm_host_us"] is None
        assert r["vmm_time"] == {"min": 0, "avg": 0.0, "max": 0, "total": 0, "share": 0.0}
    text = format_report(s)
    assert "VMM time unit" not in text and "VMM us" not in text and "VMM min" in text
    code, out, _err = cli(capsys, "stats", path, "--json")
    assert code == 0 and json.loads(out)["vmm_host_unit"] is None


# -- chrome export ------------------------------------------------------------------------------

def _chrome(path):
    buf = io.StringIO()
    export(open_trace(path), "chrome", buf)
    return json.loads(buf.getvalue())


def _assert_trace_event_format(doc):
    """Every event has the keys the Trace Event Format asks of its phase; spans on a track never overlap."""
    assert isinstance(doc["traceEvents"], list)
    spans: dict[int, list[tuple[float, float]]] = {}
    for e in doc["traceEvents"]:
        assert {"name", "ph", "pid", "tid"} <= set(e)
        assert e["ph"] in ("X", "i", "M")
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] > 0
            spans.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
        if e["ph"] == "i":
            assert e["s"] in ("t", "p", "g")
        if e["ph"] == "M":
            assert isinstance(e["args"], dict)
    for track in spans.values():
        track.sort()
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(track, track[1:]))


def test_chrome_export_gives_exits_their_measured_duration(traces):
    _vendor, paths = traces
    for path in paths.values():
        doc = _chrome(path)
        _assert_trace_event_format(doc)
        assert "measured host time" in doc["otherData"]["time_unit"]
        exits = [e for e in doc["traceEvents"] if e.get("cat") == "exit"]
        costs = open_trace(path).vmm_ns()
        assert len(exits) == len(costs)
        for e, ns in zip(exits, costs):
            assert e["ph"] == "X" and e["dur"] == ns / 1000 and e["args"]["vmm_ns"] == ns


def test_chrome_export_of_a_trace_without_vmm_times_has_instants(tmp_path, traces):
    _vendor, paths = traces
    path = _without_costs(paths["hello.img"], tmp_path / "old.vmtrace")
    doc = _chrome(path)
    _assert_trace_event_format(doc)
    exits = [e for e in doc["traceEvents"] if e.get("cat") == "exit"]
    times = list(open_trace(path).exits.time)
    assert all(e["ph"] == "i" and "vmm_ns" not in e["args"] for e in exits)
    assert [e["ts"] for e in exits] == [t / 1000 for t in times]
