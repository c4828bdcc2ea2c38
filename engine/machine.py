"""The machine: host memory, EPT / NPT, the virtualization hardware, devices, vCPUs,
and the run loop that turns guest actions into VM exits.

A `Machine` is the engine's public face: load an image, `run`, `run_to_exit`,
`step`, `pause` (from another thread), read the exit stream (`exits`), the
registers, the VMCS / VMCB and guest memory by GPA or GVA.

How exits are taken (DESIGN.md, "What Unicorn gives you"): IN, OUT and CPUID
arrive through Unicorn's instruction hooks and are handled inside the hook; HLT,
RDMSR, WRMSR, RDTSC, MOV CR, INVLPG and VMCALL/VMMCALL through per-address code
hooks placed by scanning each code page on its first fetch (`engine.intercept`);
first touches of RAM and MMIO through Unicorn's memory hooks. Emulation stops only
when the debugger needs control. A run that must stop exactly at an exit (run to
the next exit, a max-exits budget) runs in Unicorn's counted mode, where a stop
requested inside a hook takes effect right after the instruction.

Time and vCPUs (engine.scheduler): virtual time is the count of guest
instructions retired, read from Unicorn's counted mode after every slice
(engine.icount). The vCPUs take turns of `quantum` instructions on this thread;
a slice also ends at the next timer deadline, so a timer interrupt arrives at
the same instruction on every run (engine.interrupts).

VMM time: exits take no virtual time, but the host time the VMM spends handling
each one is measured (`time.perf_counter_ns`, from when `_exit` hands the VMM
control until `_handled` says its handling is done) and kept beside the exit
stream (`ExitLog.vmm_ns`); it is wall time, so it differs from run to run.
"""

from __future__ import annotations

import threading
from functools import lru_cache, partial
import time
from collections.abc import Callable
from time import perf_counter_ns
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from unicorn import (
    UC_ERR_FETCH_PROT, UC_ERR_INSN_INVALID, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_UNMAPPED, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_UNMAPPED, UC_PROT_ALL, UC_PROT_READ,
    UC_PROT_WRITE, UcError,
)
from unicorn import x86_const as X

from . import paging
from .addresses import PAGE_SIZE
from .config import MachineConfig
from .controls import Controls
from .delivery import ERROR_CODE_VECTORS, DeliveryFailed, Event, deliver, escalate
from .devices.bus import Bus
from .devices.debug_exit import DEBUG_EXIT_PORT, DebugExit
from .devices.lapic import APIC_BASE, APIC_SIZE, Ipi, LocalApic
from .devices.pic8259 import PicPair
from .devices.pit8254 import Pit8254
from .devices.uart16550 import Uart16550
from .ept import Ept
from .errors import EngineError
from .exitlog import ExitEvent, ExitLog
from .guestmem import GuestMemory
from .hardware import ExitCode, GuestState, Hardware
from .hostmem import HostMemory
from .icount import InstructionCounter
from .intercept import Insn, Kind, decode, scan
from .interrupts import PIC_SOURCE, Interrupts
from .npt import Npt
from .scheduler import RunState, Scheduler
from .svm.hardware import SvmHardware
from .operands import effective_address, segment_register
from .vcpu import CR0_PE, EFER_LMA, SNAP, SegmentState, Vcpu
from .vmm import MsrFile, Vmm
from .vmx.hardware import VmxHardware

COM1 = 0x3F8
NEVER = (1 << 64) - 1  # an `until` address no guest reaches
COUNTED_SLICE = 1_000_000  # instructions per emu_start of a lone vCPU
IDLE_SKIPS = 10_000  # timer deadlines skipped to while halted with none taken: a hung machine
_IRQ_PORTS = frozenset({0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43})  # the PIC pair and the PIT
_I = SNAP  # snapshot indices
_CS, _CR0, _RAX, _RCX = SNAP["cs"], SNAP["cr0"], SNAP["rax"], SNAP["rcx"]
_MASK = {16: 0xFFFF, 32: 0xFFFF_FFFF, 64: 0xFFFF_FFFF_FFFF_FFFF}


@lru_cache(maxsize=None)
def _detailed_disassembler(bits: int) -> Any:
    """A Capstone disassembler for `bits`-bit code with operand details (one per mode)."""
    from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}[bits])
    md.detail = True
    return md
_FLAGS_IF = 1 << 9
# The 64-bit register a 16- or 32-bit register name is part of (for Capstone's names).
_FULL_REGISTER = {
    **{f"{p}{r}": f"r{r}" for r in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp") for p in ("", "e")},
    **{f"r{n}{s}": f"r{n}" for n in range(8, 16) for s in ("w", "d")},
}
_NOT_CODE_PROT = UC_PROT_READ | UC_PROT_WRITE  # RAM before its first fetch is scanned


class StopReason(str, Enum):
    """Why a run (or a step) returned."""

    DEBUG_EXIT = "debug-exit"
    HYPERCALL_EXIT = "hypercall-exit"
    HALT = "halt"
    SHUTDOWN = "shutdown"
    MAX_EXITS = "max-exits"
    TIMEOUT = "timeout"
    EXIT = "exit"  # run_to_exit or a break on an exit
    BREAKPOINT = "breakpoint"
    STEP = "step"
    PAUSE = "pause"
    ERROR = "error"


FINAL = frozenset({StopReason.DEBUG_EXIT, StopReason.HYPERCALL_EXIT, StopReason.HALT,
                   StopReason.SHUTDOWN, StopReason.ERROR})


@dataclass(frozen=True, slots=True)
class Stop:
    """The end of a run or step: why, the guest's status where it gave one, a message."""

    reason: StopReason
    status: int | None = None
    message: str = ""
    exit_seq: int | None = None
    vcpu: int | None = None  # the vCPU that stopped, where one did

    @property
    def final(self) -> bool:
        """Whether the machine can run on after this stop."""
        return self.reason in FINAL


class Machine:
    """One emulated machine with its VMM."""

    def __init__(self, config: MachineConfig | None = None) -> None:
        self.config = config = config or MachineConfig()
        config.check()
        self.controls = Controls()
        self.controls.apply(config.exits, config.vendor)
        # Host memory: guest RAM, the tables and control structures, with room to spare.
        host_size = config.mem_size + (64 << 20)
        self.host = HostMemory(host_size)
        self.slat = Ept(self.host) if config.vendor == "intel" else Npt(self.host)
        self.hw: Hardware
        if config.vendor == "intel":
            self.hw = VmxHardware(self.host, self.controls, self.slat, config.vcpus)  # type: ignore[arg-type]
        else:
            self.hw = SvmHardware(self.host, self.controls, self.slat, config.vcpus)  # type: ignore[arg-type]
        self.vcpus = [Vcpu(i, self.host) for i in range(config.vcpus)]
        self.mem = GuestMemory(self.host, self.slat, config.mem_size, config.page_size, self._mirror_map)
        self.exits = ExitLog(self.hw.decode)
        self.serial = bytearray()
        self._serial_listeners: list[Callable[[bytes], None]] = []
        self._exit_listeners: list[Callable[[int, int, tuple[int, ...]], None]] = []
        self._inject_listeners: list[Callable[[int, int, int], None]] = []
        # Virtual time (instructions retired) as of the end of the last slice.
        self.time = 0
        self.sched = Scheduler(config.vcpus, config.quantum)
        self.counters = [InstructionCounter(v.uc) for v in self.vcpus]
        self._slice_start = 0  # virtual time at the start of the running slice
        self._counting = False  # the running slice is counted
        # Devices.
        self.ports = Bus("port")
        self.mmio = Bus("mmio")
        self.uart = Uart16550(self._console)
        self.ports.register(COM1, 8, self.uart)
        self.ports.register(DEBUG_EXIT_PORT, 4, DebugExit(self._debug_exit))
        self.pic = PicPair()
        self.pit = Pit8254()
        self.ports.register(0x20, 2, self.pic.master)
        self.ports.register(0xA0, 2, self.pic.slave)
        self.ports.register(0x40, 4, self.pit)
        self.lapics = [LocalApic(i, self._send_ipi) for i in range(config.vcpus)]
        self.mmio.register(APIC_BASE, APIC_SIZE, self.lapics[0])
        self.irq = Interrupts(self.pic, self.pit, self.lapics)
        self._sipi: dict[int, int] = {}  # vCPU -> the start-up vector it will start at
        self._scratch_frame: Any = None
        self._window = [False] * config.vcpus  # interrupt-window exiting requested
        self._announced = [False] * config.vcpus  # the pending interrupt's exit was taken
        self._woken = [False] * config.vcpus  # woken from an exiting HLT: the VMM already has control
        self._halt_exited = [False] * config.vcpus  # the vCPU halts in the VMM (its HLT exited)
        self._preempt = self.hw.instruction_exits("preempt")
        self._entry_retired = [0] * config.vcpus  # instructions retired at each vCPU's last VM entry
        self.vmm = Vmm(config.vendor, config.vcpus, self.ports, self.mmio, self.mem.read, self._console)
        self.msrs = [MsrFile(v.index, v.read_msr, v.uc.msr_write, self.tsc) for v in self.vcpus]
        # Run state.
        self.stop: Stop | None = None  # set when the machine has finished
        self._pending: Stop | None = None  # requested inside a hook
        self._resume: tuple[Any, int] | None = None  # (context, next RIP) to land on after a fast stop
        self._cut_requested = False
        self._scanned_page = False
        self._stop_retired: int | None = None  # instructions the slice retires, fixed at a stop in a hook
        #: (vcpu, rip, gpa, read, value, the split access's state after it: `_mmio_piece`)
        self._mmio_replay: tuple[int, int, int, bool, int, Any] | None = None
        #: The MMIO access being taken in pieces: ((vcpu, rip, count), next piece's GPA, the access's end).
        self._mmio_piece: tuple[tuple[int, int, int], int, int] | None = None
        self._halt_seq: int | None = None  # the exit of the last HLT
        self._vmm_start = 0  # perf_counter_ns() when the VMM got control of the last exit
        self._stop_on_exit = False
        self._max_exits: int | None = None
        self._fetch_fault: int | None = None
        self._event: Event | None = None  # an interrupt or exception to take after emu_start returns
        self.faults: list[str] = []  # deliveries that failed and escalated (#DF), for the record
        self._ring0_templates: dict[tuple[int, str], Any] = {}
        self._templates_missing = True
        self._skip_once: tuple[int, int] | None = None
        self._sites: dict[tuple[int, int], Insn | None] = {}
        self._scanned: set[int] = set()
        self._segment_cache: dict[tuple[int, int, int], tuple[int, int, int]] = {}
        self._string_fold: tuple[int, int, int] | None = None  # (linear, seq, next RCX) of a REP string I/O
        self._io_sites: dict[tuple[int, ...], tuple[Insn, ExitCode | None]] = {}
        self._watch_exits = False  # whether any exit may stop the run (see _after_exit)
        self._cpuid_exit = self.hw.simple_exit("cpuid") if self.hw.instruction_exits("cpuid") else None
        self._mmio_pages: set[int] = set()
        self._lock = threading.Lock()
        self._running: Vcpu | None = None
        self._pause_requested = False
        self._deadline: float | None = None
        self._timeout: float | None = None
        self.exit_breaks: list[Callable[[ExitEvent], bool]] = []
        self._breakpoints: dict[int, list[int]] = {}
        for v in self.vcpus:
            self._install_hooks(v)
        for v in self.vcpus:
            lapic = self.lapics[v.index]
            v.uc.mmio_map(APIC_BASE, APIC_SIZE, self._mmio_reader(v, APIC_BASE, lapic), None,
                          self._mmio_writer(v, APIC_BASE, lapic), None)

    # -- set-up ------------------------------------------------------------------

    def _install_hooks(self, v: Vcpu) -> None:
        uc = v.uc
        uc.hook_add(UC_HOOK_INSN, self._on_in, v, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, v, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._on_cpuid, v, 1, 0, X.UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_MEM_FETCH_PROT, self._on_fetch_prot, v)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped, v)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt, v)

    def _mirror_map(self, gpa: int, size: int, hpa: int) -> None:
        """A new EPT/NPT mapping: expose the host frames to every vCPU's Unicorn."""
        for v in self.vcpus:
            v.uc.mem_map_ptr(gpa, size, _NOT_CODE_PROT, self.host.pointer(hpa))

    def launch(self) -> None:
        """VMLAUNCH / VMRUN: hand the loaded initial state to the hardware. The APs
        wait for a start-up IPI in the state INIT leaves (real mode, F000:FFF0)."""
        for v in self.vcpus[1:]:
            v.reset_to_real_mode(0xF000, 0xFFF0, self._reset_frame())
        if self._preempt:
            for v in self.vcpus:
                self.hw.arm_preemption_timer(v.index, self.config.quantum)  # type: ignore[attr-defined]
        for v in self.vcpus:
            snap = v.snapshot()
            self.hw.launch(v.index, self._guest_state(v, snap))  # type: ignore[attr-defined]

    # -- the public API ------------------------------------------------------------

    @property
    def vendor(self) -> str:
        return self.config.vendor

    def on_exit(self, listener: Callable[[int, int, tuple[int, ...]], None]) -> None:
        """Call `listener(seq, vcpu, registers)` at every exit, on the exit path (keep it
        cheap). `registers` is the snapshot taken at the exit, in `vcpu.SNAPSHOT_REGS`
        order; the exit's own row is `exits[seq]` (its operands may be completed after
        the call, e.g. the value an IN returned)."""
        self._exit_listeners.append(listener)

    def on_inject(self, listener: Callable[[int, int, int], None]) -> None:
        """Call `listener(time, vcpu, vector)` whenever the VMM injects an interrupt."""
        self._inject_listeners.append(listener)

    def on_serial(self, listener: Callable[[bytes], None]) -> None:
        """Call `listener(bytes)` with everything the guest writes to the console."""
        self._serial_listeners.append(listener)

    def run(self, max_exits: int | None = None, timeout: float | None = None) -> Stop:
        """Run until the guest ends, `max_exits` exits in all, `timeout` seconds, or pause()."""
        self._max_exits = max_exits
        try:
            return self._run(counted=max_exits is not None or bool(self.exit_breaks), timeout=timeout)
        finally:
            self._max_exits = None

    def run_to_exit(self, timeout: float | None = None) -> Stop:
        """Run until the next VM exit has been taken and handled."""
        self._stop_on_exit = True
        try:
            return self._run(counted=True, timeout=timeout)
        finally:
            self._stop_on_exit = False

    def step(self) -> Stop:
        """Execute one guest instruction (its exit, if it makes one, is taken)."""
        return self._run(counted=True, timeout=None, count=1)

    def pause(self) -> None:
        """Stop a run in progress as soon as possible; safe from another thread.

        The stop lands at the next exit, or, from this thread, at the next
        instruction boundary Unicorn checks (where its counter has counted the
        instruction that did not run, as after any other stop: engine.icount)."""
        with self._lock:
            if self._pending is None:
                self._pending = Stop(StopReason.PAUSE, message="paused")
            self._pause_requested = True
            self._watch_exits = True
            running = self._running
        if running is not None:
            running.uc.emu_stop()

    def add_breakpoint(self, linear: int) -> None:
        """Stop before the instruction at linear address `linear` (CS base + IP in real mode)."""
        if linear in self._breakpoints:
            return
        hooks = []
        for v in self.vcpus:
            hooks.append(v.uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, v, linear, linear))
            v.uc.ctl_remove_cache(linear, linear + 1)  # translated code has hooks compiled in
        self._breakpoints[linear] = hooks

    def remove_breakpoint(self, linear: int) -> bool:
        """Delete the breakpoint at `linear`; False if there was none."""
        hooks = self._breakpoints.pop(linear, None)
        if hooks is None:
            return False
        for v, h in zip(self.vcpus, hooks):
            v.uc.hook_del(h)
            v.uc.ctl_remove_cache(linear, linear + 1)
        return True

    @property
    def breakpoints(self) -> list[int]:
        """Linear addresses with a breakpoint, in order."""
        return sorted(self._breakpoints)

    def send_serial(self, data: bytes) -> None:
        """Type `data` into the console UART for the guest to read."""
        self.uart.feed(data)

    def code_bits(self, vcpu: int = 0) -> tuple[int, int]:
        """(CS base, 16/32/64) of the code vCPU `vcpu` executes: what a disassembler needs."""
        v = self.vcpus[vcpu]
        return self._code_bits(v, v.snapshot())

    def guest_state(self, vcpu: int = 0) -> GuestState:
        """Registers with the hidden segment state (base, limit, attributes), GDTR, IDTR."""
        v = self.vcpus[vcpu]
        return self._guest_state(v, v.snapshot())

    def registers(self, vcpu: int = 0) -> dict[str, int]:
        """The vCPU's registers by name (rip, rflags, rax..r15, segments, crN, efer)."""
        v = self.vcpus[vcpu]
        regs = v.registers()
        regs["efer"] = self.msrs[vcpu].efer
        return regs

    def structure(self, vcpu: int = 0) -> Any:
        """The vCPU's VMCS (Intel) or VMCB (AMD), up to date."""
        return self.hw.structure(vcpu)

    def structure_fields(self, vcpu: int = 0) -> list[tuple[str, str, int, int]]:
        """(group, name, encoding or offset, value) of every field of the vCPU's VMCS / VMCB."""
        return self.hw.structure_fields(vcpu)

    def read_gpa(self, gpa: int, size: int) -> bytes:
        """Guest-physical memory."""
        return self.mem.read(gpa, size)

    def translate(self, gva: int, vcpu: int = 0) -> paging.GuestWalk:
        """The guest's own walk of `gva` with the vCPU's current CR0/CR3/CR4/EFER."""
        r = self.registers(vcpu)
        return paging.walk(self.mem.read, gva, cr0=r["cr0"], cr3=r["cr3"], cr4=r["cr4"], efer=r["efer"])

    def read_gva(self, gva: int, size: int, vcpu: int = 0) -> bytes:
        """Guest-virtual (linear) memory, through the guest's page tables."""
        out = bytearray()
        while size > 0:
            n = min(size, PAGE_SIZE - (gva & (PAGE_SIZE - 1)))
            w = self.translate(gva, vcpu)
            if w.gpa is None:
                raise EngineError(f"guest-virtual {gva:#x} is not mapped: {w.fault}")
            out += self.mem.read(w.gpa, n)
            gva += n
            size -= n
        return bytes(out)

    # -- the run loop ----------------------------------------------------------------

    def _run(self, counted: bool, timeout: float | None, count: int = 0) -> Stop:
        if self.stop is not None:
            return self.stop
        index = self._schedule()
        if index is not None:
            v = self.vcpus[index]
            here = self._code_bits(v, v.snapshot())[0] + v.uc.reg_read(X.UC_X86_REG_RIP)
            if here in self._breakpoints:
                # Resuming from a breakpoint: step its instruction with the breakpoint out
                # of the way, then put it back.
                self.remove_breakpoint(here)
                try:
                    stop = self._execute(True, None, 1)
                finally:
                    self.add_breakpoint(here)
                if count or stop.reason != StopReason.STEP:
                    return stop
        return self._execute(counted, timeout, count)

    def _execute(self, counted: bool, timeout: float | None, count: int) -> Stop:
        """Run the vCPUs, slice by slice, until something stops the machine."""
        self._watch_exits = (self._stop_on_exit or self._max_exits is not None or bool(self.exit_breaks)
                             or timeout is not None or self._pause_requested)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        try:
            stop = self._slices(counted, timeout, count)
            if stop.final:
                self.sched.close("exit")
            return stop
        finally:
            self._deadline = None
            self._pause_requested = False
            for u in self.vcpus:
                self.hw.structure(u.index)  # the VMCS / VMCB as the last exit left it

    def now(self) -> int:
        """Virtual time: guest instructions retired (inside a hook, up to the current one)."""
        if self._counting and self._running is not None:
            return self._slice_start + max(self.counters[self._running.index].raw - 1, 0)
        return self.time

    def _schedule(self) -> int | None:
        """Wake the vCPUs that can go on and pick the one to run (None: all wait)."""
        states = self.sched.states
        for i, state in enumerate(states):
            if state is RunState.HALTED and self.irq.pending(i) is not None:
                states[i] = RunState.ACTIVE
                self._woken[i] = self._halt_exited[i]
            elif state is RunState.WAIT_SIPI and i in self._sipi:
                # SDM "MP Initialization": a start-up IPI starts the AP in real mode at
                # vector x 0x1000 (CS = vector << 8, IP = 0).
                self.vcpus[i].reset_to_real_mode(self._sipi.pop(i) << 8, 0, self._reset_frame())
                self.msrs[i].efer = 0
                self._segment_cache.clear()
                states[i] = RunState.ACTIVE
        return self.sched.pick(self.time)

    def _reset_frame(self) -> Any:
        """The host frame the reset trampoline runs from (one for every vCPU reset)."""
        if self._scratch_frame is None:
            self._scratch_frame = self.host.alloc_frame()
        return self._scratch_frame

    def _advance_time(self, now: int) -> None:
        self.time = now
        self.irq.advance(now)

    def _slices(self, counted: bool, timeout: float | None, count: int) -> Stop:
        deadline = self._deadline
        single = len(self.vcpus) == 1
        idle = 0
        while True:
            with self._lock:
                if self._pending is not None and self._pending.reason == StopReason.PAUSE:
                    return self._take_pending()
            if deadline is not None and time.monotonic() >= deadline:
                return Stop(StopReason.TIMEOUT, message=f"stopped after {timeout} s")
            index = self._schedule()
            if index is None:
                # Every vCPU waits: skip to the next timer that could wake one.
                wakeable = [st is RunState.HALTED for st in self.sched.states]
                t = self.irq.deadline(wakeable)
                if t is None or idle >= IDLE_SKIPS:
                    return self._finish(self._all_waiting(t is not None))
                idle += 1
                self._advance_time(t)
                continue
            idle = 0
            v = self.vcpus[index]
            step_first = False
            if self._pending is None:
                taken = self._interrupt(v)
                if self._pending is not None:  # the debugger stops at the interrupt's exit
                    return self._take_pending()
                if taken is None:
                    step_first = True  # the interrupt waits one instruction (or for IF)
                elif taken:
                    if count:
                        return Stop(StopReason.STEP, vcpu=index)
                    continue
            n = count or (COUNTED_SLICE if single else self.sched.budget())
            if self._preempt:
                n = max(1, min(n, self.config.quantum - (self.sched.retired[index] - self._entry_retired[index])))
            timer = self.irq.next_timer()
            if timer is not None:
                n = max(1, min(n, timer - self.time))
            if step_first:
                n = 1
            uncounted = self.config.fast and single and timer is None and not counted and not count
            stop = self._run_slice(v, n, uncounted, timeout)
            if stop is not None:
                return stop
            if self._preempt and self.sched.retired[index] - self._entry_retired[index] >= self.config.quantum:
                # The VMX-preemption timer ran out: it counts the vCPU's instructions since
                # its last VM entry (the TSC, rate 0), armed with --quantum at every entry.
                self._event_exit(v, v, "preempt", 0)
                if self._pending is not None:
                    return self._take_pending()
            if self._scanned_page:
                continue  # the slice stopped at a fresh code page: nothing ran yet
            if count:
                return Stop(StopReason.STEP, vcpu=index)
            if self._pending is None and uncounted and deadline is None and not self._cut_requested:
                # emu_start returned on its own: Unicorn's native HLT (not scanned yet).
                return self._finish(Stop(StopReason.HALT, status=0, message="halted", vcpu=index))

    def _all_waiting(self, timers: bool) -> Stop:
        """The stop when no vCPU can run again."""
        if len(self.vcpus) == 1:
            seq = self._halt_seq
            if self.sched.states[0] is RunState.STOPPED:
                return Stop(StopReason.HALT, status=0, message="halted with interrupts disabled", vcpu=0,
                            exit_seq=seq)
            why = "timers fire but no interrupt is taken" if timers else "no interrupt source"
            return Stop(StopReason.HALT, status=0, message=f"halted with interrupts enabled and {why}", vcpu=0,
                        exit_seq=seq)
        states = ", ".join(f"{i}: {st.value}" for i, st in enumerate(self.sched.states))
        return Stop(StopReason.HALT, status=0, message=f"every vCPU waits and nothing will wake one ({states})")

    def _run_slice(self, v: Vcpu, n: int, uncounted: bool, timeout: float | None) -> Stop | None:
        """One emu_start of vCPU `v` for up to `n` instructions; a Stop if the run ends."""
        with self._lock:
            self._running = v
            self._counting = not uncounted
        self._slice_start = self.time
        self._cut_requested = False
        self._scanned_page = False
        self._stop_retired = None
        begin = v.uc.reg_read(X.UC_X86_REG_RIP)
        slice_us = 0  # Unicorn's own timer also ends a slice whose instructions are slow
        if self._deadline is not None:
            slice_us = max(1, int((self._deadline - time.monotonic()) * 1e6))
        try:
            v.uc.emu_start(begin, NEVER, timeout=slice_us, count=0 if uncounted else n)
            error = None
        except UcError as e:
            error = e
        except EngineError as e:
            # The guest put the machine where the engine cannot follow it (for
            # example paging on over page tables that map nothing): a stop, not a crash.
            error = None
            self._event = None
            if self._pending is None or not self._pending.final:
                self._pending = Stop(StopReason.ERROR, vcpu=v.index,
                                     message=f"{e} (at RIP {v.uc.reg_read(X.UC_X86_REG_RIP):#x})")
        finally:
            with self._lock:
                self._running = None
                self._counting = False
        fetch_fault = error is not None and error.errno == UC_ERR_FETCH_PROT
        if uncounted:
            retired = 0
        elif self._stop_retired is not None:
            retired = self._stop_retired
        else:
            retired = self.counters[v.index].retired(fetch_fault)
        if self._event is not None and self._event.software:
            retired += 1  # INT n, INT3, INTO retire as they deliver
        self._advance_time(self._slice_start + retired)
        self.sched.account(v.index, retired, self.time)
        if self._resume is not None:
            ctx, next_rip = self._resume
            self._resume = None
            v.uc.context_restore(ctx)
            v.uc.reg_write(X.UC_X86_REG_RIP, next_rip)
        if error is not None:
            if fetch_fault and self._fetch_fault is not None:
                try:
                    self._scan_code_page(v, self._fetch_fault)
                except EngineError as e:
                    self._pending = Stop(StopReason.ERROR, message=str(e), vcpu=v.index)
                    return self._take_pending()
                finally:
                    self._fetch_fault = None
                self._scanned_page = retired == 0
                return None
            if error.errno == UC_ERR_INSN_INVALID and self._pending is None:
                # Unicorn reports invalid opcodes (UD2, a VMCALL of the wrong
                # vendor) here, never through the interrupt hook: that is #UD.
                self._event = Event(6)
            elif self._pending is None and self._event is None:
                self._pending = Stop(StopReason.ERROR, message=self._describe_error(v, error), vcpu=v.index)
        if self._event is not None and self._pending is None:
            event, self._event = self._event, None
            try:
                self._take_event(v, event)
            except EngineError as e:
                self._pending = Stop(StopReason.ERROR, vcpu=v.index,
                                     message=f"delivering vector {event.vector:#x}: {e}")
        if self._pending is not None:
            if self._pending.vcpu is None and len(self.vcpus) > 1:
                self._pending = replace(self._pending, vcpu=v.index)
            return self._take_pending()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return Stop(StopReason.TIMEOUT, message=f"stopped after {timeout} s")
        return None

    def _cut(self, v: Vcpu) -> None:
        """End the running slice after this instruction (a device changed what is due)."""
        self._cut_requested = True
        self._mark_stop(v, True)
        v.uc.emu_stop()

    def _mark_stop(self, v: Vcpu, retires: bool) -> None:
        """Note how many instructions the slice retires when it stops from this hook.

        Inside a hook Unicorn has counted the current instruction; where the stop lands
        depends on the hook (after the instruction for IN, OUT, CPUID and the emulated
        ones, before it for code hooks that let it run later), so the count at the
        stop is taken here rather than inferred from the counter afterwards."""
        if self._stop_retired is None and self._counting:
            raw = self.counters[v.index].raw
            self._stop_retired = raw if retires else max(raw - 1, 0)

    # -- interrupts ----------------------------------------------------------------------

    def _interrupt(self, v: Vcpu) -> bool | None:
        """Deliver the interrupt vCPU `v` has pending, if it can take one now: True when
        delivered, False when there is none, None when it must run one more
        instruction first (interrupts disabled, or the instruction after STI)."""
        i = v.index
        source = self.irq.pending(i)
        if source is None:
            if self._window[i]:
                self._window[i] = False
                self.hw.request_interrupt_window(i, False)
            return False
        snap = v.snapshot()
        woken, self._woken[i] = self._woken[i], False
        if not woken and not self._announced[i]:
            # The interrupt arrives while the guest runs: an external-interrupt exit
            # gives the VMM control (SDM "External-interrupt exiting"; APM "INTR").
            self._announced[i] = True
            self._event_exit(v, v, "extint", self._peek_vector(i, source))
        if not snap[_I["rflags"]] & _FLAGS_IF:
            if not self._window[i]:
                self._window[i] = True
                self.hw.request_interrupt_window(i, True)
            return None
        if self._in_interrupt_shadow(v, snap):
            return None  # STI, MOV SS and POP SS block interrupts until the next instruction completes
        if self._window[i]:
            self._window[i] = False
            self.hw.request_interrupt_window(i, False)
            self._event_exit(v, v, "intwin", 0)
        self._announced[i] = False
        vector = self.irq.acknowledge(i, source)
        self.hw.inject(i, vector, None, False, external=True)
        for listener in self._inject_listeners:
            listener(self.now(), i, vector)
        self._deliver(v, snap, Event(vector))
        return True

    def _peek_vector(self, vcpu: int, source: int) -> int:
        """The vector `source` would deliver, without acknowledging it."""
        if source != PIC_SOURCE:
            return source
        master = self.pic.master
        irq = master.pending()
        if irq == 2 and self.pic.slave.pending() is not None:
            return self.pic.slave.vector_base + self.pic.slave.pending()  # type: ignore[operator]
        return master.vector_base + (irq or 0)

    def _in_interrupt_shadow(self, v: Vcpu, snap: tuple[int, ...]) -> bool:
        """Whether the instruction just retired may have been one that blocks interrupts
        until the next one completes (SDM Vol. 3 6.8.3, "Masking Exceptions and
        Interrupts When Switching Stacks", and the STI description): the bytes before
        RIP are STI (FB), POP SS (17, not in 64-bit mode) or MOV SS from a register
        (8E D0-D7). A false positive only delays the interrupt by one instruction; a
        MOV SS from memory is not recognised."""
        base, bits = self._code_bits(v, snap)
        linear = base + snap[0]
        try:
            last = self._read_linear(v, linear - 1, 1, snap[_CR0]) if linear >= 1 else b""
            if last == b"\xfb" or (last == b"\x17" and bits != 64):
                return True
            return linear >= 2 and last[0] & 0xF8 == 0xD0 and \
                self._read_linear(v, linear - 2, 1, snap[_CR0]) == b"\x8e"
        except EngineError:
            return False

    def _send_ipi(self, ipi: Ipi) -> None:
        """An ICR write of the running vCPU: fixed interrupts, INIT and start-up IPIs."""
        sender = self._running or self.vcpus[0]
        n = len(self.vcpus)
        if ipi.shorthand == 1:
            targets = [sender.index]
        elif ipi.shorthand == 2:
            targets = list(range(n))
        elif ipi.shorthand == 3:
            targets = [i for i in range(n) if i != sender.index]
        else:
            targets = list(range(n)) if ipi.destination == 0xFF else [
                i for i in range(n) if self.lapics[i].apic_id == ipi.destination]
        for i in targets:
            target = self.vcpus[i]
            if ipi.mode in ("fixed", "lowest"):
                self.lapics[i].accept(ipi.vector)
            elif ipi.mode == "init":
                self.sched.states[i] = RunState.WAIT_SIPI
                self._sipi.pop(i, None)
                if i == self.sched.current:
                    self.sched.end_turn("sipi")
                self._event_exit(sender, target, "init", 0)
            elif ipi.mode == "startup" and self.sched.states[i] is RunState.WAIT_SIPI and i not in self._sipi:
                self._sipi[i] = ipi.vector
                self._event_exit(sender, target, "sipi", ipi.vector)

    def _event_exit(self, running: Vcpu, target: Vcpu, name: str, vector: int) -> None:
        """An event's exit of vCPU `target`, if its control is on (`Hardware.event_exit`);
        `running` is the vCPU whose emulation a debugger stop would end (INIT and SIPI
        come from another vCPU's ICR write)."""
        if not self.hw.instruction_exits(name):
            return
        snap = target.snapshot()
        seq = self._exit(target, self.hw.event_exit(name, vector), snap[0], 0, snap)
        self._handled(seq)
        self._after_exit(running, seq, None, retires=False)

    def _take_pending(self) -> Stop:
        stop, self._pending = self._pending, None
        assert stop is not None
        if stop.final:
            self.stop = stop
        return stop

    def _finish(self, stop: Stop) -> Stop:
        self.stop = stop
        return stop

    def _request_stop(self, v: Vcpu, stop: Stop, next_rip: int | None = None, retires: bool = True) -> None:
        """Ask the emulation to stop (hook context): after the current instruction when
        it `retires`, else before it."""
        if self._pending is not None and self._pending.final:
            return
        self._pending = stop
        self._mark_stop(v, retires)
        if next_rip is not None and not self._counting:
            # Outside counted mode Unicorn stops only at the end of the translated
            # block. Only a final stop can happen there (every other stop runs
            # counted): remember the registers to land on after the exiting instruction.
            assert stop.final, "a non-final stop outside counted mode"
            self._resume = (v.uc.context_save(), next_rip)
        v.uc.emu_stop()

    def _describe_error(self, v: Vcpu, error: UcError) -> str:
        rip = v.uc.reg_read(X.UC_X86_REG_RIP)
        return f"{error} at RIP {rip:#x}"

    # -- exits -------------------------------------------------------------------------

    def _exit(self, v: Vcpu, code: ExitCode, rip: int, length: int, snap: tuple[int, ...],
              aux1: int = 0, aux2: int = 0) -> int:
        """The hardware takes a VM exit: log it and fill the VMCS / VMCB; the VMM's
        handling starts when this returns (call `_handled` when it ends)."""
        seq = self.exits.append(v.index, self.now(), code.reason, rip, length, code.info1, code.info2,
                                aux1, aux2)
        if self._preempt:  # the VM entry after this exit re-arms the preemption timer
            ran = self.now() - self._slice_start if self._running is v else 0
            self._entry_retired[v.index] = self.sched.retired[v.index] + ran
        self.hw.record_exit(v.index, code, rip, length, partial(self._guest_state, v, snap))
        if self._templates_missing and snap[_CR0] & CR0_PE and not snap[_CS] & 3 \
                and self.sched.states[v.index] is RunState.ACTIVE:
            self._keep_ring0_template(v, snap)
        for listener in self._exit_listeners:
            listener(seq, v.index, snap)
        self._vmm_start = perf_counter_ns()
        return seq

    def _handled(self, seq: int, start: int | None = None) -> None:
        """The VMM has handled exit `seq`: keep the host nanoseconds it took since `start`
        (default: since `_exit` gave it control). A reading below the clock's resolution
        is kept as 1, as 0 means "not measured"."""
        self.exits.set_vmm_ns(seq, perf_counter_ns() - (self._vmm_start if start is None else start) or 1)

    def _after_exit(self, v: Vcpu, seq: int, next_rip: int | None, retires: bool = True) -> None:
        """Stop after a handled exit when the debugger asked for it (or pause(), or the
        timeout); `retires`: the exiting instruction completes before the stop."""
        if self._cut_requested and retires and self._pending is None and self._counting:
            # An APIC write earlier in this slice changed what is due: end the slice here
            # (a stop in the MMIO callback itself would run the access again).
            self._mark_stop(v, True)
            v.uc.emu_stop()
        if self._pending is not None:
            if self._pause_requested:
                self._request_stop(v, self._pending, next_rip, retires)
            return
        if self._stop_on_exit:
            self._request_stop(v, Stop(StopReason.EXIT, exit_seq=seq), next_rip, retires)
        elif self._max_exits is not None and len(self.exits) >= self._max_exits:
            self._request_stop(v, Stop(StopReason.MAX_EXITS, exit_seq=seq,
                                       message=f"stopped after {len(self.exits)} exits"), next_rip, retires)
        elif self.exit_breaks and any(match(self.exits[seq]) for match in self.exit_breaks):
            self._request_stop(v, Stop(StopReason.EXIT, exit_seq=seq), next_rip, retires)
        elif self._deadline is not None and not seq & 0xFFF and time.monotonic() >= self._deadline:
            self._request_stop(v, Stop(StopReason.TIMEOUT, message=f"stopped after {self._timeout} s"),
                               next_rip, retires)

    def tsc(self) -> int:
        """Virtual time as the guest's time-stamp counter sees it."""
        return self.now()

    # -- guest state -------------------------------------------------------------------

    def _segment_info(self, v: Vcpu, selector: int, cr0: int) -> tuple[int, int, int]:
        """(base, limit, attributes) of a selector; attributes in the VMX access-rights layout."""
        efer = self.msrs[v.index].efer
        key = (selector, cr0 & CR0_PE, efer & EFER_LMA)
        hit = self._segment_cache.get(key)
        if hit is not None:
            return hit
        if not cr0 & CR0_PE:
            info = (selector << 4, 0xFFFF, 0x93)
        else:
            gdt_base = v.uc.reg_read(X.UC_X86_REG_GDTR)[1]
            try:
                raw = int.from_bytes(self._read_linear(v, gdt_base + (selector & ~7), 8, cr0), "little")
            except EngineError:
                return 0, 0, 0  # the GDT is not mapped: nothing known about the segment (not cached)
            base = ((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24
            limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
            flags = (raw >> 52) & 0xF
            if flags & 0x8:  # G: 4 KiB granularity
                limit = (limit << 12) | 0xFFF
            info = (base, limit, ((raw >> 40) & 0xFF) | flags << 12)
        self._segment_cache[key] = info
        return info

    def _code_bits(self, v: Vcpu, snap: tuple[int, ...]) -> tuple[int, int]:
        """(CS base, operand bits 16/32/64) of the code the vCPU is executing."""
        cr0 = snap[_I["cr0"]]
        base, _limit, attrs = self._segment_info(v, snap[_I["cs"]], cr0)
        if not cr0 & CR0_PE:
            return base, 16
        if self.msrs[v.index].efer & EFER_LMA and attrs & (1 << 13):
            return 0, 64
        return base, 32 if attrs & (1 << 14) else 16

    def _read_linear(self, v: Vcpu, linear: int, size: int, cr0: int | None = None) -> bytes:
        if cr0 is None:
            cr0 = v.uc.reg_read(X.UC_X86_REG_CR0)
        if not cr0 & (1 << 31):
            return self.mem.read(linear & 0xFFFF_FFFF if not self.msrs[v.index].efer & EFER_LMA else linear, size)
        return self.read_gva(linear, size, v.index)

    def _write_linear(self, v: Vcpu, linear: int, data: bytes, cr0: int) -> None:
        """Store guest data at a linear address (through the guest's tables with paging on)."""
        if not cr0 & (1 << 31):
            self.mem.write(linear & 0xFFFF_FFFF if not self.msrs[v.index].efer & EFER_LMA else linear, data)
            return
        for off in range(0, len(data)):  # bytes may straddle pages: translate each page once
            if off and (linear + off) & (PAGE_SIZE - 1):
                continue
            end = min(len(data), off + PAGE_SIZE - ((linear + off) & (PAGE_SIZE - 1)))
            w = self.translate(linear + off, v.index)
            if w.gpa is None:
                raise EngineError(f"guest-virtual {linear + off:#x} is not mapped: {w.fault}")
            self.mem.write(w.gpa, data[off:end])

    def _guest_state(self, v: Vcpu, snap: tuple[int, ...]) -> GuestState:
        regs = {name: snap[i] for name, i in _I.items()}
        regs["efer"] = self.msrs[v.index].efer
        cr0 = regs["cr0"]
        segments = {}
        for seg in ("es", "cs", "ss", "ds", "fs", "gs"):
            base, limit, attrs = self._segment_info(v, snap[_I[seg]], cr0)
            if seg in ("fs", "gs") and regs["efer"] & EFER_LMA:
                base = regs[f"{seg}_base"]
            if seg == "cs" and not cr0 & CR0_PE:
                attrs = 0x9B
            segments[seg] = SegmentState(snap[_I[seg]], base, limit, attrs)
        segments["ldtr"] = SegmentState(0, 0, 0xFFFF, 0x82)
        segments["tr"] = SegmentState(0, 0, 0xFFFF, 0x8B)
        gdtr = v.uc.reg_read(X.UC_X86_REG_GDTR)
        idtr = v.uc.reg_read(X.UC_X86_REG_IDTR)
        state = self.sched.states[v.index]
        activity = {RunState.ACTIVE: 0, RunState.HALTED: 1, RunState.STOPPED: 1, RunState.WAIT_SIPI: 3}[state]
        if self.stop is not None and self.stop.reason == StopReason.SHUTDOWN:
            activity = 2
        return GuestState(regs, segments, (gdtr[1], gdtr[2]), (idtr[1], idtr[2]), activity)

    # -- code pages: finding the instructions that must exit --------------------------

    def _on_fetch_prot(self, uc, access, address, size, value, v) -> bool:  # noqa: ANN001
        self._fetch_fault = address
        return False

    def _scan_code_page(self, v: Vcpu, linear: int) -> None:
        """First fetch from a page: hook its sensitive instructions, then let it execute."""
        page = linear & ~(PAGE_SIZE - 1)
        cr0 = v.uc.reg_read(X.UC_X86_REG_CR0)
        gpa = page
        if cr0 & (1 << 31):
            w = self.translate(page, v.index)
            if w.gpa is None:
                raise EngineError(f"fetch from unmapped guest-virtual page {page:#x}")
            gpa = w.gpa & ~(PAGE_SIZE - 1)
        if page not in self._scanned:
            self._scanned.add(page)
            for off in scan(self.mem.read(gpa, PAGE_SIZE), pause=self.hw.instruction_exits("pause")):
                for u in self.vcpus:
                    u.uc.hook_add(UC_HOOK_CODE, self._on_site, u, page + off, page + off)
        for u in self.vcpus:
            u.uc.mem_protect(gpa, PAGE_SIZE, UC_PROT_ALL)

    def _insn_at(self, v: Vcpu, linear: int, bits: int, cr0: int) -> Insn | None:
        key = (linear, bits)
        try:
            return self._sites[key]
        except KeyError:
            insn = decode(self._read_linear(v, linear, 16, cr0), bits)
            self._sites[key] = insn
            return insn

    # -- I/O instructions ----------------------------------------------------------------

    def _on_in(self, uc, port, size, v) -> int:  # noqa: ANN001
        return self._io(v, port, size, True, 0)

    def _on_out(self, uc, port, size, value, v) -> None:  # noqa: ANN001
        self._io(v, port, size, False, value)

    def _io(self, v: Vcpu, port: int, size: int, is_in: bool, value: int) -> int:
        if self._pending is not None and self._pending.final:
            return (1 << (8 * size)) - 1  # the run has ended; the rest of the block is inert
        snap = v.snapshot()
        rip = snap[0]
        key = (rip, snap[_CS], snap[_CR0] & CR0_PE, self.msrs[v.index].efer & EFER_LMA, port, size, is_in)
        site = self._io_sites.get(key)
        if site is None:
            site = self._io_site(v, snap, port, size, is_in)
            self._io_sites[key] = site
        insn, code = site
        if insn.string:
            return self._string_io(v, snap, insn, code, port, size, is_in, value)
        seq = None
        if code is not None:
            seq = self._exit(v, code, rip, insn.length, snap, value, 1)
        if port in _IRQ_PORTS:
            self.irq.advance(self.now())
        if is_in:
            value = self.vmm.port_in(port, size)
            if seq is not None:
                self.exits.update_aux(seq, aux1=value)
        else:
            self.vmm.port_out(port, size, value)
            if port in _IRQ_PORTS:
                self._cut(v)  # a timer or a mask changed: what is due is decided again
        if seq is not None:
            self.exits.set_vmm_ns(seq, perf_counter_ns() - self._vmm_start or 1)  # _handled, inlined: hot
            if self._watch_exits:
                self._after_exit(v, seq, rip + insn.length)
        pending = self._pending
        if pending is not None and pending.final and self._resume is None:
            # A device ended the run (the debug-exit port): name the exit that did it.
            self._pending = None
            self._request_stop(v, replace(pending, exit_seq=seq), rip + insn.length)
        return value

    def _io_site(self, v: Vcpu, snap: tuple[int, ...], port: int, size: int, is_in: bool) -> tuple[Insn, ExitCode | None]:
        """Decode an I/O instruction once, with the exit it makes (None: no exit)."""
        cs_base, bits = self._code_bits(v, snap)
        insn = self._insn_at(v, cs_base + snap[0], bits, snap[_CR0])
        if insn is None or insn.kind not in (Kind.IN, Kind.OUT, Kind.INS, Kind.OUTS):
            insn = Insn(Kind.IN if is_in else Kind.OUT, 1, size)
        code = None
        if self.hw.io_exits(port, size):
            code = self.hw.io_exit(insn, port, size, is_in, snap[0] + insn.length)
        return insn, code

    def _string_io(self, v: Vcpu, snap: tuple[int, ...], insn: Insn, code: ExitCode | None, port: int, size: int,
                   is_in: bool, value: int) -> int:
        """INS / OUTS: Unicorn calls the hook once per element; hardware exits once per
        instruction and the VMM completes the string, so the elements fold into one exit
        (and the VMM's time on each element adds to that exit's)."""
        rip = snap[0]
        linear = self._code_bits(v, snap)[0] + rip
        rcx = snap[_I["rcx"]] & _MASK[insn.address_size]
        folded = self._string_fold
        seq = None
        if folded is not None and folded[0] == linear and folded[2] == rcx:
            start = perf_counter_ns()
            self.exits.update_aux(folded[1], aux2=self.exits.aux2[folded[1]] + 1)
            self._string_fold = (linear, folded[1], rcx - 1) if insn.rep and rcx > 1 else None
        else:
            folded = None
            if code is not None:
                seq = self._exit(v, code, rip, insn.length, snap, value, 1)
                self._string_fold = (linear, seq, rcx - 1) if insn.rep and rcx > 1 else None
        if is_in:
            value = self.vmm.port_in(port, size)
        else:
            self.vmm.port_out(port, size, value)
        if folded is not None:
            self.exits.add_vmm_ns(folded[1], perf_counter_ns() - start)
        elif seq is not None:
            self._handled(seq)
            if self._watch_exits:
                done = not (insn.rep and self._string_fold is not None)
                self._after_exit(v, seq, rip + insn.length if done else rip)
        return value

    def _on_cpuid(self, uc, v) -> int:  # noqa: ANN001
        if self._pending is not None and self._pending.final:
            return 1
        snap = v.snapshot()
        rip = snap[0]
        leaf, subleaf = snap[_RAX] & 0xFFFF_FFFF, snap[_RCX] & 0xFFFF_FFFF
        seq = None
        if self._cpuid_exit is not None:
            seq = self._exit(v, self._cpuid_exit, rip, 2, snap, leaf, subleaf)
        v.write_abcd(*self.vmm.cpuid(v.index, leaf, subleaf))
        if seq is not None:
            self.exits.set_vmm_ns(seq, perf_counter_ns() - self._vmm_start or 1)  # _handled, inlined: hot
            if self._watch_exits:
                self._after_exit(v, seq, rip + 2)
        return 1  # skip the instruction: the VMM answered it

    # -- code-hooked instructions -----------------------------------------------------

    def _on_site(self, uc, address, size, v) -> None:  # noqa: ANN001
        # Hooks at one address run in an order Unicorn chooses: a breakpoint
        # there must win whichever runs first.
        if self._on_breakpoint(uc, address, size, v) or self._pending is not None:
            return
        if self._skip_once == (v.index, address):
            self._skip_once = None
            return
        snap = v.snapshot()
        cs_base, bits = self._code_bits(v, snap)
        insn = self._insn_at(v, address, bits, snap[_I["cr0"]])
        if insn is None:
            return
        handler = self._site_handlers.get(insn.kind)
        if handler is not None:
            handler(self, v, insn, snap)

    def _on_breakpoint(self, uc, address, size, v) -> bool:  # noqa: ANN001
        """Stop before the instruction at a breakpoint (also called from site hooks)."""
        if address not in self._breakpoints or self._pending is not None:
            return False
        self._pending = Stop(StopReason.BREAKPOINT, message=f"breakpoint at {address:#x}")
        self._mark_stop(v, False)
        uc.emu_stop()  # a stop requested in a code hook lands before the instruction
        return True

    def _skip(self, v: Vcpu, rip: int, insn: Insn) -> None:
        """Complete an emulated instruction: RIP past it."""
        v.uc.reg_write(X.UC_X86_REG_RIP, rip + insn.length)

    def _site_hlt(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        """HLT: the vCPU waits for an interrupt (with IF clear, for INIT only) and its
        turn ends; the machine halts when no vCPU can run again."""
        rip = snap[_I["rip"]]
        seq = None
        if self.hw.instruction_exits("hlt"):
            seq = self._exit(v, self.hw.simple_exit("hlt"), rip, insn.length, snap)
        self._skip(v, rip, insn)
        self._halt_seq = seq
        # Without HLT exiting the vCPU halts in guest mode (the HLT activity state, SDM
        # "Guest Non-Register State"): the interrupt that wakes it is an exit of its own.
        self._halt_exited[v.index] = seq is not None
        interruptible = bool(snap[_I["rflags"]] & _FLAGS_IF)
        self.sched.states[v.index] = RunState.HALTED if interruptible else RunState.STOPPED
        self.sched.end_turn("halt")
        if seq is not None:
            self._handled(seq)
            if self._watch_exits:
                self._after_exit(v, seq, None)
        self._cut(v)

    def _site_rdtsc(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        rip = snap[_I["rip"]]
        if not self._counting:
            self.time += 1  # uncounted (--fast): time moves on at least at every RDTSC
        tsc = (self.now() + self.msrs[v.index].tsc_offset) & 0xFFFF_FFFF_FFFF_FFFF
        seq = None
        if self.hw.instruction_exits("rdtsc"):
            seq = self._exit(v, self.hw.simple_exit("rdtsc"), rip, insn.length, snap, aux1=tsc)
        v.uc.reg_write(X.UC_X86_REG_RAX, tsc & 0xFFFF_FFFF)
        v.uc.reg_write(X.UC_X86_REG_RDX, tsc >> 32)
        self._skip(v, rip, insn)
        if seq is not None:
            self._handled(seq)
            self._after_exit(v, seq, None)

    def _site_msr(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        rip = snap[_I["rip"]]
        index = snap[_I["rcx"]] & 0xFFFF_FFFF
        write = insn.kind == Kind.WRMSR
        value = ((snap[_I["rdx"]] & 0xFFFF_FFFF) << 32) | (snap[_I["rax"]] & 0xFFFF_FFFF)
        msrs = self.msrs[v.index]
        seq = None
        if not write:
            read = msrs.read(index)
            value = 0 if read is None else read
        if self.hw.msr_exits(index, write):
            seq = self._exit(v, self.hw.msr_exit(write), rip, insn.length, snap, aux1=index, aux2=value)
        ok = msrs.write(index, value) if write else msrs.read(index) is not None
        if not ok:
            self._guest_exception(v, 13, 0, rip)
            if seq is not None:
                self._handled(seq)
            return
        if not write:
            v.uc.reg_write(X.UC_X86_REG_RAX, value & 0xFFFF_FFFF)
            v.uc.reg_write(X.UC_X86_REG_RDX, value >> 32)
        elif index == 0xC000_0080:
            self._segment_cache.clear()
        self._skip(v, rip, insn)
        if seq is not None:
            self._handled(seq)
            self._after_exit(v, seq, None)

    def _site_cr(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        """MOV to/from CR, CLTS, LMSW: the exit is observed, then the instruction runs."""
        rip = snap[_I["rip"]]
        cr = insn.cr
        write = insn.kind != Kind.MOV_FROM_CR
        gpr_name = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")[insn.gpr]
        if insn.kind == Kind.MOV_TO_CR:
            value = snap[_I[gpr_name]]
        elif insn.kind == Kind.CLTS:
            value = snap[_I["cr0"]] & ~(1 << 3)
        elif insn.kind == Kind.LMSW:
            value = (snap[_I["cr0"]] & ~0xF) | (snap[_I[gpr_name]] & 0xF)
        else:
            value = snap[_I.get(f"cr{cr}", _I["cr0"])] if cr in (0, 2, 3, 4) else 0
        exits = self.hw.cr_write_exits(v.index, cr, value) if write else self.hw.cr_read_exits(cr)
        if write and cr in (0, 4):
            self._segment_cache.clear()
            if hasattr(self.hw, "set_read_shadows") and exits:
                cr0 = value if cr == 0 else snap[_I["cr0"]]
                cr4 = value if cr == 4 else snap[_I["cr4"]]
                self.hw.set_read_shadows(v.index, cr0, cr4)  # type: ignore[attr-defined]
        if write and cr == 0:
            self._track_long_mode(v, value)
        if not exits:
            return
        seq = self._exit(v, self.hw.cr_exit(cr, write, insn.gpr), rip, insn.length, snap, aux1=value)
        self._handled(seq)
        self._after_exit(v, seq, None, retires=False)
        if self._pending is not None:
            # The stop lands before the instruction: let it run when the guest resumes.
            self._skip_once = (v.index, rip + self._code_bits(v, snap)[0])

    def _track_long_mode(self, v: Vcpu, cr0: int) -> None:
        """EFER.LMA follows CR0.PG when EFER.LME is set (SDM "IA-32e Mode Operation")."""
        msrs = self.msrs[v.index]
        if msrs.efer & (1 << 8):
            msrs.efer = (msrs.efer | EFER_LMA) if cr0 & (1 << 31) else (msrs.efer & ~EFER_LMA)

    def _site_invlpg(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        rip = snap[_I["rip"]]
        if not self.hw.instruction_exits("invlpg"):
            return
        linear = self._invlpg_operand(v, snap)
        seq = self._exit(v, self.hw.invlpg_exit(linear), rip, insn.length, snap)
        self._handled(seq)
        self._after_exit(v, seq, None, retires=False)
        if self._pending is not None:
            self._skip_once = (v.index, rip + self._code_bits(v, snap)[0])

    def _invlpg_operand(self, v: Vcpu, snap: tuple[int, ...]) -> int:
        """The linear address INVLPG names (Capstone decodes its memory operand)."""
        operand = self._memory_operand(v, snap)
        return operand[0] if operand is not None else 0

    def _memory_operand(self, v: Vcpu, snap: tuple[int, ...]) -> tuple[int, int] | None:
        """(linear address, size in bytes) of the memory operand of the instruction at
        RIP, or None when it has none (or cannot be read)."""
        from capstone.x86 import X86_OP_MEM

        insn = self._faulting_instruction(v, snap)
        if insn is None:
            return None
        op = next((op for op in insn.operands if op.type == X86_OP_MEM), None)
        if op is None:
            return None
        bits = self._code_bits(v, snap)[1]
        segment = segment_register(insn, op)
        if bits == 64:  # only FS and GS have a base in 64-bit mode (SDM Vol. 1 3.4.2.1)
            base = snap[_I[f"{segment}_base"]] if segment in ("fs", "gs") else 0
        else:
            base = self._segment_info(v, snap[_I[segment]], snap[_CR0])[0]
        return (base + effective_address(insn, op, snap, bits)) & _MASK[bits], op.size

    def _site_pause(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        """PAUSE with PAUSE exiting on: the exit is observed, then the instruction runs."""
        rip = snap[_I["rip"]]
        seq = self._exit(v, self.hw.event_exit("pause"), rip, insn.length, snap)
        self._handled(seq)
        self._after_exit(v, seq, None, retires=False)
        if self._pending is not None:
            self._skip_once = (v.index, rip + self._code_bits(v, snap)[0])

    def _site_hypercall(self, v: Vcpu, insn: Insn, snap: tuple[int, ...]) -> None:
        mine = Kind.VMCALL if self.vendor == "intel" else Kind.VMMCALL
        if insn.kind != mine or not self.hw.instruction_exits("hypercall"):
            return  # runs natively: #UD, as on hardware
        rip = snap[_I["rip"]]
        function = snap[_I["rax"]]
        _base, bits = self._code_bits(v, snap)
        mask = _MASK[64] if bits == 64 else _MASK[32]  # the ABI uses EAX.. in 16- and 32-bit code
        seq = self._exit(v, self.hw.simple_exit("hypercall"), rip, insn.length, snap, aux1=function & mask)
        result = self.vmm.hypercall(function & mask, snap[_I["rbx"]] & mask, snap[_I["rcx"]] & mask, self.tsc())
        value = result.value & mask
        self.exits.update_aux(seq, aux2=value)
        if bits == 64:
            v.uc.reg_write(X.UC_X86_REG_RAX, value)
        else:
            v.uc.reg_write(X.UC_X86_REG_RAX, (snap[_I["rax"]] & ~0xFFFF_FFFF) | (result.value & 0xFFFF_FFFF))
            if function & mask == 2:
                v.uc.reg_write(X.UC_X86_REG_RDX, (result.value >> 32) & 0xFFFF_FFFF)
        self._skip(v, rip, insn)
        self._handled(seq)
        if result.exit_status is not None:
            self._request_stop(v, Stop(StopReason.HYPERCALL_EXIT, status=result.exit_status, exit_seq=seq,
                                       message=f"the guest ended the run by hypercall with status {result.exit_status}"))
            return
        self._after_exit(v, seq, None)

    _site_handlers: dict[Kind, Callable[..., None]] = {
        Kind.HLT: _site_hlt, Kind.RDTSC: _site_rdtsc, Kind.RDMSR: _site_msr, Kind.WRMSR: _site_msr,
        Kind.MOV_TO_CR: _site_cr, Kind.MOV_FROM_CR: _site_cr, Kind.CLTS: _site_cr, Kind.LMSW: _site_cr,
        Kind.INVLPG: _site_invlpg, Kind.VMCALL: _site_hypercall, Kind.VMMCALL: _site_hypercall,
        Kind.PAUSE: _site_pause,
    }

    # -- memory: first touch of RAM, MMIO --------------------------------------------------

    def _on_unmapped(self, uc, access, address, size, value, v) -> bool:  # noqa: ANN001
        gpa = address
        read, write, fetch = (access not in (UC_MEM_WRITE_UNMAPPED, UC_MEM_FETCH_UNMAPPED),
                              access == UC_MEM_WRITE_UNMAPPED, access == UC_MEM_FETCH_UNMAPPED)
        if self.mem.is_ram(gpa):
            snap = v.snapshot()
            seq = self._exit(v, self.hw.slat_exit(gpa, address, read=read, write=write, fetch=fetch,
                                                  present=(False, False, False)),
                             snap[_I["rip"]], 0, snap, aux1=address)
            self.mem.back(gpa)
            self._handled(seq)
            self._after_exit(v, seq, None, retires=False)
            return True
        page = gpa & ~(PAGE_SIZE - 1)
        if fetch:
            self._pending = Stop(StopReason.ERROR, message=f"instruction fetch from {gpa:#x}, which is not RAM")
            return False
        if page not in self._mmio_pages:
            # Unknown MMIO: nothing answers there. Map a trap page so every access
            # to it is an exit that reads all ones and drops writes.
            self._mmio_pages.add(page)
            for u in self.vcpus:
                u.uc.mmio_map(page, PAGE_SIZE, self._mmio_reader(u, page, None), None,
                              self._mmio_writer(u, page, None), None)
        return True

    def _mmio_reader(self, v: Vcpu, base: int, device: Any) -> Callable[..., int]:
        def read(uc, offset, size, user_data) -> int:  # noqa: ANN001
            replayed = self._mmio_replayed(v, base + offset, True)
            if replayed is not None:
                return replayed
            exit_gpa = self._mmio_access(v, base + offset, size)
            start = perf_counter_ns()  # the VMM answers the read before the exit is logged
            if device is not None:
                self.irq.advance(self.now())
            value = device.read(offset, size) if device is not None else (1 << (8 * size)) - 1
            took = perf_counter_ns() - start
            if exit_gpa is not None:
                self.exits.set_vmm_ns(self._mmio_exit(v, exit_gpa, read=True, value=value), took or 1)
                self._keep_for_replay(v, base + offset, True, value)
            return value
        return read

    def _mmio_writer(self, v: Vcpu, base: int, device: Any) -> Callable[..., None]:
        def write(uc, offset, size, value, user_data) -> None:  # noqa: ANN001
            if self._mmio_replayed(v, base + offset, False) is not None:
                return
            exit_gpa = self._mmio_access(v, base + offset, size)
            seq = self._mmio_exit(v, exit_gpa, read=False, value=value) if exit_gpa is not None else None
            start = self._vmm_start  # the write may take exits of its own (an INIT IPI)
            if device is not None:
                self.irq.advance(self.now())
                device.write(offset, size, value)
                # A stop inside an MMIO callback would run the access again: what the
                # write changed (a deadline, a priority) counts from the slice's next
                # exit that completes its instruction, or from the slice's end.
                self._cut_requested = True
                self._watch_exits = True
            if seq is not None:
                self._keep_for_replay(v, base + offset, False, value)
                self._handled(seq, start)
        return write

    def _mmio_access(self, v: Vcpu, gpa: int, size: int) -> int | None:
        """The GPA an MMIO access's exit reports, or None when this callback is not an
        access of its own: Unicorn splits an unaligned access into aligned pieces (a
        4-byte read at 0xA0001 comes as 0xA0000 and 0xA0004), where hardware takes one
        exit for the access, at its first byte. The pieces of one access share the
        instruction (its RIP and virtual time) and follow each other to its end."""
        if not self._counting:  # without an exact count two executions look alike
            return gpa
        key = (v.index, v.uc.reg_read(X.UC_X86_REG_RIP), self.now())
        last = self._mmio_piece
        if last is not None and last[0] == key and last[1] == gpa < last[2]:
            self._mmio_piece = (key, gpa + size, last[2])
            return None
        first, length = gpa, size
        operand = self._memory_operand(v, v.snapshot())
        if operand is not None:
            at = (gpa & ~0xFFF) | (operand[0] & 0xFFF)
            if gpa <= at < gpa + size:
                first, length = at, operand[1]
        self._mmio_piece = (key, gpa + size, first + length)
        return first

    def _mmio_exit(self, v: Vcpu, gpa: int, read: bool, value: int) -> int:
        """The exit of an MMIO access (its seq)."""
        snap = v.snapshot()
        code = self.hw.slat_exit(gpa, gpa, read=read, write=not read, fetch=False, present=(False, False, False))
        seq = self._exit(v, code, snap[_I["rip"]], 0, snap, aux1=value)
        self._after_exit(v, seq, None, retires=False)
        return seq

    def _keep_for_replay(self, v: Vcpu, gpa: int, read: bool, value: int) -> None:
        """After an MMIO access was handled: if a stop is due (this exit's, or one the
        access caused, as an INIT IPI's exit), it lands before the instruction, which
        then runs again on resume; its access (`gpa`: as Unicorn calls back, the first
        piece of a split one) is answered from this record then, without a second exit
        or device access."""
        if self._pending is not None and self._mmio_replay is None:
            self._mmio_replay = (v.index, v.uc.reg_read(X.UC_X86_REG_RIP), gpa, read, value, self._mmio_piece)

    def _mmio_replayed(self, v: Vcpu, gpa: int, read: bool) -> int | None:
        """The recorded value when this access is the re-run of a stopped one."""
        replay = self._mmio_replay
        if replay is None or replay[0] != v.index or replay[2:4] != (gpa, read):
            return None
        self._mmio_replay = None
        if replay[1] != v.uc.reg_read(X.UC_X86_REG_RIP):
            return None
        self._mmio_piece = replay[5]  # the rest of a split access follows this piece again
        return replay[4]

    # -- exceptions --------------------------------------------------------------------

    def _on_interrupt(self, uc, intno, v) -> None:  # noqa: ANN001
        """Unicorn raised an interrupt or exception: take it outside the emulation."""
        if self._pending is not None and self._pending.final:
            return
        snap = v.snapshot()
        rip = snap[0]
        linear = self._code_bits(v, snap)[0] + rip
        before = self._read_linear(v, linear - 2, 2, snap[_CR0]) if linear >= 2 else b""
        software = (before == bytes((0xCD, intno)) or (intno == 3 and before[-1:] == b"\xcc")
                    or (intno == 4 and before[-1:] == b"\xce"))
        error_code = None
        if not software and intno in ERROR_CODE_VECTORS:
            error_code = (self._page_fault_error(v, snap) if intno == 14
                          else self._selector_error(v, snap) if intno in (10, 11, 12, 13) else 0)
        # CR2 is right only here, inside the hook (DESIGN.md): keep it with the event.
        self._event = Event(intno, error_code, software, snap[_I["cr2"]] if intno == 14 and not software else None)
        self._mark_stop(v, False)
        uc.emu_stop()

    def _guest_exception(self, v: Vcpu, vector: int, error_code: int | None, rip: int) -> None:
        """An exception the VMM raises for the guest (a #GP for an MSR it does not have)."""
        self._event = Event(vector, error_code)
        self._mark_stop(v, False)
        v.uc.emu_stop()

    def _page_fault_error(self, v: Vcpu, snap: tuple[int, ...]) -> int:
        """The #PF error code Unicorn does not give: from the guest's walk of CR2 and the
        faulting instruction's access (SDM "Page-Fault Exception (#PF)")."""
        cr2 = snap[_I["cr2"]]
        write = self._instruction_writes(v, snap)
        fetch = (self._code_bits(v, snap)[0] + snap[0]) == cr2
        walk = paging.walk(self.mem.read, cr2, cr0=snap[_CR0], cr3=snap[_I["cr3"]], cr4=snap[_I["cr4"]],
                           efer=self.msrs[v.index].efer, write=write, user=(snap[_CS] & 3) == 3, fetch=fetch)
        if walk.error_code is not None:
            return walk.error_code
        return (2 if write else 0) | (4 if (snap[_CS] & 3) == 3 else 0)

    def _faulting_instruction(self, v: Vcpu, snap: tuple[int, ...]) -> Any:
        """The instruction at RIP, decoded by Capstone with operand details (or None)."""
        cs_base, bits = self._code_bits(v, snap)
        md = _detailed_disassembler(bits)
        try:
            code = self._read_linear(v, cs_base + snap[0], 15, snap[_CR0])
        except EngineError:
            return None
        return next(md.disasm(code, snap[0], count=1), None)

    def _instruction_writes(self, v: Vcpu, snap: tuple[int, ...]) -> bool:
        """Whether the instruction at RIP writes memory (Capstone's operand access)."""
        from capstone import CS_AC_WRITE
        from capstone.x86 import X86_OP_MEM

        insn = self._faulting_instruction(v, snap)
        if insn is None:
            return False
        if any(op.type == X86_OP_MEM and op.access & CS_AC_WRITE for op in insn.operands):
            return True
        return insn.mnemonic.startswith(("push", "call", "stos", "movs"))

    def _selector_error(self, v: Vcpu, snap: tuple[int, ...]) -> int:
        """The error code of a #GP / #NP / #SS / #TS raised by loading a selector (SDM
        "Error Code": the selector index with TI; 0 when no selector is involved). Unicorn
        gives none: found from the instruction that faulted (MOV / POP to a segment
        register, or a far JMP / CALL with an immediate selector)."""
        from capstone.x86 import X86_OP_IMM, X86_OP_REG

        insn = self._faulting_instruction(v, snap)
        if insn is None:
            return 0
        ops = insn.operands
        if insn.mnemonic == "mov" and len(ops) == 2 and ops[0].type == X86_OP_REG \
                and insn.reg_name(ops[0].reg) in ("es", "ss", "ds", "fs", "gs") and ops[1].type == X86_OP_REG:
            name = insn.reg_name(ops[1].reg)
            full = _FULL_REGISTER.get(name, name)
            return self.registers(v.index).get(full, 0) & 0xFFFC
        if insn.mnemonic in ("ljmp", "lcall") and ops and ops[0].type == X86_OP_IMM:
            return ops[0].imm & 0xFFFC
        return 0

    def _take_event(self, v: Vcpu, event: Event) -> None:
        """An exception or interrupt happened in the guest: exit if the exception
        bitmap / intercepts select it (the VMM then reflects it by event injection),
        and deliver it to the guest's handler; a failed delivery escalates to #DF, and
        a failed #DF to a triple fault (shutdown)."""
        while True:
            snap = v.snapshot()
            if not snap[_CR0] & CR0_PE and event.error_code is not None:
                event = replace(event, error_code=None)  # real mode pushes no error codes
            rip = snap[0]
            length = 0
            if event.software:
                length = 1 if event.vector in (3, 4) else 2
                rip -= length
            exception = not event.software or event.vector in (3, 4)
            if exception and self.hw.exception_exits(event.vector, event.error_code or 0):
                code = self.hw.exception_exit(event.vector, event.error_code,
                                              snap[_I["cr2"]] if event.cr2 is None else event.cr2)
                seq = self._exit(v, code, rip, length, snap, event.error_code or 0)
                self.hw.inject(v.index, event.vector, event.error_code, event.software)
                self._handled(seq)
                self._after_exit(v, seq, None)
            try:
                self._deliver(v, snap, event)
                return
            except DeliveryFailed as failure:
                following = escalate(event, failure.fault)
                if following is None:
                    code = self.hw.simple_exit("shutdown")
                    seq = self._exit(v, code, rip, 0, snap)
                    self._handled(seq)
                    self._pending = Stop(StopReason.SHUTDOWN, exit_seq=seq,
                                         message=f"triple fault: #DF could not be delivered ({failure})")
                    return
                self.faults.append(f"vector {event.vector:#x} at {rip:#x}: {failure}; "
                                   f"delivering vector {following.vector:#x}")
                if event.software:
                    # A fault raised by INT n names the INT instruction: back to it.
                    v.uc.reg_write(X.UC_X86_REG_RIP, rip)
                event = following

    def _keep_ring0_template(self, v: Vcpu, snap: tuple[int, ...]) -> None:
        """Save a CPU context at CPL 0 in protected / long mode, once per mode."""
        mode = "long" if self.msrs[v.index].efer & EFER_LMA else "protected"
        key = (v.index, mode)
        if key not in self._ring0_templates:
            self._ring0_templates[key] = v.uc.context_save()
            self._templates_missing = len(self._ring0_templates) < 2 * len(self.vcpus)

    def _to_ring0(self, v: Vcpu, mode: str) -> bool:
        """Put the vCPU at CPL 0 keeping its registers: restore the saved CPL-0 context
        and write the current state back over it (segments are the caller's)."""
        template = self._ring0_templates.get((v.index, mode))
        if template is None:
            return False
        uc = v.uc
        regs = v.registers()
        tables = {r: uc.reg_read(r) for r in (X.UC_X86_REG_GDTR, X.UC_X86_REG_IDTR, X.UC_X86_REG_TR,
                                              X.UC_X86_REG_LDTR)}
        ds, es, fs, gs = regs["ds"], regs["es"], regs["fs"], regs["gs"]
        uc.context_restore(template)
        uc.reg_write(X.UC_X86_REG_CR4, regs["cr4"])
        uc.msr_write(0xC000_0080, self.msrs[v.index].efer)
        uc.reg_write(X.UC_X86_REG_CR3, regs["cr3"])
        uc.reg_write(X.UC_X86_REG_CR0, regs["cr0"])
        for reg, value in tables.items():
            uc.reg_write(reg, value)
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip", "rflags", "cr2",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
            v.set_reg(name, regs[name])
        for name, value in (("ds", ds), ("es", es), ("fs", fs), ("gs", gs)):
            v.set_reg(name, value)
        return True

    def _deliver(self, v: Vcpu, snap: tuple[int, ...], event: Event) -> None:
        cr0 = snap[_CR0]
        efer = self.msrs[v.index].efer
        mode = "real" if not cr0 & CR0_PE else "long" if efer & EFER_LMA else "protected"
        ss_base, _limit, ss_attrs = self._segment_info(v, snap[_I["ss"]], cr0)

        user = 4 if (snap[_CS] & 3) == 3 else 0

        # A table or stack the guest's paging does not map: the access the delivery
        # makes page-faults (SDM "Page-Fault Exception (#PF)": P = 0, W/R, U/S).
        def read(linear: int, size: int) -> bytes:
            try:
                return self._read_linear(v, linear, size, cr0)
            except EngineError as e:
                raise DeliveryFailed(str(e), Event(14, user, cr2=linear)) from None

        def write(linear: int, data: bytes) -> None:
            try:
                self._write_linear(v, linear, data, cr0)
            except (EngineError, ValueError) as e:
                raise DeliveryFailed(f"cannot push the frame: {e}", Event(14, 2 | user, cr2=linear)) from None

        deliver(v.uc, event, mode, read, write, ss_base, bool(ss_attrs & (1 << 14)),
                partial(self._to_ring0, v, mode))
        v.exception_delivered()
        self._segment_cache.clear()

    # -- devices ------------------------------------------------------------------------

    def _console(self, data: bytes) -> None:
        self.serial += data
        for listener in self._serial_listeners:
            listener(data)

    def _debug_exit(self, value: int) -> None:
        v = self._running or self.vcpus[0]
        self._pending = Stop(StopReason.DEBUG_EXIT, status=value, vcpu=v.index,
                             message=f"the guest wrote {value:#x} to the debug-exit port")
        v.uc.emu_stop()
