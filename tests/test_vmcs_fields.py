"""Every VMCS encoding the engine uses, checked against refdata (SDM Appendix B)."""

from engine.vmx import fields
from engine.vmx.fields import Group, Width

GROUPS = {"control": Group.CONTROL, "exit-information": Group.EXIT_INFORMATION,
          "guest-state": Group.GUEST_STATE, "host-state": Group.HOST_STATE}
WIDTHS = {"16": Width.W16, "32": Width.W32, "64": Width.W64, "natural": Width.NATURAL}


def test_every_field_matches_refdata(vmcs_fields_ref):
    ref = {r["name"]: r for r in vmcs_fields_ref}
    assert set(fields.FIELDS) == set(ref)
    for name, enc in fields.FIELDS.items():
        r = ref[name]
        assert enc == int(r["encoding"], 16), name
        assert fields.width(enc) == WIDTHS[r["width"]], name
        assert fields.group(enc) == GROUPS[r["group"]], name


def test_masks_follow_width():
    assert fields.mask(fields.FIELDS["GUEST_CS_SELECTOR"]) == 0xFFFF
    assert fields.mask(fields.FIELDS["VM_EXIT_REASON"]) == 0xFFFF_FFFF
    assert fields.mask(fields.FIELDS["EPT_POINTER"]) == (1 << 64) - 1
    assert fields.mask(fields.FIELDS["GUEST_RIP"]) == (1 << 64) - 1
