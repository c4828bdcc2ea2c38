"""The engine's debugger API: breakpoints, exit filters, run to exit, serial input."""

import pytest

from conftest import GUESTS
from engine.config import MachineConfig
from engine.exitfilter import FilterError, parse
from engine.loader import load
from engine.machine import Machine


def _machine(guest="hello.img", vendor="intel"):
    m = Machine(MachineConfig(vendor=vendor))
    load(m, GUESTS / guest)
    return m


def test_breakpoint_stops_before_the_instruction_every_time():
    m = _machine()
    m.add_breakpoint(0x7C3A)  # the IN from the LSR in the print loop
    seen = []
    for _ in range(3):
        stop = m.run()
        assert stop.reason.value == "breakpoint"
        seen.append((m.registers()["rip"], len(m.exits), m.serial.decode()))
    assert seen == [(0x7C3A, 0, ""), (0x7C3A, 2, "H"), (0x7C3A, 4, "He")]
    assert m.step().reason.value == "step" and m.registers()["rip"] == 0x7C3B and len(m.exits) == 5
    assert m.breakpoints == [0x7C3A]
    assert m.remove_breakpoint(0x7C3A) and not m.remove_breakpoint(0x7C3A)
    assert m.run().reason.value == "debug-exit" and m.serial.decode() == "Hello from the guest\n"


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_breakpoint_on_an_intercepted_instruction(vendor):
    m = _machine("cpuid.img", vendor)
    m.add_breakpoint(0x7EBF)  # RDMSR of IA32_APIC_BASE
    assert m.run().reason.value == "breakpoint"
    assert m.registers()["rip"] == 0x7EBF
    assert not any(e.qualification.get("msr") == 0x1B for e in m.exits)
    assert m.step().reason.value == "step" and m.registers()["rip"] == 0x7EC1
    last = m.exits[-1]
    assert last.qualification["msr"] == 0x1B and last.qualification["value"] == 0xFEE00900


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@pytest.mark.parametrize("text,expected", [
    ("cpuid leaf=0x40000000", [("CPUID", 0x40000000)]),
    ("msr index=0x174 write", [("MSR", 0x174)]),
    ("io port=0xf4 dir=out", [("IO", 0xF4)]),
])
def test_break_on_exit_filters(vendor, text, expected):
    m = _machine("cpuid.img", vendor)
    f = parse(text)
    m.exit_breaks.append(f.matches)
    stop = m.run()
    e = m.exits[stop.exit_seq]
    assert f.matches(e)
    kind, value = expected[0]
    if kind == "CPUID":
        assert e.qualification["leaf"] == value
    elif kind == "MSR":
        assert e.qualification["msr"] == value and m.registers()["rip"] == e.rip + 2
    else:
        assert e.qualification["port"] == value
    assert sum(1 for x in m.exits if f.matches(x)) == 1


def test_filters_on_cr_and_ept():
    m = _machine("paging.img")
    m.run()
    cr3 = [e for e in m.exits if parse("cr 3").matches(e)]
    assert [e.qualification["value"] for e in cr3] == [0x10000]
    assert len([e for e in m.exits if parse("cr 0 write").matches(e)]) == 2
    m = _machine("memory.img", "amd")
    m.run()
    ept = [e.qualification["gpa"] for e in m.exits if parse("ept gpa=0x400000-0x800000").matches(e)]
    assert ept == [0x400000, 0x600000]


@pytest.mark.parametrize("text,message", [
    ("", "needs a kind"), ("teleport", "unknown exit kind"), ("io port=zz", "not a number"),
    ("io dir=sideways", "dir is in or out"), ("io whatever", "don't know what"),
])
def test_bad_filters(text, message):
    with pytest.raises(FilterError, match=message):
        parse(text)


def test_serial_input_reaches_the_guest():
    m = _machine()
    m.send_serial(b"x")
    assert m.uart.pending_input == 1
    assert m.vmm.port_in(0x3FD, 1) & 1  # LSR data ready
    assert m.vmm.port_in(0x3F8, 1) == ord("x")
