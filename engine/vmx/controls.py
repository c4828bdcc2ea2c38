"""VMX control fields and the I/O and MSR bitmaps.

Intel SDM Vol. 3, chapter "Virtual Machine Control Structures": sections
"VM-Execution Control Fields" (pin-based, primary and secondary processor-based
controls; "I/O-Bitmap Addresses"; "MSR-Bitmap Address"), "VM-Exit Control Fields"
and "VM-Entry Control Fields". Which I/O access exits follows the chapter
"VMX Non-Root Operation", section "I/O-Instruction Exiting"; which RDMSR/WRMSR
exits, section "RDMSR"/"WRMSR" there.

The bitmaps live in host memory as real bytes in their architectural layout, so
the VMCS's IO_BITMAP_A / IO_BITMAP_B / MSR_BITMAP fields can point at them.
"""

from __future__ import annotations

from enum import IntFlag

from ..addresses import HPA, PAGE_SIZE
from ..bits import MemoryBitmap
from ..hostmem import HostMemory


class PinBased(IntFlag):
    """PIN_BASED_VM_EXEC_CONTROL."""

    EXTERNAL_INTERRUPT_EXITING = 1 << 0
    NMI_EXITING = 1 << 3
    VIRTUAL_NMIS = 1 << 5
    PREEMPTION_TIMER = 1 << 6


class PrimaryProcBased(IntFlag):
    """CPU_BASED_VM_EXEC_CONTROL (primary processor-based controls)."""

    INTERRUPT_WINDOW_EXITING = 1 << 2
    USE_TSC_OFFSETTING = 1 << 3
    HLT_EXITING = 1 << 7
    INVLPG_EXITING = 1 << 9
    MWAIT_EXITING = 1 << 10
    RDPMC_EXITING = 1 << 11
    RDTSC_EXITING = 1 << 12
    CR3_LOAD_EXITING = 1 << 15
    CR3_STORE_EXITING = 1 << 16
    CR8_LOAD_EXITING = 1 << 19
    CR8_STORE_EXITING = 1 << 20
    USE_TPR_SHADOW = 1 << 21
    NMI_WINDOW_EXITING = 1 << 22
    MOV_DR_EXITING = 1 << 23
    UNCONDITIONAL_IO_EXITING = 1 << 24
    USE_IO_BITMAPS = 1 << 25
    MONITOR_TRAP_FLAG = 1 << 27
    USE_MSR_BITMAPS = 1 << 28
    MONITOR_EXITING = 1 << 29
    PAUSE_EXITING = 1 << 30
    ACTIVATE_SECONDARY_CONTROLS = 1 << 31


class SecondaryProcBased(IntFlag):
    """SECONDARY_VM_EXEC_CONTROL (secondary processor-based controls)."""

    VIRTUALIZE_APIC_ACCESSES = 1 << 0
    ENABLE_EPT = 1 << 1
    DESCRIPTOR_TABLE_EXITING = 1 << 2
    ENABLE_RDTSCP = 1 << 3
    ENABLE_VPID = 1 << 5
    WBINVD_EXITING = 1 << 6
    UNRESTRICTED_GUEST = 1 << 7


class ExitControls(IntFlag):
    """VM_EXIT_CONTROLS."""

    HOST_ADDRESS_SPACE_SIZE = 1 << 9
    ACK_INTERRUPT_ON_EXIT = 1 << 15
    SAVE_IA32_PAT = 1 << 18
    LOAD_IA32_PAT = 1 << 19
    SAVE_IA32_EFER = 1 << 20
    LOAD_IA32_EFER = 1 << 21
    SAVE_PREEMPTION_TIMER = 1 << 22


class EntryControls(IntFlag):
    """VM_ENTRY_CONTROLS."""

    IA32E_MODE_GUEST = 1 << 9
    LOAD_IA32_PAT = 1 << 14
    LOAD_IA32_EFER = 1 << 15


_MSR_LOW = range(0x0000_0000, 0x0000_2000)
_MSR_HIGH = range(0xC000_0000, 0xC000_2000)
# MSR bitmap quarters, 1 KiB each: (read, write) byte offsets per MSR range.
_MSR_READ_LOW, _MSR_READ_HIGH, _MSR_WRITE_LOW, _MSR_WRITE_HIGH = 0x000, 0x400, 0x800, 0xC00


class VmxBitmaps(MemoryBitmap):
    """I/O bitmaps A and B and the MSR bitmap, one 4 KiB frame each, all ones at first
    (every port and every MSR access exits).

    Bitmap A covers ports 0x0000-0x7FFF, B 0x8000-0xFFFF, bit n of byte n // 8 per
    port. The MSR bitmap holds four 1 KiB bitmaps: reads of 0x0-0x1FFF at 0x000,
    reads of 0xC0000000-0xC0001FFF at 0x400, writes of the same two ranges at 0x800
    and 0xC00. A set bit means "exit".
    """

    def __init__(self, mem: HostMemory) -> None:
        super().__init__(mem.view)
        self.io_a: HPA = mem.alloc_frame()
        self.io_b: HPA = mem.alloc_frame()
        self.msr: HPA = mem.alloc_frame()
        for hpa in (self.io_a, self.io_b, self.msr):
            mem.write(hpa, b"\xff" * PAGE_SIZE)

    # I/O ---------------------------------------------------------------------

    def _io_bit(self, port: int) -> tuple[int, int]:
        base = self.io_a if port < 0x8000 else self.io_b
        return base + ((port & 0x7FFF) >> 3), 1 << (port & 7)

    def set_io(self, port: int, exits: bool) -> None:
        """Make accesses to `port` exit (True) or run in the guest (False)."""
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
        self._store(self._io_bit(port), exits)

    def io_exits(self, port: int, size: int) -> bool:
        """Whether a `size`-byte access at `port` exits: if the bit of any port it
        covers is set, or if it wraps past port 0xFFFF."""
        if size not in (1, 2, 4):
            raise ValueError(f"I/O access size must be 1, 2 or 4 bytes, not {size}")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"I/O port {port:#x} is outside 0-0xFFFF")
        if port + size - 1 > 0xFFFF:
            return True
        for p in range(port, port + size):
            addr, bit = self._io_bit(p)
            if self._view[addr] & bit:
                return True
        return False

    # MSRs --------------------------------------------------------------------

    def _msr_bit(self, index: int, write: bool) -> tuple[int, int] | None:
        if index in _MSR_LOW:
            offset = _MSR_WRITE_LOW if write else _MSR_READ_LOW
        elif index in _MSR_HIGH:
            offset = _MSR_WRITE_HIGH if write else _MSR_READ_HIGH
        else:
            return None
        n = index & 0x1FFF
        return self.msr + offset + (n >> 3), 1 << (n & 7)

    def set_msr(self, index: int, *, read: bool | None = None, write: bool | None = None) -> None:
        """Set whether RDMSR (`read`) and WRMSR (`write`) of MSR `index` exit; None
        leaves that direction as it is. MSRs outside the bitmap's ranges always exit
        and cannot be set."""
        self._set_msr(index, read, write,
                      "the MSR bitmap (0-0x1FFF, 0xC0000000-0xC0001FFF): its accesses always exit")

    def msr_exits(self, index: int, write: bool) -> bool:
        """Whether RDMSR (write=False) or WRMSR (write=True) of MSR `index` exits."""
        return self._test(self._msr_bit(index, write))
