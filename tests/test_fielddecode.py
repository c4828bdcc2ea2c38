"""engine.fielddecode: one VMCS / VMCB field value in words, exact strings.

Raw values are written out as numbers and, where an engine encoder builds them,
checked against that encoder too, so a test fails if either side drifts.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fielddecode import access_rights, describe_field, describe_fields, field_bits
from engine.svm import exits as S
from engine.svm.vmcb import CONTROL, SAVE
from engine.vmx import exits as X
from engine.vmx.controls import PrimaryProcBased as P
from engine.vmx.fields import FIELDS


def intel(name, value, **context):
    return describe_field("intel", name, value, context=context)


def amd(name, value, **context):
    return describe_field("amd", name, value, context=context)


# --- Intel: exit information -------------------------------------------------------


def test_exit_reason_names_every_refdata_reason(vmx_exit_reasons_ref):
    for number, name in vmx_exit_reasons_ref.items():
        assert intel("VM_EXIT_REASON", number) == f"{number} {name}"


@pytest.mark.parametrize("value, text", [
    (10, "10 CPUID"),
    (30, "30 IO_INSTRUCTION"),
    (0x8000_0021, "33 INVALID_GUEST_STATE (VM-entry failure)"),
    (0x8000_0022, "34 MSR_LOAD_FAIL (VM-entry failure)"),
    (0xFFFF, "65535 UNKNOWN_65535"),
])
def test_exit_reason(value, text):
    assert intel("VM_EXIT_REASON", value) == text


@pytest.mark.parametrize("q, text", [
    (0x03F8_0000, "port 0x3f8 out 1 byte dx"),
    (0x03FD_0008, "port 0x3fd in 1 byte dx"),
    (0x0060_0049, "port 0x60 in 2 bytes imm"),
    (0x0060_007B, "port 0x60 in 4 bytes imm string rep"),
    (0x03F8_0030, "port 0x3f8 out 1 byte dx string rep"),
])
def test_io_qualification(q, text):
    assert intel("EXIT_QUALIFICATION", q, VM_EXIT_REASON=30) == text


def test_io_qualification_matches_the_encoder():
    assert X.io_qualification(port=0x3F8, size=1, is_in=False) == 0x03F8_0000
    assert X.io_qualification(port=0x60, size=2, is_in=True, imm=True) == 0x0060_0049
    assert X.io_qualification(port=0x60, size=4, is_in=True, string=True, rep=True, imm=True) == 0x0060_007B


@pytest.mark.parametrize("q, text", [
    (0x103, "mov to cr3 from rcx"),
    (0x313, "mov from cr3 to rbx"),
    (0xF04, "mov to cr4 from r15"),
    (0x020, "clts"),
    (0x1_0070, "lmsw 0x1 (memory)"),
    (0xFFFF_0030, "lmsw 0xffff (register)"),
])
def test_cr_access_qualification(q, text):
    assert intel("EXIT_QUALIFICATION", q, VM_EXIT_REASON=28) == text


def test_cr_access_qualification_matches_the_encoder():
    assert X.cr_qualification(cr=3, access=X.MOV_TO_CR, gpr=1) == 0x103
    assert X.cr_qualification(cr=3, access=X.MOV_FROM_CR, gpr=3) == 0x313
    assert X.cr_qualification(cr=0, access=X.LMSW, lmsw_memory=True, lmsw_data=1) == 0x1_0070


@pytest.mark.parametrize("q, gpa, text", [
    (0x182, 0xB8000, "write gpa 0xb8000, EPT allowed ---, linear translated"),
    (0x18B, 0xB8000, "read+write gpa 0xb8000, EPT allowed r--, linear translated"),
    (0x08C, 0x1000, "fetch gpa 0x1000, EPT allowed r--, guest paging-structure access"),
    (0x1039, 0xFEE00000, "read gpa 0xfee00000, EPT allowed rwx, no linear address, NMI unblocking"),
])
def test_ept_violation_qualification(q, gpa, text):
    assert intel("EXIT_QUALIFICATION", q, VM_EXIT_REASON=48, GUEST_PHYSICAL_ADDRESS=gpa) == text


def test_ept_violation_without_the_gpa_and_the_encoder():
    assert intel("EXIT_QUALIFICATION", 0x182, VM_EXIT_REASON=48) == "write, EPT allowed ---, linear translated"
    q = X.ept_violation_qualification(read=False, write=True, fetch=False, readable=False, writable=False,
                                      executable=False)
    assert q == 0x182


def test_other_qualifications():
    assert intel("EXIT_QUALIFICATION", 0xFFFF_8000_0000_1000, VM_EXIT_REASON=14) == "linear 0xffff800000001000"
    assert intel("EXIT_QUALIFICATION", 0x1234, VM_EXIT_REASON=0, VM_EXIT_INTR_INFO=0x8000_0B0E) == "#PF linear 0x1234"
    # no qualification for CPUID, or for an exception other than #PF, or without the reason
    assert intel("EXIT_QUALIFICATION", 0, VM_EXIT_REASON=10) is None
    assert intel("EXIT_QUALIFICATION", 0, VM_EXIT_REASON=0, VM_EXIT_INTR_INFO=0x8000_0306) is None
    assert describe_field("intel", "EXIT_QUALIFICATION", 0x03F8_0000) is None


@pytest.mark.parametrize("value, context, text", [
    (0x8000_0B0E, {"VM_EXIT_INTR_ERROR_CODE": 2}, "#PF (vector 14) hardware-exception error code 0x2"),
    (0x8000_0B0E, {}, "#PF (vector 14) hardware-exception error code"),
    (0x8000_0B0D, {"VM_EXIT_INTR_ERROR_CODE": 0x18}, "#GP (vector 13) hardware-exception error code 0x18"),
    (0x8000_0306, {}, "#UD (vector 6) hardware-exception"),
    (0x8000_0202, {}, "NMI"),
    (0x8000_0020, {}, "vector 0x20 external-interrupt"),
    (0x8000_0480, {}, "int 0x80 software-interrupt"),
    (0x8000_0603, {}, "#BP (vector 3) software-exception"),
    (0x8000_0501, {}, "#DB (vector 1) privileged-software-exception"),
    (0x8000_1306, {}, "#UD (vector 6) hardware-exception NMI unblocking"),
    (0x0000_0306, {}, "#UD (vector 6) hardware-exception (not valid)"),
    (0x8000_0120, {}, "vector 0x20 reserved-1"),
    (0, {}, None),
])
def test_exit_interruption_info(value, context, text):
    assert describe_field("intel", "VM_EXIT_INTR_INFO", value, context=context) == text


def test_interruption_info_matches_the_encoder_and_each_field_uses_its_error_code():
    assert X.interruption_info(vector=14, type=X.InterruptionType.HARDWARE_EXCEPTION,
                               error_code_valid=True) == 0x8000_0B0E
    assert intel("IDT_VECTORING_INFO_FIELD", 0x8000_0B0E, IDT_VECTORING_ERROR_CODE=4,
                 VM_EXIT_INTR_ERROR_CODE=9) == "#PF (vector 14) hardware-exception error code 0x4"
    assert intel("VM_ENTRY_INTR_INFO_FIELD", 0x8000_0B0D, VM_ENTRY_EXCEPTION_ERROR_CODE=0) == \
        "#GP (vector 13) hardware-exception error code 0x0"


# --- Intel: controls ---------------------------------------------------------------------


def test_primary_controls_as_the_engine_sets_them():
    value = int(P.HLT_EXITING | P.INVLPG_EXITING | P.RDTSC_EXITING | P.CR3_LOAD_EXITING | P.CR3_STORE_EXITING
                | P.USE_IO_BITMAPS | P.USE_MSR_BITMAPS | P.ACTIVATE_SECONDARY_CONTROLS)
    assert value == 0x9201_9280  # bits 7 9 12 15 16 25 28 31
    assert intel("CPU_BASED_VM_EXEC_CONTROL", 0x9201_9280) == (
        "HLT_EXITING INVLPG_EXITING RDTSC_EXITING CR3_LOAD_EXITING CR3_STORE_EXITING USE_IO_BITMAPS "
        "USE_MSR_BITMAPS ACTIVATE_SECONDARY_CONTROLS")


@pytest.mark.parametrize("name, value, text", [
    # bits 1, 4-6, 8, 13, 14, 26 are reserved ("default1" on real processors)
    ("CPU_BASED_VM_EXEC_CONTROL", 0x0400_6172, "bit1 bit4 bit5 bit6 bit8 bit13 bit14 bit26"),
    ("CPU_BASED_VM_EXEC_CONTROL", 0x0100_0004, "INTERRUPT_WINDOW_EXITING UNCONDITIONAL_IO_EXITING"),
    ("PIN_BASED_VM_EXEC_CONTROL", 0x29, "EXTERNAL_INTERRUPT_EXITING NMI_EXITING VIRTUAL_NMIS"),
    ("SECONDARY_VM_EXEC_CONTROL", 0x82, "ENABLE_EPT UNRESTRICTED_GUEST"),
    ("SECONDARY_VM_EXEC_CONTROL", 0x21, "VIRTUALIZE_APIC_ACCESSES ENABLE_VPID"),
    ("VM_EXIT_CONTROLS", 0x30_0200, "HOST_ADDRESS_SPACE_SIZE SAVE_IA32_EFER LOAD_IA32_EFER"),
    ("VM_EXIT_CONTROLS", 0x8000, "ACK_INTERRUPT_ON_EXIT"),
    ("VM_ENTRY_CONTROLS", 0x8200, "IA32E_MODE_GUEST LOAD_IA32_EFER"),
    ("VM_ENTRY_CONTROLS", 0, None),
])
def test_control_fields(name, value, text):
    assert intel(name, value) == text


@pytest.mark.parametrize("value, text", [
    ((1 << 6) | (1 << 13) | (1 << 14), "#UD #GP #PF"),
    (0x6040, "#UD #GP #PF"),
    (0x0000_0003, "#DE #DB"),
    (0x0010_8000, "#15 #VE"),
    (0xFFFF_FFFF, "all 32 vectors"),
    (0, None),
])
def test_exception_bitmap(value, text):
    assert intel("EXCEPTION_BITMAP", value) == text


@pytest.mark.parametrize("value, text", [
    (0x101E, "WB, 4-level walk, PML4 at HPA 0x1000"),
    (0x205E, "WB, 4-level walk, PML4 at HPA 0x2000, A/D flags on"),
    (0x3018, "UC, 4-level walk, PML4 at HPA 0x3000"),
    (0x4020, "UC, 5-level walk, PML4 at HPA 0x4000"),
    (0x101D, "memtype 5, 4-level walk, PML4 at HPA 0x1000"),
    (0, None),
])
def test_ept_pointer(value, text):
    assert intel("EPT_POINTER", value) == text


# --- Intel: guest state ------------------------------------------------------------------


@pytest.mark.parametrize("name, value, text", [
    ("GUEST_CR0", 0x10, "ET"),
    ("GUEST_CR0", 0x8001_0033, "PE MP ET NE WP PG"),
    ("GUEST_CR0", 0x6000_0010, "ET NW CD"),
    ("GUEST_CR0", 0, None),
    ("HOST_CR0", 0x8005_0033, "PE MP ET NE WP AM PG"),
    ("CR0_READ_SHADOW", 0x11, "PE ET"),
    ("CR0_GUEST_HOST_MASK", (1 << 64) - 1, "all bits host-owned"),
    ("CR0_GUEST_HOST_MASK", 0x8000_0001, "PE PG"),
    ("GUEST_CR4", 0x20, "PAE"),
    ("GUEST_CR4", 0x2030, "PSE PAE VMXE"),
    ("GUEST_CR4", 0x1000, "LA57"),
    ("CR4_GUEST_HOST_MASK", (1 << 64) - 1, "all bits host-owned"),
    ("GUEST_IA32_EFER", 0xD01, "SCE LME LMA NXE"),
    ("HOST_IA32_EFER", 0x500, "LME LMA"),
    ("GUEST_IA32_EFER", 0, None),
    ("GUEST_RFLAGS", 0x2, None),
    ("GUEST_RFLAGS", 0x46, "PF ZF"),
    ("GUEST_RFLAGS", 0x246, "PF ZF IF"),
    ("GUEST_RFLAGS", 0x3202, "IF IOPL=3"),
    ("GUEST_RFLAGS", 0x2_0002, "VM"),
    ("GUEST_RFLAGS", 0x1_0D03, "CF TF DF OF RF"),
    ("GUEST_ACTIVITY_STATE", 0, "active"),
    ("GUEST_ACTIVITY_STATE", 1, "HLT"),
    ("GUEST_ACTIVITY_STATE", 2, "shutdown"),
    ("GUEST_ACTIVITY_STATE", 3, "wait-for-SIPI"),
    ("GUEST_ACTIVITY_STATE", 7, "reserved state 7"),
    ("GUEST_INTERRUPTIBILITY_INFO", 0x1, "blocking by STI"),
    ("GUEST_INTERRUPTIBILITY_INFO", 0xA, "blocking by MOV SS, blocking by NMI"),
    ("VMCS_LINK_POINTER", (1 << 64) - 1, "none (all ones)"),
])
def test_guest_state_fields(name, value, text):
    assert intel(name, value) == text


@pytest.mark.parametrize("ar, text", [
    (0x9B, "code exec/read accessed; S DPL=0 P"),
    (0x93, "data read/write accessed; S DPL=0 P"),
    (0xA09B, "code exec/read accessed; S DPL=0 P L G"),
    (0xC093, "data read/write accessed; S DPL=0 P DB G"),
    (0x10F3, "data read/write accessed; S DPL=3 P AVL"),
    (0xFB, "code exec/read accessed; S DPL=3 P"),
    (0x9F, "code exec/read conforming accessed; S DPL=0 P"),
    (0x98, "code exec-only; S DPL=0 P"),
    (0x97, "data read/write expand-down accessed; S DPL=0 P"),
    (0x91, "data read-only accessed; S DPL=0 P"),
    (0x8B, "TSS (busy); DPL=0 P"),
    (0x89, "TSS (available); DPL=0 P"),
    (0x83, "16-bit TSS (busy); DPL=0 P"),
    (0x82, "LDT; DPL=0 P"),
    (0x80, "reserved system type 0x0; DPL=0 P"),
    (0x1_0000, "unusable"),
    (0x1_0093, "unusable (data read/write accessed; S DPL=0 P)"),
    (0, None),
])
def test_access_rights(ar, text):
    assert access_rights(ar) == text
    for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR"):
        assert intel(f"GUEST_{seg}_AR_BYTES", ar) == text


def test_fields_without_a_decoding():
    for name in ("GUEST_RIP", "GUEST_RSP", "IO_BITMAP_A", "VM_EXIT_INSTRUCTION_LEN", "GUEST_CS_BASE",
                 "GUEST_PHYSICAL_ADDRESS", "HOST_RIP", "NO_SUCH_FIELD"):
        assert intel(name, 0x7E09) is None


def test_unknown_vendor():
    with pytest.raises(ValueError, match="unknown vendor"):
        describe_field("via", "VM_EXIT_REASON", 10)
    with pytest.raises(ValueError, match="unknown vendor"):
        field_bits("via", "VM_EXIT_REASON")


# --- AMD ---------------------------------------------------------------------------------


def test_exitcode_names_every_refdata_code(svm_exit_codes_ref):
    for code, name in svm_exit_codes_ref.items():
        if code < 0 or code == (1 << 64) - 1 or name.startswith("EXCP_"):
            continue
        assert amd("EXITCODE", code) == name


@pytest.mark.parametrize("code, text", [
    (0x72, "CPUID"),
    (0x7B, "IOIO"),
    (0x7C, "MSR"),
    (0x400, "NPF"),
    (0x13, "WRITE_CR3"),
    (0x01, "READ_CR1"),
    (0x4E, "EXCP_14 (#PF)"),
    (0x4D, "EXCP_13 (#GP)"),
    (0x42, "EXCP_2 (NMI)"),
    ((1 << 64) - 1, "VMEXIT_INVALID"),
    (0x999, "UNKNOWN_0x999"),
])
def test_exitcode(code, text):
    assert amd("EXITCODE", code) == text


@pytest.mark.parametrize("info1, text", [
    (0x03F8_0090, "port 0x3f8 out 1 byte a16"),
    (0x03FD_0091, "port 0x3fd in 1 byte a16"),
    (0x0060_0121, "port 0x60 in 2 bytes a32"),
    (0x03F8_0D1C, "port 0x3f8 out 1 byte a32 string rep ds"),
    (0x0080_0245, "port 0x80 in 4 bytes a64 string es"),
])
def test_ioio_exitinfo1(info1, text):
    assert amd("EXITINFO1", info1, EXITCODE=0x7B) == text


def test_ioio_exitinfo1_matches_the_encoder_and_exitinfo2_is_the_next_rip():
    assert S.ioio_exitinfo1(port=0x3F8, size=1, is_in=False, segment=0) == 0x03F8_0090
    assert S.ioio_exitinfo1(port=0x3F8, size=1, is_in=False, string=True, rep=True, addr_size=32,
                            segment=3) == 0x03F8_0D1C
    assert S.ioio_exitinfo1(port=0x80, size=4, is_in=True, string=True, addr_size=64, segment=0) == 0x0080_0245
    assert amd("EXITINFO2", 0x7C8D, EXITCODE=0x7B) == "next RIP 0x7c8d"


@pytest.mark.parametrize("info1, text", [
    (0x1_0000_0006, "not-present write user, final GPA"),
    (0x1_0000_0015, "present fetch user, final GPA"),
    (0x2_0000_0004, "not-present read user, during guest page-table walk"),
    (0x1_0000_000D, "present read user reserved-bit, final GPA"),
])
def test_npf_exitinfo1(info1, text):
    assert amd("EXITINFO1", info1, EXITCODE=0x400) == text


def test_npf_matches_the_encoder_and_exitinfo2_is_the_gpa():
    assert S.npf_exitinfo1(present=False, write=True) == 0x1_0000_0006
    assert S.npf_exitinfo1(present=True, write=False, fetch=True) == 0x1_0000_0015
    assert amd("EXITINFO2", 0xB8000, EXITCODE=0x400) == "GPA 0xb8000"


@pytest.mark.parametrize("code, info1, text", [
    (0x7C, 0, "RDMSR"),
    (0x7C, 1, "WRMSR"),
    (0x13, (1 << 63) | 1, "mov to cr3 from rcx"),
    (0x03, (1 << 63) | 3, "mov from cr3 to rbx"),
    (0x10, 0, "write of cr0, not MOV CR (no decode assist)"),
    (0x79, 0xFFFF_8000_0000_1000, "linear 0xffff800000001000"),
    (0x4D, 0x10, "error code 0x10"),
    (0x4E, 0x2, "error code 0x2: not-present write supervisor"),
    (0x4E, 0x15, "error code 0x15: present fetch user"),
    (0x46, 0, None),
    (0x72, 0, None),
])
def test_exitinfo1_by_exitcode(code, info1, text):
    assert amd("EXITINFO1", info1, EXITCODE=code) == text


def test_exitinfo_without_the_exitcode_and_other_exitinfo2():
    assert describe_field("amd", "EXITINFO1", 0x03F8_0090) is None
    assert describe_field("amd", "EXITINFO2", 0x7C8D) is None
    assert amd("EXITINFO2", 0x1234, EXITCODE=0x4E) == "#PF linear 0x1234"
    assert amd("EXITINFO2", 0x1234, EXITCODE=0x72) is None
    assert S.cr_exitinfo1(gpr=1) == (1 << 63) | 1


@pytest.mark.parametrize("name, value, text", [
    ("INTERCEPT_CR", 0x0019_0008, "read CR3; write CR0 CR3 CR4"),
    ("INTERCEPT_CR", 0x0001_0000, "write CR0"),
    ("INTERCEPT_CR", 0x0000_0101, "read CR0 CR8"),
    ("INTERCEPT_CR", 0, None),
    ("INTERCEPT_DR", 0x0080_0080, "read DR7; write DR7"),
    ("INTERCEPT_EXCEPTIONS", 1 << 14, "#PF"),
    ("INTERCEPT_EXCEPTIONS", 0x4042, "#DB #UD #PF"),
    ("INTERCEPT_MISC1", 0x9B04_4000, "RDTSC CPUID HLT INVLPG IOIO_PROT MSR_PROT SHUTDOWN"),
    ("INTERCEPT_MISC1", 0x0000_0003, "INTR NMI"),
    ("INTERCEPT_MISC2", 0x3, "VMRUN VMMCALL"),
    ("INTERCEPT_MISC2", 0x8080, "RDTSCP bit15"),
    ("NP_ENABLE", 1, "nested paging on"),
    ("NP_ENABLE", 0, "nested paging off"),
    ("NP_ENABLE", 0x3, "nested paging on, SEV"),
    ("TLB_CONTROL", 0, None),
    ("TLB_CONTROL", 1, "flush entire TLB"),
    ("TLB_CONTROL", 3, "flush this ASID"),
    ("CR0", 0x10, "ET"),
    ("CR0", 0x8000_0011, "PE ET PG"),
    ("CR4", 0x20, "PAE"),
    ("EFER", 0x1000, "SVME"),
    ("EFER", 0x1D00, "LME LMA NXE SVME"),
    ("RFLAGS", 0x46, "PF ZF"),
    ("RFLAGS", 0x2, None),
    ("CS_ATTRIB", 0x9B, "code exec/read accessed; S DPL=0 P"),
    ("CS_ATTRIB", 0xA9B, "code exec/read accessed; S DPL=0 P L G"),
    ("SS_ATTRIB", 0xC93, "data read/write accessed; S DPL=0 P DB G"),
    ("TR_ATTRIB", 0x8B, "TSS (busy); DPL=0 P"),
    ("LDTR_ATTRIB", 0x82, "LDT; DPL=0 P"),
    ("GDTR_ATTRIB", 0, None),
    ("RIP", 0x7E09, None),
    ("NEXT_RIP", 0x7E0B, None),
])
def test_vmcb_fields(name, value, text):
    assert amd(name, value) == text


@pytest.mark.parametrize("name, value, context, text", [
    ("EVENTINJ", 0x8000_0B0E, {"EVENTINJ_ERR": 2}, "#PF (vector 14) exception error code 0x2"),
    ("EVENTINJ", 0x8000_0B0E, {}, "#PF (vector 14) exception error code"),
    ("EVENTINJ", 0x8000_0020, {}, "vector 0x20 external-interrupt"),
    ("EVENTINJ", 0x8000_0480, {}, "int 0x80 software-interrupt"),
    ("EVENTINJ", 0x0000_0306, {}, "#UD (vector 6) exception (not valid)"),
    ("EVENTINJ", 0, {}, None),
    ("EXITINTINFO", 0x8000_0202, {}, "NMI"),
    ("EXITINTINFO", 0x8000_0B0D, {"EXITINTINFO_ERR": 0x18, "EVENTINJ_ERR": 1},
     "#GP (vector 13) exception error code 0x18"),
    # the 64-bit form, error code in bits 63:32
    ("EXITINTINFO", (5 << 32) | 0x8000_0B0E, {}, "#PF (vector 14) exception error code 0x5"),
])
def test_event_injection(name, value, context, text):
    assert describe_field("amd", name, value, context=context) == text


def test_event_injection_matches_the_encoder():
    assert S.eventinj(vector=14, type=S.EventType.EXCEPTION, error_code=2) == (2 << 32) | 0x8000_0B0E
    assert amd("EVENTINJ", S.eventinj(vector=14, type=S.EventType.EXCEPTION, error_code=2)) == \
        "#PF (vector 14) exception error code 0x2"


def test_guest_instruction_bytes():
    cpuid = int.from_bytes(b"\x0f\xa2", "little")
    assert amd("GUEST_INSN_BYTES", cpuid, GUEST_INSN_LEN=2) == "0f a2"
    assert amd("GUEST_INSN_BYTES", cpuid) is None


# --- helpers -----------------------------------------------------------------------------


def test_field_bits():
    assert field_bits("intel", "VM_EXIT_REASON") == 32
    assert field_bits("intel", "GUEST_CS_SELECTOR") == 16
    assert field_bits("intel", "EPT_POINTER") == 64
    assert field_bits("intel", "GUEST_RIP") == 64  # natural width
    assert field_bits("amd", "EXITCODE") == 64
    assert field_bits("amd", "CS_ATTRIB") == 16
    assert field_bits("amd", "TLB_CONTROL") == 8
    assert field_bits("amd", "NO_SUCH_FIELD") is None


def test_describe_fields_uses_the_whole_structure_as_context():
    values = {"VM_EXIT_REASON": 30, "EXIT_QUALIFICATION": 0x03F8_0000, "GUEST_RIP": 0x7E09, "GUEST_CR0": 0x10}
    assert describe_fields("intel", values) == {
        "VM_EXIT_REASON": "30 IO_INSTRUCTION", "EXIT_QUALIFICATION": "port 0x3f8 out 1 byte dx",
        "GUEST_CR0": "ET"}


_INTEL_NAMES = sorted(FIELDS)
_AMD_NAMES = sorted({**CONTROL, **SAVE})
_u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), value=_u64)
def test_no_value_makes_a_decoder_raise(data, value):
    vendor = data.draw(st.sampled_from(["intel", "amd"]))
    names = _INTEL_NAMES if vendor == "intel" else _AMD_NAMES
    name = data.draw(st.sampled_from(names))
    context = data.draw(st.dictionaries(st.sampled_from(names), _u64, max_size=8))
    text = describe_field(vendor, name, value, context=context)
    assert text is None or (isinstance(text, str) and text)
