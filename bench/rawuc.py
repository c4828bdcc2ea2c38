"""Raw Unicorn as a baseline: the same guest bytes on a bare `Uc`, no VMM around it.

The vCPU is brought to real mode exactly as the engine does it (the engine's own
`Vcpu.reset_to_real_mode`: a UC_MODE_64 instance, the CR0.PG edge, EFER = 0, the
32-bit trampoline), over one 2 MiB region of the engine's `HostMemory` mapped at
guest-physical 0 with every permission. What differs from a vmmtui run is only
what the engine adds: its hooks, its exit path, its memory layout (4 KiB code
pages split off for scanning).

Hooks, by kind of run:
- "stop": one OUT hook that calls emu_stop() at the write to port 0xF4 (it never
  fires before; the guest-speed baseline);
- "out":  the same OUT hook, which also counts every other OUT (one Python call
  per OUT: the cheapest possible "exit" into Python);
- "cpuid": the OUT hook for port 0xF4 plus a CPUID hook that counts and returns 1
  (Unicorn skips the instruction: the guest's leaf-0 loop does not read the result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from unicorn import UC_HOOK_INSN, UC_PROT_ALL
from unicorn import x86_const as X

from engine.addresses import LARGE_PAGE_SIZE
from engine.hostmem import HostMemory
from engine.vcpu import Vcpu

LOAD_ADDRESS = 0x7C00
DEBUG_EXIT_PORT = 0xF4
NEVER = (1 << 64) - 1
HOOKS = ("stop", "out", "cpuid", "counted")


@dataclass
class RawRun:
    """What one raw-Unicorn run gave."""

    elapsed: float  # seconds inside emu_start
    hooked: int  # hook calls counted (OUTs other than 0xF4, or CPUIDs)
    status: int | None  # the value written to port 0xF4
    regs: dict[str, int]


class RawGuest:
    """A bare Unicorn vCPU in real mode at 0000:7C00 with `image` loaded there."""

    def __init__(self, image: bytes, hooks: str = "stop") -> None:
        if hooks not in HOOKS:
            raise ValueError(f"hooks: one of {HOOKS}")
        self.host = HostMemory(2 * LARGE_PAGE_SIZE)
        ram = self.host.alloc_run(LARGE_PAGE_SIZE)
        self.vcpu = Vcpu(0, self.host)
        uc = self.uc = self.vcpu.uc
        uc.mem_map_ptr(0, LARGE_PAGE_SIZE, UC_PROT_ALL, self.host.pointer(ram))
        self.host.write(ram + LOAD_ADDRESS, image)
        self.vcpu.reset_to_real_mode(0, LOAD_ADDRESS, self.host.alloc_frame())
        uc.reg_write(X.UC_X86_REG_RDX, 0x80)
        self.hooked = 0
        self.hooks = hooks
        self.status: int | None = None
        if hooks == "out":
            uc.hook_add(UC_HOOK_INSN, self._on_out_counting, None, 1, 0, X.UC_X86_INS_OUT)
        else:
            uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, X.UC_X86_INS_OUT)
        if hooks == "cpuid":
            uc.hook_add(UC_HOOK_INSN, self._on_cpuid, None, 1, 0, X.UC_X86_INS_CPUID)

    def _on_out(self, uc, port, size, value, data) -> None:  # noqa: ANN001
        if port == DEBUG_EXIT_PORT:
            self.status = value
            uc.emu_stop()

    def _on_out_counting(self, uc, port, size, value, data) -> None:  # noqa: ANN001
        if port == DEBUG_EXIT_PORT:
            self.status = value
            uc.emu_stop()
        else:
            self.hooked += 1

    def _on_cpuid(self, uc, data) -> int:  # noqa: ANN001
        self.hooked += 1
        return 1

    def run(self) -> RawRun:
        # "counted": Unicorn's own counted mode, with a count the guest never reaches.
        count = 1 << 62 if self.hooks == "counted" else 0
        start = time.perf_counter()
        self.uc.emu_start(LOAD_ADDRESS, NEVER, count=count)
        elapsed = time.perf_counter() - start
        regs = {name: self.vcpu.reg(name) for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")}
        return RawRun(elapsed, self.hooked, self.status, regs)
