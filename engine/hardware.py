"""The virtualization extension as the engine's "hardware": what both vendors provide.

A `Hardware` decides, from the controls in its VMCS or VMCB, whether a guest
action exits; encodes the exit as its vendor does (Intel: basic exit reason and
exit qualification; AMD: EXITCODE and EXITINFO1/2); stores it in the control
structure together with the guest state; and decodes stored exits for display.
`engine.vmx.hardware` and `engine.svm.hardware` are the two implementations.

The VMM's own side (what to do about an exit) lives in `engine.vmm`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .intercept import Insn
from .vcpu import SegmentState

SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs")


@dataclass(frozen=True, slots=True)
class GuestState:
    """The guest state a VM exit saves, in vendor-neutral names."""

    regs: dict[str, int]  # rip, rsp, rflags, rax, ..., cr0, cr2, cr3, cr4, efer
    segments: dict[str, SegmentState]  # es cs ss ds fs gs ldtr tr
    gdtr: tuple[int, int]  # (base, limit)
    idtr: tuple[int, int]
    activity: int = 0  # 0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI (SDM numbering)


GuestStateFn = Callable[[], GuestState]


@dataclass(frozen=True, slots=True)
class ExitCode:
    """One exit as the vendor encodes it."""

    reason: int
    info1: int = 0
    info2: int = 0


class Hardware(ABC):
    """VT-x or AMD-V: exit decisions, exit encoding, the control structure."""

    vendor: str
    structure_name: str  # "VMCS" or "VMCB"

    def __init__(self) -> None:
        #: The VMM's instructions to the hardware, in the order issued (VMXON, VMRUN, ...).
        self.vmm_log: list[str] = []

    # -- decisions ------------------------------------------------------------------

    @abstractmethod
    def io_exits(self, port: int, size: int) -> bool:
        """Whether an access to `size` bytes at `port` exits."""

    @abstractmethod
    def msr_exits(self, index: int, write: bool) -> bool:
        """Whether RDMSR / WRMSR of `index` exits."""

    @abstractmethod
    def cr_read_exits(self, cr: int) -> bool:
        """Whether MOV from CRn exits."""

    @abstractmethod
    def cr_write_exits(self, vcpu: int, cr: int, value: int) -> bool:
        """Whether MOV to CRn of `value` exits."""

    @abstractmethod
    def instruction_exits(self, name: str) -> bool:
        """Whether the control `name` exits: an instruction (hlt, rdtsc, cpuid, invlpg,
        hypercall, pause) or an event (extint, intwin, init, sipi)."""

    @abstractmethod
    def exception_exits(self, vector: int, error_code: int) -> bool:
        """Whether exception `vector` exits."""

    # -- encodings ------------------------------------------------------------------

    @abstractmethod
    def io_exit(self, insn: Insn, port: int, size: int, is_in: bool, next_rip: int) -> ExitCode:
        """The exit of an IN / OUT / INS / OUTS."""

    @abstractmethod
    def simple_exit(self, name: str) -> ExitCode:
        """The exit of CPUID, HLT, RDTSC, hypercall or shutdown (no qualification)."""

    @abstractmethod
    def msr_exit(self, write: bool) -> ExitCode:
        """The exit of RDMSR / WRMSR."""

    @abstractmethod
    def cr_exit(self, cr: int, write: bool, gpr: int) -> ExitCode:
        """The exit of a MOV to / from CRn through general register `gpr`."""

    @abstractmethod
    def invlpg_exit(self, linear: int) -> ExitCode:
        """The exit of INVLPG of `linear`."""

    @abstractmethod
    def slat_exit(self, gpa: int, linear: int, *, read: bool, write: bool, fetch: bool,
                  present: tuple[bool, bool, bool]) -> ExitCode:
        """An EPT violation / nested page fault at `gpa`; `present` = (r, w, x) allowed."""

    @abstractmethod
    def exception_exit(self, vector: int, error_code: int | None, cr2: int) -> ExitCode:
        """The exit of a guest exception selected by the exception bitmap / intercepts."""

    @abstractmethod
    def event_exit(self, name: str, vector: int = 0) -> ExitCode:
        """The exit of an event: `extint` (an external interrupt, `vector`), `intwin`
        (the interrupt window opened), `init`, `sipi` (`vector`) or `pause`."""

    @abstractmethod
    def request_interrupt_window(self, vcpu: int, on: bool) -> None:
        """The VMM asks to exit when the guest can take an interrupt (or stops asking)."""

    @abstractmethod
    def inject(self, vcpu: int, vector: int, error_code: int | None, software: bool, external: bool = False) -> None:
        """The VMM injects an exception or (`external`) an interrupt into the guest on
        the next VM entry (VMX: VM-entry interruption-information field; SVM: EVENTINJ)."""

    # -- the control structure -------------------------------------------------------

    @abstractmethod
    def record_exit(self, vcpu: int, code: ExitCode, rip: int, length: int, state: GuestStateFn) -> None:
        """Store the exit and the guest state in vCPU `vcpu`'s VMCS / VMCB."""

    @abstractmethod
    def structure(self, vcpu: int) -> Any:
        """vCPU `vcpu`'s VMCS or VMCB, up to date."""

    @abstractmethod
    def structure_fields(self, vcpu: int) -> list[tuple[str, str, int, int]]:
        """(group, name, encoding or offset, value) of every field, in the vendor's order."""

    @abstractmethod
    def decode(self, reason: int, info1: int, info2: int, aux1: int, aux2: int) -> tuple[str, dict[str, Any]]:
        """A stored exit as (refdata name, decoded qualification)."""

    @abstractmethod
    def handling_steps(self, reason: int) -> list[str]:
        """The instructions a VMM issues to handle an exit of this reason and resume."""

    @abstractmethod
    def controls_json(self) -> dict[str, Any]:
        """The control fields / intercept vectors in force, for the JSON output."""
