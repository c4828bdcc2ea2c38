"""Interrupts, timers, SMP and virtual time (issue 3): deterministic schedules,
exact instruction counts, timer ticks at their virtual time, INIT / SIPI exits,
external-interrupt and interrupt-window exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import GUESTS, ROOT, run_guest, write_image
from engine.config import MachineConfig
from engine.devices.pit8254 import PIT_HZ
from engine.icount import counter_offset
from engine.loader import load
from engine.machine import Machine

VENDORS = ("intel", "amd")


def _machine(image, vendor="intel", **config):
    m = Machine(MachineConfig(vendor=vendor, **config))
    load(m, image)
    return m


def _columns(m):
    e = m.exits
    return list(zip(e.vcpu, e.time, e.reason, e.rip, e.info1, e.info2, e.aux1, e.aux2))


def test_the_instruction_counter_is_found():
    assert counter_offset() % 8 == 0


@pytest.mark.parametrize("image,vcpus", [("cpuid.img", 1), ("memory.img", 1), ("exceptions.img", 1),
                                         ("timer.img", 1), ("smp.img", 4)])
def test_time_is_the_same_run_straight_exit_by_exit_or_stepped(image, vcpus):
    """Virtual time counts instructions retired, whatever stops the debugger made."""
    straight = _machine(GUESTS / image, vcpus=vcpus)
    assert straight.run(timeout=60).reason.value == "debug-exit"
    by_exit = _machine(GUESTS / image, vcpus=vcpus)
    while by_exit.run_to_exit(timeout=60).reason.value == "exit":
        pass
    assert _columns(by_exit) == _columns(straight)
    assert by_exit.sched.retired == straight.sched.retired
    assert by_exit.sched.as_json() == straight.sched.as_json()
    if image != "smp.img":  # stepping 4 vCPUs through their spin loops takes too long for CI
        _check_stepping(image, straight)


def _check_stepping(image, straight):
    stepped = _machine(GUESTS / image)
    faults = []
    take_event = stepped._take_event
    stepped._take_event = lambda v, event: (faults.append(event) if not event.software else None,
                                            take_event(v, event))
    steps = 0
    while stepped.step().reason.value == "step":
        steps += 1
    assert _columns(stepped) == _columns(straight)
    assert stepped.sched.retired == straight.sched.retired
    # Every step retires one instruction, or delivers one interrupt (timer.img: 10), or
    # takes a fault, whose instruction does not retire (exceptions.img).
    delivered = 10 if image == "timer.img" else 0
    assert steps + 1 == straight.sched.retired[0] + delivered + len(faults)


def test_a_counted_loop_retires_exactly_its_instructions(tmp_path):
    # bench_loop.img runs 10 x count + 10 instructions, the last one the OUT to 0xF4.
    data = bytearray((GUESTS / "bench_loop.img").read_bytes())
    data[0x1F8:0x1FC] = (1234).to_bytes(4, "little")
    m = _machine(write_image(tmp_path, bytes(data)))
    assert m.run().reason.value == "debug-exit"
    assert m.time == m.sched.retired[0] == 10 * 1234 + 10


@pytest.mark.parametrize("vendor", VENDORS)
def test_timer_ticks_arrive_at_their_virtual_time(vendor):
    m = _machine(GUESTS / "timer.img", vendor)
    injected = []
    m.on_inject(lambda t, vcpu, vector: injected.append((t, vcpu, vector)))
    stop = m.run(timeout=60)
    assert (stop.reason.value, stop.status) == ("debug-exit", 0)
    assert m.serial.decode().endswith("timer: 10 ticks\n")
    # The PIT was loaded with 11932 by the OUT that wrote its high byte; IRQ 0 then
    # falls due every 11932 PIT periods of 1/1.193182 MHz, one guest instruction
    # being 1 ns of virtual time (README, "Virtual time").
    load_time = [m.exits.time[i] for i in range(len(m.exits)) if m.exits[i].qualification.get("port") == 0x40][-1]
    first_tick = load_time * PIT_HZ // 10**9
    expected = [-(-(first_tick + 11932 * k) * 10**9 // PIT_HZ) for k in range(1, 11)]
    assert [t for t, _, _ in injected] == expected
    assert {(vcpu, vector) for _, vcpu, vector in injected} == {(0, 0x20)}
    # Each tick wakes the vCPU from its HLT: one HLT exit per tick, no external-interrupt exit.
    assert m.exits.counts()["HLT"] == 10
    assert "EXTERNAL_INTERRUPT" not in m.exits.counts() and "INTR" not in m.exits.counts()


def test_timer_ticks_for_an_instruction_budget():
    """Stopped after a budget of virtual time, the guest has seen the ticks due by then."""
    m = _machine(GUESTS / "timer.img")
    ticks = []
    m.on_inject(lambda t, vcpu, vector: ticks.append(t))
    while m.time < 25_000_000 and m.run_to_exit().reason.value == "exit":
        pass
    # Halted after its second tick, the guest slept until the third fell due.
    assert ticks == [10_000_151, 20_000_302, 30_000_453] and m.time >= ticks[-1]
    assert int.from_bytes(m.read_gpa(0x5000, 1), "little") == 3  # the guest's own count


# Real mode: IVT[0x20] = 0000:7C80; the PIC pair with only IRQ 0 unmasked; the PIT in
# mode 2 with divisor 16; then 20,000 `loop`s with interrupts off, `sti; nop`, and the
# debug-exit OUT. The IRQ 0 handler at 0x7C80 counts at 0x500, sends an EOI, IRETs.
IRQ_WITH_INTERRUPTS_OFF = (
    bytes.fromhex("fa" "bc0070" "c7068000807c" "c70682000000"
                  "b011e620" "b020e621" "b004e621" "b001e621" "b0fee621"
                  "b034e643" "b010e640" "b000e640"
                  "b9204e" "e2fe" "fb" "90" "b000e6f4" "faf4").ljust(0x80, b"\x90")
    + bytes.fromhex("fe060005" "b020e620" "cf")
)


@pytest.mark.parametrize("vendor", VENDORS)
def test_an_interrupt_while_interrupts_are_off_waits_for_the_window(tmp_path, vendor):
    m, stop = run_guest(write_image(tmp_path, IRQ_WITH_INTERRUPTS_OFF), vendor)
    assert (stop.reason.value, stop.status) == ("debug-exit", 0)
    names = [m.exits[i].name for i in range(len(m.exits))]
    extint, window = ("EXTERNAL_INTERRUPT", "INTERRUPT_WINDOW") if vendor == "intel" else ("INTR", "VINTR")
    assert names[:8] == [names[0]] * 8  # the PIC and PIT OUTs
    assert names[8:] == [extint, window, names[0], names[0]]  # then the EOI and the debug-exit OUT
    e_int, e_win = m.exits[8], m.exits[9]
    # The interrupt fell due inside the loop (RIP of the LOOP instruction) ...
    assert e_int.rip == 0x7C33
    if vendor == "intel":
        assert e_int.qualification["vector"] == 0x20 and e_int.qualification["type"] == "external-interrupt"
    # ... and was taken once STI and the instruction after it had run.
    assert e_win.rip == 0x7C37
    assert e_win.time > e_int.time
    assert m.read_gpa(0x500, 1) == b"\x01"
    # The VMM injected vector 0x20 as an external interrupt.
    s = m.structure(0)
    if vendor == "intel":
        assert s.read("VM_ENTRY_INTR_INFO_FIELD") == (1 << 31) | 0x20
    else:
        assert s.read("EVENTINJ") & 0x7FF == 0x20 and s.read("EVENTINJ") >> 31 == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_smp_four_vcpus_deterministic(vendor):
    runs = []
    for _ in range(2):
        m, stop = run_guest(GUESTS / "smp.img", vendor, vcpus=4)
        assert (stop.reason.value, stop.status) == ("debug-exit", 0)
        runs.append((_columns(m), m.sched.as_json(), m.serial))
    assert runs[0] == runs[1]
    assert runs[0][2].decode().splitlines() == [
        "smp: BSP APIC ID 0, 4 logical processors (CPUID leaf 1), waking 3 APs",
        "smp: AP 1 up", "smp: AP 2 up", "smp: AP 3 up", "smp: 3 APs, counter 3 ok"]
    counts = m.exits.counts()
    if vendor == "intel":
        assert counts["INIT_SIGNAL"] == 3 and counts["STARTUP_IPI"] == 3
        sipis = [m.exits[i] for i in range(len(m.exits)) if m.exits[i].name == "STARTUP_IPI"]
        assert sorted(e.vcpu for e in sipis) == [1, 2, 3]
        assert {e.qualification["vector"] for e in sipis} == {1}
    else:
        assert counts["INIT"] == 3 and "STARTUP_IPI" not in counts
    assert counts["HLT"] == 3  # each AP ends in cli; hlt
    assert sorted(set(m.exits.vcpu)) == [0, 1, 2, 3]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_stop_at_an_ipis_exit_does_not_change_the_run(vendor):
    # An ICR write's exit causes the INIT / SIPI exit of its target inside the same MMIO
    # callback. A stop after the target's exit (never after the write's own: a replay
    # jumping there) lands before the write, which then runs again on resume and must
    # be answered from the record: once, a second exit or IPI would change the run.
    straight, _stop = run_guest(GUESTS / "smp.img", vendor, vcpus=2)
    events = [i for i in range(len(straight.exits)) if straight.exits.name(i) in ("INIT", "INIT_SIGNAL",
                                                                                  "STARTUP_IPI")]
    assert events
    for k in events:
        m = _machine(GUESTS / "smp.img", vendor, vcpus=2)
        assert m.run(max_exits=k + 1).exit_seq == k
        m.run(timeout=30)
        assert _columns(m) == _columns(straight) and m.serial == straight.serial, k


def test_schedule_slices_add_up_to_the_instructions_retired():
    m, stop = run_guest(GUESTS / "smp.img", vcpus=4, quantum=2000)
    assert stop.status == 0
    slices = m.sched.as_json()
    for v in range(4):
        assert sum(s["end"] - s["start"] for s in slices if s["vcpu"] == v) == m.sched.retired[v]
    assert sum(m.sched.retired) == m.time
    # Slices do not overlap, come in time order, and no turn passes the quantum.
    for a, b in zip(slices, slices[1:]):
        assert a["end"] <= b["start"]
    assert all(s["end"] - s["start"] <= 2000 for s in slices)
    assert {s["why"] for s in slices} <= {"quantum", "halt", "sipi", "exit"}
    # Every AP's run ends in its HLT; the BSP's last slice ends the run.
    assert [s["why"] for s in slices if s["vcpu"] != 0][-1] == "halt"
    assert slices[-1]["vcpu"] == 0 and slices[-1]["why"] == "exit"


def test_the_quantum_changes_the_interleaving_not_the_result():
    a, _ = run_guest(GUESTS / "smp.img", vcpus=4, quantum=500)
    b, _ = run_guest(GUESTS / "smp.img", vcpus=4, quantum=20000)
    assert a.serial == b.serial
    assert len(a.sched.slices) > len(b.sched.slices)


def test_run_json_with_four_vcpus():
    out = subprocess.run([sys.executable, "-m", "vmmtui.cli", "run", str(GUESTS / "smp.img"), "--vcpus", "4",
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["vcpus"] == 4 and doc["stop"] == "debug-exit" and doc["exit_status"] == 0
    assert doc["schedule"] and set(doc["schedule"][0]) == {"vcpu", "start", "end", "why"}
    assert all("vcpu" in e for e in doc["exits"])
    assert {e["vcpu"] for e in doc["exits"]} == {0, 1, 2, 3}


@pytest.mark.parametrize("bad,message", [("0", "--vcpus is 1 to 16"), ("17", "--vcpus is 1 to 16")])
def test_bad_vcpu_counts_are_refused(bad, message):
    out = subprocess.run([sys.executable, "-m", "vmmtui.cli", "run", str(GUESTS / "hello.img"), "--vcpus", bad],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("vendor", VENDORS)
def test_pause_exiting_shows_the_spin_loop(vendor):
    # A short quantum lets the APs meet at the spinlock, where they wait with PAUSE.
    m, stop = run_guest(GUESTS / "smp.img", vendor, vcpus=4, quantum=7, exits=["pause=on"])
    assert stop.status == 0
    pause = "PAUSE_INSTRUCTION" if vendor == "intel" else "PAUSE"
    assert m.exits.counts()[pause] > 0
    off, _ = run_guest(GUESTS / "smp.img", vendor, vcpus=4, quantum=7)
    assert pause not in off.exits.counts()


def test_the_vmx_preemption_timer_counts_instructions_since_the_last_entry(tmp_path):
    data = bytearray((GUESTS / "bench_loop.img").read_bytes())
    data[0x1F8:0x1FC] = (1234).to_bytes(4, "little")  # 12,349 instructions, then the debug-exit OUT
    m, stop = run_guest(write_image(tmp_path, bytes(data)), exits=["preempt=on"], quantum=1000)
    assert stop.status == 0
    names = [m.exits[i].name for i in range(len(m.exits))]
    assert names == ["PREEMPTION_TIMER"] * 12 + ["IO_INSTRUCTION"]
    assert list(m.exits.time)[:12] == [1000 * k for k in range(1, 13)]
    assert m.structure(0).read("VMX_PREEMPTION_TIMER_VALUE") == 1000
    assert m.structure(0).read("PIN_BASED_VM_EXEC_CONTROL") & (1 << 6)


def test_the_preemption_timer_is_refused_under_amd():
    out = subprocess.run([sys.executable, "-m", "vmmtui.cli", "run", str(GUESTS / "hello.img"), "--vendor", "amd",
                          "--exit", "preempt=on"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "AMD-V has no preempt control" in out.stderr


def test_the_schedule_pane_draws_each_vcpus_turns():
    from types import SimpleNamespace

    from vmmtui.views.schedule import schedule_view

    m, _ = run_guest(GUESTS / "smp.img", vcpus=4, quantum=20000)
    width = 200
    step = m.time / width
    group = schedule_view(SimpleNamespace(machine=m), 0, m.time, width)
    lanes = [t.plain for t in group.renderables[1:5]]
    assert [lane[:8] for lane in lanes] == ["vCPU 0  ", "vCPU 1  ", "vCPU 2  ", "vCPU 3  "]
    cols = [lane[8:] for lane in lanes]
    e = m.exits
    for v, col in enumerate(cols):
        for i, ch in enumerate(col[:width]):
            a, b = int(i * step), int((i + 1) * step)
            turn = any(s.vcpu == v and s.start < b and s.end >= a for s in m.sched.slices)
            exits = any(e.vcpu[k] == v and a <= e.time[k] < b for k in range(len(e)))
            # Running only inside the vCPU's turns; blank where it neither ran nor exited.
            assert ch != "─" or turn, (v, i)
            assert ch != " " or not turn or exits, (v, i)
            assert ch == " " or turn or exits, (v, i)
    # The APs wait for their SIPI most of the run: their lanes are mostly blank.
    assert all(col.count(" ") > width // 2 for col in cols[1:])
    assert cols[0].count("─") > width // 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_long_mode_int_from_ring_3_switches_to_rsp0(tmp_path, vendor):
    """SDM "64-Bit Mode Stack Frame": from CPL 3 through a DPL-3 gate to a CPL-0 handler,
    the processor loads RSP0 from the TSS, a null SS, and pushes SS, RSP, RFLAGS, CS, RIP."""
    import struct

    from engine.loader import BOOT_PML4_GPA
    from robustness.images import image
    from unicorn import x86_const as X

    # mov al,0; out 0x80,al (an exit at CPL 0); iretq (to ring 3) | user: int 0x40 | handler: out 0xf4,al
    code = bytes.fromhex("b000" "e680" "48cf" "cd40" "e6f4" "faf4")
    path = tmp_path / "ring3.elf"
    path.write_bytes(image("long", code))
    m = Machine(MachineConfig(vendor=vendor, mem_size=16 << 20))
    entry = load(m, path).entry
    gdt, tss, idt, frame_at, user_stack, rsp0 = 0x20000, 0x21000, 0x22000, 0x23000 - 40, 0x24000, 0x30000
    tss_low = 0x67 | (tss & 0xFFFFFF) << 16 | 0x89 << 40 | (tss >> 24 & 0xFF) << 56
    m.mem.write(gdt, struct.pack("<7Q", 0, 0x00209A0000000000, 0x0000920000000000, 0x0020FA0000000000,
                                 0x0000F20000000000, tss_low, 0))
    m.mem.write(tss + 4, struct.pack("<Q", rsp0))
    handler = entry + 8
    gate = (handler & 0xFFFF) | 0x08 << 16 | 0xEE << 40 | (handler >> 16 & 0xFFFF) << 48
    m.mem.write(idt + 0x40 * 16, struct.pack("<QQ", gate, handler >> 32))
    m.mem.write(frame_at, struct.pack("<5Q", entry + 6, 0x1B, 0x2, user_stack, 0x23))
    # The loader's identity map is supervisor-only: let ring 3 use it (U/S in every level).
    tables = bytearray(m.read_gpa(BOOT_PML4_GPA, 6 * 0x1000))
    for off in [0] + [0x1000 + 8 * i for i in range(4)] + [0x2000 + 8 * i for i in range(4 * 512)]:
        struct.pack_into("<Q", tables, off, struct.unpack_from("<Q", tables, off)[0] | 4)
    m.mem.write(BOOT_PML4_GPA, bytes(tables))
    uc = m.vcpus[0].uc
    uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 7 * 8 - 1, 0))
    uc.reg_write(X.UC_X86_REG_IDTR, (0, idt, 0xFFF, 0))
    uc.reg_write(X.UC_X86_REG_TR, (0x28, tss, 0x67, 0x8900))
    uc.reg_write(X.UC_X86_REG_RSP, frame_at)
    stop = m.run(timeout=10)
    assert (stop.reason.value, stop.status) == ("debug-exit", 0), stop.message
    regs = m.registers()
    assert (regs["cs"], regs["ss"], regs["rsp"]) == (0x08, 0, rsp0 - 40)
    rip, cs, rflags, rsp, ss = struct.unpack("<5Q", m.read_gpa(rsp0 - 40, 40))
    assert (rip, cs, rsp, ss) == (entry + 8, 0x1B, user_stack, 0x23) and rflags & 0x2


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_fixed_self_ipi_reaches_the_guests_handler(tmp_path, vendor):
    """ICR shorthand "self", fixed vector 0x40: the local APIC accepts it, the VMM takes an
    external-interrupt exit and injects it, the guest's IDT handler runs and sends EOI."""
    import struct

    from robustness.images import image
    from unicorn import x86_const as X

    code = bytes.fromhex(
        "c705f000e0feff010000"  # mov dword [0xFEE000F0], 0x1FF: SVR, APIC software-enabled
        "fb"  # sti
        "c7050003e0fe40400400"  # mov dword [0xFEE00300], 0x44040: self, fixed, vector 0x40
        "803d0050000001" "75f7"  # wait: cmp byte [0x5000], 1; jne wait
        "b000e6f4" "faf4"  # the debug exit, status 0
    ).ljust(0x40, b"\x90") + bytes.fromhex(
        "c6050050000001"  # handler: mov byte [0x5000], 1
        "c705b000e0fe00000000"  # mov dword [0xFEE000B0], 0: EOI
        "cf")  # iret
    path = tmp_path / "ipi.elf"
    path.write_bytes(image("protected", code))
    m = Machine(MachineConfig(vendor=vendor, mem_size=16 << 20))
    entry = load(m, path).entry
    handler, idt = entry + 0x40, 0x6000
    cs = m.registers()["cs"]
    m.mem.write(idt + 0x40 * 8, struct.pack("<Q", (handler & 0xFFFF) | cs << 16 | 0x8E << 40
                                            | (handler >> 16) << 48))
    m.vcpus[0].uc.reg_write(X.UC_X86_REG_IDTR, (0, idt, 0x7FF, 0))
    stop = m.run(timeout=10)
    assert (stop.reason.value, stop.status) == ("debug-exit", 0), stop.message
    assert m.read_gpa(0x5000, 1) == b"\x01"
    extint = "EXTERNAL_INTERRUPT" if vendor == "intel" else "INTR"
    names = [m.exits[i].name for i in range(len(m.exits))]
    assert names.count(extint) == 1
    if vendor == "intel":
        assert m.exits[names.index(extint)].qualification["vector"] == 0x40
    # The handler's EOI is the last APIC write: the vector is out of service again.
    assert not m.lapics[0].isr and m.lapics[0].pending() is None


@pytest.mark.parametrize("vendor", VENDORS)
def test_sti_mov_ss_and_pop_ss_hold_off_interrupts_for_one_instruction(tmp_path, vendor):
    # SDM Vol. 3 6.8.3: after MOV SS or POP SS (and after STI) interrupts wait until the
    # next instruction completes. The engine tells them by the bytes before RIP.
    code = bytes.fromhex("8ed0" "90" "50" "17" "90" "fb" "90" "b000e6f4")  # mov ss,ax; nop; push ax; pop ss;
    m = _machine(write_image(tmp_path, code), vendor)                      # nop; sti; nop; debug exit 0
    v = m.vcpus[0]
    shadows = []
    for _ in range(7):
        m.step()
        shadows.append(m._in_interrupt_shadow(v, v.snapshot()))
    assert shadows == [True, False, False, True, False, True, False]
