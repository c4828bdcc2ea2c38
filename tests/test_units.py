"""Small units: the sensitive-instruction decoder and scanner, the buses, the UART,
the fast register reader (which uses the Unicorn binding's internals)."""

import pytest

from engine.devices.bus import Bus
from engine.devices.uart16550 import Uart16550
from engine.errors import ConfigError
from engine.hostmem import HostMemory
from engine.intercept import Kind, decode, scan
from engine.vcpu import SNAPSHOT_REGS, Vcpu


@pytest.mark.parametrize("code,bits,kind,length,extra", [
    ("ee", 16, Kind.OUT, 1, {"operand_size": 1, "port": None}),
    ("66ef", 16, Kind.OUT, 2, {"operand_size": 4}),
    ("ef", 32, Kind.OUT, 1, {"operand_size": 4}),
    ("e4 80", 16, Kind.IN, 2, {"port": 0x80, "operand_size": 1}),
    ("f3 6e", 16, Kind.OUTS, 2, {"rep": True, "address_size": 16}),
    ("67 f3 6d", 16, Kind.INS, 3, {"rep": True, "address_size": 32, "operand_size": 2}),
    ("26 f3 6e", 32, Kind.OUTS, 3, {"segment": 0}),
    ("f4", 64, Kind.HLT, 1, {}),
    ("0f a2", 16, Kind.CPUID, 2, {}),
    ("0f 31", 16, Kind.RDTSC, 2, {}),
    ("0f 32", 32, Kind.RDMSR, 2, {}),
    ("0f 30", 64, Kind.WRMSR, 2, {}),
    ("0f 22 d8", 32, Kind.MOV_TO_CR, 3, {"cr": 3, "gpr": 0}),
    ("0f 20 e3", 32, Kind.MOV_FROM_CR, 3, {"cr": 4, "gpr": 3}),
    ("41 0f 22 c1", 64, Kind.MOV_TO_CR, 4, {"cr": 0, "gpr": 9}),
    ("44 0f 20 c0", 64, Kind.MOV_FROM_CR, 4, {"cr": 8, "gpr": 0}),
    ("0f 01 c1", 64, Kind.VMCALL, 3, {}),
    ("0f 01 d9", 32, Kind.VMMCALL, 3, {}),
    ("0f 01 38", 32, Kind.INVLPG, 3, {}),
    ("0f 01 7c 24 08", 64, Kind.INVLPG, 5, {}),
    ("0f 01 3e 00 10", 16, Kind.INVLPG, 5, {}),
    ("0f 06", 32, Kind.CLTS, 2, {}),
    ("0f 01 f0", 32, Kind.LMSW, 3, {"gpr": 0}),
])
def test_decode(code, bits, kind, length, extra):
    insn = decode(bytes.fromhex(code.replace(" ", "")), bits)
    assert insn is not None and (insn.kind, insn.length) == (kind, length)
    for key, value in extra.items():
        assert getattr(insn, key) == value, key


@pytest.mark.parametrize("code", ["90", "0f 0b", "0f 01 f8", "", "0f", "e4"])
def test_decode_rejects_other_instructions(code):
    assert decode(bytes.fromhex(code.replace(" ", "")), 32) is None


def test_scan_finds_candidates_with_their_prefixes():
    page = bytes.fromhex("90 f4 90 66 0f 22 d8 90 48 0f 20 d8 90 0f 01 c1 90 0f 31")
    starts = scan(page)
    for expected in (1, 3, 4, 8, 9, 13, 17):
        assert expected in starts
    assert 0 not in starts and 2 not in starts
    assert scan(bytes(4096)) == []


class _Reg:
    name = "reg"

    def __init__(self):
        self.writes = []

    def read(self, offset, size):
        return offset

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))


def test_bus_routes_by_offset_and_refuses_overlaps():
    bus = Bus("port")
    dev = _Reg()
    bus.register(0x3F8, 8, dev)
    assert bus.read(0x3FD, 1) == (5, dev)
    assert bus.read(0x400, 1) == (0xFF, None)
    assert bus.read(0x400, 4) == (0xFFFF_FFFF, None)
    bus.write(0x3F9, 1, 7)
    assert dev.writes == [(1, 1, 7)]
    with pytest.raises(ConfigError, match="overlaps"):
        bus.register(0x3FF, 2, _Reg())
    with pytest.raises(ConfigError, match="overlaps"):
        bus.register(0x3F0, 9, _Reg())
    bus.register(0x400, 1, _Reg())


def test_uart_transmits_receives_and_divisor_latch():
    out = []
    uart = Uart16550(out.append)
    assert uart.read(5, 1) & 0x61 == 0x60  # THRE, TEMT, no data
    uart.write(0, 1, ord("A"))
    assert out == [b"A"]
    uart.feed(b"hi")
    assert uart.read(5, 1) & 1
    assert (uart.read(0, 1), uart.read(0, 1), uart.read(5, 1) & 1) == (ord("h"), ord("i"), 0)
    uart.write(3, 1, 0x83)  # DLAB
    uart.write(0, 1, 0x0C)
    uart.write(1, 1, 0x00)
    assert out == [b"A"] and uart.divisor == 12
    uart.write(3, 1, 0x03)
    uart.write(0, 1, ord("B"))
    assert out == [b"A", b"B"]


def test_fast_register_reader_agrees_with_the_wrapper():
    """The fast reader calls the binding's own library through its internals
    (unicorn.unicorn_py3.unicorn.uclib, Uc._uch): this fails if they change."""
    v = Vcpu(0, HostMemory(2 << 20))
    for i, name in enumerate(SNAPSHOT_REGS):
        if name in ("cs", "ds", "es", "ss", "fs", "gs", "cr0", "cr2", "cr3", "cr4", "rip", "rflags"):
            continue
        v.set_reg(name, 0x1111_0000_0000 + i)
    v.set_reg("rip", 0x1234)
    snap = v.snapshot()
    for i, name in enumerate(SNAPSHOT_REGS):
        assert snap[i] == v.reg(name), name


def test_fast_register_writer_agrees_with_the_wrapper():
    v = Vcpu(0, HostMemory(2 << 20))
    v.write_abcd(1, 0x2222_0000_0000, 3, (1 << 64) - 1)
    assert [v.reg(n) for n in ("rax", "rbx", "rcx", "rdx")] == [1, 0x2222_0000_0000, 3, (1 << 64) - 1]


def test_two_faults_in_a_row_are_not_a_double_fault_once_delivered():
    """Pins the offset of QEMU's old_exception in Unicorn's context (engine/vcpu.py)."""
    from unicorn import UC_HOOK_INTR, UC_PROT_ALL
    from unicorn import x86_const as X

    mem = HostMemory(2 << 20)
    v = Vcpu(0, mem)
    v.uc.mem_map_ptr(0, 2 << 20, UC_PROT_ALL, mem.pointer(0))
    mem.write(0x1000, bytes.fromhex("31c9f7f1" "31c9f7f1" "90909090"))  # xor ecx,ecx; div ecx; twice
    seen = []
    v.uc.hook_add(UC_HOOK_INTR, lambda uc, n, _: (seen.append(n), uc.emu_stop()))
    v.uc.emu_start(0x1000, 0x2000)
    v.exception_delivered()
    v.uc.reg_write(X.UC_X86_REG_RIP, 0x1004)
    v.uc.emu_start(0x1004, 0x2000)
    assert seen == [0, 0]  # without exception_delivered() the second is 8 (#DF)
