"""Real KVM as a baseline: run a bench guest through /dev/kvm ioctls from Python.

The smallest userspace VMM that can run a raw boot image: one VM, one memory
slot (2 MiB of anonymous memory at guest-physical 0), one vCPU in real mode at
0000:7C00, and a KVM_RUN loop that counts KVM_EXIT_IO exits until the guest
writes to the debug-exit port 0xF4. Each KVM_EXIT_IO here is one round trip
guest -> kernel -> this Python loop -> kernel -> guest, the same work a
userspace VMM does per port-I/O exit.

Constants and struct layouts are those of Linux's uapi <linux/kvm.h> (facts in
/work/shared/refdata/NOTES.md, "KVM"):

- struct kvm_userspace_memory_region { u32 slot, flags; u64 guest_phys_addr,
  memory_size, userspace_addr; }                                     32 bytes
- struct kvm_regs { u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8..r15, rip,
  rflags; }                                                          144 bytes
- struct kvm_sregs { struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
  struct kvm_dtable gdt, idt; u64 cr0, cr2, cr3, cr4, cr8, efer, apic_base;
  u64 interrupt_bitmap[4]; }                                         312 bytes
  with kvm_segment { u64 base; u32 limit; u16 selector; u8 type, present, dpl,
  db, s, l, g, avl, unusable, padding; } (24 bytes) and kvm_dtable { u64 base;
  u16 limit; u16 padding[3]; } (16 bytes)
- struct kvm_run: exit_reason u32 at offset 8; for KVM_EXIT_IO at offset 32:
  direction u8 (0 in, 1 out), size u8, port u16, count u32, data_offset u64.

Note: CPUID never exits to userspace under KVM (the kernel answers it), so a
CPUID loop shows no exits here, only its total run time.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import time
from dataclasses import dataclass

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_SET_TSS_ADDR = 0xAE47
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84

KVM_EXIT_IO = 2
KVM_EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
                  7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR"}
KVM_EXIT_IO_OUT = 1

KVM_DEVICE = "/dev/kvm"
DEBUG_EXIT_PORT = 0xF4
LOAD_ADDRESS = 0x7C00
MEM_SIZE = 2 << 20
TSS_ADDRESS = 0xFFFB_D000  # three pages KVM may use for real mode on VMX without unrestricted guest

_REGION = struct.Struct("<IIQQQ")
_REGS = struct.Struct("<18Q")
_REG_RDX, _REG_RIP, _REG_RFLAGS = 3, 16, 17
_SREGS_SIZE = 312
_SEGMENT = struct.Struct("<QIH8B")  # base, limit, selector, type, present, dpl, db, s, l, g, avl (then unusable, pad)
_SEGMENT_SIZE = 24
_EXIT_REASON = struct.Struct("<I")
_IO = struct.Struct("<BBHIQ")  # direction, size, port, count, data_offset (at offset 32)


class KvmUnavailable(Exception):
    """/dev/kvm cannot be opened or does not behave as expected."""


@dataclass
class KvmRun:
    """What one run of a guest under KVM gave."""

    elapsed: float  # seconds in the KVM_RUN loop
    io_exits: int  # KVM_EXIT_IO exits before the debug-exit write (not counting it)
    other_exits: int
    status: int | None  # the value written to port 0xF4
    last_exit: str


def api_version() -> int:
    """KVM_GET_API_VERSION (12 on every Linux since 2.6.22); raises KvmUnavailable."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise KvmUnavailable(f"no {KVM_DEVICE} ({e.strerror})") from None
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
    finally:
        os.close(fd)


def _ioctl(fd: int, request: int, arg: int | bytes | bytearray = 0, what: str = "") -> int | bytes:
    try:
        return fcntl.ioctl(fd, request, arg)  # type: ignore[arg-type]
    except OSError as e:
        raise KvmUnavailable(f"{what or hex(request)} failed: {e.strerror}") from None


class KvmGuest:
    """A one-vCPU KVM VM with a raw boot image at 0x7C00, ready to run in real mode."""

    def __init__(self, image: bytes) -> None:
        self._fds: list[int] = []
        try:
            self.kvm = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailable(f"no {KVM_DEVICE} ({e.strerror})") from None
        self._fds.append(self.kvm)
        version = _ioctl(self.kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        if version != 12:
            raise KvmUnavailable(f"KVM API version {version}, expected 12")
        self.vm = int(_ioctl(self.kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM"))
        self._fds.append(self.vm)
        # Real mode on VMX without "unrestricted guest" needs it; harmless elsewhere, and
        # its failure is not fatal. Through libc: fcntl.ioctl's int argument is signed
        # 32-bit and the address is not.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ioctl(self.vm, ctypes.c_ulong(KVM_SET_TSS_ADDR), ctypes.c_ulong(TSS_ADDRESS))
        # Guest RAM: anonymous memory the VM maps at guest-physical 0.
        self.ram = mmap.mmap(-1, MEM_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.ram[LOAD_ADDRESS:LOAD_ADDRESS + len(image)] = image
        self._ram_anchor = ctypes.c_char.from_buffer(self.ram)
        host_address = ctypes.addressof(self._ram_anchor)
        region = _REGION.pack(0, 0, 0, MEM_SIZE, host_address)
        _ioctl(self.vm, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
        self.vcpu = int(_ioctl(self.vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU"))
        self._fds.append(self.vcpu)
        run_size = int(_ioctl(self.kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"))
        self.run_area = mmap.mmap(self.vcpu, run_size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._enter_real_mode()

    def _enter_real_mode(self) -> None:
        """CS:IP = 0000:7C00, every segment base 0, DL = 0x80: a BIOS hand-over."""
        sregs = bytearray(_ioctl(self.vcpu, KVM_GET_SREGS, bytes(_SREGS_SIZE), "KVM_GET_SREGS"))
        for i in range(6):  # cs, ds, es, fs, gs, ss
            off = i * _SEGMENT_SIZE
            base, limit, _sel, typ, present, dpl, db, s, l, g, avl = _SEGMENT.unpack_from(sregs, off)
            _SEGMENT.pack_into(sregs, off, 0, 0xFFFF, 0, typ, present, dpl, db, s, l, g, avl)
        _ioctl(self.vcpu, KVM_SET_SREGS, bytes(sregs), "KVM_SET_SREGS")
        regs = [0] * 18
        regs[_REG_RDX] = 0x80
        regs[_REG_RIP] = LOAD_ADDRESS
        regs[_REG_RFLAGS] = 0x2
        _ioctl(self.vcpu, KVM_SET_REGS, _REGS.pack(*regs), "KVM_SET_REGS")

    def run(self, max_other: int = 100) -> KvmRun:
        """KVM_RUN until the guest writes port 0xF4 (or stops another way)."""
        run_area, vcpu, ioctl = self.run_area, self.vcpu, fcntl.ioctl
        exit_reason, io = _EXIT_REASON.unpack_from, _IO.unpack_from
        io_exits = other = 0
        status = None
        last = ""
        start = time.perf_counter()
        while True:
            ioctl(vcpu, KVM_RUN, 0)
            reason = exit_reason(run_area, 8)[0]
            if reason == KVM_EXIT_IO:
                direction, size, port, count, data_offset = io(run_area, 32)
                if port == DEBUG_EXIT_PORT and direction == KVM_EXIT_IO_OUT:
                    status = run_area[data_offset]
                    last = "IO 0xF4"
                    break
                io_exits += 1
                continue
            other += 1
            last = KVM_EXIT_NAMES.get(reason, str(reason))
            if reason != 10 or other >= max_other:  # anything but a signal interrupt ends the run
                break
        elapsed = time.perf_counter() - start
        return KvmRun(elapsed, io_exits, other, status, last)

    def close(self) -> None:
        self.run_area.close()
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()
        del self._ram_anchor
        self.ram.close()
