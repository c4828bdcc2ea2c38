"""guests/ipi.img: one vCPU sends fixed IPIs to another, end to end (--vcpus 2).

The BSP starts APIC ID 1 with INIT-SIPI-SIPI; the AP loads an IDT (gates 0x40 and
0x41), software-enables its local APIC, sets TPR 0, raises its "ready" flag and
waits in `sti; hlt`. The BSP sends a fixed IPI (physical destination 1, vector
0x40), waits for the AP's handler to count it, then the same with 0x41.

How the AP takes each IPI (engine/machine.py `_site_hlt`, `_schedule`, `_interrupt`;
README "Virtual time"): its HLT is intercepted (HLT exiting / the HLT intercept is
on by default), so the HLT exit hands the VMM control and the vCPU leaves the
schedule (RunState.HALTED). The BSP's ICR write is an MMIO exit of vCPU 0 whose
handling sets the vector in the AP's IRR (`_send_ipi`). At the next pick the
scheduler sees the halted AP has an interrupt it can take and makes it runnable;
since the VMM already has control (it emulated the HLT), there is no
external-interrupt exit: the VMM injects the vector on the VM entry that resumes the
AP (VM-entry interruption information, type external interrupt / EVENTINJ), as a
VMM with a software local APIC (KVM without APICv) does. The AP's handler then makes
one exit, the EOI write, and the AP halts again. So per IPI the AP shows exactly
[HLT exit] -> injection -> [EOI write exit] -> [HLT exit], nothing between.
The BSP keeps its turn after the ICR write (round-robin turns of --quantum
instructions): the AP runs, and the injection happens, when that turn ends.
"""

from __future__ import annotations

import struct

import pytest

from conftest import GUESTS
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine
from engine.trace import open_trace
from engine.vcpu import SNAP
from vmmtui.cli import main

VENDORS = ("intel", "amd")
IMAGE = GUESTS / "ipi.img"
OUTPUT = [
    "ipi: BSP APIC ID 0, 2 logical processors (CPUID leaf 1), starting APIC ID 1",
    "ipi: AP 1 up, APIC enabled",
    "ipi: ICR 0x01000000 0x00004040 (fixed, physical, vector 0x40)",
    "ipi: AP 1 took vector 0x40",
    "ipi: ICR 0x01000000 0x00004041 (fixed, physical, vector 0x41)",
    "ipi: AP 1 took vector 0x41",
    "ipi: 2 IPIs delivered, ok",
]
MMIO = {"intel": "EPT_VIOLATION", "amd": "NPF"}
ICR_LOW, ICR_HIGH, EOI, APIC_ID, SVR, TPR = 0xFEE00300, 0xFEE00310, 0xFEE000B0, 0xFEE00020, 0xFEE000F0, 0xFEE00080
IDT = 0x3000  # the AP's IDT (guests/ipi.S)
_IF = 1 << 9


def _machine(vendor, **config):
    m = Machine(MachineConfig(vendor=vendor, **{"vcpus": 2, **config}))
    load(m, IMAGE)
    return m


def _run(vendor, **config):
    """Run ipi.img to its end: (machine, stop, injections, RFLAGS at each exit by seq)."""
    m = _machine(vendor, **config)
    injections, rflags = [], {}
    m.on_inject(lambda time, vcpu, vector: injections.append((time, vcpu, vector)))
    m.on_exit(lambda seq, vcpu, regs: rflags.__setitem__(seq, regs[SNAP["rflags"]]))
    stop = m.run(timeout=60)
    return m, stop, injections, rflags


def _columns(m):
    e = m.exits
    return list(zip(e.vcpu, e.time, e.reason, e.rip, e.info1, e.info2, e.aux1, e.aux2))


def _describe(m, seq):
    """An exit as a short tuple: MMIO accesses with their GPA and the value read or
    written (the VMM's record in aux1), CR0 writes with the value, the rest by name."""
    e = m.exits[seq]
    q = e.qualification
    if e.name == MMIO[m.vendor]:
        return ("write" if q["write"] else "read", q["gpa"], m.exits.aux1[seq])
    if e.name in ("CR_ACCESS", "WRITE_CR0"):
        return ("cr0", q["value"])
    if e.name == "STARTUP_IPI":
        return ("sipi", q["vector"])
    return (e.name,)


def _handler(m, vector):
    """The handler address in the AP's IDT gate for `vector` (a 32-bit interrupt gate)."""
    low, high = struct.unpack("<II", m.read_gpa(IDT + 8 * vector, 8))
    assert (low >> 16, (high >> 8) & 0xFF) == (0x08, 0x8E)  # selector 0x08, present 32-bit interrupt gate
    return (high & 0xFFFF0000) | (low & 0xFFFF)


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_ap_takes_two_fixed_ipis(vendor):
    m, stop, _injections, _rflags = _run(vendor)
    assert (stop.reason.value, stop.status, stop.vcpu) == ("debug-exit", 0, 0), stop.message
    assert m.serial.decode().splitlines() == OUTPUT
    assert m.serial.decode().endswith("\n")
    # The AP's handlers counted both, in order (guests/ipi.S: COUNTER 0x5040, LOG 0x5080).
    assert struct.unpack("<I", m.read_gpa(0x5040, 4))[0] == 2
    assert m.read_gpa(0x5080, 2) == b"\x40\x41"
    # Both local APICs end with nothing requested or in service; the AP's as it set it up.
    ap = m.lapics[1]
    assert (ap.irr, ap.isr, ap.svr, ap.tpr) == (0, 0, 0x1FF, 0)
    assert (m.lapics[0].irr, m.lapics[0].isr) == (0, 0)


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_bsp_writes_the_icr_as_the_sdm_encodes_it(vendor):
    m, _stop, _injections, _rflags = _run(vendor)
    bsp = [_describe(m, s) for s in range(len(m.exits)) if m.exits.vcpu[s] == 0 and m.exits.name(s) == MMIO[vendor]]
    # INIT (mode 101, assert), SIPI twice (mode 110, vector 0x01 = page 0x1000), then the two
    # fixed IPIs: mode 000, bit 11 = 0 (physical), bit 14 = 1 (assert), edge, no shorthand.
    # Each one: ICR high (destination APIC ID 1 in bits 31:24), ICR low (which sends), then
    # one read of the delivery status (bit 12), already clear: the engine delivers at once.
    icr = [d for d in bsp if d[1] in (ICR_LOW, ICR_HIGH)]
    assert icr == [step for low in (0x4500, 0x4601, 0x4601, 0x4040, 0x4041)
                   for step in (("write", ICR_HIGH, 1 << 24), ("write", ICR_LOW, low), ("read", ICR_LOW, low))]
    # Before them only the BSP's own APIC ID read and its SVR read-modify-write.
    assert bsp[:3] == [("read", APIC_ID, 0), ("read", SVR, 0xFF), ("write", SVR, 0x1FF)] and len(bsp) == 3 + 15


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_vmm_injects_exactly_the_two_ipis_into_the_ap_after_it_is_ready(vendor):
    m, _stop, injections, _rflags = _run(vendor)
    e = m.exits
    assert [(v, vec) for _t, v, vec in injections] == [(1, 0x40), (1, 0x41)]  # none into vCPU 0
    (t40, _, _), (t41, _, _) = injections
    ap = [s for s in range(len(e)) if e.vcpu[s] == 1]
    ready = next(s for s in ap if e.name(s) == "HLT")  # "ready" is set 2 instructions before this HLT
    sent = {e.aux1[s]: e.time[s] for s in range(len(e))
            if e.vcpu[s] == 0 and _describe(m, s)[:2] == ("write", ICR_LOW)}
    assert e.time[ready] < sent[0x4040] <= t40 < sent[0x4041] <= t41
    # No interrupt anywhere came with an external-interrupt or interrupt-window exit.
    names = e.counts()
    for name in ("EXTERNAL_INTERRUPT", "INTERRUPT_WINDOW", "INTR", "VINTR"):
        assert name not in names
    # The last injection is still in vCPU 1's VMCS / VMCB; vCPU 0's was never written.
    if vendor == "intel":
        assert m.structure(1).read("VM_ENTRY_INTR_INFO_FIELD") == (1 << 31) | 0x41  # valid, type 0 (external)
        assert m.structure(0).read("VM_ENTRY_INTR_INFO_FIELD") == 0
    else:
        assert m.structure(1).read("EVENTINJ") == (1 << 31) | 0x41  # valid, TYPE 0 (INTR)
        assert m.structure(0).read("EVENTINJ") == 0


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_ap_wakes_from_hlt_for_each_ipi(vendor):
    m, _stop, injections, rflags = _run(vendor)
    e = m.exits
    ap = [s for s in range(len(e)) if e.vcpu[s] == 1]
    start = [("INIT_SIGNAL",), ("sipi", 1)] if vendor == "intel" else [("INIT",)]  # SVM has no SIPI intercept
    assert [_describe(m, s) for s in ap] == start + [
        ("cr0", 0x11),  # the trampoline's MOV to CR0 (PE)
        ("read", APIC_ID, 1 << 24), ("write", SVR, 0x1FF), ("write", TPR, 0), ("read", SVR, 0x1FF),
        ("HLT",),  # ready, sti, hlt: waits for the first IPI
        ("write", EOI, 0), ("HLT",),  # vector 0x40's handler, back to hlt
        ("write", EOI, 0), ("HLT",),  # vector 0x41's handler, back to hlt
    ]
    hlts = [s for s in ap if e.name(s) == "HLT"]
    eois = [s for s in ap if _describe(m, s)[:2] == ("write", EOI)]
    # Every HLT with interrupts on (RFLAGS.IF at the exit), at the same instruction.
    assert all(rflags[s] & _IF for s in hlts) and len({e.rip[s] for s in hlts}) == 1
    # Each injection comes between a HLT exit and the EOI of the handler of its vector.
    for (t, _vcpu, vector), hlt, eoi in zip(injections, hlts, eois):
        assert e.time[hlt] < t < e.time[eoi] and 0 < e.rip[eoi] - _handler(m, vector) < 0x20
    # The AP runs only at turns that end in HLT: the first to its ready point, then one
    # per IPI, opened at the injection's time and 10 instructions long (8 of the handler,
    # the JMP back and the HLT).
    turns = [s for s in m.sched.as_json() if s["vcpu"] == 1]
    assert [s["why"] for s in turns] == ["halt"] * 3
    assert [(s["start"], s["end"] - s["start"]) for s in turns[1:]] == [(t, 10) for t, _v, _vec in injections]


@pytest.mark.parametrize("vendor", VENDORS)
def test_without_hlt_exiting_the_ipi_is_an_external_interrupt_exit(vendor):
    # With HLT exiting off the AP halts in guest mode (activity state HLT): the VMM does not
    # have control, so the IPI reaches it as an external interrupt (SDM "External-interrupt
    # exiting", APM "INTR"), one exit per IPI at the instruction after the HLT, then injected.
    m, stop, injections, _rflags = _run(vendor, exits=["hlt=off"])
    assert (stop.reason.value, stop.status) == ("debug-exit", 0) and m.serial.decode().splitlines() == OUTPUT
    e = m.exits
    ap = [s for s in range(len(e)) if e.vcpu[s] == 1]
    assert not any(e.name(s) == "HLT" for s in ap)
    extint = [s for s in ap if e.name(s) in ("EXTERNAL_INTERRUPT", "INTR")]
    assert [e.name(s) for s in extint] == ["EXTERNAL_INTERRUPT" if vendor == "intel" else "INTR"] * 2
    if vendor == "intel":  # the vector is in the VM-exit interruption information
        assert [e[s].qualification["vector"] for s in extint] == [0x40, 0x41]
    hlt_rip = m.exits.rip[next(s for s in ap if _describe(m, s)[:2] == ("read", SVR))]  # the last set-up exit
    assert len({e.rip[s] for s in extint}) == 1 and e.rip[extint[0]] > hlt_rip
    assert [(vcpu, vector) for _t, vcpu, vector in injections] == [(1, 0x40), (1, 0x41)]
    assert [e.time[s] for s in extint] == [t for t, _v, _vec in injections]


@pytest.mark.parametrize("vendor", VENDORS)
def test_time_is_the_same_run_straight_exit_by_exit_or_stepped(vendor):
    straight, stop, injections, _rflags = _run(vendor)
    assert stop.status == 0
    by_exit = _machine(vendor)
    by_exit_injections = []
    by_exit.on_inject(lambda time, vcpu, vector: by_exit_injections.append((time, vcpu, vector)))
    while by_exit.run_to_exit(timeout=60).reason.value == "exit":
        pass
    assert by_exit.stop.status == 0
    assert _columns(by_exit) == _columns(straight)
    assert by_exit.sched.retired == straight.sched.retired
    assert by_exit.sched.as_json() == straight.sched.as_json()
    assert by_exit_injections == injections and by_exit.serial == straight.serial
    stepped = _machine(vendor)
    steps = 0
    while stepped.step().reason.value == "step":
        steps += 1
    assert _columns(stepped) == _columns(straight)
    assert stepped.sched.as_json() == straight.sched.as_json()
    # Every step retires one instruction or delivers one interrupt (the two IPIs).
    assert steps + 1 == sum(straight.sched.retired) + 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_record_then_verify_is_identical(capsys, tmp_path, vendor):
    path = tmp_path / "ipi.vmtrace"
    assert main(["record", str(IMAGE), "-o", str(path), "--vendor", vendor, "--vcpus", "2"]) == 0
    out, _err = capsys.readouterr()
    assert out.splitlines() == OUTPUT
    trace = open_trace(path)
    _live, _stop, injections, _rflags = _run(vendor)
    assert trace.config().vcpus == 2
    assert trace.injections() == injections  # the trace starts at time 0: the same times
    assert main(["replay", "--verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"identical: {len(trace):,} exits match the trace")


@pytest.mark.parametrize("vendor", VENDORS)
def test_one_vcpu_is_a_failed_check(vendor):
    m, stop, injections, _rflags = _run(vendor, vcpus=1)
    assert (stop.reason.value, stop.status) == ("debug-exit", 1)
    assert m.serial.decode().splitlines() == [
        "ipi: BSP APIC ID 0, 1 logical processors (CPUID leaf 1), starting APIC ID 1",
        "ipi: FAIL, needs 2 logical processors"]
    assert injections == []
