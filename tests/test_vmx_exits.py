"""VMX exit reasons and qualifications: the table against refdata, exact encodings
computed by hand from NOTES.md (SDM "Exit Qualification for VM Exits"), round trips."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.vmx import exits
from engine.vmx.exits import InterruptionType as T

# --- reasons -------------------------------------------------------------------


def test_reasons_table_is_refdata(vmx_exit_reasons_ref):
    assert exits.REASONS == vmx_exit_reasons_ref


def test_every_reason_constant_matches_refdata(vmx_exit_reasons_ref):
    by_name = {name: number for number, name in vmx_exit_reasons_ref.items()}
    constants = {n: getattr(exits, n) for n in dir(exits) if n in by_name}
    assert len(constants) >= 30
    for name, value in constants.items():
        assert value == by_name[name], name


@pytest.mark.parametrize("name", [
    "EXCEPTION_NMI", "EXTERNAL_INTERRUPT", "TRIPLE_FAULT", "INIT_SIGNAL", "STARTUP_IPI",
    "INTERRUPT_WINDOW", "CPUID", "HLT", "INVLPG", "RDTSC", "VMCALL", "CR_ACCESS",
    "IO_INSTRUCTION", "MSR_READ", "MSR_WRITE", "PAUSE_INSTRUCTION", "EPT_VIOLATION",
    "EPT_MISCONFIG", "PREEMPTION_TIMER",
])
def test_the_constants_the_engine_uses_exist(name, vmx_exit_reasons_ref):
    assert vmx_exit_reasons_ref[getattr(exits, name)] == name


def test_describe():
    assert exits.describe(30) == "IO_INSTRUCTION"
    assert exits.describe(0) == "EXCEPTION_NMI"
    assert exits.describe(35) == "UNKNOWN_35"  # a hole in Appendix C
    assert exits.describe(65535) == "UNKNOWN_65535"
    # Bit 31: VM-entry failure; 0x80000021 = entry failed on invalid guest state (33).
    assert exits.describe(0x8000_0021) == "INVALID_GUEST_STATE (VM-entry failure)"
    assert exits.describe(0x8000_0022) == "MSR_LOAD_FAIL (VM-entry failure)"
    assert exits.is_entry_failure(0x8000_0021) and not exits.is_entry_failure(33)
    assert exits.basic_reason(0x8000_0021) == 33


# --- I/O -----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, q", [
    # OUT DX, AL to 0x3F8: size 0 (1 byte), bit 3 = 0 (OUT), port << 16.
    (dict(port=0x3F8, size=1, is_in=False), 0x03F8_0000),
    # IN AL, DX from 0x3FD: bit 3 (IN) = 0x8.
    (dict(port=0x3FD, size=1, is_in=True), 0x03FD_0008),
    # OUT 0x80, AL (immediate): bit 6 = 0x40.
    (dict(port=0x80, size=1, is_in=False, imm=True), 0x0080_0040),
    # REP OUTSB to DX=0x3F8: string 0x10 | rep 0x20.
    (dict(port=0x3F8, size=1, is_in=False, string=True, rep=True), 0x03F8_0030),
    # IN EAX, DX from 0xCFC: size-1 = 3 | IN 0x8 = 0xB.
    (dict(port=0xCFC, size=4, is_in=True), 0x0CFC_000B),
    # OUT DX, AX to 0x604: size-1 = 1.
    (dict(port=0x604, size=2, is_in=False), 0x0604_0001),
])
def test_io_qualification_exact(kwargs, q):
    assert exits.io_qualification(**kwargs) == q


def test_decode_io_exact():
    assert exits.decode_io(0x03FD_0008) == {
        "port": 0x3FD, "size": 1, "direction": "in", "string": False, "rep": False, "operand": "dx",
    }
    assert exits.decode_io(0x0CFC_004B) == {
        "port": 0xCFC, "size": 4, "direction": "in", "string": False, "rep": False, "operand": "imm",
    }


@pytest.mark.parametrize("kwargs", [dict(size=3), dict(size=8), dict(port=0x10000), dict(port=-1)])
def test_io_qualification_rejects_bad_values(kwargs):
    args = dict(port=0x3F8, size=1, is_in=False) | kwargs
    with pytest.raises(ValueError):
        exits.io_qualification(**args)


@given(port=st.integers(0, 0xFFFF), size=st.sampled_from([1, 2, 4]), is_in=st.booleans(),
       string=st.booleans(), rep=st.booleans(), imm=st.booleans())
def test_io_round_trip(port, size, is_in, string, rep, imm):
    q = exits.io_qualification(port=port, size=size, is_in=is_in, string=string, rep=rep, imm=imm)
    assert exits.decode_io(q) == {
        "port": port, "size": size, "direction": "in" if is_in else "out",
        "string": string, "rep": rep, "operand": "imm" if imm else "dx",
    }


# --- control registers ---------------------------------------------------------


def test_cr_access_constants():
    assert (exits.MOV_TO_CR, exits.MOV_FROM_CR, exits.CLTS, exits.LMSW) == (0, 1, 2, 3)


@pytest.mark.parametrize("kwargs, q", [
    # MOV CR3, RAX: CR 3, access 0, register 0.
    (dict(cr=3, access=exits.MOV_TO_CR, gpr=0), 0x003),
    # MOV RBX, CR0: access 1 << 4 = 0x10, register 3 << 8 = 0x300.
    (dict(cr=0, access=exits.MOV_FROM_CR, gpr=3), 0x310),
    # MOV CR4, R12: register 12 << 8 = 0xC00.
    (dict(cr=4, access=exits.MOV_TO_CR, gpr=12), 0xC04),
    # MOV RCX, CR8: 0x10 | 0x100 | 8.
    (dict(cr=8, access=exits.MOV_FROM_CR, gpr=1), 0x118),
    # CLTS: access 2 << 4.
    (dict(cr=0, access=exits.CLTS), 0x020),
    # LMSW AX with AX = 1: access 3 << 4 = 0x30, data 1 << 16.
    (dict(cr=0, access=exits.LMSW, lmsw_data=1), 0x0001_0030),
    # LMSW [mem] with 0xF: 0x30 | memory operand 0x40 | 0xF << 16.
    (dict(cr=0, access=exits.LMSW, lmsw_memory=True, lmsw_data=0xF), 0x000F_0070),
])
def test_cr_qualification_exact(kwargs, q):
    assert exits.cr_qualification(**kwargs) == q


def test_decode_cr_exact():
    assert exits.decode_cr(0xC04) == {"cr": 4, "access": "mov-to-cr", "gpr": "r12"}
    assert exits.decode_cr(0x310) == {"cr": 0, "access": "mov-from-cr", "gpr": "rbx"}
    assert exits.decode_cr(0x020) == {"cr": 0, "access": "clts"}
    assert exits.decode_cr(0x000F_0070) == {
        "cr": 0, "access": "lmsw", "lmsw_data": 0xF, "lmsw_operand": "memory",
    }


@pytest.mark.parametrize("kwargs", [
    dict(cr=16, access=0), dict(cr=0, access=4), dict(cr=0, access=0, gpr=16),
    dict(cr=0, access=exits.CLTS, gpr=1), dict(cr=0, access=exits.LMSW, gpr=2),
    dict(cr=0, access=exits.MOV_TO_CR, lmsw_data=1), dict(cr=0, access=exits.CLTS, lmsw_memory=True),
    dict(cr=0, access=exits.LMSW, lmsw_data=0x10000),
])
def test_cr_qualification_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        exits.cr_qualification(**kwargs)


@st.composite
def cr_accesses(draw):
    access = draw(st.sampled_from([exits.MOV_TO_CR, exits.MOV_FROM_CR, exits.CLTS, exits.LMSW]))
    kwargs = {"cr": draw(st.integers(0, 15)), "access": access}
    if access in (exits.MOV_TO_CR, exits.MOV_FROM_CR):
        kwargs["gpr"] = draw(st.integers(0, 15))
    if access == exits.LMSW:
        kwargs["lmsw_memory"] = draw(st.booleans())
        kwargs["lmsw_data"] = draw(st.integers(0, 0xFFFF))
    return kwargs


@given(cr_accesses())
def test_cr_round_trip(kwargs):
    decoded = exits.decode_cr(exits.cr_qualification(**kwargs))
    expected = {"cr": kwargs["cr"], "access": ["mov-to-cr", "mov-from-cr", "clts", "lmsw"][kwargs["access"]]}
    if "gpr" in kwargs:
        expected["gpr"] = exits.GPR_NAMES[kwargs["gpr"]]
    if kwargs["access"] == exits.LMSW:
        expected["lmsw_data"] = kwargs["lmsw_data"]
        expected["lmsw_operand"] = "memory" if kwargs["lmsw_memory"] else "register"
    assert decoded == expected


def test_gpr_names_follow_the_encoding():
    assert exits.GPR_NAMES[0:8] == ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
    assert exits.GPR_NAMES[15] == "r15"


# --- EPT violations ------------------------------------------------------------

_EPT_KEYS = ("read", "write", "fetch", "readable", "writable", "executable")


def _ept(**on):
    return {k: on.get(k, False) for k in _EPT_KEYS}


@pytest.mark.parametrize("kwargs, q", [
    # Read of an unbacked page: read 0x1 | linear valid 0x80 | translated 0x100.
    (dict(_ept(read=True)), 0x181),
    # Write to a read+execute page: write 0x2 | readable 0x8 | executable 0x20 | 0x180.
    (dict(_ept(write=True, readable=True, executable=True)), 0x1AA),
    # Fetch from a read+write page: fetch 0x4 | 0x8 | 0x10 | 0x180.
    (dict(_ept(fetch=True, readable=True, writable=True)), 0x19C),
    # Read of a guest paging-structure entry: linear valid, not translated.
    (dict(_ept(read=True), translated=False), 0x081),
    # No linear address (e.g. a physical access): bit 8 is clear whatever `translated` says.
    (dict(_ept(read=True), linear_valid=False), 0x001),
])
def test_ept_violation_qualification_exact(kwargs, q):
    assert exits.ept_violation_qualification(**kwargs) == q


def test_decode_ept_violation_exact():
    assert exits.decode_ept_violation(0x1AA) == _ept(write=True, readable=True, executable=True) | {
        "linear_valid": True, "translated": True}
    assert exits.decode_ept_violation(0x001) == _ept(read=True) | {"linear_valid": False}


@given(flags=st.tuples(*[st.booleans()] * 6), linear_valid=st.booleans(), translated=st.booleans())
def test_ept_violation_round_trip(flags, linear_valid, translated):
    kwargs = dict(zip(_EPT_KEYS, flags))
    q = exits.ept_violation_qualification(**kwargs, linear_valid=linear_valid, translated=translated)
    expected = kwargs | {"linear_valid": linear_valid}
    if linear_valid:
        expected["translated"] = translated
    assert exits.decode_ept_violation(q) == expected


# --- interruption information --------------------------------------------------


def test_interruption_type_values():
    assert {t.name: t.value for t in T} == {
        "EXTERNAL_INTERRUPT": 0, "NMI": 2, "HARDWARE_EXCEPTION": 3, "SOFTWARE_INTERRUPT": 4,
        "PRIVILEGED_SOFTWARE_EXCEPTION": 5, "SOFTWARE_EXCEPTION": 6, "OTHER_EVENT": 7,
    }


@pytest.mark.parametrize("kwargs, v", [
    # #PF: vector 14 | type 3 << 8 | error code valid 0x800 | valid 1 << 31.
    (dict(vector=14, type=T.HARDWARE_EXCEPTION, error_code_valid=True), 0x8000_0B0E),
    # #UD: no error code.
    (dict(vector=6, type=T.HARDWARE_EXCEPTION), 0x8000_0306),
    # External interrupt 0x20: type 0.
    (dict(vector=0x20, type=T.EXTERNAL_INTERRUPT), 0x8000_0020),
    # NMI: vector 2, type 2.
    (dict(vector=2, type=T.NMI), 0x8000_0202),
    # INT3: software exception (type 6).
    (dict(vector=3, type=T.SOFTWARE_EXCEPTION), 0x8000_0603),
    # INT 0x80: software interrupt (type 4).
    (dict(vector=0x80, type=T.SOFTWARE_INTERRUPT), 0x8000_0480),
    # Not valid: bit 31 clear.
    (dict(vector=0, type=T.EXTERNAL_INTERRUPT, valid=False), 0),
])
def test_interruption_info_exact(kwargs, v):
    assert exits.interruption_info(**kwargs) == v


def test_decode_interruption_info_exact():
    assert exits.decode_interruption_info(0x8000_0B0E) == {
        "vector": 14, "type": "hardware-exception", "error_code_valid": True, "valid": True}
    assert exits.decode_interruption_info(0x8000_0503) == {
        "vector": 3, "type": "privileged-software-exception", "error_code_valid": False, "valid": True}
    assert exits.decode_interruption_info(0x0000_0100)["type"] == "reserved-1"


@pytest.mark.parametrize("kwargs", [dict(vector=256, type=3), dict(vector=-1, type=3), dict(vector=0, type=1)])
def test_interruption_info_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        exits.interruption_info(**kwargs)


@given(vector=st.integers(0, 255), type=st.sampled_from(list(T)),
       error_code_valid=st.booleans(), valid=st.booleans())
def test_interruption_info_round_trip(vector, type, error_code_valid, valid):
    v = exits.interruption_info(vector=vector, type=type, error_code_valid=error_code_valid, valid=valid)
    assert exits.decode_interruption_info(v) == {
        "vector": vector, "type": type.name.lower().replace("_", "-"),
        "error_code_valid": error_code_valid, "valid": valid,
    }
