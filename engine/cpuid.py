"""What CPUID tells the guest: the vendor's identity, the features the emulated CPU has,
and vmmtui's hypervisor leaves.

- Leaf 0 / 0x80000000: "GenuineIntel" or "AuthenticAMD", per the run's vendor.
- Leaf 1: family/model of a plain 64-bit CPU, the initial APIC ID, ECX bit 31
  (hypervisor present) set, VMX (ECX bit 5) clear: no nesting.
- 0x80000001: LM, NX, SYSCALL; SVM (ECX bit 2) clear.
- 0x40000000: EAX = 0x40000001 (the last hypervisor leaf), EBX:ECX:EDX = "vmmtuivmmtui".
- 0x40000001: EAX = the hypercall ABI version (1).
- Any other leaf returns zeros.
"""

from __future__ import annotations

HYPERVISOR_SIGNATURE = b"vmmtuivmmtui"
HYPERCALL_ABI_VERSION = 1
MAX_BASIC_LEAF = 0x7
MAX_EXTENDED_LEAF = 0x8000_0008
MAX_HYPERVISOR_LEAF = 0x4000_0001

_VENDORS = {"intel": b"GenuineIntel", "amd": b"AuthenticAMD"}
# Leaf 1 EDX: FPU, PSE, TSC, MSR, PAE, CX8, APIC, SEP, PGE, CMOV, PAT, MMX, FXSR, SSE, SSE2.
_LEAF1_EDX = sum(1 << b for b in (0, 3, 4, 5, 6, 8, 9, 11, 13, 15, 16, 23, 24, 25, 26))
_LEAF1_ECX = (1 << 0) | (1 << 31)  # SSE3, hypervisor present
_SIGNATURE = {"intel": 0x0003_06A9, "amd": 0x0080_0F12}  # family 6 / family 0x17
# 0x80000001 EDX: SYSCALL (11), NX (20), LM (29); ECX: LAHF/SAHF in long mode (0).
_EXT1_EDX = (1 << 11) | (1 << 20) | (1 << 29)
_EXT1_ECX = 1 << 0


def _regs(text: bytes) -> tuple[int, int, int]:
    """Twelve bytes as the (EBX, EDX, ECX) order vendor strings use."""
    return (int.from_bytes(text[0:4], "little"), int.from_bytes(text[4:8], "little"),
            int.from_bytes(text[8:12], "little"))


def _brand(vendor: str) -> bytes:
    name = "vmmtui virtual CPU (Intel VT-x)" if vendor == "intel" else "vmmtui virtual CPU (AMD-V)"
    return name.encode().ljust(48, b"\0")


def cpuid(vendor: str, leaf: int, subleaf: int, apic_id: int = 0, vcpus: int = 1) -> tuple[int, int, int, int]:
    """(EAX, EBX, ECX, EDX) for CPUID `leaf`/`subleaf` on a vCPU of this machine."""
    leaf &= 0xFFFF_FFFF
    if leaf == 0:
        b, d, c = _regs(_VENDORS[vendor])
        return MAX_BASIC_LEAF, b, c, d
    if leaf == 1:
        ebx = (apic_id << 24) | (vcpus << 16) | (8 << 8)  # CLFLUSH line = 8 x 8 bytes
        edx = _LEAF1_EDX | ((1 << 28) if vcpus > 1 else 0)  # HTT when more than one
        return _SIGNATURE[vendor], ebx, _LEAF1_ECX, edx
    if leaf == 0x4000_0000:
        b, c, d = (int.from_bytes(HYPERVISOR_SIGNATURE[i : i + 4], "little") for i in (0, 4, 8))
        return MAX_HYPERVISOR_LEAF, b, c, d
    if leaf == 0x4000_0001:
        return HYPERCALL_ABI_VERSION, 0, 0, 0
    if leaf == 0x8000_0000:
        if vendor == "amd":
            b, d, c = _regs(_VENDORS[vendor])
            return MAX_EXTENDED_LEAF, b, c, d
        return MAX_EXTENDED_LEAF, 0, 0, 0
    if leaf == 0x8000_0001:
        return (_SIGNATURE[vendor] if vendor == "amd" else 0), 0, _EXT1_ECX, _EXT1_EDX
    if 0x8000_0002 <= leaf <= 0x8000_0004:
        chunk = _brand(vendor)[(leaf - 0x8000_0002) * 16 :][:16]
        return tuple(int.from_bytes(chunk[i : i + 4], "little") for i in range(0, 16, 4))  # type: ignore[return-value]
    if leaf == 0x8000_0008:
        return 0x3024, 0, 0, 0  # 36 physical, 48 linear address bits
    return 0, 0, 0, 0
