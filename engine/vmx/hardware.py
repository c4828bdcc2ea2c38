"""Intel VT-x as the engine's hardware: the VMCS, its controls, and VM exits.

The VMM's set-up is the instruction sequence real hardware needs (SDM Vol. 3
"Preparation and Launching a Virtual Machine"): VMXON with a VMXON region,
VMCLEAR and VMPTRLD of each vCPU's VMCS region, VMWRITEs of the control fields,
then VMLAUNCH. At every exit the processor stores the exit-information fields
and the guest-state area (SDM "VM Exits": "Recording VM-Exit Information",
"Saving Guest State").
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..bits import bit_names
from ..controls import Controls
from ..ept import Ept
from ..hardware import SEGMENTS, ExitCode, GuestState, GuestStateFn, Hardware
from ..hostmem import HostMemory
from ..intercept import Insn
from . import exits as X
from .controls import (
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased, VmxBitmaps,
)
from .fields import FIELDS, Group, group
from .vmcs import REVISION_ID, Vmcs

_F = FIELDS
_FLAG_FIELDS = {
    "PIN_BASED_VM_EXEC_CONTROL": PinBased,
    "CPU_BASED_VM_EXEC_CONTROL": PrimaryProcBased,
    "SECONDARY_VM_EXEC_CONTROL": SecondaryProcBased,
    "VM_EXIT_CONTROLS": ExitControls,
    "VM_ENTRY_CONTROLS": EntryControls,
}
_GROUP_NAMES = {Group.CONTROL: "control", Group.EXIT_INFORMATION: "exit-information",
                Group.GUEST_STATE: "guest-state", Group.HOST_STATE: "host-state"}
_SIMPLE = {"cpuid": X.CPUID, "hlt": X.HLT, "rdtsc": X.RDTSC, "hypercall": X.VMCALL,
           "shutdown": X.TRIPLE_FAULT}
_EXIT_INFO = ("VM_EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_PHYSICAL_ADDRESS", "GUEST_LINEAR_ADDRESS",
              "VM_EXIT_INSTRUCTION_LEN", "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE")
_E = {name: _F[name] for name in _EXIT_INFO}


def _access_rights(seg_attributes: int, usable: bool = True) -> int:
    """VMCS access-rights format (SDM "Guest Register State"): bit 16 = unusable."""
    return (seg_attributes & 0xF0FF) | (0 if usable else 1 << 16)


class VmxHardware(Hardware):
    """VT-x with EPT and unrestricted guest, one VMCS per vCPU."""

    vendor = "intel"
    structure_name = "VMCS"

    def __init__(self, mem: HostMemory, controls: Controls, ept: Ept, vcpus: int) -> None:
        super().__init__()
        self.mem = mem
        self.controls = controls
        self.bitmaps = VmxBitmaps(mem)
        if not controls.exits("io"):
            mem.write(self.bitmaps.io_a, bytes(4096))
            mem.write(self.bitmaps.io_b, bytes(4096))
        if not controls.exits("msr"):
            mem.write(self.bitmaps.msr, bytes(4096))
        self.vmxon_region = mem.alloc_frame()
        mem.write(self.vmxon_region, REVISION_ID.to_bytes(4, "little"))
        self.vmxon(self.vmxon_region)
        primary = PrimaryProcBased.USE_IO_BITMAPS | PrimaryProcBased.USE_MSR_BITMAPS | \
            PrimaryProcBased.ACTIVATE_SECONDARY_CONTROLS
        for name, bit in (("hlt", PrimaryProcBased.HLT_EXITING), ("invlpg", PrimaryProcBased.INVLPG_EXITING),
                          ("rdtsc", PrimaryProcBased.RDTSC_EXITING)):
            if controls.exits(name):
                primary |= bit
        if controls.exits("cr3"):
            primary |= PrimaryProcBased.CR3_LOAD_EXITING | PrimaryProcBased.CR3_STORE_EXITING
        if controls.exits("pause"):
            primary |= PrimaryProcBased.PAUSE_EXITING
        self.primary = primary
        # External interrupts exit and are acknowledged on exit, so the VM-exit
        # interruption information names the vector (SDM "VM-Exit Controls").
        pin = PinBased.EXTERNAL_INTERRUPT_EXITING if controls.exits("extint") else PinBased(0)
        if controls.exits("preempt"):
            pin |= PinBased.PREEMPTION_TIMER
        exit_controls = ExitControls.HOST_ADDRESS_SPACE_SIZE | ExitControls.SAVE_IA32_EFER | ExitControls.LOAD_IA32_EFER
        if pin:
            exit_controls |= ExitControls.ACK_INTERRUPT_ON_EXIT
        self.pin = pin
        self.vmcs: list[Vmcs] = []
        for _ in range(vcpus):
            region = mem.alloc_frame()
            mem.write(region, REVISION_ID.to_bytes(4, "little"))
            vmcs = Vmcs(region)
            self.vmcs.append(vmcs)
            self.vmclear(vmcs)
            self.vmptrld(vmcs)
            setup = {
                "PIN_BASED_VM_EXEC_CONTROL": int(pin),
                "CPU_BASED_VM_EXEC_CONTROL": int(primary),
                "SECONDARY_VM_EXEC_CONTROL": int(SecondaryProcBased.ENABLE_EPT | SecondaryProcBased.UNRESTRICTED_GUEST),
                "VM_EXIT_CONTROLS": int(exit_controls),
                "VM_ENTRY_CONTROLS": int(EntryControls.LOAD_IA32_EFER),
                "EXCEPTION_BITMAP": sum(1 << v for v in controls.exceptions),
                "IO_BITMAP_A": self.bitmaps.io_a,
                "IO_BITMAP_B": self.bitmaps.io_b,
                "MSR_BITMAP": self.bitmaps.msr,
                "EPT_POINTER": ept.eptp(),
                "CR0_GUEST_HOST_MASK": (1 << 64) - 1 if controls.exits("cr0") else 0,
                "CR4_GUEST_HOST_MASK": (1 << 64) - 1 if controls.exits("cr4") else 0,
                "VMCS_LINK_POINTER": (1 << 64) - 1,
                "VIRTUAL_PROCESSOR_ID": len(self.vmcs),
            }
            for name, value in setup.items():
                self.vmwrite(vmcs, name, value)

    # -- the VMM's VMX instructions ------------------------------------------------

    def vmxon(self, region: int) -> None:
        """Enter VMX operation with the VMXON region at `region`."""
        self.vmm_log.append(f"VMXON {region:#x}")

    def vmclear(self, vmcs: Vmcs) -> None:
        """Make `vmcs` clear (its launch state back to clear)."""
        vmcs.launched = False
        self.vmm_log.append(f"VMCLEAR {vmcs.region_hpa:#x}")

    def vmptrld(self, vmcs: Vmcs) -> None:
        """Make `vmcs` current."""
        self.vmm_log.append(f"VMPTRLD {vmcs.region_hpa:#x}")

    def vmwrite(self, vmcs: Vmcs, name: str, value: int) -> None:
        """VMWRITE a field of the current VMCS by name."""
        vmcs.write(name, value)
        self.vmm_log.append(f"VMWRITE {name} {value:#x}")

    def launch(self, vcpu: int, state: GuestState) -> None:
        """Load the initial guest state and VMLAUNCH."""
        vmcs = self.vmcs[vcpu]
        for enc, value in self._guest_fields(state).items():
            vmcs.vmwrite(enc, value)
        self.vmm_log.append(f"VMWRITE guest-state area ({len(self._guest_fields(state))} fields)")
        self.set_read_shadows(vcpu, state.regs["cr0"], state.regs["cr4"])
        entry = EntryControls.LOAD_IA32_EFER
        if state.regs["efer"] & (1 << 10):
            entry |= EntryControls.IA32E_MODE_GUEST
        self.vmwrite(vmcs, "VM_ENTRY_CONTROLS", int(entry))
        vmcs.launched = True
        self.vmm_log.append(f"VMLAUNCH (vCPU {vcpu})")

    def set_read_shadows(self, vcpu: int, cr0: int, cr4: int) -> None:
        """What guest reads of CR0/CR4 return for the bits the masks own."""
        self.vmcs[vcpu].write("CR0_READ_SHADOW", cr0)
        self.vmcs[vcpu].write("CR4_READ_SHADOW", cr4)

    # -- decisions -------------------------------------------------------------------

    def io_exits(self, port: int, size: int) -> bool:
        return self.bitmaps.io_exits(port, size)

    def msr_exits(self, index: int, write: bool) -> bool:
        return self.bitmaps.msr_exits(index, write)

    def cr_read_exits(self, cr: int) -> bool:
        # MOV from CR0/CR4 never exits: it returns the read shadow for owned bits.
        return cr == 3 and bool(self.primary & PrimaryProcBased.CR3_STORE_EXITING)

    def cr_write_exits(self, vcpu: int, cr: int, value: int) -> bool:
        vmcs = self.vmcs[vcpu]
        if cr == 3:
            return bool(self.primary & PrimaryProcBased.CR3_LOAD_EXITING)
        if cr in (0, 4):
            # SDM "Control-Register Accesses": MOV to CR0/CR4 exits when a bit owned
            # by the host (mask bit 1) would differ from its read shadow.
            mask = vmcs.read(f"CR{cr}_GUEST_HOST_MASK")
            shadow = vmcs.read(f"CR{cr}_READ_SHADOW")
            return bool((value ^ shadow) & mask)
        return False

    def instruction_exits(self, name: str) -> bool:
        # INIT and SIPI exit unconditionally in VMX non-root operation (SDM "Other
        # Causes of VM Exits"); the interrupt window is the VMM's to ask for.
        if name in ("cpuid", "hypercall", "shutdown", "init", "sipi"):
            return True
        if name == "extint":
            return bool(self.pin & PinBased.EXTERNAL_INTERRUPT_EXITING)
        if name == "preempt":
            return bool(self.pin & PinBased.PREEMPTION_TIMER)
        if name == "intwin":
            return self.controls.exits("intwin")
        bit = {"hlt": PrimaryProcBased.HLT_EXITING, "rdtsc": PrimaryProcBased.RDTSC_EXITING,
               "invlpg": PrimaryProcBased.INVLPG_EXITING, "pause": PrimaryProcBased.PAUSE_EXITING}[name]
        return bool(self.primary & bit)

    def request_interrupt_window(self, vcpu: int, on: bool) -> None:
        """The VMM sets (or clears) interrupt-window exiting while an interrupt waits."""
        value = int(self.primary | PrimaryProcBased.INTERRUPT_WINDOW_EXITING) if on else int(self.primary)
        self.vmcs[vcpu].write("CPU_BASED_VM_EXEC_CONTROL", value)

    def exception_exits(self, vector: int, error_code: int) -> bool:
        return bool(self.vmcs[0].read("EXCEPTION_BITMAP") >> vector & 1)

    # -- encodings -------------------------------------------------------------------

    def io_exit(self, insn: Insn, port: int, size: int, is_in: bool, next_rip: int) -> ExitCode:
        q = X.io_qualification(port=port, size=size, is_in=is_in, string=insn.string, rep=insn.rep,
                               imm=insn.port is not None)
        return ExitCode(X.IO_INSTRUCTION, q)

    def simple_exit(self, name: str) -> ExitCode:
        return ExitCode(_SIMPLE[name])

    def msr_exit(self, write: bool) -> ExitCode:
        return ExitCode(X.MSR_WRITE if write else X.MSR_READ)

    def cr_exit(self, cr: int, write: bool, gpr: int) -> ExitCode:
        access = X.MOV_TO_CR if write else X.MOV_FROM_CR
        return ExitCode(X.CR_ACCESS, X.cr_qualification(cr=cr, access=access, gpr=gpr))

    def invlpg_exit(self, linear: int) -> ExitCode:
        return ExitCode(X.INVLPG, linear)

    def slat_exit(self, gpa: int, linear: int, *, read: bool, write: bool, fetch: bool,
                  present: tuple[bool, bool, bool]) -> ExitCode:
        q = X.ept_violation_qualification(read=read, write=write, fetch=fetch, readable=present[0],
                                          writable=present[1], executable=present[2])
        return ExitCode(X.EPT_VIOLATION, q, gpa)

    def exception_exit(self, vector: int, error_code: int | None, cr2: int) -> ExitCode:
        kind = X.InterruptionType.SOFTWARE_EXCEPTION if vector in (3, 4) else X.InterruptionType.HARDWARE_EXCEPTION
        info = X.interruption_info(vector=vector, type=kind, error_code_valid=error_code is not None)
        # For #PF the exit qualification is the faulting linear address (SDM "Exit Qualification").
        return ExitCode(X.EXCEPTION_NMI, cr2 if vector == 14 else 0, info)

    def event_exit(self, name: str, vector: int = 0) -> ExitCode:
        if name == "extint":
            info = X.interruption_info(vector=vector, type=X.InterruptionType.EXTERNAL_INTERRUPT,
                                       error_code_valid=False)
            return ExitCode(X.EXTERNAL_INTERRUPT, 0, info)
        if name == "sipi":
            return ExitCode(X.STARTUP_IPI, vector)  # the qualification is the SIPI vector
        return ExitCode({"intwin": X.INTERRUPT_WINDOW, "init": X.INIT_SIGNAL, "pause": X.PAUSE_INSTRUCTION,
                         "preempt": X.PREEMPTION_TIMER}[name])

    def arm_preemption_timer(self, vcpu: int, value: int) -> None:
        """The VMM loads the VMX-preemption timer before VM entry (SDM "VMX-Preemption Timer")."""
        self.vmcs[vcpu].write("VMX_PREEMPTION_TIMER_VALUE", value)

    def inject(self, vcpu: int, vector: int, error_code: int | None, software: bool, external: bool = False) -> None:
        kind = X.InterruptionType.SOFTWARE_EXCEPTION if software else X.InterruptionType.HARDWARE_EXCEPTION
        if external:
            kind = X.InterruptionType.EXTERNAL_INTERRUPT
        vmcs = self.vmcs[vcpu]
        vmcs.write("VM_ENTRY_INTR_INFO_FIELD",
                   X.interruption_info(vector=vector, type=kind, error_code_valid=error_code is not None))
        vmcs.write("VM_ENTRY_EXCEPTION_ERROR_CODE", error_code or 0)
        vmcs.write("VM_ENTRY_INSTRUCTION_LEN", 1 if software and vector in (3, 4) else 0)

    # -- the VMCS at an exit ----------------------------------------------------------

    def record_exit(self, vcpu: int, code: ExitCode, rip: int, length: int, state: GuestStateFn) -> None:
        # The exit-information fields and the guest-state area are written when
        # something reads the VMCS (Vmcs.pending_exit): no reader can tell.
        self.vmcs[vcpu].pending_exit = partial(self._exit_fields, code, length, state)

    def _exit_fields(self, code: ExitCode, length: int, state: GuestStateFn) -> dict[int, int]:
        reason = code.reason
        fields = self._guest_fields(state())
        fields.update({
            _E["VM_EXIT_REASON"]: reason,
            _E["EXIT_QUALIFICATION"]: code.info1,
            _E["VM_EXIT_INSTRUCTION_LEN"]: length,
            _E["GUEST_PHYSICAL_ADDRESS"]: code.info2 if reason == X.EPT_VIOLATION else 0,
            _E["VM_EXIT_INTR_INFO"]: code.info2 if reason in (X.EXCEPTION_NMI, X.EXTERNAL_INTERRUPT) else 0,
        })
        return fields

    def _guest_fields(self, st: GuestState) -> dict[int, int]:
        r = st.regs
        out = {
            _F["GUEST_RIP"]: r["rip"], _F["GUEST_RSP"]: r["rsp"], _F["GUEST_RFLAGS"]: r["rflags"],
            _F["GUEST_CR0"]: r["cr0"], _F["GUEST_CR3"]: r["cr3"], _F["GUEST_CR4"]: r["cr4"],
            _F["GUEST_IA32_EFER"]: r["efer"], _F["GUEST_DR7"]: 0x400,
            _F["GUEST_GDTR_BASE"]: st.gdtr[0], _F["GUEST_GDTR_LIMIT"]: st.gdtr[1],
            _F["GUEST_IDTR_BASE"]: st.idtr[0], _F["GUEST_IDTR_LIMIT"]: st.idtr[1],
            _F["GUEST_ACTIVITY_STATE"]: st.activity,
        }
        for seg in SEGMENTS + ("ldtr", "tr"):
            s = st.segments.get(seg)
            if s is None:
                continue
            up = seg.upper()
            out[_F[f"GUEST_{up}_SELECTOR"]] = s.selector
            out[_F[f"GUEST_{up}_BASE"]] = s.base
            out[_F[f"GUEST_{up}_LIMIT"]] = s.limit
            out[_F[f"GUEST_{up}_AR_BYTES"]] = _access_rights(s.attributes, s.attributes != 0 or seg == "cs")
        return out

    def structure(self, vcpu: int) -> Vmcs:
        return self.vmcs[vcpu]

    def structure_fields(self, vcpu: int) -> list[tuple[str, str, int, int]]:
        return [(_GROUP_NAMES[group(enc)], name, enc, value) for name, enc, value in self.vmcs[vcpu].fields()]

    # -- display ---------------------------------------------------------------------

    def decode(self, reason: int, info1: int, info2: int, aux1: int, aux2: int) -> tuple[str, dict[str, Any]]:
        name = X.describe(reason)
        if reason == X.IO_INSTRUCTION:
            d: dict[str, Any] = X.decode_io(info1)
            d["value"] = aux1
            if d["string"]:
                d["count"] = aux2
            return name, d
        if reason == X.CR_ACCESS:
            return name, {**X.decode_cr(info1), "value": aux1}
        if reason == X.EPT_VIOLATION:
            return name, {"gpa": info2, **X.decode_ept_violation(info1)}
        if reason in (X.MSR_READ, X.MSR_WRITE):
            return name, {"msr": aux1, "value": aux2}
        if reason == X.CPUID:
            return name, {"leaf": aux1, "subleaf": aux2}
        if reason == X.INVLPG:
            return name, {"linear": info1}
        if reason == X.RDTSC:
            return name, {"tsc": aux1}
        if reason == X.VMCALL:
            return name, {"function": aux1, "result": aux2}
        if reason == X.EXTERNAL_INTERRUPT:
            return name, X.decode_interruption_info(info2)
        if reason == X.STARTUP_IPI:
            return name, {"vector": info1}
        if reason == X.EXCEPTION_NMI:
            d = X.decode_interruption_info(info2)
            if d.get("error_code_valid"):
                d["error_code"] = aux1
            if d.get("vector") == 14:
                d["cr2"] = info1
            return name, d
        return name, {}

    def handling_steps(self, reason: int) -> list[str]:
        steps = ["VMREAD VM_EXIT_REASON"]
        if reason in (X.IO_INSTRUCTION, X.CR_ACCESS, X.EPT_VIOLATION, X.INVLPG, X.EXCEPTION_NMI):
            steps.append("VMREAD EXIT_QUALIFICATION")
        if reason == X.EPT_VIOLATION:
            steps += ["VMREAD GUEST_PHYSICAL_ADDRESS", "(back the page: write EPT entries)", "INVEPT"]
        elif reason == X.EXCEPTION_NMI:
            steps += ["VMREAD VM_EXIT_INTR_INFO", "VMWRITE VM_ENTRY_INTR_INFO_FIELD (reflect the exception)"]
        elif reason not in (X.TRIPLE_FAULT,):
            steps += ["VMREAD GUEST_RIP", "VMREAD VM_EXIT_INSTRUCTION_LEN", "(emulate the instruction)",
                      "VMWRITE GUEST_RIP"]
        steps.append("VMRESUME")
        return steps

    def controls_json(self) -> dict[str, Any]:
        vmcs = self.vmcs[0]
        out: dict[str, Any] = {}
        for name, flags in _FLAG_FIELDS.items():
            out[name] = bit_names(flags, vmcs.read(name))
        out["EXCEPTION_BITMAP"] = vmcs.read("EXCEPTION_BITMAP")
        out["CR0_GUEST_HOST_MASK"] = vmcs.read("CR0_GUEST_HOST_MASK")
        out["CR4_GUEST_HOST_MASK"] = vmcs.read("CR4_GUEST_HOST_MASK")
        return out

