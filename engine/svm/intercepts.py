"""SVM intercept vectors and the I/O and MSR permission maps.

AMD APM Vol. 2, Appendix B "Layout of VMCB" (table B-1: the intercept vectors at
VMCB 0x000-0x013) and chapter 15 "Secure Virtual Machine": "I/O Interception"
(15.10: the IOPM) and "MSR Intercepts" (15.11: the MSRPM).

Bit k of INTERCEPT_MISC1 is the intercept whose exit code is 0x60 + k, bit k of
INTERCEPT_MISC2 the one whose exit code is 0x80 + k. The permission maps live in
host memory as real bytes in their architectural layout, so the VMCB's
IOPM_BASE_PA and MSRPM_BASE_PA can point at them.
"""

from __future__ import annotations

from enum import IntFlag

from ..addresses import PAGE_SIZE, HPA
from ..bits import MemoryBitmap
from ..hostmem import HostMemory


def cr_read_bit(n: int) -> int:
    """The INTERCEPT_CR bit for reads of CRn."""
    if not 0 <= n <= 15:
        raise ValueError(f"control register number {n} is outside 0-15")
    return 1 << n


def cr_write_bit(n: int) -> int:
    """The INTERCEPT_CR bit for writes of CRn."""
    if not 0 <= n <= 15:
        raise ValueError(f"control register number {n} is outside 0-15")
    return 1 << (16 + n)


class Misc1(IntFlag):
    """INTERCEPT_MISC1 (VMCB 0x00C)."""

    INTR = 1 << 0
    NMI = 1 << 1
    SMI = 1 << 2
    INIT = 1 << 3
    VINTR = 1 << 4
    CR0_SEL_WRITE = 1 << 5
    IDTR_READ = 1 << 6
    GDTR_READ = 1 << 7
    LDTR_READ = 1 << 8
    TR_READ = 1 << 9
    IDTR_WRITE = 1 << 10
    GDTR_WRITE = 1 << 11
    LDTR_WRITE = 1 << 12
    TR_WRITE = 1 << 13
    RDTSC = 1 << 14
    RDPMC = 1 << 15
    PUSHF = 1 << 16
    POPF = 1 << 17
    CPUID = 1 << 18
    RSM = 1 << 19
    IRET = 1 << 20
    INTN = 1 << 21
    INVD = 1 << 22
    PAUSE = 1 << 23
    HLT = 1 << 24
    INVLPG = 1 << 25
    INVLPGA = 1 << 26
    IOIO_PROT = 1 << 27
    MSR_PROT = 1 << 28
    TASK_SWITCH = 1 << 29
    FERR_FREEZE = 1 << 30
    SHUTDOWN = 1 << 31


class Misc2(IntFlag):
    """INTERCEPT_MISC2 (VMCB 0x010)."""

    VMRUN = 1 << 0
    VMMCALL = 1 << 1
    VMLOAD = 1 << 2
    VMSAVE = 1 << 3
    STGI = 1 << 4
    CLGI = 1 << 5
    SKINIT = 1 << 6
    RDTSCP = 1 << 7
    ICEBP = 1 << 8
    WBINVD = 1 << 9
    MONITOR = 1 << 10
    MWAIT = 1 << 11
    MWAIT_COND = 1 << 12
    XSETBV = 1 << 13
    RDPRU = 1 << 14


IOPM_SIZE = 3 * PAGE_SIZE
MSRPM_SIZE = 2 * PAGE_SIZE

# MSRPM: 2 KiB per MSR range, two bits per MSR (read, then write).
_MSRPM_RANGES = (
    (range(0x0000_0000, 0x0000_2000), 0x0000),
    (range(0xC000_0000, 0xC000_2000), 0x0800),
    (range(0xC001_0000, 0xC001_2000), 0x1000),
)


class SvmBitmaps(MemoryBitmap):
    """The I/O permission map (12 KiB) and the MSR permission map (8 KiB), each
    contiguous and 4 KiB-aligned, all ones at first (everything is intercepted).

    IOPM: bit p of the map is port p; bits past 0xFFFF (in the third page) are the
    ones a multi-byte access that runs past port 0xFFFF checks. MSRPM: for MSR m of
    a range, bit 2 * (m - range start) of the range's 2 KiB block is the read
    intercept and the next bit the write intercept.
    """

    def __init__(self, mem: HostMemory) -> None:
        super().__init__(mem.view)
        self.iopm: HPA = mem.alloc_run(IOPM_SIZE, align=PAGE_SIZE)
        self.msrpm: HPA = mem.alloc_run(MSRPM_SIZE, align=PAGE_SIZE)
        mem.write(self.iopm, b"\xff" * IOPM_SIZE)
        mem.write(self.msrpm, b"\xff" * MSRPM_SIZE)

    # I/O ---------------------------------------------------------------------

    def set_io(self, port: int, intercept: bool) -> None:
        """Make accesses to `port` intercepted (True) or run in the guest (False)."""
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
        self._store((self.iopm + (port >> 3), 1 << (port & 7)), intercept)

    def io_intercepted(self, port: int, size: int) -> bool:
        """Whether a `size`-byte access at `port` is intercepted: if the IOPM bit of any
        port it covers is set (past 0xFFFF, the bits in the IOPM's third page)."""
        if size not in (1, 2, 4):
            raise ValueError(f"I/O access size must be 1, 2 or 4 bytes, not {size}")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
        view, base = self._view, self.iopm
        return any(view[base + (p >> 3)] >> (p & 7) & 1 for p in range(port, port + size))

    # MSRs --------------------------------------------------------------------

    def _msr_bit(self, index: int, write: bool) -> tuple[int, int] | None:
        for msrs, block in _MSRPM_RANGES:
            if index in msrs:
                n = 2 * (index - msrs.start) + write
                return self.msrpm + block + (n >> 3), 1 << (n & 7)
        return None

    def set_msr(self, index: int, *, read: bool | None = None, write: bool | None = None) -> None:
        """Set whether RDMSR (`read`) and WRMSR (`write`) of MSR `index` are intercepted;
        None leaves that direction as it is. MSRs outside the MSRPM's ranges are
        always intercepted and cannot be set."""
        self._set_msr(index, read, write, "the MSRPM (0-0x1FFF, 0xC0000000-0xC0001FFF, "
                      "0xC0010000-0xC0011FFF): its accesses are always intercepted")

    def msr_intercepted(self, index: int, write: bool) -> bool:
        """Whether RDMSR (write=False) or WRMSR (write=True) of MSR `index` is intercepted."""
        return self._test(self._msr_bit(index, write))
