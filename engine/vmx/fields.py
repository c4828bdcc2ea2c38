"""VMCS fields by name and encoding.

Intel SDM Vol. 3, Appendix B "Field Encoding in VMCS". An encoding carries its
own width (bits 14:13) and group (bits 11:10); bit 0 = 1 names the high half of
a 64-bit field (SDM 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields").
"""

from __future__ import annotations

from enum import IntEnum


class Width(IntEnum):
    """Encoding bits 14:13."""

    W16 = 0
    W64 = 1
    W32 = 2
    NATURAL = 3


class Group(IntEnum):
    """Encoding bits 11:10 (the SDM's field types)."""

    CONTROL = 0
    EXIT_INFORMATION = 1
    GUEST_STATE = 2
    HOST_STATE = 3


FIELDS: dict[str, int] = {
    # control
    "VIRTUAL_PROCESSOR_ID": 0x0000,
    "POSTED_INTR_NOTIFICATION_VECTOR": 0x0002,
    "EPTP_INDEX": 0x0004,
    "IO_BITMAP_A": 0x2000,
    "IO_BITMAP_B": 0x2002,
    "MSR_BITMAP": 0x2004,
    "VM_EXIT_MSR_STORE_ADDR": 0x2006,
    "VM_EXIT_MSR_LOAD_ADDR": 0x2008,
    "VM_ENTRY_MSR_LOAD_ADDR": 0x200a,
    "EXECUTIVE_VMCS_POINTER": 0x200c,
    "PML_ADDRESS": 0x200e,
    "TSC_OFFSET": 0x2010,
    "VIRTUAL_APIC_PAGE_ADDR": 0x2012,
    "APIC_ACCESS_ADDR": 0x2014,
    "POSTED_INTR_DESC_ADDR": 0x2016,
    "EPT_POINTER": 0x201a,
    "EOI_EXIT_BITMAP0": 0x201c,
    "EOI_EXIT_BITMAP1": 0x201e,
    "EOI_EXIT_BITMAP2": 0x2020,
    "EOI_EXIT_BITMAP3": 0x2022,
    "VMREAD_BITMAP": 0x2026,
    "VMWRITE_BITMAP": 0x2028,
    "PIN_BASED_VM_EXEC_CONTROL": 0x4000,
    "CPU_BASED_VM_EXEC_CONTROL": 0x4002,
    "EXCEPTION_BITMAP": 0x4004,
    "PAGE_FAULT_ERROR_CODE_MASK": 0x4006,
    "PAGE_FAULT_ERROR_CODE_MATCH": 0x4008,
    "CR3_TARGET_COUNT": 0x400a,
    "VM_EXIT_CONTROLS": 0x400c,
    "VM_EXIT_MSR_STORE_COUNT": 0x400e,
    "VM_EXIT_MSR_LOAD_COUNT": 0x4010,
    "VM_ENTRY_CONTROLS": 0x4012,
    "VM_ENTRY_MSR_LOAD_COUNT": 0x4014,
    "VM_ENTRY_INTR_INFO_FIELD": 0x4016,
    "VM_ENTRY_EXCEPTION_ERROR_CODE": 0x4018,
    "VM_ENTRY_INSTRUCTION_LEN": 0x401a,
    "TPR_THRESHOLD": 0x401c,
    "SECONDARY_VM_EXEC_CONTROL": 0x401e,
    "PLE_GAP": 0x4020,
    "PLE_WINDOW": 0x4022,
    "CR0_GUEST_HOST_MASK": 0x6000,
    "CR4_GUEST_HOST_MASK": 0x6002,
    "CR0_READ_SHADOW": 0x6004,
    "CR4_READ_SHADOW": 0x6006,
    "CR3_TARGET_VALUE0": 0x6008,
    "CR3_TARGET_VALUE1": 0x600a,
    "CR3_TARGET_VALUE2": 0x600c,
    "CR3_TARGET_VALUE3": 0x600e,
    # exit-information
    "GUEST_PHYSICAL_ADDRESS": 0x2400,
    "VM_INSTRUCTION_ERROR": 0x4400,
    "VM_EXIT_REASON": 0x4402,
    "VM_EXIT_INTR_INFO": 0x4404,
    "VM_EXIT_INTR_ERROR_CODE": 0x4406,
    "IDT_VECTORING_INFO_FIELD": 0x4408,
    "IDT_VECTORING_ERROR_CODE": 0x440a,
    "VM_EXIT_INSTRUCTION_LEN": 0x440c,
    "VMX_INSTRUCTION_INFO": 0x440e,
    "EXIT_QUALIFICATION": 0x6400,
    "IO_RCX": 0x6402,
    "IO_RSI": 0x6404,
    "IO_RDI": 0x6406,
    "IO_RIP": 0x6408,
    "GUEST_LINEAR_ADDRESS": 0x640a,
    # guest-state
    "GUEST_ES_SELECTOR": 0x0800,
    "GUEST_CS_SELECTOR": 0x0802,
    "GUEST_SS_SELECTOR": 0x0804,
    "GUEST_DS_SELECTOR": 0x0806,
    "GUEST_FS_SELECTOR": 0x0808,
    "GUEST_GS_SELECTOR": 0x080a,
    "GUEST_LDTR_SELECTOR": 0x080c,
    "GUEST_TR_SELECTOR": 0x080e,
    "GUEST_INTR_STATUS": 0x0810,
    "GUEST_PML_INDEX": 0x0812,
    "VMCS_LINK_POINTER": 0x2800,
    "GUEST_IA32_DEBUGCTL": 0x2802,
    "GUEST_IA32_PAT": 0x2804,
    "GUEST_IA32_EFER": 0x2806,
    "GUEST_IA32_PERF_GLOBAL_CTRL": 0x2808,
    "GUEST_PDPTE0": 0x280a,
    "GUEST_PDPTE1": 0x280c,
    "GUEST_PDPTE2": 0x280e,
    "GUEST_PDPTE3": 0x2810,
    "GUEST_IA32_BNDCFGS": 0x2812,
    "GUEST_ES_LIMIT": 0x4800,
    "GUEST_CS_LIMIT": 0x4802,
    "GUEST_SS_LIMIT": 0x4804,
    "GUEST_DS_LIMIT": 0x4806,
    "GUEST_FS_LIMIT": 0x4808,
    "GUEST_GS_LIMIT": 0x480a,
    "GUEST_LDTR_LIMIT": 0x480c,
    "GUEST_TR_LIMIT": 0x480e,
    "GUEST_GDTR_LIMIT": 0x4810,
    "GUEST_IDTR_LIMIT": 0x4812,
    "GUEST_ES_AR_BYTES": 0x4814,
    "GUEST_CS_AR_BYTES": 0x4816,
    "GUEST_SS_AR_BYTES": 0x4818,
    "GUEST_DS_AR_BYTES": 0x481a,
    "GUEST_FS_AR_BYTES": 0x481c,
    "GUEST_GS_AR_BYTES": 0x481e,
    "GUEST_LDTR_AR_BYTES": 0x4820,
    "GUEST_TR_AR_BYTES": 0x4822,
    "GUEST_INTERRUPTIBILITY_INFO": 0x4824,
    "GUEST_ACTIVITY_STATE": 0x4826,
    "GUEST_SMBASE": 0x4828,
    "GUEST_SYSENTER_CS": 0x482a,
    "VMX_PREEMPTION_TIMER_VALUE": 0x482e,
    "GUEST_CR0": 0x6800,
    "GUEST_CR3": 0x6802,
    "GUEST_CR4": 0x6804,
    "GUEST_ES_BASE": 0x6806,
    "GUEST_CS_BASE": 0x6808,
    "GUEST_SS_BASE": 0x680a,
    "GUEST_DS_BASE": 0x680c,
    "GUEST_FS_BASE": 0x680e,
    "GUEST_GS_BASE": 0x6810,
    "GUEST_LDTR_BASE": 0x6812,
    "GUEST_TR_BASE": 0x6814,
    "GUEST_GDTR_BASE": 0x6816,
    "GUEST_IDTR_BASE": 0x6818,
    "GUEST_DR7": 0x681a,
    "GUEST_RSP": 0x681c,
    "GUEST_RIP": 0x681e,
    "GUEST_RFLAGS": 0x6820,
    "GUEST_PENDING_DBG_EXCEPTIONS": 0x6822,
    "GUEST_SYSENTER_ESP": 0x6824,
    "GUEST_SYSENTER_EIP": 0x6826,
    "GUEST_S_CET": 0x6828,
    # host-state
    "HOST_ES_SELECTOR": 0x0c00,
    "HOST_CS_SELECTOR": 0x0c02,
    "HOST_SS_SELECTOR": 0x0c04,
    "HOST_DS_SELECTOR": 0x0c06,
    "HOST_FS_SELECTOR": 0x0c08,
    "HOST_GS_SELECTOR": 0x0c0a,
    "HOST_TR_SELECTOR": 0x0c0c,
    "HOST_IA32_PAT": 0x2c00,
    "HOST_IA32_EFER": 0x2c02,
    "HOST_IA32_PERF_GLOBAL_CTRL": 0x2c04,
    "HOST_IA32_SYSENTER_CS": 0x4c00,
    "HOST_CR0": 0x6c00,
    "HOST_CR3": 0x6c02,
    "HOST_CR4": 0x6c04,
    "HOST_FS_BASE": 0x6c06,
    "HOST_GS_BASE": 0x6c08,
    "HOST_TR_BASE": 0x6c0a,
    "HOST_GDTR_BASE": 0x6c0c,
    "HOST_IDTR_BASE": 0x6c0e,
    "HOST_IA32_SYSENTER_ESP": 0x6c10,
    "HOST_IA32_SYSENTER_EIP": 0x6c12,
    "HOST_RSP": 0x6c14,
    "HOST_RIP": 0x6c16,
    "HOST_S_CET": 0x6c18,
}
"""Every field the emulated VMCS holds, name -> encoding."""

NAMES: dict[int, str] = {enc: name for name, enc in FIELDS.items()}


def width(encoding: int) -> Width:
    """The width an encoding declares."""
    return Width((encoding >> 13) & 3)


def group(encoding: int) -> Group:
    """The group (field type) an encoding declares."""
    return Group((encoding >> 10) & 3)


def mask(encoding: int) -> int:
    """The value mask of a field: natural width is 64 bits on a 64-bit CPU."""
    return {Width.W16: 0xFFFF, Width.W32: 0xFFFF_FFFF}.get(width(encoding), (1 << 64) - 1)
