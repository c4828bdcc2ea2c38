"""The VMCB: a 4 KiB page of real bytes in host memory, read and written by offset.

AMD APM Vol. 2, Appendix B "Layout of VMCB": the control area at 0x000-0x3FF
(table B-1) and the state-save area from 0x400 (table B-2). Every field is
little-endian. Segment registers in the state-save area are 16 bytes each:
selector (u16), attributes (u16), limit (u32), base (u64).

Fields are read and written with `struct` directly on the host-memory buffer:
this runs on every exit.
"""

from __future__ import annotations

import struct

from ..addresses import HPA, PAGE_SIZE
from ..hostmem import HostMemory

CONTROL: dict[str, tuple[int, int]] = {
    "INTERCEPT_CR": (0x000, 4),
    "INTERCEPT_DR": (0x004, 4),
    "INTERCEPT_EXCEPTIONS": (0x008, 4),
    "INTERCEPT_MISC1": (0x00C, 4),
    "INTERCEPT_MISC2": (0x010, 4),
    "INTERCEPT_MISC3": (0x014, 4),
    "PAUSE_FILTER_THRESHOLD": (0x03C, 2),
    "PAUSE_FILTER_COUNT": (0x03E, 2),
    "IOPM_BASE_PA": (0x040, 8),
    "MSRPM_BASE_PA": (0x048, 8),
    "TSC_OFFSET": (0x050, 8),
    "GUEST_ASID": (0x058, 4),
    "TLB_CONTROL": (0x05C, 1),
    "V_INTR_CONTROL": (0x060, 4),
    "V_INTR_VECTOR": (0x064, 4),
    "INTERRUPT_SHADOW": (0x068, 4),
    "EXITCODE": (0x070, 8),
    "EXITINFO1": (0x078, 8),
    "EXITINFO2": (0x080, 8),
    "EXITINTINFO": (0x088, 4),
    "EXITINTINFO_ERR": (0x08C, 4),
    "NP_ENABLE": (0x090, 8),
    "EVENTINJ": (0x0A8, 4),
    "EVENTINJ_ERR": (0x0AC, 4),
    "N_CR3": (0x0B0, 8),
    "VIRT_EXT": (0x0B8, 8),
    "VMCB_CLEAN": (0x0C0, 4),
    "NEXT_RIP": (0x0C8, 8),
    "GUEST_INSN_LEN": (0x0D0, 1),
    "GUEST_INSN_BYTES": (0x0D1, 15),
}
"""The control area, name -> (offset, size in bytes)."""

SEGMENTS = ("ES", "CS", "SS", "DS", "FS", "GS", "GDTR", "LDTR", "IDTR", "TR")
"""The segment-like registers of the state-save area, in layout order (0x400 + 16 n)."""

SAVE: dict[str, tuple[int, int]] = {
    **{
        f"{seg}_{part}": (0x400 + 16 * n + offset, size)
        for n, seg in enumerate(SEGMENTS)
        for part, offset, size in (("SELECTOR", 0, 2), ("ATTRIB", 2, 2), ("LIMIT", 4, 4), ("BASE", 8, 8))
    },
    "CPL": (0x4CB, 1),
    "EFER": (0x4D0, 8),
    "CR4": (0x548, 8),
    "CR3": (0x550, 8),
    "CR0": (0x558, 8),
    "DR7": (0x560, 8),
    "DR6": (0x568, 8),
    "RFLAGS": (0x570, 8),
    "RIP": (0x578, 8),
    "RSP": (0x5D8, 8),
    "RAX": (0x5F8, 8),
    "STAR": (0x600, 8),
    "LSTAR": (0x608, 8),
    "CSTAR": (0x610, 8),
    "SFMASK": (0x618, 8),
    "KERNEL_GS_BASE": (0x620, 8),
    "SYSENTER_CS": (0x628, 8),
    "SYSENTER_ESP": (0x630, 8),
    "SYSENTER_EIP": (0x638, 8),
    "CR2": (0x640, 8),
    "G_PAT": (0x668, 8),
    "DBGCTL": (0x670, 8),
    "BR_FROM": (0x678, 8),
    "BR_TO": (0x680, 8),
    "LASTEXCPFROM": (0x688, 8),
    "LASTEXCPTO": (0x690, 8),
}
"""The state-save area, name -> (offset from the start of the VMCB, size in bytes)."""

_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
# name -> (offset, size, Struct, mask), in offset order; the Struct is None for
# fields that are not integers (GUEST_INSN_BYTES).
_LAYOUT: dict[str, tuple[int, int, struct.Struct | None, int]] = {
    name: (offset, size, struct.Struct(_FORMATS[size]) if size in _FORMATS else None, (1 << 8 * size) - 1)
    for name, (offset, size) in sorted({**CONTROL, **SAVE}.items(), key=lambda item: item[1][0])
}
_SEGMENT = struct.Struct("<HHIQ")
_SEGMENT_OFFSETS = {seg: 0x400 + 16 * n for n, seg in enumerate(SEGMENTS)}


def _unknown(name: str) -> KeyError:
    return KeyError(f"{name!r} is not a VMCB field (see engine.svm.vmcb.CONTROL and SAVE)")


class Vmcb:
    """One VMCB: the 4 KiB page at `hpa` in host memory."""

    def __init__(self, mem: HostMemory, hpa: HPA) -> None:
        if hpa % PAGE_SIZE or not 0 <= hpa <= mem.size - PAGE_SIZE:
            raise ValueError(f"a VMCB needs a 4 KiB-aligned page inside host memory, not {hpa:#x}")
        self.mem = mem
        self.hpa = hpa
        self._view = mem.view

    def read(self, name: str) -> int:
        """The value of an integer field (GUEST_INSN_BYTES: use `read_bytes`)."""
        try:
            offset, size, st, _ = _LAYOUT[name]
        except KeyError:
            raise _unknown(name) from None
        if st is None:
            raise TypeError(f"{name} is {size} bytes, not an integer: use read_bytes")
        return st.unpack_from(self._view, self.hpa + offset)[0]

    def write(self, name: str, value: int) -> None:
        """Store an integer field, masked to the field's size (so -1 fills it with ones)."""
        try:
            offset, size, st, mask = _LAYOUT[name]
        except KeyError:
            raise _unknown(name) from None
        if st is None:
            raise TypeError(f"{name} is {size} bytes, not an integer: use write_bytes")
        st.pack_into(self._view, self.hpa + offset, value & mask)

    def read_bytes(self, name: str) -> bytes:
        """The raw bytes of any field."""
        try:
            offset, size, _, _ = _LAYOUT[name]
        except KeyError:
            raise _unknown(name) from None
        start = self.hpa + offset
        return bytes(self._view[start : start + size])

    def write_bytes(self, name: str, data: bytes) -> None:
        """Store raw bytes in a field, zero-filling what `data` does not cover (for
        GUEST_INSN_BYTES: the fetched bytes, with GUEST_INSN_LEN saying how many)."""
        try:
            offset, size, _, _ = _LAYOUT[name]
        except KeyError:
            raise _unknown(name) from None
        if len(data) > size:
            raise ValueError(f"{len(data)} bytes do not fit in {name} ({size} bytes)")
        start = self.hpa + offset
        self._view[start : start + size] = bytes(data).ljust(size, b"\0")

    def read_segment(self, seg: str) -> tuple[int, int, int, int]:
        """(selector, attrib, limit, base) of ES, CS, SS, DS, FS, GS, GDTR, LDTR, IDTR or TR."""
        try:
            offset = _SEGMENT_OFFSETS[seg]
        except KeyError:
            raise KeyError(f"{seg!r} is not a VMCB segment (one of {', '.join(SEGMENTS)})") from None
        return _SEGMENT.unpack_from(self._view, self.hpa + offset)

    def write_segment(self, seg: str, selector: int, attrib: int, limit: int, base: int) -> None:
        """Store a whole segment register, each part masked to its size."""
        try:
            offset = _SEGMENT_OFFSETS[seg]
        except KeyError:
            raise KeyError(f"{seg!r} is not a VMCB segment (one of {', '.join(SEGMENTS)})") from None
        _SEGMENT.pack_into(
            self._view,
            self.hpa + offset,
            selector & 0xFFFF,
            attrib & 0xFFFF,
            limit & 0xFFFF_FFFF,
            base & 0xFFFF_FFFF_FFFF_FFFF,
        )

    def fields(self) -> list[tuple[str, int, int, int | bytes]]:
        """Every field as (name, offset, size, value), in offset order; the value is
        bytes for GUEST_INSN_BYTES and an int for every other field."""
        rows: list[tuple[str, int, int, int | bytes]] = []
        for name, (offset, size, st, _) in _LAYOUT.items():
            value = self.read_bytes(name) if st is None else st.unpack_from(self._view, self.hpa + offset)[0]
            rows.append((name, offset, size, value))
        return rows
