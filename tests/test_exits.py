"""Exits from hand-made guests and the bundled ones: controls, VMCS / VMCB contents,
second-level tables after demand paging, string I/O, HLT, unknown ports and MMIO."""

import pytest

from conftest import DEBUG_EXIT_0, GUESTS, run_guest, write_image
from engine.config import MachineConfig
from engine.loader import load
from engine.machine import Machine

VENDORS = ["intel", "amd"]

CLI_HLT = bytes.fromhex("fa f4")  # cli; hlt
REP_OUTSB = (bytes.fromhex("fc" "be207c" "b90500" "baf803" "f36e") + DEBUG_EXIT_0 + CLI_HLT).ljust(0x20, b"\x90") \
    + b"abcde"


def _machine(tmp_path, code, vendor, **config):
    m = Machine(MachineConfig(vendor=vendor, **config))
    load(m, write_image(tmp_path, code))
    return m


@pytest.mark.parametrize("vendor", VENDORS)
def test_vmcs_vmcb_hold_the_cpuid_exit(vendor):
    m = Machine(MachineConfig(vendor=vendor))
    load(m, GUESTS / "cpuid.img")
    stop = m.run_to_exit()
    assert stop.reason.value == "exit" and stop.exit_seq == 0
    e = m.exits[0]
    assert e.name == "CPUID" and e.qualification == {"leaf": 0, "subleaf": 0}
    cpuid_rip = 0x7E09
    assert e.rip == cpuid_rip and e.length == 2
    assert m.registers()["rip"] == cpuid_rip + 2  # handled: the VMM skipped the instruction
    s = m.structure()
    if vendor == "intel":
        assert s.read("VM_EXIT_REASON") == 10
        assert s.read("GUEST_RIP") == cpuid_rip
        assert s.read("VM_EXIT_INSTRUCTION_LEN") == 2
        assert s.read("EXIT_QUALIFICATION") == 0
        assert s.read("GUEST_CS_SELECTOR") == 0 and s.read("GUEST_CS_BASE") == 0
        assert s.read("GUEST_CR0") & 1 == 0  # real mode: unrestricted guest
        assert s.read("CPU_BASED_VM_EXEC_CONTROL") & (1 << 7)  # HLT exiting
        assert s.read("SECONDARY_VM_EXEC_CONTROL") & 0x82 == 0x82  # EPT, unrestricted guest
        assert s.read("EPT_POINTER") == m.slat.eptp()
    else:
        assert s.read("EXITCODE") == 0x72
        assert s.read("RIP") == cpuid_rip
        assert s.read("NEXT_RIP") == cpuid_rip + 2
        assert s.read("EXITINFO1") == 0 and s.read("EXITINFO2") == 0
        assert s.read("N_CR3") == m.slat.ncr3() and s.read("NP_ENABLE") == 1
        assert s.read("INTERCEPT_MISC1") & (1 << 18)  # CPUID intercept
        # The VMCB is real bytes in host memory at its architectural offsets.
        assert int.from_bytes(m.host.read(s.hpa + 0x70, 8), "little") == 0x72
        assert int.from_bytes(m.host.read(s.hpa + 0x578, 8), "little") == cpuid_rip


@pytest.mark.parametrize("vendor", VENDORS)
def test_vmcs_vmcb_guest_state_in_long_mode(vendor):
    m = Machine(MachineConfig(vendor=vendor))
    load(m, GUESTS / "paging.img")
    stop = m.run()
    assert stop.reason.value == "debug-exit"
    s = m.structure()  # as the last exit (the OUT to the debug-exit port, in long mode) left it
    if vendor == "intel":
        assert s.read("GUEST_IA32_EFER") & 0x500 == 0x500  # LME, LMA
        assert s.read("GUEST_CR4") & 0x20 and s.read("GUEST_CR0") >> 31
        assert s.read("GUEST_CR3") == 0x10000
        assert s.read("GUEST_CS_AR_BYTES") & (1 << 13)  # L: 64-bit code segment
    else:
        assert s.read("EFER") & 0x1500 == 0x1500  # LME, LMA, SVME
        assert s.read("CR3") == 0x10000
        assert s.read_segment("CS")[1] & (1 << 9)  # VMCB attrib: L in bit 9


@pytest.mark.parametrize("vendor", VENDORS)
def test_demand_paging_writes_second_level_entries(vendor):
    m, stop = run_guest(GUESTS / "memory.img", vendor)
    assert stop.status == 0
    for gpa in range(0x200000, 0x1200000, 0x200000):
        walk = m.slat.translate(gpa + 0x1234)
        assert walk.hpa == m.mem.hpa(gpa + 0x1234)
        assert walk.page_size == 0x200000
        leaf = walk.steps[-1]
        assert leaf.level == "PDE"
        # Read the entry back from host memory itself and decode it.
        value = m.host.read_u64(leaf.entry_hpa)
        assert value == leaf.value
        d = m.slat.decode(value, "PDE")
        assert d["large"] and d["address"] == m.mem.hpa(gpa)
        if vendor == "intel":
            assert (d["read"], d["write"], d["execute"], d["memtype"]) == (True, True, True, 6)
        else:
            assert (d["present"], d["writable"], d["user"], d["nx"]) == (True, True, True, False)
    assert m.slat.translate(0x1200000).hpa is None  # never touched: never backed


@pytest.mark.parametrize("vendor", VENDORS)
def test_4k_backing_makes_one_exit_per_page(vendor):
    m, stop = run_guest(GUESTS / "memory.img", vendor, page_size=0x1000)
    assert stop.status == 0
    slat = [e for e in m.exits if e.name in ("EPT_VIOLATION", "NPF")]
    ram = [e.qualification["gpa"] for e in slat if e.qualification["gpa"] < 0xFEE00000]
    assert ram[-256:] == list(range(0x200000, 0x1200000, 0x10000))
    walk = m.slat.translate(0x210000)
    assert walk.page_size == 0x1000 and walk.steps[-1].level == "PTE"


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("guest,control,names", [
    ("hello.img", "io", {"IO_INSTRUCTION", "IOIO"}),
    ("cpuid.img", "rdtsc", {"RDTSC"}),
    ("cpuid.img", "msr", {"MSR_READ", "MSR_WRITE", "MSR"}),
    ("paging.img", "cr0", {"CR_ACCESS", "WRITE_CR0"}),
])
def test_turning_a_control_off_removes_its_exits(vendor, guest, control, names):
    on, stop_on = run_guest(GUESTS / guest, vendor)
    off, stop_off = run_guest(GUESTS / guest, vendor, exits=[f"{control}=off"])
    assert off.serial == on.serial and stop_off.status == stop_on.status == 0
    on_names = [e.name for e in on.exits]
    off_names = [e.name for e in off.exits]
    removed = [n for n in on_names if n in names]
    assert removed
    if control == "cr0":
        assert off_names.count("CR_ACCESS" if vendor == "intel" else "WRITE_CR0") == on_names.count(
            "CR_ACCESS" if vendor == "intel" else "WRITE_CR0") - 2
    else:
        assert not [n for n in off_names if n in names]
    assert off.controls.as_json()[control] is False


def test_amd_cpuid_intercept_off():
    m, stop = run_guest(GUESTS / "cpuid.img", "amd", exits=["cpuid=off"])
    assert stop.status == 0 and "AuthenticAMD" in m.serial.decode()
    assert "CPUID" not in {e.name for e in m.exits}


@pytest.mark.parametrize("vendor", VENDORS)
def test_rep_outsb_is_one_exit(tmp_path, vendor):
    m = _machine(tmp_path, REP_OUTSB, vendor)
    stop = m.run()
    assert m.serial.decode() == "abcde" and stop.status == 0
    first = m.exits[0]
    q = first.qualification
    assert (q["port"], q["direction"], q["string"], q["rep"], q["count"]) == (0x3F8, "out", True, True, 5)
    assert len(m.exits) == 2  # the string, then the debug exit
    if vendor == "intel":
        assert first.info1 == 0x03F8_0030  # port, OUT, string (bit 4), REP (bit 5), DX operand
    else:
        assert first.info1 == 0x03F8_0C9C  # string, REP, SZ8, A16, segment DS
        assert first.info2 == first.rip + 2


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("hlt_exits", [True, False])
def test_hlt_with_interrupts_off_ends_the_run(tmp_path, vendor, hlt_exits):
    m = _machine(tmp_path, CLI_HLT, vendor, exits=[] if hlt_exits else ["hlt=off"])
    stop = m.run()
    assert (stop.reason.value, stop.status) == ("halt", 0)
    assert m.registers()["rip"] == 0x7C02
    if hlt_exits:
        e = m.exits[0]
        assert (e.name, e.reason, e.rip, e.length) == (("HLT", 12, 0x7C01, 1) if vendor == "intel"
                                                       else ("HLT", 0x78, 0x7C01, 1))
    else:
        assert len(m.exits) == 0


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_port_reads_all_ones(tmp_path, vendor):
    m = _machine(tmp_path, bytes.fromhex("e480" "e6f4") + CLI_HLT, vendor)  # in al,0x80; out 0xf4,al
    stop = m.run()
    assert (stop.reason.value, stop.status) == ("debug-exit", 0xFF)
    q = m.exits[0].qualification
    assert (q["port"], q["direction"], q["value"]) == (0x80, "in", 0xFF)


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_mmio_reads_all_ones_and_drops_writes(tmp_path, vendor):
    # mov ax,0xA000; mov ds,ax; mov byte [0],0x12; mov al,[0]; out 0xf4,al
    code = bytes.fromhex("b800a0" "8ed8" "c606000012" "a00000" "e6f4") + CLI_HLT
    m = _machine(tmp_path, code, vendor)
    stop = m.run()
    assert stop.status == 0xFF
    slat = [e for e in m.exits if e.name in ("EPT_VIOLATION", "NPF")]
    assert [e.qualification["gpa"] for e in slat] == [0xA0000, 0xA0000]
    assert [e.qualification["write"] for e in slat] == [True, False]


# IVT[6] -> 0000:7C20, where a handler ends the run with status 0x66; then UD2.
UD_WITH_HANDLER = (bytes.fromhex("c7061800207c" "c7061a000000" "0f0b") + CLI_HLT).ljust(0x20, b"\x90") \
    + bytes.fromhex("b066e6f4") + CLI_HLT


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("ud_exits", [True, False])
def test_ud_reaches_the_guest_handler_and_exits_when_selected(tmp_path, vendor, ud_exits):
    m = _machine(tmp_path, UD_WITH_HANDLER, vendor, exits=["ud=on"] if ud_exits else [])
    stop = m.run()
    assert (stop.reason.value, stop.status) == ("debug-exit", 0x66)  # the guest's own #UD handler ran
    # SP was 0 at entry: IP, CS, FLAGS pushed at 0000:FFFA
    assert m.read_gpa(0xFFFA, 6) == bytes.fromhex("0c7c00000200")
    assert m.registers()["rsp"] & 0xFFFF == 0xFFFA
    excs = [e for e in m.exits if e.name in ("EXCEPTION_NMI", "EXCP_6")]
    if not ud_exits:
        assert excs == []
        return
    (e,) = excs
    assert e.rip == 0x7C0C
    if vendor == "intel":
        assert e.reason == 0 and e.info2 == 0x8000_0306  # valid, hardware exception, vector 6
        assert e.qualification["vector"] == 6 and e.qualification["type"] == "hardware-exception"
        assert m.structure().read("VM_ENTRY_INTR_INFO_FIELD") == 0x8000_0306  # reflected by injection
    else:
        assert e.reason == 0x46 and e.name == "EXCP_6"
        assert m.structure().read("EVENTINJ") == 0x8000_0306


def test_wrong_vendor_hypercall_is_ud(tmp_path):
    code = UD_WITH_HANDLER.replace(bytes.fromhex("0f0b"), bytes.fromhex("0f01d9"), 1)  # VMMCALL on Intel
    m = _machine(tmp_path, code, "intel", exits=["ud=on"])
    assert m.run().status == 0x66
    assert m.exits[0].qualification["vector"] == 6


@pytest.mark.parametrize("vendor", VENDORS)
def test_int_n_and_divide_error_go_to_the_ivt(tmp_path, vendor):
    # IVT[0x40] -> 7C30 (iret), IVT[0] -> 7C38 (skip the 2-byte DIV: add word [sp], 2; iret);
    # int 0x40; xor cx,cx; div cx; out 0xf4 <- 0x21
    code = bytes.fromhex("c70600013 07c c70602010000".replace(" ", "")) + bytes.fromhex(
        "c7060000387c" "c70602000000" "cd40" "31c9" "f7f1" "b021e6f4") + CLI_HLT
    code = code.ljust(0x30, b"\x90") + bytes.fromhex("cf").ljust(8, b"\x90") + bytes.fromhex(
        "89e5" "8346 0002".replace(" ", "") + "cf")
    m = _machine(tmp_path, code, vendor, exits=["de=on"])
    stop = m.run()
    assert (stop.reason.value, stop.status) == ("debug-exit", 0x21)
    (e,) = [e for e in m.exits if e.name in ("EXCEPTION_NMI", "EXCP_0")]
    assert e.qualification["vector"] == 0 and e.rip == 0x7C1C  # the DIV


@pytest.mark.parametrize("vendor", VENDORS)
def test_undeliverable_exception_is_a_triple_fault(tmp_path, vendor):
    # lidt [0x7C20] with limit 0, then UD2: #UD cannot be delivered, nor #DF: shutdown.
    code = (bytes.fromhex("0f011e207c" "0f0b") + CLI_HLT).ljust(0x20, b"\x90") + bytes(6)
    m = _machine(tmp_path, code, vendor)
    stop = m.run()
    assert stop.reason.value == "shutdown"
    e = m.exits[stop.exit_seq]
    assert (e.reason, e.name) == ((2, "TRIPLE_FAULT") if vendor == "intel" else (0x7F, "SHUTDOWN"))
    assert "triple fault" in stop.message
    # #UD finds no IVT entry: #GP; nor does #GP (contributory after contributory): #DF; then nothing.
    assert m.faults == ["vector 0x6 at 0x7c05: IVT entry 0x6 is past the IDTR limit 0x0; delivering vector 0xd",
                        "vector 0xd at 0x7c05: IVT entry 0xd is past the IDTR limit 0x0; delivering vector 0x8"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_max_exits_stops_exactly(vendor):
    m = Machine(MachineConfig(vendor=vendor))
    load(m, GUESTS / "hello.img")
    stop = m.run(max_exits=5)
    assert stop.reason.value == "max-exits" and len(m.exits) == 5
    assert m.serial.decode() == "He"  # IN, OUT 'H', IN, OUT 'e', IN
    stop = m.run()
    assert stop.reason.value == "debug-exit" and m.serial.decode() == "Hello from the guest\n"


def test_step_and_pause():
    m = Machine(MachineConfig())
    load(m, GUESTS / "hello.img")
    ips = []
    for _ in range(4):
        assert m.step().reason.value == "step"
        ips.append(m.registers()["rip"])
    assert ips == sorted(ips) and ips[0] > 0x7C00
    m.pause()
    assert m.run().reason.value == "pause"
    assert m.run().reason.value == "debug-exit"


@pytest.mark.parametrize("vendor", VENDORS)
def test_rdmsr_of_an_msr_the_machine_lacks_is_gp_in_the_guest(tmp_path, vendor):
    # IVT[13] -> 0000:7C20 (status 0x0D); mov ecx,0x12345; rdmsr
    code = (bytes.fromhex("c70634 00207c c706360000 00".replace(" ", "")) + bytes.fromhex(
        "66b945230100" "0f32") + CLI_HLT).ljust(0x20, b"\x90") + bytes.fromhex("b00de6f4") + CLI_HLT
    m = _machine(tmp_path, code, vendor, exits=["gp=on"])
    stop = m.run()
    assert stop.status == 0x0D
    msr, gp = [e for e in m.exits if e.qualification.get("port") != 0xF4]
    assert msr.qualification["msr"] == 0x12345 and gp.qualification["vector"] == 13
    assert gp.rip == msr.rip == 0x7C12
    # Real mode pushes no error code: Intel says so in the interruption information, AMD gives 0.
    assert gp.qualification.get("error_code") == (None if vendor == "intel" else 0)
