"""VMX control bits (NOTES.md, SDM "VM-Execution Control Fields" …) and the I/O and
MSR bitmaps, checked byte by byte at their architectural offsets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bits import bit_names
from engine.hostmem import HostMemory
from engine.vmx.controls import (
    EntryControls,
    ExitControls,
    PinBased,
    PrimaryProcBased,
    SecondaryProcBased,
    VmxBitmaps,
)


def _bits(flag_class):
    return {m.name: m.value.bit_length() - 1 for m in flag_class}


def test_pin_based_bits():
    assert _bits(PinBased) == {
        "EXTERNAL_INTERRUPT_EXITING": 0, "NMI_EXITING": 3, "VIRTUAL_NMIS": 5, "PREEMPTION_TIMER": 6,
    }


def test_primary_bits():
    assert _bits(PrimaryProcBased) == {
        "INTERRUPT_WINDOW_EXITING": 2, "USE_TSC_OFFSETTING": 3, "HLT_EXITING": 7,
        "INVLPG_EXITING": 9, "MWAIT_EXITING": 10, "RDPMC_EXITING": 11, "RDTSC_EXITING": 12,
        "CR3_LOAD_EXITING": 15, "CR3_STORE_EXITING": 16, "CR8_LOAD_EXITING": 19,
        "CR8_STORE_EXITING": 20, "USE_TPR_SHADOW": 21, "NMI_WINDOW_EXITING": 22,
        "MOV_DR_EXITING": 23, "UNCONDITIONAL_IO_EXITING": 24, "USE_IO_BITMAPS": 25,
        "MONITOR_TRAP_FLAG": 27, "USE_MSR_BITMAPS": 28, "MONITOR_EXITING": 29,
        "PAUSE_EXITING": 30, "ACTIVATE_SECONDARY_CONTROLS": 31,
    }


def test_secondary_bits():
    assert _bits(SecondaryProcBased) == {
        "VIRTUALIZE_APIC_ACCESSES": 0, "ENABLE_EPT": 1, "DESCRIPTOR_TABLE_EXITING": 2,
        "ENABLE_RDTSCP": 3, "ENABLE_VPID": 5, "WBINVD_EXITING": 6, "UNRESTRICTED_GUEST": 7,
    }


def test_exit_and_entry_bits():
    assert _bits(ExitControls) == {
        "HOST_ADDRESS_SPACE_SIZE": 9, "ACK_INTERRUPT_ON_EXIT": 15, "SAVE_IA32_PAT": 18,
        "LOAD_IA32_PAT": 19, "SAVE_IA32_EFER": 20, "LOAD_IA32_EFER": 21, "SAVE_PREEMPTION_TIMER": 22,
    }
    assert _bits(EntryControls) == {"IA32E_MODE_GUEST": 9, "LOAD_IA32_PAT": 14, "LOAD_IA32_EFER": 15}


def test_a_teaching_vmm_primary_value():
    # HLT 0x80 | INVLPG 0x200 | RDTSC 0x1000 | CR3 load 0x8000 | CR3 store 0x10000
    # | I/O bitmaps 0x2000000 | MSR bitmaps 0x10000000 | secondary 0x80000000.
    value = (PrimaryProcBased.HLT_EXITING | PrimaryProcBased.INVLPG_EXITING
             | PrimaryProcBased.RDTSC_EXITING | PrimaryProcBased.CR3_LOAD_EXITING
             | PrimaryProcBased.CR3_STORE_EXITING | PrimaryProcBased.USE_IO_BITMAPS
             | PrimaryProcBased.USE_MSR_BITMAPS | PrimaryProcBased.ACTIVATE_SECONDARY_CONTROLS)
    assert value == 0x9201_9280
    assert SecondaryProcBased.ENABLE_EPT | SecondaryProcBased.UNRESTRICTED_GUEST == 0x82


def test_bit_names():
    assert bit_names(PrimaryProcBased, 0x9201_9282) == [
        "bit1", "HLT_EXITING", "INVLPG_EXITING", "RDTSC_EXITING", "CR3_LOAD_EXITING",
        "CR3_STORE_EXITING", "USE_IO_BITMAPS", "USE_MSR_BITMAPS", "ACTIVATE_SECONDARY_CONTROLS",
    ]
    assert bit_names(EntryControls, 0x8200) == ["IA32E_MODE_GUEST", "LOAD_IA32_EFER"]
    assert bit_names(PinBased, 0) == []
    assert bit_names(PinBased, 1 << 40) == ["bit40"]


# --- bitmaps -------------------------------------------------------------------


@pytest.fixture
def mem():
    return HostMemory(4 << 20)


@pytest.fixture
def bm(mem):
    return VmxBitmaps(mem)


def test_bitmaps_are_three_frames_of_ones(mem, bm):
    assert len({bm.io_a, bm.io_b, bm.msr}) == 3
    for hpa in (bm.io_a, bm.io_b, bm.msr):
        assert hpa % 4096 == 0
        assert mem.read(hpa, 4096) == b"\xff" * 4096
    assert bm.io_exits(0x3F8, 1) and bm.msr_exits(0x10, write=False) and bm.msr_exits(0x10, write=True)


def test_io_bits_in_bitmap_a_and_b(mem, bm):
    bm.set_io(0x3F8, False)  # A, byte 0x3F8 >> 3 = 0x7F, bit 0
    assert mem.read(bm.io_a + 0x7F, 1) == b"\xfe"
    for port in range(0x3F9, 0x400):
        bm.set_io(port, False)
    assert mem.read(bm.io_a + 0x7F, 1) == b"\x00"
    bm.set_io(0x8000, False)  # B, byte 0, bit 0
    assert mem.read(bm.io_b, 1) == b"\xfe"
    bm.set_io(0xFFFF, False)  # B, byte 0xFFF, bit 7
    assert mem.read(bm.io_b + 0xFFF, 1) == b"\x7f"
    bm.set_io(0x3F8, True)
    assert mem.read(bm.io_a + 0x7F, 1) == b"\x01"
    # Nothing else changed.
    assert mem.read(bm.io_a, 0x7F) == b"\xff" * 0x7F
    assert mem.read(bm.io_b + 1, 0xFFE) == b"\xff" * 0xFFE


def test_io_exits_if_any_covered_port_exits(bm):
    for port in range(0x3F8, 0x400):
        bm.set_io(port, False)
    assert not bm.io_exits(0x3F8, 1)
    assert not bm.io_exits(0x3FC, 4)
    assert bm.io_exits(0x3F7, 2)  # 0x3F7 still exits
    assert bm.io_exits(0x3FE, 4)  # 0x400, 0x401 still exit
    # An access crossing from bitmap A into B.
    bm.set_io(0x7FFF, False)
    bm.set_io(0x8000, False)
    assert not bm.io_exits(0x7FFF, 2)


def test_io_wrapping_past_0xffff_always_exits(bm):
    for port in (0xFFFD, 0xFFFE, 0xFFFF, 0, 1, 2):
        bm.set_io(port, False)
    assert not bm.io_exits(0xFFFF, 1)
    assert bm.io_exits(0xFFFC, 1)  # untouched
    assert bm.io_exits(0xFFFF, 2)
    assert bm.io_exits(0xFFFE, 4)


def test_io_rejects_bad_values(bm):
    with pytest.raises(ValueError):
        bm.set_io(0x10000, False)
    with pytest.raises(ValueError):
        bm.io_exits(0x3F8, 3)


def test_msr_bits_at_their_quarters(mem, bm):
    bm.set_msr(0x10, read=False)  # IA32_TSC: read-low, byte 0x10 >> 3 = 2, bit 0
    assert mem.read(bm.msr + 0x002, 1) == b"\xfe"
    assert mem.read(bm.msr + 0x802, 1) == b"\xff"  # write-low untouched
    assert not bm.msr_exits(0x10, write=False) and bm.msr_exits(0x10, write=True)

    bm.set_msr(0xC000_0080, write=False)  # EFER: write-high 0xC00 + 0x80 >> 3 = 0xC10, bit 0
    assert mem.read(bm.msr + 0xC10, 1) == b"\xfe"
    assert mem.read(bm.msr + 0x410, 1) == b"\xff"

    bm.set_msr(0xC000_0101, read=False, write=False)  # GS_BASE: byte 0x20, bit 1
    assert mem.read(bm.msr + 0x420, 1) == b"\xfd"
    assert mem.read(bm.msr + 0xC20, 1) == b"\xfd"

    bm.set_msr(0x1FFF, write=False)  # last low MSR: write-low 0x800 + 0x3FF, bit 7
    assert mem.read(bm.msr + 0xBFF, 1) == b"\x7f"

    bm.set_msr(0x10, read=True)
    assert mem.read(bm.msr + 0x002, 1) == b"\xff"
    bm.set_msr(0x10)  # None, None: no change
    assert mem.read(bm.msr + 0x002, 1) == b"\xff"


def test_msrs_outside_the_ranges_always_exit(bm):
    for index in (0x2000, 0x4000_0000, 0xBFFF_FFFF, 0xC000_2000, 0xC001_0000):
        assert bm.msr_exits(index, write=False) and bm.msr_exits(index, write=True)
        with pytest.raises(ValueError):
            bm.set_msr(index, read=False)


@given(index=st.one_of(st.integers(0, 0x1FFF), st.integers(0xC000_0000, 0xC000_1FFF)),
       read=st.booleans(), write=st.booleans())
def test_msr_set_then_query(index, read, write):
    bm = VmxBitmaps(HostMemory(2 << 20))
    bm.set_msr(index, read=read, write=write)
    assert bm.msr_exits(index, write=False) is read
    assert bm.msr_exits(index, write=True) is write
