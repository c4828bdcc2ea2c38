"""The run's exit controls by name, before each vendor turns them into its own bits.

`--exit NAME=on|off` sets one control. By default a run intercepts what a teaching
VMM would show (DESIGN.md, "Controls"): all port I/O, every RDMSR and WRMSR,
CPUID, HLT, INVLPG, CR3 loads and stores, CR0 and CR4 writes, RDTSC, VMCALL /
VMMCALL, and triple fault / shutdown; external interrupts (`extint`), the
interrupt window when the VMM has an interrupt the guest cannot take yet
(`intwin`) and INIT (`init`); not PAUSE (`pause`), not the VMX-preemption timer
(`preempt`, VT-x only) and no exception exits. Each
exception vector has its own control, named by its mnemonic (`ud`, `gp`, `pf`, ...).

Some exits are unconditional on VT-x (CPUID, VMCALL, triple fault: SDM Vol. 3
"Instructions That Cause VM Exits Unconditionally"; INIT: "Other Causes of VM
Exits"); turning those off under
`--vendor intel` is refused rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

INSTRUCTION_CONTROLS = ("io", "msr", "cpuid", "hlt", "invlpg", "rdtsc", "cr0", "cr3", "cr4", "hypercall",
                        "pause", "extint", "intwin", "init", "preempt")
#: Controls off unless asked for: PAUSE exiting is for spin-loop detection, which
#: a teaching VMM shows on demand.
OFF_BY_DEFAULT = frozenset({"pause", "preempt"})
#: Controls one vendor does not have.
INTEL_ONLY = frozenset({"preempt"})  # the VMX-preemption timer (SVM has none)
EXCEPTION_VECTORS = {
    "de": 0, "db": 1, "bp": 3, "of": 4, "br": 5, "ud": 6, "nm": 7, "df": 8, "ts": 10,
    "np": 11, "ss": 12, "gp": 13, "pf": 14, "mf": 16, "ac": 17, "mc": 18, "xm": 19,
}
EXCEPTION_NAMES = {v: k for k, v in EXCEPTION_VECTORS.items()}
UNCONDITIONAL_ON_INTEL = frozenset({"cpuid", "hypercall", "init"})


@dataclass
class Controls:
    """Which guest actions exit, by vendor-neutral name."""

    instructions: dict[str, bool] = field(
        default_factory=lambda: {name: name not in OFF_BY_DEFAULT for name in INSTRUCTION_CONTROLS})
    exceptions: set[int] = field(default_factory=set)

    def exits(self, name: str) -> bool:
        """Whether the named instruction control is on."""
        return self.instructions[name]

    def set(self, name: str, on: bool, vendor: str) -> None:
        """Turn one control on or off; raises ConfigError for an unknown or fixed one."""
        if name in self.instructions:
            if not on and vendor == "intel" and name in UNCONDITIONAL_ON_INTEL:
                raise ConfigError(f"--exit {name}=off: {name} exits unconditionally under VT-x")
            if on and vendor != "intel" and name in INTEL_ONLY:
                raise ConfigError(f"--exit {name}=on: AMD-V has no {name} control (VT-x only)")
            self.instructions[name] = on
        elif name in EXCEPTION_VECTORS:
            (self.exceptions.add if on else self.exceptions.discard)(EXCEPTION_VECTORS[name])
        else:
            known = ", ".join(list(INSTRUCTION_CONTROLS) + list(EXCEPTION_VECTORS))
            raise ConfigError(f"unknown exit control {name!r} (known: {known})")

    def apply(self, specs: list[str], vendor: str) -> None:
        """Apply `NAME=on|off` strings in order."""
        for spec in specs:
            name, sep, state = spec.partition("=")
            if not sep or state not in ("on", "off"):
                raise ConfigError(f"--exit takes NAME=on|off, not {spec!r}")
            self.set(name.strip().lower(), state == "on", vendor)

    def as_json(self) -> dict[str, object]:
        """The controls as the JSON output and traces record them."""
        return {**self.instructions,
                "exceptions": sorted(EXCEPTION_NAMES.get(v, str(v)) for v in self.exceptions)}
