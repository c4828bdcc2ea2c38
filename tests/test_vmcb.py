"""The VMCB page: offsets against refdata (APM Appendix B), little-endian bytes in
host memory at the architectural offsets, masking, segments, errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.hostmem import HostMemory
from engine.svm import vmcb as vmcb_mod
from engine.svm.vmcb import CONTROL, SAVE, Vmcb

INT_FIELDS = sorted(n for n, (_, size) in {**CONTROL, **SAVE}.items() if size != 15)


@pytest.fixture
def mem():
    return HostMemory(2 << 20)


@pytest.fixture
def vmcb(mem):
    return Vmcb(mem, mem.alloc_frame())


def test_layout_is_refdata(vmcb_offsets_ref):
    assert {**CONTROL, **SAVE} == vmcb_offsets_ref
    assert not set(CONTROL) & set(SAVE)
    assert all(off + size <= 0x400 for off, size in CONTROL.values())
    assert all(0x400 <= off and off + size <= 0x1000 for off, size in SAVE.values())


def test_fields_do_not_overlap():
    spans = sorted({**CONTROL, **SAVE}.values())
    for (a, asize), (b, _) in zip(spans, spans[1:]):
        assert a + asize <= b


def test_little_endian_at_the_architectural_offset(mem, vmcb):
    vmcb.write("RIP", 0x1122_3344_5566_7788)
    assert mem.read(vmcb.hpa + 0x578, 8) == bytes.fromhex("8877665544332211")
    vmcb.write("EXITCODE", 0x7B)  # IOIO
    assert mem.read(vmcb.hpa + 0x070, 8) == bytes.fromhex("7b00000000000000")
    vmcb.write("GUEST_ASID", 1)
    assert mem.read(vmcb.hpa + 0x058, 4) == b"\x01\0\0\0"
    assert vmcb.read("RIP") == 0x1122_3344_5566_7788


def test_reads_see_bytes_written_by_others(mem, vmcb):
    mem.write(vmcb.hpa + 0x558, (0x8000_0011).to_bytes(8, "little"))  # CR0 = PG|ET|PE
    assert vmcb.read("CR0") == 0x8000_0011


def test_writes_are_masked_to_the_field(mem, vmcb):
    vmcb.write("EXITCODE", -1)  # VMEXIT_INVALID
    assert vmcb.read("EXITCODE") == 2**64 - 1
    assert mem.read(vmcb.hpa + 0x070, 8) == b"\xff" * 8
    vmcb.write("CPL", 0x103)
    assert vmcb.read("CPL") == 3
    assert mem.read(vmcb.hpa + 0x4CA, 3) == b"\0\x03\0"
    vmcb.write("EXITINTINFO", 0x1_8000_0B0E)  # the high bits belong to EXITINTINFO_ERR
    assert vmcb.read("EXITINTINFO") == 0x8000_0B0E
    assert vmcb.read("EXITINTINFO_ERR") == 0


def test_segments(mem, vmcb):
    vmcb.write_segment("CS", 0xF000, 0x9B, 0xFFFF, 0xF_0000)
    # 0x410: selector 00 f0, attrib 9b 00, limit ff ff 00 00, base 00 00 0f 00 00 00 00 00
    assert mem.read(vmcb.hpa + 0x410, 16) == bytes.fromhex("00f09b00ffff0000 00000f0000000000")
    assert vmcb.read_segment("CS") == (0xF000, 0x9B, 0xFFFF, 0xF_0000)
    assert vmcb.read("CS_BASE") == 0xF_0000 and vmcb.read("CS_ATTRIB") == 0x9B
    vmcb.write_segment("IDTR", 0, 0, 0x3FF, 0)
    assert vmcb.read("IDTR_LIMIT") == 0x3FF
    vmcb.write_segment("TR", -1, 0, 0, 0)
    assert vmcb.read("TR_SELECTOR") == 0xFFFF
    assert vmcb.read("TR_ATTRIB") == 0


@pytest.mark.parametrize("seg", vmcb_mod.SEGMENTS)
def test_every_segment_matches_its_fields(vmcb, seg):
    vmcb.write_segment(seg, 0x10, 0x93, 0xFFFFF, 0x1234_5678_9ABC)
    assert [vmcb.read(f"{seg}_{part}") for part in ("SELECTOR", "ATTRIB", "LIMIT", "BASE")] == [
        0x10, 0x93, 0xFFFFF, 0x1234_5678_9ABC]


def test_guest_instruction_bytes(mem, vmcb):
    vmcb.write("GUEST_INSN_LEN", 3)
    vmcb.write_bytes("GUEST_INSN_BYTES", b"\x0f\x01\xd9")  # VMMCALL
    assert vmcb.read_bytes("GUEST_INSN_BYTES") == b"\x0f\x01\xd9" + b"\0" * 12
    assert mem.read(vmcb.hpa + 0x0D0, 4) == b"\x03\x0f\x01\xd9"
    assert mem.read(vmcb.hpa + 0x0E0, 1) == b"\0"
    with pytest.raises(TypeError, match="read_bytes"):
        vmcb.read("GUEST_INSN_BYTES")
    with pytest.raises(TypeError, match="write_bytes"):
        vmcb.write("GUEST_INSN_BYTES", 1)
    with pytest.raises(ValueError):
        vmcb.write_bytes("GUEST_INSN_BYTES", b"\x90" * 16)


def test_unknown_names_raise_clear_key_errors(vmcb):
    for call in (lambda: vmcb.read("RIPP"), lambda: vmcb.write("RIPP", 0),
                 lambda: vmcb.read_bytes("RIPP"), lambda: vmcb.write_bytes("RIPP", b"")):
        with pytest.raises(KeyError, match="'RIPP' is not a VMCB field"):
            call()
    with pytest.raises(KeyError, match="not a VMCB segment"):
        vmcb.read_segment("XS")
    with pytest.raises(KeyError, match="not a VMCB segment"):
        vmcb.write_segment("cs", 0, 0, 0, 0)


def test_vmcb_needs_an_aligned_page_in_memory(mem):
    with pytest.raises(ValueError):
        Vmcb(mem, mem.alloc_frame() + 8)
    with pytest.raises(ValueError):
        Vmcb(mem, mem.size)


def test_fields_in_offset_order(vmcb):
    vmcb.write("RAX", 42)
    vmcb.write_bytes("GUEST_INSN_BYTES", b"\xf4")
    rows = vmcb.fields()
    assert [r[0] for r in rows] == sorted({**CONTROL, **SAVE}, key=lambda n: {**CONTROL, **SAVE}[n][0])
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    by_name = {name: (offset, size, value) for name, offset, size, value in rows}
    assert by_name["RAX"] == (0x5F8, 8, 42)
    assert by_name["GUEST_INSN_BYTES"] == (0x0D1, 15, b"\xf4" + b"\0" * 14)
    assert by_name["EXITCODE"] == (0x070, 8, 0)


@given(name=st.sampled_from(INT_FIELDS), value=st.integers(-(2**64), 2**70))
def test_write_touches_only_its_own_bytes(name, value):
    mem = HostMemory(2 << 20)
    vmcb = Vmcb(mem, mem.alloc_frame())
    mem.write(vmcb.hpa, bytes(range(256)) * 16)
    before = mem.read(vmcb.hpa, 4096)
    vmcb.write(name, value)
    offset, size = {**CONTROL, **SAVE}[name]
    after = mem.read(vmcb.hpa, 4096)
    assert after[:offset] == before[:offset] and after[offset + size:] == before[offset + size:]
    assert vmcb.read(name) == value & ((1 << 8 * size) - 1)
    assert after[offset:offset + size] == (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
