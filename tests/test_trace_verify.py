"""`vmmtui replay --verify`: a recording re-runs identically; a changed guest shows its
first divergence exactly; recorded inputs are fed back at their point in time."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import GUESTS, cli, write_image
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine
from engine.trace import TraceWriter, open_trace
from engine.trace.guest import ImageChanged
from engine.trace.verify import verify
from vmmtui.cli import EXIT_USAGE

BUNDLED = sorted(p.name for p in list(GUESTS.glob("*.img")) + list(GUESTS.glob("*.elf"))
                 if not p.name.startswith("bench_"))
#: Options a bundled guest needs to pass its own checks (ipi.img needs an AP to send to).
OPTIONS = {"ipi.img": ["--vcpus", "2"]}


def test_every_bundled_guest_is_there():
    assert {"hello.img", "cpuid.img", "hypercall.img", "paging.img", "memory.img", "hello32.elf",
            "hello64.elf", "smp.img", "ipi.img"} <= set(BUNDLED)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("guest", BUNDLED)
def test_record_then_verify_is_identical(capsys, tmp_path, guest, vendor):
    path = tmp_path / "run.vmtrace"
    code, _out, _err = cli(capsys, "record", GUESTS / guest, "-o", path, "--vendor", vendor,
                            *OPTIONS.get(guest, []))
    assert code == 0
    n = len(open_trace(path))
    code, out, err = cli(capsys, "replay", "--verify", path)
    assert (code, err) == (0, "")
    assert out.startswith(f"identical: {n:,} exits match the trace")


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_record_then_verify_four_vcpus_with_their_quantum(capsys, tmp_path, vendor):
    path = tmp_path / "smp.vmtrace"
    code, _out, _err = cli(capsys, "record", GUESTS / "smp.img", "-o", path, "--vendor", vendor,
                            "--vcpus", "4", "--quantum", "700")
    assert code == 0
    trace = open_trace(path)
    assert (trace.config().vcpus, trace.config().quantum) == (4, 700)
    assert set(trace.exits.vcpu) == {0, 1, 2, 3}
    code, out, err = cli(capsys, "replay", "--verify", path)
    assert (code, err) == (0, "")
    assert out.startswith(f"identical: {len(trace):,} exits match the trace")


# -- a guest changed by one instruction --------------------------------------------------------

# mov dx,0x3f8; mov al,'A'; out dx,al; mov al,'B'; out dx,al; mov al,0; out 0xf4,al; cli; hlt
ORIGINAL = bytes.fromhex("baf803" "b041" "ee" "b042" "ee" "b000" "e6f4" "faf4")


def _record(image, path, vendor):
    machine = Machine(MachineConfig(vendor=vendor))
    writer = TraceWriter(path, machine, load(machine, image), force=True)
    stop = machine.run(timeout=30)
    writer.close(stop, 0.1)
    return open_trace(path)


@pytest.mark.parametrize("vendor,io_out,io_in", [("intel", 0x03F8_0000, 0x03F8_0008),
                                                  ("amd", 0x03F8_0090, 0x03F8_0091)])
def test_one_changed_instruction_is_the_first_divergence(capsys, tmp_path, vendor, io_out, io_in):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    trace = _record(original, tmp_path / "t.vmtrace", vendor)
    assert len(trace) == 3
    # mov al,'B' -> mov al,'C': the second OUT is taken at the same place with RAX one more.
    other_value = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b042"), bytes.fromhex("b043")), "c.img")
    result = verify(trace, other_value, allow_image_change=True)
    d = result.divergence
    assert (d.seq, d.field, d.expected, d.got) == (1, "rax", 0x42, 0x43)
    assert result.checked == 1 and result.image_changed
    # out dx,al -> in al,dx (same length): the exit's qualification says IN.
    other_direction = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b042ee"), bytes.fromhex("b042ec")),
                                  "d.img")
    d = verify(trace, other_direction, allow_image_change=True).divergence
    assert (d.seq, d.field, d.expected, d.got) == (1, "info1", io_out, io_in)
    assert str(d) == f"exit 1: info1: expected {io_out:#x}, got {io_in:#x}"


def test_the_divergence_report_through_the_cli(capsys, tmp_path):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    changed = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b042"), bytes.fromhex("b043")), "changed.img")
    path = tmp_path / "t.vmtrace"
    cli(capsys, "record", original, "-o", path)
    code, out, err = cli(capsys, "replay", "--verify", path, changed)
    assert code == EXIT_USAGE and out == "" and err.count("\n") == 1
    old, new = open_trace(path).meta["image_sha256"], load(Machine(), changed).sha256
    assert f"SHA-256 {new} differs from the traced image's {old}" in err
    code, out, err = cli(capsys, "replay", "--verify", path, changed, "--allow-image-change")
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0] == "diverged at exit 1: rax: expected 0x42, got 0x43"
    assert lines[1].startswith("  recorded: IO_INSTRUCTION at rip 0x7c08")
    assert lines[2].startswith("  re-run:   IO_INSTRUCTION at rip 0x7c08")
    assert "1 of 3 exits matched before it" in out


def test_a_changed_image_is_refused_without_the_flag(tmp_path):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    trace = _record(original, tmp_path / "t.vmtrace", "intel")
    changed = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b000"), bytes.fromhex("b001")), "x.img")
    with pytest.raises(ImageChanged, match=trace.meta["image_sha256"]):
        verify(trace, changed)


def test_a_changed_stop_status_is_a_divergence(tmp_path):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    trace = _record(original, tmp_path / "t.vmtrace", "intel")
    changed = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b000e6f4"), bytes.fromhex("b001e6f4")), "s.img")
    d = verify(trace, changed, allow_image_change=True).divergence
    # mov al,0 -> mov al,1 before OUT 0xF4: the last exit's RAX differs first.
    assert (d.seq, d.field, d.expected, d.got) == (2, "rax", 0x00, 0x01)


def test_another_instruction_in_place_differs_in_the_first_field_that_shows_it(tmp_path):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    trace = _record(original, tmp_path / "t.vmtrace", "intel")
    # The first `out dx,al` (1 byte) becomes `out 0xf4,al` (2 bytes): same place, same reason.
    other = write_image(tmp_path, bytes.fromhex("baf803" "b041" "e6f4" "faf4"), "other.img")
    result = verify(trace, other, allow_image_change=True)
    d = result.divergence
    assert (d.seq, d.field, d.expected, d.got) == (0, "length", 1, 2)
    assert result.checked == 0


def test_a_run_that_ends_sooner_is_reported_at_the_missing_exit(tmp_path):
    original = write_image(tmp_path, ORIGINAL, "original.img")
    trace = _record(original, tmp_path / "t.vmtrace", "intel")
    # The second `out dx,al` becomes `cli; hlt`: the run halts after one exit.
    shorter = write_image(tmp_path, ORIGINAL.replace(bytes.fromhex("b042ee"), bytes.fromhex("b042f4")), "h.img")
    result = verify(trace, shorter, allow_image_change=True)
    d = result.divergence
    assert d.seq == 1 and result.checked == 1
    assert d.field == "reason" and d.expected == 30 and d.got == 12  # IO_INSTRUCTION, then HLT


def test_a_prefix_trace_verifies(capsys, tmp_path):
    path = tmp_path / "prefix.vmtrace"
    code, _out, _err = cli(capsys, "record", GUESTS / "cpuid.img", "-o", path, "--max-exits", "100")
    assert code == 72
    code, out, _err = cli(capsys, "replay", "--verify", path)
    assert code == 0 and out.startswith("identical: 100 exits")
    assert "the trace ends after exit 99 (recorded stop: max-exits)" in out


# -- inputs ------------------------------------------------------------------------------

# Poll the LSR until a byte is ready, read it, echo it, end with it as the status.
ECHO = bytes.fromhex("bafd03" "ec" "a801" "74fb" "baf803" "ec" "ee" "e6f4" "faf4")


def test_recorded_serial_input_is_fed_back_at_its_time(tmp_path):
    image = write_image(tmp_path, ECHO, "echo.img")
    path = tmp_path / "echo.vmtrace"
    machine = Machine(MachineConfig())
    writer = TraceWriter(path, machine, load(machine, image))
    assert machine.run(max_exits=10).reason.value == "max-exits"  # ten polls: nothing typed yet
    # Virtual time counts guest instructions: MOV DX, then IN (exit 0 at time 1), and each poll
    # after it is IN, TEST, JZ: exit n at 1 + 3n. The stop after exit 9 lands after its IN retired.
    assert list(machine.exits.time) == [1 + 3 * n for n in range(10)]
    assert machine.time == machine.exits.time[9] + 1 == 29
    writer.record_input("serial", b"A")
    machine.send_serial(b"A")
    stop = machine.run(timeout=30)
    writer.close(stop, 0.1)
    assert (stop.reason.value, stop.status, bytes(machine.serial)) == ("debug-exit", 0x41, b"A")
    trace = open_trace(path)
    assert trace.inputs() == [(29, "serial", b"A")]  # fed at the stop's time
    result = verify(trace)
    assert result.identical, result.report()
    # Without the input the guest polls on: exit 10 reads an LSR with no data ready.
    trace.close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM inputs")
    db.commit()
    db.close()
    d = verify(open_trace(path), timeout=5).divergence
    assert (d.seq, d.field, d.expected, d.got) == (10, "aux1", 0x61, 0x60)


# mov dx,0x3f8; in al,dx; in al,dx; out 0xf4,al; cli; hlt: two reads of the receive buffer in a row.
READ_TWICE = bytes.fromhex("baf803" "ec" "ec" "e6f4" "faf4")


def test_an_input_before_an_exit_right_after_the_stop_is_fed_before_it(tmp_path):
    image = write_image(tmp_path, READ_TWICE, "twice.img")
    path = tmp_path / "twice.vmtrace"
    machine = Machine(MachineConfig())
    writer = TraceWriter(path, machine, load(machine, image))
    assert machine.run(max_exits=1).reason.value == "max-exits"  # the first IN: nothing typed yet
    writer.record_input("serial", b"A")
    machine.send_serial(b"A")
    stop = machine.run(timeout=30)
    writer.close(stop, 0.1)
    assert (stop.reason.value, stop.status) == ("debug-exit", 0x41)  # the second IN read it
    trace = open_trace(path)
    # The first IN is taken after the MOV (time 1); the stop lands after it retired (time 2), which
    # is also the time of the second IN: no instruction between. The input belongs before that exit.
    assert list(trace.exits.time) == [1, 2, 3]
    assert trace.inputs() == [(2, "serial", b"A")]
    result = verify(trace)
    assert result.identical, result.report()


def test_the_trace_holds_the_schedule(tmp_path):
    machine = Machine(MachineConfig(vcpus=4, quantum=700))
    path = tmp_path / "smp.vmtrace"
    writer = TraceWriter(path, machine, load(machine, GUESTS / "smp.img"), force=True)
    stop = machine.run(timeout=60)
    writer.close(stop, 0.1)
    rows = open_trace(path).schedule()
    assert [(v, a, b, why) for v, a, b, _, _, why in rows] == \
        [(s.vcpu, s.start, s.end, s.why) for s in machine.sched.slices]
    # Each slice names the first and last of its vCPU's exits inside it.
    e = machine.exits
    for v, a, b, first, last, _ in rows:
        mine = [seq for seq in range(len(e)) if e.vcpu[seq] == v and a <= e.time[seq] <= b]
        assert (first, last) == ((mine[0], mine[-1]) if mine else (None, None))
    assert any(first is not None for v, _, _, first, _, _ in rows if v != 0)  # the APs' INIT / SIPI / HLT


def test_the_trace_holds_the_injected_interrupts_and_verify_checks_them(tmp_path):
    import sqlite3

    machine = Machine(MachineConfig())
    injected = []
    machine.on_inject(lambda t, vcpu, vector: injected.append((t, vcpu, vector)))
    path = tmp_path / "timer.vmtrace"
    writer = TraceWriter(path, machine, load(machine, GUESTS / "timer.img"), force=True)
    stop = machine.run(timeout=60)
    writer.close(stop, 0.1)
    trace = open_trace(path)
    assert trace.injections() == injected and len(injected) == 10
    assert {(v, vec) for _, v, vec in injected} == {(0, 0x20)}
    assert verify(trace).identical
    db = sqlite3.connect(path)
    db.execute("UPDATE injections SET vector = 0x21 WHERE id = (SELECT min(id) FROM injections)")
    db.commit()
    db.close()
    result = verify(open_trace(path))
    assert not result.identical
    d = result.divergence
    assert d.field == "injected interrupt 0 (time, vCPU, vector)"
    assert (d.expected, d.got) == ((injected[0][0], 0, 0x21), injected[0])
