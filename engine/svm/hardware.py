"""AMD-V (SVM) as the engine's hardware: the VMCB page, intercepts, #VMEXIT.

The VMM sets EFER.SVME, fills each vCPU's VMCB (intercept vectors, IOPM and
MSRPM addresses, nested paging with N_CR3, ASID) and enters the guest with
VMLOAD + VMRUN (APM Vol. 2 §15.5 "VMRUN Instruction"). At each #VMEXIT the
processor writes EXITCODE, EXITINFO1, EXITINFO2 and NEXT_RIP into the control
area and the guest state into the state-save area (§15.6 "#VMEXIT"); the VMM
returns with VMSAVE / VMLOAD / VMRUN.

The exit fields and the state-save area of the last exit are written into the
page (real bytes in host memory) when anything reads the VMCB through
`structure()`, which the machine also does at every stop, so a hex view of the
page agrees; no reader can tell this apart from writing it at every exit.
"""

from __future__ import annotations

from typing import Any

from ..controls import Controls
from ..hardware import SEGMENTS, ExitCode, GuestState, GuestStateFn, Hardware
from ..hostmem import HostMemory
from ..intercept import Insn
from ..npt import Npt
from . import exits as S
from ..bits import bit_names
from .intercepts import Misc1, Misc2, SvmBitmaps, cr_read_bit, cr_write_bit
from .vmcb import CONTROL, SAVE, Vmcb

EFER_SVME = 1 << 12
_SIMPLE = {"cpuid": S.CPUID, "hlt": S.HLT, "rdtsc": S.RDTSC, "hypercall": S.VMMCALL, "shutdown": S.SHUTDOWN}
_MISC1_BY_NAME = {"cpuid": Misc1.CPUID, "hlt": Misc1.HLT, "rdtsc": Misc1.RDTSC, "invlpg": Misc1.INVLPG,
                  "shutdown": Misc1.SHUTDOWN, "pause": Misc1.PAUSE, "extint": Misc1.INTR, "init": Misc1.INIT}


def _vmcb_attrib(attributes: int) -> int:
    """VMCB segment attributes (APM "Segment State in the VMCB"): the access byte in
    bits 7:0 and the AVL/L/DB/G flags in bits 11:8, from the descriptor layout."""
    return (attributes & 0xFF) | ((attributes >> 4) & 0xF00)


class SvmHardware(Hardware):
    """AMD-V with nested paging, one VMCB per vCPU."""

    vendor = "amd"
    structure_name = "VMCB"

    def __init__(self, mem: HostMemory, controls: Controls, npt: Npt, vcpus: int) -> None:
        super().__init__()
        self.mem = mem
        self.controls = controls
        self.bitmaps = SvmBitmaps(mem)
        if not controls.exits("io"):
            mem.write(self.bitmaps.iopm, bytes(3 * 4096))
        if not controls.exits("msr"):
            mem.write(self.bitmaps.msrpm, bytes(2 * 4096))
        self.vmm_log.append("WRMSR EFER.SVME = 1")
        self.host_save_area = mem.alloc_frame()
        self.vmm_log.append(f"WRMSR VM_HSAVE_PA = {self.host_save_area:#x}")
        cr = 0
        if controls.exits("cr0"):
            cr |= cr_write_bit(0)
        if controls.exits("cr3"):
            cr |= cr_read_bit(3) | cr_write_bit(3)
        if controls.exits("cr4"):
            cr |= cr_write_bit(4)
        misc1 = Misc1.IOIO_PROT | Misc1.MSR_PROT | Misc1.SHUTDOWN
        for name in ("cpuid", "hlt", "rdtsc", "invlpg", "pause", "extint", "init"):
            if controls.exits(name):
                misc1 |= _MISC1_BY_NAME[name]
        misc2 = Misc2.VMRUN  # APM: VMRUN with the VMRUN intercept clear fails
        if controls.exits("hypercall"):
            misc2 |= Misc2.VMMCALL
        self.vmcbs: list[Vmcb] = []
        # The last exit of each vCPU, written into its VMCB when the VMCB is read.
        self._stale: list[tuple[ExitCode, int, int, GuestStateFn] | None] = []
        for i in range(vcpus):
            vmcb = Vmcb(mem, mem.alloc_frame())
            for name, value in (
                ("INTERCEPT_CR", cr), ("INTERCEPT_EXCEPTIONS", sum(1 << v for v in controls.exceptions)),
                ("INTERCEPT_MISC1", int(misc1)), ("INTERCEPT_MISC2", int(misc2)),
                ("IOPM_BASE_PA", self.bitmaps.iopm), ("MSRPM_BASE_PA", self.bitmaps.msrpm),
                ("GUEST_ASID", 1 + i), ("NP_ENABLE", 1), ("N_CR3", npt.ncr3()),
            ):
                vmcb.write(name, value)
            self.vmm_log.append(f"VMCB {vmcb.hpa:#x} (vCPU {i}): intercepts, IOPM, MSRPM, NP_ENABLE, N_CR3")
            self.vmcbs.append(vmcb)
            self._stale.append(None)

        # The intercept vectors do not change during a run: decide from a copy.
        misc1_now, misc2_now = int(misc1), int(misc2)
        self._instruction = {name: bool(misc1_now & bit) for name, bit in _MISC1_BY_NAME.items()}
        self._instruction["hypercall"] = bool(misc2_now & Misc2.VMMCALL)
        self._instruction["intwin"] = controls.exits("intwin")
        self._instruction["sipi"] = False  # SVM has no SIPI intercept: the VMM sees INIT only
        self._instruction["preempt"] = False  # nor a preemption timer
        self._io_prot = bool(misc1_now & Misc1.IOIO_PROT)
        self._msr_prot = bool(misc1_now & Misc1.MSR_PROT)

    def launch(self, vcpu: int, state: GuestState) -> None:
        """Write the initial guest state and VMRUN."""
        self._write_state(self.vmcbs[vcpu], state)
        hpa = self.vmcbs[vcpu].hpa
        self.vmm_log += [f"VMLOAD {hpa:#x}", f"VMRUN {hpa:#x} (vCPU {vcpu})"]

    # -- decisions -------------------------------------------------------------------

    def io_exits(self, port: int, size: int) -> bool:
        return self._io_prot and self.bitmaps.io_intercepted(port, size)

    def msr_exits(self, index: int, write: bool) -> bool:
        return self._msr_prot and self.bitmaps.msr_intercepted(index, write)

    def cr_read_exits(self, cr: int) -> bool:
        return bool(self.vmcbs[0].read("INTERCEPT_CR") & cr_read_bit(cr))

    def cr_write_exits(self, vcpu: int, cr: int, value: int) -> bool:
        return bool(self.vmcbs[vcpu].read("INTERCEPT_CR") & cr_write_bit(cr))

    def instruction_exits(self, name: str) -> bool:
        return self._instruction[name]

    def exception_exits(self, vector: int, error_code: int) -> bool:
        return bool(self.vmcbs[0].read("INTERCEPT_EXCEPTIONS") >> vector & 1)

    # -- encodings -------------------------------------------------------------------

    def io_exit(self, insn: Insn, port: int, size: int, is_in: bool, next_rip: int) -> ExitCode:
        info1 = S.ioio_exitinfo1(port=port, size=size, is_in=is_in, string=insn.string, rep=insn.rep,
                                 addr_size=insn.address_size, segment=insn.segment if insn.string else 0)
        return ExitCode(S.IOIO, info1, next_rip)

    def simple_exit(self, name: str) -> ExitCode:
        return ExitCode(_SIMPLE[name])

    def msr_exit(self, write: bool) -> ExitCode:
        return ExitCode(S.MSR, 1 if write else 0)

    def cr_exit(self, cr: int, write: bool, gpr: int) -> ExitCode:
        return ExitCode((S.WRITE_CR0 if write else S.READ_CR0) + cr, S.cr_exitinfo1(gpr=gpr))

    def invlpg_exit(self, linear: int) -> ExitCode:
        return ExitCode(S.INVLPG, linear)

    def slat_exit(self, gpa: int, linear: int, *, read: bool, write: bool, fetch: bool,
                  present: tuple[bool, bool, bool]) -> ExitCode:
        info1 = S.npf_exitinfo1(present=any(present), write=write, fetch=fetch)
        return ExitCode(S.NPF, info1, gpa)

    def exception_exit(self, vector: int, error_code: int | None, cr2: int) -> ExitCode:
        return ExitCode(S.EXCP_BASE + vector, error_code or 0, cr2 if vector == 14 else 0)

    def event_exit(self, name: str, vector: int = 0) -> ExitCode:
        return ExitCode({"extint": S.INTR, "intwin": S.VINTR, "init": S.INIT, "pause": S.PAUSE}[name])

    def request_interrupt_window(self, vcpu: int, on: bool) -> None:
        """The VMM asks for a virtual interrupt (V_IRQ) and intercepts VINTR while one waits."""
        vmcb = self.structure(vcpu)
        misc1 = vmcb.read("INTERCEPT_MISC1")
        vmcb.write("INTERCEPT_MISC1", (misc1 | Misc1.VINTR) if on else (misc1 & ~Misc1.VINTR))

    def inject(self, vcpu: int, vector: int, error_code: int | None, software: bool, external: bool = False) -> None:
        vmcb = self.structure(vcpu)
        kind = S.EventType.SOFTWARE_INTERRUPT if software and vector not in (3, 4) else S.EventType.EXCEPTION
        if external:
            kind = S.EventType.EXTERNAL_INTERRUPT
        value = S.eventinj(vector=vector, type=kind, error_code=error_code)
        vmcb.write("EVENTINJ", value & 0xFFFF_FFFF)
        vmcb.write("EVENTINJ_ERR", value >> 32)

    # -- the VMCB at an exit ----------------------------------------------------------

    def record_exit(self, vcpu: int, code: ExitCode, rip: int, length: int, state: GuestStateFn) -> None:
        self._stale[vcpu] = (code, rip, length, state)

    def structure(self, vcpu: int) -> Vmcb:
        pending = self._stale[vcpu]
        vmcb = self.vmcbs[vcpu]
        if pending is not None:
            self._stale[vcpu] = None
            code, rip, length, state = pending
            vmcb.write("EXITCODE", code.reason)
            vmcb.write("EXITINFO1", code.info1)
            vmcb.write("EXITINFO2", code.info2)
            vmcb.write("NEXT_RIP", rip + length if length else 0)
            self._write_state(vmcb, state())
        return vmcb

    def _write_state(self, vmcb: Vmcb, st: GuestState) -> None:
        r = st.regs
        for name, key in (("RIP", "rip"), ("RSP", "rsp"), ("RAX", "rax"), ("RFLAGS", "rflags"),
                          ("CR0", "cr0"), ("CR2", "cr2"), ("CR3", "cr3"), ("CR4", "cr4")):
            vmcb.write(name, r[key])
        vmcb.write("EFER", r["efer"] | EFER_SVME)
        vmcb.write("DR7", 0x400)
        vmcb.write("DR6", 0xFFFF0FF0)
        vmcb.write("G_PAT", 0x0007040600070406)
        for seg in SEGMENTS + ("ldtr", "tr"):
            s = st.segments.get(seg)
            if s is not None:
                vmcb.write_segment(seg.upper(), s.selector, _vmcb_attrib(s.attributes), s.limit, s.base)
        vmcb.write_segment("GDTR", 0, 0, st.gdtr[1], st.gdtr[0])
        vmcb.write_segment("IDTR", 0, 0, st.idtr[1], st.idtr[0])
        cs = st.segments.get("cs")
        vmcb.write("CPL", (cs.attributes >> 5) & 3 if cs is not None and r["cr0"] & 1 else 0)

    def structure_fields(self, vcpu: int) -> list[tuple[str, str, int, int]]:
        vmcb = self.structure(vcpu)
        rows = []
        for name, offset, _size, value in vmcb.fields():
            area = "control" if name in CONTROL else "state-save" if name in SAVE else "?"
            rows.append((area, name, offset, int.from_bytes(value, "little") if isinstance(value, bytes) else value))
        return rows

    # -- display ---------------------------------------------------------------------

    def decode(self, reason: int, info1: int, info2: int, aux1: int, aux2: int) -> tuple[str, dict[str, Any]]:
        name = S.describe(reason)
        if reason == S.IOIO:
            d: dict[str, Any] = S.decode_ioio(info1)
            d["value"] = aux1
            d["next_rip"] = info2
            if d["string"]:
                d["count"] = aux2
            else:
                del d["segment"]  # bits 12:10 name the segment of string I/O only
            return name, d
        if reason < 0x20:
            d = S.decode_cr(info1)
            d["cr"] = reason & 0xF
            d["value"] = aux1
            return name, d
        if reason == S.NPF:
            return name, {"gpa": info2, **S.decode_npf(info1)}
        if reason == S.MSR:
            return name, {"write": bool(info1 & 1), "msr": aux1, "value": aux2}
        if reason == S.CPUID:
            return name, {"leaf": aux1, "subleaf": aux2}
        if reason == S.INVLPG:
            return name, {"linear": info1}
        if reason == S.RDTSC:
            return name, {"tsc": aux1}
        if reason == S.VMMCALL:
            return name, {"function": aux1, "result": aux2}
        if S.EXCP_BASE <= reason < S.EXCP_BASE + 32:
            d = {"vector": reason - S.EXCP_BASE, "error_code": info1}
            if reason == S.EXCP_BASE + 14:
                d["cr2"] = info2
            return name, d
        return name, {}

    def handling_steps(self, reason: int) -> list[str]:
        steps = ["#VMEXIT", "VMSAVE (guest's hidden state)", "VMLOAD (host's)", "read EXITCODE"]
        if reason in (S.IOIO, S.NPF, S.MSR, S.INVLPG) or reason < 0x20 or S.EXCP_BASE <= reason < 0x60:
            steps.append("read EXITINFO1")
        if reason in (S.IOIO, S.NPF):
            steps.append("read EXITINFO2")
        if reason == S.NPF:
            steps += ["(back the page: write NPT entries)", "TLB_CONTROL = flush"]
        elif S.EXCP_BASE <= reason < 0x60:
            steps.append("write EVENTINJ (reflect the exception)")
        elif reason != S.SHUTDOWN:
            steps += ["(emulate the instruction)", "write RIP = NEXT_RIP"]
        steps += ["VMLOAD (guest's)", "VMRUN"]
        return steps

    def controls_json(self) -> dict[str, Any]:
        vmcb = self.vmcbs[0]
        return {
            "INTERCEPT_CR": vmcb.read("INTERCEPT_CR"),
            "INTERCEPT_EXCEPTIONS": vmcb.read("INTERCEPT_EXCEPTIONS"),
            "INTERCEPT_MISC1": bit_names(Misc1, vmcb.read("INTERCEPT_MISC1")),
            "INTERCEPT_MISC2": bit_names(Misc2, vmcb.read("INTERCEPT_MISC2")),
        }
