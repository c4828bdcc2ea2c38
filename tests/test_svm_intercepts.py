"""SVM intercept bits (NOTES.md, APM Appendix B) checked against the exit codes they
produce, and the IOPM / MSRPM checked byte by byte at their architectural offsets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bits import bit_names
from engine.hostmem import HostMemory
from engine.svm import intercepts
from engine.svm.intercepts import Misc1, Misc2, SvmBitmaps

# Where NOTES.md names the intercept bit differently from the exit code it causes.
_BIT_TO_CODE_NAME = {"INTN": "SWINT", "IOIO_PROT": "IOIO", "MSR_PROT": "MSR"}


def test_misc1_bit_k_is_exit_code_0x60_plus_k(svm_exit_codes_ref):
    assert len(Misc1) == 32
    for member in Misc1:
        k = member.value.bit_length() - 1
        assert svm_exit_codes_ref[0x60 + k] == _BIT_TO_CODE_NAME.get(member.name, member.name)


def test_misc2_bit_k_is_exit_code_0x80_plus_k(svm_exit_codes_ref):
    assert len(Misc2) == 15
    for member in Misc2:
        k = member.value.bit_length() - 1
        assert svm_exit_codes_ref[0x80 + k] == member.name


def test_misc_bits_named_in_notes():
    assert Misc1.INTR == 1 << 0 and Misc1.CR0_SEL_WRITE == 1 << 5
    assert Misc1.IDTR_READ == 1 << 6 and Misc1.TR_WRITE == 1 << 13
    assert Misc1.CPUID == 1 << 18 and Misc1.HLT == 1 << 24 and Misc1.INVLPG == 1 << 25
    assert Misc1.IOIO_PROT == 1 << 27 and Misc1.MSR_PROT == 1 << 28 and Misc1.SHUTDOWN == 1 << 31
    assert Misc2.VMRUN == 1 << 0 and Misc2.VMMCALL == 1 << 1 and Misc2.RDPRU == 1 << 14


def test_cr_bits(svm_exit_codes_ref):
    assert intercepts.cr_read_bit(0) == 1
    assert intercepts.cr_read_bit(3) == 1 << 3
    assert intercepts.cr_write_bit(0) == 1 << 16
    assert intercepts.cr_write_bit(4) == 1 << 20
    # INTERCEPT_CR bit k causes exit code k (READ_CRn = n, WRITE_CRn = 0x10 + n).
    for n in (0, 3, 4, 8):
        assert svm_exit_codes_ref[intercepts.cr_read_bit(n).bit_length() - 1] == f"READ_CR{n}"
        assert svm_exit_codes_ref[intercepts.cr_write_bit(n).bit_length() - 1] == f"WRITE_CR{n}"
    with pytest.raises(ValueError):
        intercepts.cr_read_bit(16)
    with pytest.raises(ValueError):
        intercepts.cr_write_bit(-1)


def test_bit_names():
    value = Misc1.INTR | Misc1.CPUID | Misc1.HLT | Misc1.IOIO_PROT | Misc1.MSR_PROT | Misc1.SHUTDOWN
    assert bit_names(Misc1, value) == ["INTR", "CPUID", "HLT", "IOIO_PROT", "MSR_PROT", "SHUTDOWN"]
    assert bit_names(Misc2, Misc2.VMRUN | 1 << 20) == ["VMRUN", "bit20"]


# --- permission maps -----------------------------------------------------------


@pytest.fixture
def mem():
    return HostMemory(4 << 20)


@pytest.fixture
def bm(mem):
    return SvmBitmaps(mem)


def test_maps_are_aligned_contiguous_ones(mem, bm):
    assert bm.iopm % 4096 == 0 and bm.msrpm % 4096 == 0
    assert mem.read(bm.iopm, 12 * 1024) == b"\xff" * (12 * 1024)
    assert mem.read(bm.msrpm, 8 * 1024) == b"\xff" * (8 * 1024)
    # The two runs do not overlap.
    assert bm.iopm + 12 * 1024 <= bm.msrpm or bm.msrpm + 8 * 1024 <= bm.iopm


def test_iopm_bits(mem, bm):
    bm.set_io(0x3F8, False)  # byte 0x3F8 >> 3 = 0x7F, bit 0
    assert mem.read(bm.iopm + 0x7F, 1) == b"\xfe"
    bm.set_io(0x8001, False)  # byte 0x1000 (second page), bit 1
    assert mem.read(bm.iopm + 0x1000, 1) == b"\xfd"
    bm.set_io(0xFFFF, False)  # byte 0x1FFF, bit 7
    assert mem.read(bm.iopm + 0x1FFF, 1) == b"\x7f"
    bm.set_io(0x3F8, True)
    assert mem.read(bm.iopm + 0x7F, 1) == b"\xff"
    with pytest.raises(ValueError):
        bm.set_io(0x10000, False)


def test_io_intercepted_if_any_covered_port_is(bm):
    for port in range(0x3F8, 0x400):
        bm.set_io(port, False)
    assert not bm.io_intercepted(0x3F8, 1)
    assert not bm.io_intercepted(0x3FC, 4)
    assert bm.io_intercepted(0x3F7, 2)
    assert bm.io_intercepted(0x3FE, 4)
    with pytest.raises(ValueError):
        bm.io_intercepted(0x3F8, 8)


def test_access_past_0xffff_checks_the_third_page(mem, bm):
    bm.set_io(0xFFFF, False)
    assert not bm.io_intercepted(0xFFFF, 1)
    assert bm.io_intercepted(0xFFFF, 2)  # bit 0x10000: byte 0x2000 of the IOPM, still set
    mem.write(bm.iopm + 0x2000, b"\x00")  # a VMM that clears the third page's bits
    assert not bm.io_intercepted(0xFFFF, 2)


def test_msrpm_bits(mem, bm):
    bm.set_msr(0x10, read=False)  # IA32_TSC: bit 2 * 0x10 = 0x20 -> byte 4, bit 0
    assert mem.read(bm.msrpm + 4, 1) == b"\xfe"
    assert not bm.msr_intercepted(0x10, write=False) and bm.msr_intercepted(0x10, write=True)

    bm.set_msr(0xC000_0080, write=False)  # EFER: bit 0x101 of the 0x800 block -> byte 0x820, bit 1
    assert mem.read(bm.msrpm + 0x820, 1) == b"\xfd"

    bm.set_msr(0xC001_0015, read=False, write=False)  # bits 0x2A, 0x2B of 0x1000 -> byte 0x1005, bits 2, 3
    assert mem.read(bm.msrpm + 0x1005, 1) == b"\xf3"

    bm.set_msr(0x1FFF, write=False)  # bit 0x3FFF -> byte 0x7FF, bit 7
    assert mem.read(bm.msrpm + 0x7FF, 1) == b"\x7f"

    bm.set_msr(0xC001_1FFF, read=False)  # bit 0x3FFE of 0x1000 -> byte 0x17FF, bit 6
    assert mem.read(bm.msrpm + 0x17FF, 1) == b"\xbf"

    bm.set_msr(0x10, read=True)
    assert mem.read(bm.msrpm + 4, 1) == b"\xff"
    # The unused last 2 KiB stay all ones.
    assert mem.read(bm.msrpm + 0x1800, 0x800) == b"\xff" * 0x800


def test_msrs_outside_the_ranges_are_always_intercepted(bm):
    for index in (0x2000, 0x4000_0000, 0xC000_2000, 0xC001_2000, 0xFFFF_FFFF):
        assert bm.msr_intercepted(index, write=False) and bm.msr_intercepted(index, write=True)
        with pytest.raises(ValueError):
            bm.set_msr(index, write=False)


@given(index=st.one_of(st.integers(0, 0x1FFF), st.integers(0xC000_0000, 0xC000_1FFF),
                       st.integers(0xC001_0000, 0xC001_1FFF)),
       read=st.booleans(), write=st.booleans())
def test_msr_set_then_query(index, read, write):
    bm = SvmBitmaps(HostMemory(2 << 20))
    bm.set_msr(index, read=read, write=write)
    assert bm.msr_intercepted(index, write=False) is read
    assert bm.msr_intercepted(index, write=True) is write
