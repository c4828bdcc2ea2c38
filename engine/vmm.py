"""The VMM's decisions: what it answers for each kind of exit, independent of the vendor.

Device I/O goes to the port bus; CPUID comes from `engine.cpuid`; MSRs are the
machine's MSR file (an MSR the machine does not have is a #GP for the guest);
hypercalls follow vmmtui's ABI:

| RAX | function | arguments | result in RAX |
| --- | --- | --- | --- |
| 0 | ping | - | 0x766D6D74 ("vmmt") |
| 1 | print | RBX = guest-physical address, RCX = length | bytes written |
| 2 | read virtual time | - | the virtual TSC (EDX:EAX in 16/32-bit code) |
| 3 | exit | RBX = status | (the run ends) |
| other | - | - | all ones |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cpuid import cpuid
from .devices.bus import Bus

HC_PING, HC_PRINT, HC_TIME, HC_EXIT = 0, 1, 2, 3
PING_REPLY = 0x766D_6D74
HC_PRINT_MAX = 4096

MSR_TSC = 0x10
MSR_APIC_BASE = 0x1B
MSR_MTRRCAP = 0xFE
MSR_MISC_ENABLE = 0x1A0
MSR_PAT = 0x277
MSR_EFER = 0xC000_0080
APIC_BASE_DEFAULT = 0xFEE0_0000 | (1 << 11)  # xAPIC global enable
APIC_BSP = 1 << 8
EFER_WRITABLE = (1 << 0) | (1 << 8) | (1 << 11)  # SCE, LME, NXE
#: MSRs the CPU model itself holds and acts on (Unicorn keeps their values).
NATIVE_MSRS = frozenset({0x174, 0x175, 0x176, 0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084,
                         0xC000_0100, 0xC000_0101, 0xC000_0102})


@dataclass(frozen=True, slots=True)
class HypercallResult:
    """What a hypercall returns; `exit_status` set means the guest asked to end the run."""

    value: int
    exit_status: int | None = None


class MsrFile:
    """One vCPU's MSRs as the VMM presents them."""

    def __init__(self, index: int, native_read: Callable[[int], int], native_write: Callable[[int, int], None],
                 clock: Callable[[], int]) -> None:
        self._native_read = native_read
        self._native_write = native_write
        self._clock = clock
        self.tsc_offset = 0
        self.values: dict[int, int] = {
            MSR_APIC_BASE: APIC_BASE_DEFAULT | (APIC_BSP if index == 0 else 0),
            MSR_MTRRCAP: 0,
            MSR_MISC_ENABLE: 1,
            MSR_PAT: 0x0007_0406_0007_0406,
        }
        self.efer = 0

    def read(self, index: int) -> int | None:
        """The MSR's value, None when the machine has no such MSR (#GP)."""
        if index == MSR_TSC:
            return (self._clock() + self.tsc_offset) & 0xFFFF_FFFF_FFFF_FFFF
        if index == MSR_EFER:
            return self.efer
        if index in NATIVE_MSRS:
            return self._native_read(index)
        return self.values.get(index)

    def write(self, index: int, value: int) -> bool:
        """Store the MSR; False when the machine has no such MSR or the value is reserved (#GP)."""
        if index == MSR_TSC:
            self.tsc_offset = value - self._clock()
            return True
        if index == MSR_EFER:
            if value & ~EFER_WRITABLE:
                return False
            # LMA is read-only; it follows LME once paging is on.
            self.efer = value | (self.efer & (1 << 10))
            self._native_write(MSR_EFER, self.efer)
            return True
        if index in NATIVE_MSRS:
            self._native_write(index, value)
            return True
        if index in self.values:
            self.values[index] = value
            return True
        return False


class Vmm:
    """What the VMM answers: devices, CPUID, hypercalls."""

    def __init__(self, vendor: str, vcpus: int, ports: Bus, mmio: Bus,
                 read_gpa: Callable[[int, int], bytes], console: Callable[[bytes], None]) -> None:
        self.vendor = vendor
        self.vcpus = vcpus
        self.ports = ports
        self.mmio = mmio
        self._read_gpa = read_gpa
        self._console = console

    def port_in(self, port: int, size: int) -> int:
        """Value of an IN: the device's answer, all ones for an unclaimed port."""
        return self.ports.read(port, size)[0]

    def port_out(self, port: int, size: int, value: int) -> None:
        """An OUT: to the device, dropped for an unclaimed port."""
        self.ports.write(port, size, value)

    def cpuid(self, vcpu: int, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """CPUID as this machine answers it."""
        return cpuid(self.vendor, leaf, subleaf, apic_id=vcpu, vcpus=self.vcpus)

    def hypercall(self, function: int, rbx: int, rcx: int, tsc: int) -> HypercallResult:
        """Run hypercall `function` with its arguments."""
        if function == HC_PING:
            return HypercallResult(PING_REPLY)
        if function == HC_PRINT:
            n = min(rcx, HC_PRINT_MAX)
            self._console(self._read_gpa(rbx, n))
            return HypercallResult(n)
        if function == HC_TIME:
            return HypercallResult(tsc)
        if function == HC_EXIT:
            return HypercallResult(0, exit_status=rbx & 0xFFFF_FFFF)
        return HypercallResult((1 << 64) - 1)
