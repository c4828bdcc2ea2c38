"""SVM exit codes against refdata (APM Appendix C) and EXITINFO1 / EVENTINJ
encodings computed by hand from NOTES.md, with round trips."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.svm import exits
from engine.svm.exits import EventType as E

# --- codes ---------------------------------------------------------------------


def test_codes_table_is_refdata(svm_exit_codes_ref):
    assert exits.CODES == svm_exit_codes_ref


def test_every_code_constant_matches_refdata(svm_exit_codes_ref):
    by_name = {name: code for code, name in svm_exit_codes_ref.items()}
    constants = {n: getattr(exits, n) for n in dir(exits) if n in by_name}
    for name in ("READ_CR0", "READ_CR3", "READ_CR4", "WRITE_CR0", "WRITE_CR3", "WRITE_CR4",
                 "INTR", "VINTR", "RDTSC", "CPUID", "HLT", "INVLPG", "IOIO", "MSR",
                 "SHUTDOWN", "VMMCALL", "NPF", "INIT", "PAUSE"):
        assert name in constants
    for name, value in constants.items():
        assert value == by_name[name], name


def test_exception_codes_are_base_plus_vector(svm_exit_codes_ref):
    assert exits.EXCP_BASE == 0x40
    for vector in range(32):
        assert svm_exit_codes_ref[exits.EXCP_BASE + vector] == f"EXCP_{vector}"


def test_describe():
    assert exits.describe(0x07B) == "IOIO"
    assert exits.describe(0x400) == "NPF"
    assert exits.describe(0x04E) == "EXCP_14"
    assert exits.describe(exits.VMEXIT_INVALID) == "VMEXIT_INVALID"
    assert exits.VMEXIT_INVALID == 2**64 - 1
    assert exits.describe(-1) == "VMEXIT_INVALID"
    assert exits.describe(0x001) == "READ_CR1"  # architectural, not in the table
    assert exits.describe(0x01F) == "WRITE_CR15"
    assert exits.describe(0x0A0) == "UNKNOWN_0xa0"


# --- IOIO ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, info1", [
    # IN AL, DX from 0x3FD, 16-bit address, segment DS (3) by default:
    # 0x03FD0000 | IN 0x1 | SZ8 0x10 | A16 0x80 | 3 << 10 = 0xC00.
    (dict(port=0x3FD, size=1, is_in=True), 0x03FD_0C91),
    # OUT DX, AL to 0x3F8, 32-bit address: SZ8 0x10 | A32 0x100 | 0xC00.
    (dict(port=0x3F8, size=1, is_in=False, addr_size=32), 0x03F8_0D10),
    # REP OUTSB (DS:ESI) to 0x3F8: STR 0x4 | REP 0x8 | 0x10 | 0x100 | 0xC00.
    (dict(port=0x3F8, size=1, is_in=False, string=True, rep=True, addr_size=32), 0x03F8_0D1C),
    # REP INSW (ES:RDI) from 0x1F0: IN 1 | STR 4 | REP 8 | SZ16 0x20 | A64 0x200 | ES 0.
    (dict(port=0x1F0, size=2, is_in=True, string=True, rep=True, addr_size=64, segment=0), 0x01F0_022D),
    # IN EAX, DX from 0xCFC, 64-bit address: 1 | SZ32 0x40 | 0x200 | 0xC00.
    (dict(port=0xCFC, size=4, is_in=True, addr_size=64), 0x0CFC_0E41),
])
def test_ioio_exitinfo1_exact(kwargs, info1):
    assert exits.ioio_exitinfo1(**kwargs) == info1


def test_decode_ioio_exact():
    assert exits.decode_ioio(0x03FD_0C91) == {
        "port": 0x3FD, "size": 1, "direction": "in", "string": False, "rep": False,
        "addr_size": 16, "segment": "ds",
    }
    assert exits.decode_ioio(0x01F0_022D) == {
        "port": 0x1F0, "size": 2, "direction": "in", "string": True, "rep": True,
        "addr_size": 64, "segment": "es",
    }


@pytest.mark.parametrize("kwargs", [dict(size=3), dict(addr_size=8), dict(port=0x10000), dict(segment=6)])
def test_ioio_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        exits.ioio_exitinfo1(**(dict(port=0x3F8, size=1, is_in=False) | kwargs))


@given(port=st.integers(0, 0xFFFF), size=st.sampled_from([1, 2, 4]), is_in=st.booleans(),
       string=st.booleans(), rep=st.booleans(), addr_size=st.sampled_from([16, 32, 64]),
       segment=st.integers(0, 5))
def test_ioio_round_trip(port, size, is_in, string, rep, addr_size, segment):
    info1 = exits.ioio_exitinfo1(port=port, size=size, is_in=is_in, string=string, rep=rep,
                                 addr_size=addr_size, segment=segment)
    assert exits.decode_ioio(info1) == {
        "port": port, "size": size, "direction": "in" if is_in else "out", "string": string,
        "rep": rep, "addr_size": addr_size, "segment": ["es", "cs", "ss", "ds", "fs", "gs"][segment],
    }


# --- NPF -----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, info1", [
    # Read of an unbacked GPA: not present, user 0x4, final 1 << 32.
    (dict(present=False, write=False), 0x1_0000_0004),
    # Write to a present read-only page: P 1 | W 2 | U 4 | final.
    (dict(present=True, write=True), 0x1_0000_0007),
    # Fetch from a no-execute page: P 1 | U 4 | ID 0x10 | final.
    (dict(present=True, write=False, fetch=True), 0x1_0000_0015),
    # During the guest's page walk: U 4 | 1 << 33.
    (dict(present=False, write=False, final=False, walk=True), 0x2_0000_0004),
    # A reserved bit set in a nested entry: P 1 | U 4 | RSV 8 | final.
    (dict(present=True, write=False, reserved=True), 0x1_0000_000D),
])
def test_npf_exitinfo1_exact(kwargs, info1):
    assert exits.npf_exitinfo1(**kwargs) == info1


def test_decode_npf_exact():
    assert exits.decode_npf(0x1_0000_0007) == {
        "present": True, "write": True, "user": True, "reserved": False, "fetch": False,
        "final": True, "walk": False,
    }


def test_npf_is_final_or_walk_not_both():
    with pytest.raises(ValueError):
        exits.npf_exitinfo1(present=False, write=False, final=True, walk=True)


@given(present=st.booleans(), write=st.booleans(), user=st.booleans(), reserved=st.booleans(),
       fetch=st.booleans(), where=st.sampled_from([(True, False), (False, True), (False, False)]))
def test_npf_round_trip(present, write, user, reserved, fetch, where):
    kwargs = dict(present=present, write=write, user=user, reserved=reserved, fetch=fetch,
                  final=where[0], walk=where[1])
    assert exits.decode_npf(exits.npf_exitinfo1(**kwargs)) == kwargs


# --- CR ------------------------------------------------------------------------


def test_cr_exitinfo1_exact():
    assert exits.cr_exitinfo1(gpr=0) == 0x8000_0000_0000_0000  # MOV CRn, RAX
    assert exits.cr_exitinfo1(gpr=6) == 0x8000_0000_0000_0006  # RSI
    assert exits.cr_exitinfo1(gpr=15) == 0x8000_0000_0000_000F  # R15
    assert exits.cr_exitinfo1(gpr=0, mov_cr=False) == 0  # LMSW, CLTS
    assert exits.decode_cr(0x8000_0000_0000_0006) == {"mov_cr": True, "gpr": "rsi"}
    assert exits.decode_cr(0) == {"mov_cr": False}
    with pytest.raises(ValueError):
        exits.cr_exitinfo1(gpr=16)
    with pytest.raises(ValueError):
        exits.cr_exitinfo1(gpr=1, mov_cr=False)


@given(gpr=st.integers(0, 15))
def test_cr_round_trip(gpr):
    assert exits.decode_cr(exits.cr_exitinfo1(gpr=gpr)) == {"mov_cr": True, "gpr": exits.GPR_NAMES[gpr]}


# --- EVENTINJ ------------------------------------------------------------------


def test_event_types():
    assert {t.name: t.value for t in E} == {
        "EXTERNAL_INTERRUPT": 0, "NMI": 2, "EXCEPTION": 3, "SOFTWARE_INTERRUPT": 4}


@pytest.mark.parametrize("kwargs, value", [
    # #GP(0): vector 13 | type 3 << 8 | EV 0x800 | V 1 << 31, error code 0 in 63:32.
    (dict(vector=13, type=E.EXCEPTION, error_code=0), 0x0000_0000_8000_0B0D),
    # #PF with error code 2 (write, not present).
    (dict(vector=14, type=E.EXCEPTION, error_code=2), 0x0000_0002_8000_0B0E),
    # External interrupt 0x20.
    (dict(vector=0x20, type=E.EXTERNAL_INTERRUPT), 0x8000_0020),
    # NMI: vector 2, type 2.
    (dict(vector=2, type=E.NMI), 0x8000_0202),
    # INT 0x80.
    (dict(vector=0x80, type=E.SOFTWARE_INTERRUPT), 0x8000_0480),
])
def test_eventinj_exact(kwargs, value):
    assert exits.eventinj(**kwargs) == value


def test_decode_eventinj_exact():
    assert exits.decode_eventinj(0x0000_0002_8000_0B0E) == {
        "vector": 14, "type": "exception", "valid": True, "error_code_valid": True, "error_code": 2}
    assert exits.decode_eventinj(0x8000_0020) == {
        "vector": 0x20, "type": "external-interrupt", "valid": True, "error_code_valid": False}
    assert exits.decode_eventinj(0)["valid"] is False
    assert exits.decode_eventinj(0x500)["type"] == "reserved-5"


@pytest.mark.parametrize("kwargs", [dict(vector=256, type=3), dict(vector=0, type=5),
                                    dict(vector=13, type=3, error_code=1 << 32)])
def test_eventinj_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        exits.eventinj(**kwargs)


@given(vector=st.integers(0, 255), type=st.sampled_from(list(E)),
       error_code=st.none() | st.integers(0, 0xFFFF_FFFF))
def test_eventinj_round_trip(vector, type, error_code):
    expected = {"vector": vector, "type": type.name.lower().replace("_", "-"), "valid": True,
                "error_code_valid": error_code is not None}
    if error_code is not None:
        expected["error_code"] = error_code
    assert exits.decode_eventinj(exits.eventinj(vector=vector, type=type, error_code=error_code)) == expected
