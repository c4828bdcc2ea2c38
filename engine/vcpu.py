"""One vCPU on Unicorn: creation, the reset hand-over, registers.

Every vCPU is a `UC_MODE_64` Unicorn instance (a 16- or 32-bit instance could never
have RAX, RIP or R8-R15 read or written by the host), brought to the state a
firmware hand-over leaves: real mode, protected mode or long mode.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _binding

from .addresses import HPA, PAGE_SIZE
from .hostmem import HostMemory

MSR_EFER = 0xC000_0080
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_PG = 1 << 31
CR4_PAE = 1 << 5

#: Registers read in one batch at every exit, in this order (the guest-state snapshot).
SNAPSHOT_REGS: tuple[str, ...] = (
    "rip", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "cs", "ds", "es", "ss", "fs", "gs",
    "cr0", "cr2", "cr3", "cr4", "fs_base", "gs_base",
)
REG_IDS: dict[str, int] = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in SNAPSHOT_REGS}
SNAP = {name: i for i, name in enumerate(SNAPSHOT_REGS)}
"""Index of each register in a snapshot tuple."""

# The reset trampoline: it runs from a page outside guest RAM at TRAMPOLINE_GPA, in
# the 32-bit protected mode a fresh UC_MODE_64 instance falls into once EFER.LMA is
# cleared. It loads a 16-bit code segment based at 0xFFFF0000 (the reset-vector
# situation, SDM Vol. 3 "Real-Address Mode Operation" / "First Instruction
# Executed"), clears CR0.PE, reloads the data segments in real mode (base =
# selector x 16) and far-jumps to the entry CS:IP patched in at _ENTRY_PATCH.
TRAMPOLINE_GPA = 0xFFFF_F000
_TRAMPOLINE = bytes.fromhex(
    "0f011550f0ffff"  # lgdt [0xFFFFF050]
    "ea0ef000000800"  # ljmp 0x08:0xF00E (16-bit code, base 0xFFFF0000)
    "b81000" "8ed8" "8ec0" "8ed0" "8ee0" "8ee8"  # mov ax,0x10; ds..gs,ss = ax
    "0f20c0" "6683e0fe" "0f22c0"  # mov eax,cr0; and eax,~1; mov cr0,eax
    "31c0" "8ed8" "8ec0" "8ed0" "8ee0" "8ee8"  # xor ax,ax; ds..gs,ss = 0 (real mode)
    "ea00000000"  # ljmp entry_cs:entry_ip (patched)
)
_ENTRY_PATCH = 0x31
_GDT_OFFSET = 0x38
_GDT = bytes.fromhex(
    "0000000000000000"
    "ffff0000ff9b00ff"  # 0x08: 16-bit code, base 0xFFFF0000, limit 0xFFFF
    "ffff000000930000"  # 0x10: 16-bit data, base 0, limit 0xFFFF
)
_GDTR = (23).to_bytes(2, "little") + (TRAMPOLINE_GPA + _GDT_OFFSET).to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class SegmentState:
    """The hidden part of a segment register as the engine tracks it."""

    selector: int
    base: int
    limit: int
    attributes: int


class RegisterBatch:
    """Reads a fixed list of registers in one C call through the binding's own library.

    The Python wrapper's `reg_read` costs ~1.6 us a register; this costs ~1 us for
    all of them (DESIGN.md, "reading guest registers"). It uses the binding's
    internals (`uclib`, `Uc._uch`), which is why unicorn is pinned; a test fails if
    they change.
    """

    def __init__(self, uc: Uc, names: tuple[str, ...]) -> None:
        n = len(names)
        self._n = n
        self._ids = (ctypes.c_int * n)(*[REG_IDS[name] for name in names])
        self._vals = (ctypes.c_uint64 * n)()
        self._unpack = struct.Struct(f"<{n}Q").unpack_from
        base = ctypes.addressof(self._vals)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        self._fn = _binding.uclib.uc_reg_read_batch
        self._uch = uc._uch

    def read(self) -> tuple[int, ...]:
        """The current values, in the order given at construction."""
        # Each register owns its slot, so a 16-bit register's upper bytes stay zero.
        self._fn(self._uch, self._ids, self._ptrs, self._n)
        return self._unpack(self._vals)


class RegisterWriter:
    """Writes a fixed list of registers in one C call (the write twin of RegisterBatch)."""

    def __init__(self, uc: Uc, names: tuple[str, ...]) -> None:
        n = len(names)
        self._n = n
        self._ids = (ctypes.c_int * n)(*[REG_IDS[name] for name in names])
        self._vals = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self._vals)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        self._fn = _binding.uclib.uc_reg_write_batch
        self._uch = uc._uch

    def write(self, *values: int) -> None:
        """Store the values, in the order given at construction."""
        vals = self._vals
        for i, value in enumerate(values):
            vals[i] = value
        self._fn(self._uch, self._ids, self._ptrs, self._n)


# Unicorn's CPU model (QEMU) remembers the last contributory fault it raised in
# CPUX86State.old_exception, to turn a second one into #DF (SDM "Exception
# Classes"); QEMU resets it when it finishes delivering, which under Unicorn never
# happens because the engine delivers events itself. Its offset in the context
# blob of Unicorn 2.1.4 (pinned; tests/test_units.py checks it).
_OLD_EXCEPTION_OFFSET = 5536


class Vcpu:
    """A virtual CPU: one Unicorn instance mapping the machine's host frames."""

    def __init__(self, index: int, mem: HostMemory) -> None:
        self.index = index
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        # With `until` as the only way to stop at an address, Unicorn translates the
        # `until` address through the guest's page tables whenever paging changes, and
        # the #PF it takes there silently overwrites the guest's CR2 (measured: CR2 =
        # until - 1 after a MOV to CR0 that turns paging on). An empty list of exit
        # addresses makes it ignore `until`.
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        self.mem = mem
        self.batch = RegisterBatch(self.uc, SNAPSHOT_REGS)
        self.write_abcd = RegisterWriter(self.uc, ("rax", "rbx", "rcx", "rdx")).write
        self.efer = 0
        self._power_on = self.uc.context_save()  # what reset_to_real_mode starts from

    # -- registers ---------------------------------------------------------------

    def snapshot(self) -> tuple[int, ...]:
        """All registers of SNAPSHOT_REGS in one read (index with SNAP)."""
        return self.batch.read()

    def reg(self, name: str) -> int:
        """One register by name (slow path; use snapshot() on hot paths)."""
        return self.uc.reg_read(REG_IDS[name])

    def set_reg(self, name: str, value: int) -> None:
        """Write one register by name."""
        self.uc.reg_write(REG_IDS[name], value)

    def registers(self) -> dict[str, int]:
        """Every snapshot register by name, plus EFER."""
        regs = dict(zip(SNAPSHOT_REGS, self.snapshot()))
        regs["efer"] = self.efer
        return regs

    def exception_delivered(self) -> None:
        """Tell the CPU model an exception was delivered, so the next fault is not a #DF."""
        ctx = self.uc.context_save()
        ctypes.memmove(ctx.context.value + _OLD_EXCEPTION_OFFSET, b"\xff\xff\xff\xff", 4)
        self.uc.context_restore(ctx)

    def read_msr(self, index: int) -> int:
        """An MSR as Unicorn holds it."""
        return self.uc.msr_read(index)

    def write_efer(self, value: int) -> None:
        """Load EFER (tracked here: Unicorn has no register id for it)."""
        self.uc.msr_write(MSR_EFER, value)
        self.efer = value

    # -- reset -------------------------------------------------------------------

    def reset_to_real_mode(self, cs: int, ip: int, scratch: HPA) -> None:
        """Bring the vCPU to real mode at CS:IP with data segments 0, as firmware hands over.

        `scratch` is a host frame used for the trampoline page; it is mapped at
        TRAMPOLINE_GPA only while the trampoline runs.
        """
        uc = self.uc
        uc.context_restore(self._power_on)  # INIT: whatever the vCPU did before is gone
        # A fresh UC_MODE_64 instance is in long mode; the CR0.PG 1->0 edge clears
        # EFER.LMA, then EFER and CR4 can be zeroed (SDM "Initializing IA-32e Mode").
        uc.reg_write(X.UC_X86_REG_CR0, CR0_PG | CR0_ET | CR0_PE)
        uc.reg_write(X.UC_X86_REG_CR0, CR0_ET | CR0_PE)
        self.write_efer(0)
        uc.reg_write(X.UC_X86_REG_CR4, 0)
        page = bytearray(PAGE_SIZE)
        page[: len(_TRAMPOLINE)] = _TRAMPOLINE
        page[_ENTRY_PATCH + 1 : _ENTRY_PATCH + 5] = ip.to_bytes(2, "little") + cs.to_bytes(2, "little")
        page[_GDT_OFFSET : _GDT_OFFSET + len(_GDT)] = _GDT
        page[0x50:0x56] = _GDTR
        self.mem.write(scratch, bytes(page))
        uc.mem_map_ptr(TRAMPOLINE_GPA, PAGE_SIZE, UC_PROT_ALL, self.mem.pointer(scratch))
        entry = (cs << 4) + ip
        uc.ctl_remove_cache(entry, entry + 1)  # an exit address counts only in code translated after it is set
        uc.ctl_set_exits([entry])
        try:
            uc.emu_start(TRAMPOLINE_GPA, entry)
        finally:
            uc.ctl_set_exits([])
            uc.mem_unmap(TRAMPOLINE_GPA, PAGE_SIZE)
        # What a BIOS leaves: IDTR = the real-mode IVT, GDTR at its reset value.
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0xFFFF, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0x3FF, 0))
        uc.reg_write(X.UC_X86_REG_RFLAGS, 0x2)
