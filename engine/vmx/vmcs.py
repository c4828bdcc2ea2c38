"""The VMCS: fields addressed by encoding, as VMREAD and VMWRITE address them.

Its in-memory layout is opaque on real hardware (SDM Vol. 3 "Format of the VMCS
Region": only the revision identifier and abort indicator have fixed offsets), so
the emulated VMCS keeps values by encoding. The region itself is still a frame in
host memory (VMCLEAR / VMPTRLD name it), holding the revision identifier.

The exit-information fields and the guest-state area are filled at every VM
exit. To keep exits cheap, the "hardware" hands the VMCS functions that produce
them (over the register snapshot taken at the exit) and the fields are
materialised the first time anything reads the VMCS; no reader can tell the
difference.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import VmxInstructionError
from .fields import FIELDS, NAMES, Group, group, mask

#: VMCS revision identifier written at the start of the VMCS and VMXON regions.
REVISION_ID = 0x1

# VM-instruction error numbers (SDM Vol. 3 "VM Instruction Error Numbers").
ERR_UNSUPPORTED_COMPONENT = 12
ERR_READ_ONLY_COMPONENT = 13


class Vmcs:
    """One VMCS: its region's host-physical address and its fields by encoding."""

    def __init__(self, region_hpa: int) -> None:
        self.region_hpa = region_hpa
        self._values: dict[int, int] = dict.fromkeys(FIELDS.values(), 0)
        # Set by the processor at a VM exit: produces the exit-information fields and
        # the saved guest state, the first time anything reads the VMCS.
        self.pending_exit: Callable[[], dict[int, int]] | None = None
        self.launched = False

    def vmread(self, encoding: int) -> int:
        """A field's value (VMREAD); unsupported encodings fail as hardware does."""
        if encoding not in self._values:
            raise VmxInstructionError(ERR_UNSUPPORTED_COMPONENT,
                                      f"VMREAD of unsupported VMCS component {encoding:#06x}")
        if self.pending_exit is not None:
            self._materialise()
        return self._values[encoding]

    def vmwrite(self, encoding: int, value: int) -> None:
        """Store a field (VMWRITE); exit-information fields are read-only to software."""
        if encoding not in self._values:
            raise VmxInstructionError(ERR_UNSUPPORTED_COMPONENT,
                                      f"VMWRITE of unsupported VMCS component {encoding:#06x}")
        if group(encoding) == Group.EXIT_INFORMATION:
            raise VmxInstructionError(ERR_READ_ONLY_COMPONENT,
                                      f"VMWRITE to read-only VMCS component {NAMES[encoding]}")
        if self.pending_exit is not None:
            self._materialise()
        self._values[encoding] = value & mask(encoding)

    def read(self, name: str) -> int:
        """A field by its refdata name."""
        return self.vmread(FIELDS[name])

    def write(self, name: str, value: int) -> None:
        """VMWRITE a field by its refdata name."""
        self.vmwrite(FIELDS[name], value)

    def fields(self) -> list[tuple[str, int, int]]:
        """(name, encoding, value) for every field, grouped as the SDM groups them."""
        if self.pending_exit is not None:
            self._materialise()
        order = sorted(self._values, key=lambda e: (group(e), e))
        return [(NAMES[e], e, self._values[e]) for e in order]

    def _materialise(self) -> None:
        produce, self.pending_exit = self.pending_exit, None
        assert produce is not None
        self._values.update(produce())
