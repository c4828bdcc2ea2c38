"""`vmmtui stats` and `vmmtui export`: counts equal to the trace's exits, the time unit
said, Trace Event Format with one track per vCPU, CSV and JSON with decoded names."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from collections import Counter
from itertools import accumulate

import pytest

from conftest import GUESTS, cli, write_image
from engine.trace import open_trace
from engine.trace.export import export
from engine.trace.stats import CONSTANTS, OLD_TIME_MODEL, TIME_MODEL, compute, format_report
from engine.vcpu import SNAPSHOT_REGS
from vmmtui.cli import main


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
        # Virtual time counts guest instructions; an exit takes none of it (time_per_exit 0).
        assert trace.time_per_exit == s["time_per_exit"] == 0
        for r in rows:
            assert r["vmm_time"] == {"min": 0, "avg": 0.0, "max": 0, "total": 0, "share": 0.0}
        # The guest times (virtual time since the previous exit) add up to the last exit's time.
        assert s["all"]["vmm_time"] == 0 and s["all"]["guest_time"] == trace.exits.time[-1] > 0
        assert s["time_unit"] == "guest instruction"
        # The run ends just after the last exit: its OUT 0xF4 / hypercall retired.
        assert s["end_time"] == trace.meta["end_time"] == trace.exits.time[-1] + 1


def test_guest_time_is_the_instructions_retired_between_exits(traces):
    _vendor, paths = traces
    for path in paths.values():
        trace = open_trace(path)
        times = list(trace.exits.time)
        assert all(a < b for a, b in zip(times, times[1:]))  # these guests retire something between exits
        # The guest time before exit n is time[n] - time[n - 1] (time[0] for the first): what the
        # guest retired since the previous exit. Per reason, min / max / total of those gaps.
        gaps: dict[int, list[int]] = {}
        for reason, t, before in zip(trace.exits.reason, times, [0] + times):
            gaps.setdefault(reason, []).append(t - before)
        s = compute(trace)
        total = s["all"]["guest_time"]
        assert total == sum(map(sum, gaps.values()))
        for r in s["all"]["reasons"]:
            g = gaps[r["reason"]]
            assert r["guest_time"] == {"min": min(g), "avg": pytest.approx(sum(g) / len(g)), "max": max(g),
                                       "total": sum(g), "share": pytest.approx(sum(g) / total)}, r["name"]
    # Exact figures from cpuid.img's source: RDTSC returns virtual time, and between its two RDTSCs
    # the guest retires the first RDTSC, three MOVs and LOOP 1000 times (cx = 1000): 1,004 instructions.
    trace = open_trace(paths["cpuid.img"])
    rdtscs = [e for e in trace.exits if e.name == "RDTSC"]
    assert len(rdtscs) == 2
    assert [e.qualification["tsc"] for e in rdtscs] == [e.time for e in rdtscs]
    assert rdtscs[1].time - rdtscs[0].time == 1004 and rdtscs[1].seq == rdtscs[0].seq + 1
    first_gap = rdtscs[0].time - trace.exits.time[rdtscs[0].seq - 1]
    rdtsc = next(r for r in compute(trace)["all"]["reasons"] if r["name"] == "RDTSC")
    assert rdtsc["guest_time"]["total"] == first_gap + 1004
    assert rdtsc["guest_time"]["max"] == max(first_gap, 1004)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_guest_time_of_a_hand_counted_guest(capsys, tmp_path, vendor):
    # mov dx,0x3f8; nop x5; out dx,al; nop x3; mov al,0; out 0xf4,al; cli; hlt. The reset trampoline is
    # not counted, so the first OUT is taken after 6 instructions (time 6), the OUT 0xF4 after 5 more:
    # the first OUT, three NOPs and the MOV (time 11); the run ends once that OUT retired (time 12).
    image = write_image(tmp_path, bytes.fromhex("baf803" + "90" * 5 + "ee" + "90" * 3 + "b000e6f4faf4"))
    path = tmp_path / "nops.vmtrace"
    code, _out, _err = cli(capsys, "record", image, "-o", path, "--vendor", vendor)
    assert code == 0
    trace = open_trace(path)
    assert list(trace.exits.time) == [6, 11]
    s = compute(trace)
    (io,) = s["all"]["reasons"]
    assert io["count"] == 2
    assert io["guest_time"] == {"min": 5, "avg": 5.5, "max": 6, "total": 11, "share": 1.0}
    assert io["vmm_time"]["total"] == 0
    assert s["end_time"] == 12


def test_stats_with_several_vcpus_share_one_clock(capsys, tmp_path):
    # smp.img on 2 vCPUs: the vCPUs take turns on one clock, so the guest time before an exit is the
    # time since the previous exit of either vCPU, and the per-vCPU tables split the whole one.
    path = tmp_path / "smp.vmtrace"
    code, _out, _err = cli(capsys, "record", GUESTS / "smp.img", "-o", path, "--vcpus", "2")
    assert code == 0
    trace = open_trace(path)
    times, vcpus = list(trace.exits.time), list(trace.exits.vcpu)
    assert all(a <= b for a, b in zip(times, times[1:])) and set(vcpus) == {0, 1}
    s = compute(trace)
    assert set(s["per_vcpu"]) == {"0", "1"}
    gaps = [t - before for t, before in zip(times, [0] + times)]
    for v, table in s["per_vcpu"].items():
        assert table["exits"] == vcpus.count(int(v))
        assert table["guest_time"] == sum(g for g, u in zip(gaps, vcpus) if u == int(v))
    assert sum(t["guest_time"] for t in s["per_vcpu"].values()) == s["all"]["guest_time"] == times[-1]
    assert "vCPU 1" in format_report(s)


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
    code, out, err = cli(capsys, "stats", paths["cpuid.img"])
    assert code == 0 and err == ""
    assert f"time unit: guest instruction ({TIME_MODEL})" in out
    end = open_trace(paths["cpuid.img"]).meta["end_time"]
    assert f"the run ended at time {end:,}" in out
    io_name = "IO_INSTRUCTION" if vendor == "intel" else "IOIO"
    line = next(line for line in out.splitlines() if line.strip().startswith(io_name))
    assert "553" in line and "98.4%" in line
    # The RDTSC row's guest max: the 1,004 instructions between cpuid.img's two RDTSCs (see above).
    line = next(line for line in out.splitlines() if line.strip().startswith("RDTSC"))
    assert "1,004" in line.split()
    assert "overhead = c1 x address-translation exits + c2 x interrupt-related exits + c3 x context switches" in out
    code, out, _err = cli(capsys, "stats", paths["cpuid.img"], "--json")
    doc = json.loads(out)
    assert code == 0 and doc["exits"] == 562 and doc["vendor"] == vendor
    assert doc["time_unit"] == "guest instruction" and doc["end_time"] == end
    assert format_report(doc).splitlines()[0].endswith("stopped: debug-exit, status 0")


def _as_old_trace(src, dst):
    """A copy of `src` as a recorder of the old time model wrote it: no `time_per_exit` meta (read
    as 1000) and exit n at time 1000 x (n + 1), as that model gave a guest without RDTSC."""
    shutil.copy(src, dst)
    db = sqlite3.connect(dst)
    db.execute("DELETE FROM meta WHERE key = 'time_per_exit'")
    db.execute("UPDATE exits SET time = (seq + 1) * 1000")
    db.execute("UPDATE meta SET value = (SELECT count(*) FROM exits) * 1000 WHERE key = 'end_time'")
    db.commit()
    db.close()
    return dst


def test_an_old_trace_keeps_the_old_time_model(capsys, tmp_path, traces):
    _vendor, paths = traces
    trace = open_trace(_as_old_trace(paths["hypercall.img"], tmp_path / "old.vmtrace"))
    assert trace.time_per_exit == 1000
    s = compute(trace)
    assert s["time_unit"] == "virtual tick" and s["time_model"] == OLD_TIME_MODEL.format(tpe=1000)
    for r in s["all"]["reasons"]:  # every exit costs its 1000 ticks in the VMM, the guest none
        assert r["vmm_time"]["min"] == r["vmm_time"]["max"] == r["vmm_time"]["avg"] == 1000
        assert r["vmm_time"]["total"] == 1000 * r["count"] and r["guest_time"]["total"] == 0
    assert s["all"]["vmm_time"] == trace.exits.time[-1] == 1000 * len(trace)
    buf = io.StringIO()
    export(trace, "chrome", buf)
    exits = [e for e in json.loads(buf.getvalue())["traceEvents"] if e.get("cat") == "exit"]
    assert len(exits) == len(trace)
    assert all(e["ph"] == "X" and e["dur"] == 1.0 for e in exits)  # 1000 ticks shown as 1000 ns
    assert [e["ts"] for e in exits[:3]] == [0.0, 1.0, 2.0]


def test_chrome_export_is_trace_event_format_with_one_track_per_vcpu(capsys, tmp_path, traces):
    vendor, paths = traces
    out_path = tmp_path / "cpuid.json"
    code, _out, err = cli(capsys, "export", paths["cpuid.img"], "--format", "chrome", "-o", out_path)
    assert code == 0 and "events (chrome)" in err
    doc = json.loads(out_path.read_text())
    events = doc["traceEvents"]
    assert isinstance(events, list) and doc["displayTimeUnit"] == "ns"
    for e in events:
        assert e["ph"] in ("X", "i", "M") and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["name"], str)
        if e["ph"] in ("X", "i"):
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] > 0
        if e["ph"] == "i":
            assert e["s"] == "t"  # an instant on its thread's track
    threads = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {0: "vCPU 0"}
    exits = [e for e in events if e.get("cat") == "exit"]
    trace = open_trace(paths["cpuid.img"])
    assert len(exits) == len(trace)
    assert {e["tid"] for e in exits} == set(threads)
    # An exit takes no virtual time but lasts the VMM's measured host time (exits.vmm_ns), and what follows
    # moves on by it: one guest instruction is shown as 1 ns, one measured nanosecond as 1 ns.
    costs = trace.vmm_ns()
    shifts = [0, *accumulate(costs)]
    assert all(e["ph"] == "X" and e["dur"] == ns / 1000 == e["args"]["vmm_ns"] / 1000 for e, ns in zip(exits, costs))
    assert [e["ts"] for e in exits] == [(t + shift) / 1000 for t, shift in zip(trace.exits.time, shifts)]
    assert [e["args"]["time"] for e in exits] == list(trace.exits.time)
    first = exits[0]
    assert first["name"] == "CPUID" and first["args"]["leaf"] == 0 and first["args"]["seq"] == 0
    assert first["ts"] == trace.exits.time[0] / 1000 > 0
    io_exit = next(e for e in exits if e["args"].get("port") == 0x3F8)
    assert io_exit["args"]["direction"] == "out"
    # The guest's slices fill the time before each exit: from the previous exit (or 0) to it.
    # (in instructions: ts and dur are microseconds, an instruction is shown as 1 ns)
    guest = [(round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000)) for e in events if e.get("cat") == "guest"]
    times = [0] + list(trace.exits.time)
    assert guest == [(a + shift, b + shift) for a, b, shift in zip(times, times[1:], shifts)]
    # slices on a track never overlap
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["tid"] == 0)
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:]))


def test_csv_export(capsys, tmp_path, traces):
    vendor, paths = traces
    out_path = tmp_path / "m.csv"
    assert cli(capsys, "export", paths["memory.img"], "--format", "csv", "-o", out_path, "--registers")[0] == 0
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
    code, out, _err = cli(capsys, "export", paths["hypercall.img"], "--format", "json", "-o", "-")
    plain = json.loads(out)["exits"]
    assert code == 0 and "registers" not in plain[0]
    assert [{k: v for k, v in e.items() if k != "registers"} for e in doc["exits"]] == plain


def test_registers_only_with_csv_or_json(capsys, traces):
    _vendor, paths = traces
    code, _out, err = cli(capsys, "export", paths["cpuid.img"], "--format", "chrome", "-o", "-", "--registers")
    assert code == 2 and "--registers goes with --format csv or json" in err
