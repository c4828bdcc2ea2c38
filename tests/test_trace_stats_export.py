"""`vmmtui stats` and `vmmtui export`: counts equal to the trace's exits, the time unit
said, Trace Event Format with one track per vCPU, CSV and JSON with decoded names."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest

from conftest import GUESTS
from engine.trace import open_trace
from engine.trace.export import export
from engine.trace.stats import CONSTANTS, compute, format_report
from engine.vcpu import SNAPSHOT_REGS
from vmmtui.cli import main


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module", params=["intel", "amd"])
def traces(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    out = {}
    for guest in ("cpuid.img", "memory.img", "hypercall.img"):
        path = d / f"{guest}.vmtrace"
        assert main(["record", str(GUESTS / guest), "-o", str(path), "--vendor", request.param]) == 0
        out[guest] = path
    return request.param, out


def test_stats_counts_equal_the_traces_exits(traces):
    vendor, paths = traces
    for path in paths.values():
        trace = open_trace(path)
        s = compute(trace)
        rows = s["all"]["reasons"]
        assert s["exits"] == len(trace) == sum(r["count"] for r in rows)
        assert {r["reason"]: r["count"] for r in rows} == dict(Counter(trace.exits.reason))
        assert {r["name"]: r["count"] for r in rows} == dict(trace.exits.counts())
        assert sum(r["share"] for r in rows) == pytest.approx(1.0)
        assert s["per_vcpu"]["0"]["reasons"] == rows  # one vCPU: the same table
        for r in rows:  # every exit costs time_per_exit ticks in the VMM
            assert r["vmm_time"]["min"] == r["vmm_time"]["max"] == r["vmm_time"]["avg"] == 1000
            assert r["vmm_time"]["total"] == 1000 * r["count"]
        assert s["all"]["vmm_time"] + s["all"]["guest_time"] == trace.exits.time[-1]
        assert s["time_unit"] == "virtual tick"


def test_guest_time_is_the_rdtsc_ticks_between_exits(traces):
    _vendor, paths = traces
    # cpuid.img executes RDTSC twice: each advances virtual time by 1 tick before its exit.
    s = compute(open_trace(paths["cpuid.img"]))
    assert s["all"]["guest_time"] == 2
    rdtsc = next(r for r in s["all"]["reasons"] if r["name"] == "RDTSC")
    assert rdtsc["guest_time"] == {"min": 1, "avg": 1.0, "max": 1, "total": 2, "share": 1.0}
    s = compute(open_trace(paths["hypercall.img"]))
    assert s["all"]["guest_time"] == 0


def test_the_overhead_model(traces):
    vendor, paths = traces
    s = compute(open_trace(paths["memory.img"]))
    m = s["overhead_model"]
    # memory.img: 8 first touches of 2 MiB pieces and one APIC read, all EPT violations / NPFs.
    assert m["address_translation_exits"] == 9
    assert m["interrupt_related_exits"] == 0
    assert m["context_switches"] == s["exits"] - 1  # the last exit (OUT 0xF4) ends the run
    assert m["overhead_us"] == pytest.approx(CONSTANTS.c1_us * 9 + CONSTANTS.c3_us * (s["exits"] - 1))


def test_stats_cli_text_and_json(capsys, traces):
    vendor, paths = traces
    code, out, err = _cli(capsys, "stats", paths["cpuid.img"])
    assert code == 0 and err == ""
    assert "time unit: virtual tick" in out and "each VM exit costs 1000 ticks" in out
    io_name = "IO_INSTRUCTION" if vendor == "intel" else "IOIO"
    line = next(line for line in out.splitlines() if line.strip().startswith(io_name))
    assert "553" in line and "98.4%" in line
    assert "overhead = c1 x address-translation exits + c2 x interrupt-related exits + c3 x context switches" in out
    code, out, _err = _cli(capsys, "stats", paths["cpuid.img"], "--json")
    doc = json.loads(out)
    assert code == 0 and doc["exits"] == 562 and doc["vendor"] == vendor
    assert format_report(doc).splitlines()[0].endswith("stopped: debug-exit, status 0")


def test_chrome_export_is_trace_event_format_with_one_track_per_vcpu(capsys, tmp_path, traces):
    vendor, paths = traces
    out_path = tmp_path / "cpuid.json"
    code, _out, err = _cli(capsys, "export", paths["cpuid.img"], "--format", "chrome", "-o", out_path)
    assert code == 0 and "events (chrome)" in err
    doc = json.loads(out_path.read_text())
    events = doc["traceEvents"]
    assert isinstance(events, list) and doc["displayTimeUnit"] == "ns"
    for e in events:
        assert e["ph"] in ("X", "M") and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and e["ts"] >= 0
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {0: "vCPU 0"}
    exits = [e for e in events if e.get("cat") == "exit"]
    trace = open_trace(paths["cpuid.img"])
    assert len(exits) == len(trace)
    assert {e["tid"] for e in exits} == set(threads)
    first = exits[0]
    assert first["name"] == "CPUID" and first["args"]["leaf"] == 0 and first["args"]["seq"] == 0
    assert first["ts"] == 0 and first["dur"] == 1.0  # 1000 ticks shown as 1000 ns
    io_exit = next(e for e in exits if e["args"].get("port") == 0x3F8)
    assert io_exit["args"]["direction"] == "out"
    # slices on a track never overlap
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["tid"] == 0)
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:]))


def test_csv_export(capsys, tmp_path, traces):
    vendor, paths = traces
    out_path = tmp_path / "m.csv"
    assert _cli(capsys, "export", paths["memory.img"], "--format", "csv", "-o", out_path, "--registers")[0] == 0
    rows = list(csv.DictReader(out_path.open()))
    trace = open_trace(paths["memory.img"])
    assert len(rows) == len(trace)
    assert [int(r["seq"]) for r in rows] == list(range(len(trace)))
    ept = "EPT_VIOLATION" if vendor == "intel" else "NPF"
    touches = [r for r in rows if r["name"] == ept]
    assert json.loads(touches[0]["qualification"])["gpa"] == 0x200000
    assert [int(r["rip"]) for r in rows] == list(trace.exits.rip)
    assert int(rows[7]["reg_rax"]) == trace.registers(7)["rax"]
    assert int(rows[7]["reg_rip"]) == int(rows[7]["rip"])
    assert list(rows[0])[12:] == [f"reg_{name}" for name in SNAPSHOT_REGS]


def test_json_export(capsys, traces):
    _vendor, paths = traces
    buf = io.StringIO()
    trace = open_trace(paths["hypercall.img"])
    assert export(trace, "json", buf, registers=True) == len(trace)
    doc = json.loads(buf.getvalue())
    assert doc["meta"]["image_sha256"] == trace.meta["image_sha256"]
    assert len(doc["exits"]) == len(trace)
    assert doc["serial"].endswith("hypercall: ok\n")
    calls = [e for e in doc["exits"] if e["name"] in ("VMCALL", "VMMCALL")]
    assert calls[0]["qualification"] == {"function": 0, "result": 0x766D6D74}
    assert calls[0]["registers"]["rax"] & 0xFFFFFFFF == 0
    code, out, _err = _cli(capsys, "export", paths["hypercall.img"], "--format", "json", "-o", "-")
    plain = json.loads(out)["exits"]
    assert code == 0 and "registers" not in plain[0]
    assert [{k: v for k, v in e.items() if k != "registers"} for e in doc["exits"]] == plain


def test_registers_only_with_csv_or_json(capsys, traces):
    _vendor, paths = traces
    code, _out, err = _cli(capsys, "export", paths["cpuid.img"], "--format", "chrome", "-o", "-", "--registers")
    assert code == 2 and "--registers goes with --format csv or json" in err
