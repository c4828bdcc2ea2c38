"""Exit filters: "which exits" in words, for breakpoints on exits and for the exit log.

    io port=0x3f8 dir=out       cpuid leaf=0x40000000      msr index=0xc0000080 write
    ept gpa=0x5000-0x6000       cr 3                       cr 0 write
    hlt   rdtsc   invlpg   hypercall   exception vector=6   vcpu=1 (with any kind)

A kind names the exit in vendor-neutral words (`ept` also matches AMD's NPF, `io`
Intel's IO_INSTRUCTION and AMD's IOIO); an architectural name (`IO_INSTRUCTION`,
`EXCP_14`) or number (`reason=30`) works too. A value is a number (decimal or
0x-hex) or an inclusive-exclusive range `A-B`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EngineError
from .exitlog import ExitEvent


class FilterError(EngineError):
    """An exit filter that cannot be parsed."""

    title = "bad exit filter"


_KIND_NAMES: dict[str, frozenset[str]] = {
    "io": frozenset({"IO_INSTRUCTION", "IOIO"}),
    "cpuid": frozenset({"CPUID"}),
    "msr": frozenset({"MSR_READ", "MSR_WRITE", "MSR"}),
    "ept": frozenset({"EPT_VIOLATION", "EPT_MISCONFIG", "NPF"}),
    "npf": frozenset({"EPT_VIOLATION", "EPT_MISCONFIG", "NPF"}),
    "hlt": frozenset({"HLT"}),
    "rdtsc": frozenset({"RDTSC"}),
    "invlpg": frozenset({"INVLPG"}),
    "hypercall": frozenset({"VMCALL", "VMMCALL"}),
    "shutdown": frozenset({"TRIPLE_FAULT", "SHUTDOWN"}),
}
_KEY_ALIASES = {"dir": "direction", "index": "msr", "addr": "gpa"}
_FLAGS = {"in", "out", "read", "write", "fetch", "string", "rep"}


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise FilterError(f"not a number: {text!r}") from None


@dataclass(frozen=True)
class Condition:
    """key = value, or key in [lo, hi)."""

    key: str
    lo: Any
    hi: Any = None

    def holds(self, value: Any) -> bool:
        if self.hi is not None:
            return isinstance(value, int) and self.lo <= value < self.hi
        return value == self.lo


@dataclass(frozen=True)
class ExitFilter:
    """A parsed filter; `matches(event)` says whether an exit passes it."""

    text: str
    kind: str | None = None
    cr: int | None = None
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    flags: frozenset[str] = frozenset()

    def matches(self, e: ExitEvent) -> bool:
        """Whether exit `e` passes the filter."""
        name = e.name
        if self.kind is not None:
            if self.kind == "exception":
                if not (name == "EXCEPTION_NMI" or name.startswith("EXCP_")):
                    return False
            elif self.kind == "cr":
                if not (name == "CR_ACCESS" or name.startswith(("READ_CR", "WRITE_CR"))):
                    return False
            elif self.kind in _KIND_NAMES:
                if name not in _KIND_NAMES[self.kind]:
                    return False
            elif name != self.kind.upper():
                return False
        q = e.qualification
        if self.cr is not None and q.get("cr") != self.cr:
            return False
        for flag in self.flags:
            if not self._flag(flag, e):
                return False
        for c in self.conditions:
            if c.key == "vcpu":
                value: Any = e.vcpu
            elif c.key == "reason":
                value = e.reason
            elif c.key == "rip":
                value = e.rip
            elif c.key == "seq":
                value = e.seq
            else:
                value = q.get(c.key)
            if not c.holds(value):
                return False
        return True

    @staticmethod
    def _flag(flag: str, e: ExitEvent) -> bool:
        q = e.qualification
        if flag in ("in", "out"):
            return q.get("direction") == flag
        if flag in ("read", "write"):
            if e.name in ("MSR_READ", "MSR_WRITE"):
                return e.name == f"MSR_{flag.upper()}"
            if e.name == "MSR":
                return q.get("write") == (flag == "write")
            if "access" in q:  # Intel CR access
                return (q["access"] == "mov-to-cr") == (flag == "write")
            if e.name.startswith(("READ_CR", "WRITE_CR")):
                return e.name.startswith(flag.upper())
            return bool(q.get(flag))
        return bool(q.get(flag))


def parse(text: str) -> ExitFilter:
    """Parse a filter such as "io port=0x3f8 dir=out"; raises FilterError."""
    words = text.split()
    if not words:
        raise FilterError("an exit filter needs a kind or a condition (for example: io port=0x3f8)")
    kind = None
    cr = None
    conditions: list[Condition] = []
    flags: set[str] = set()
    rest = words
    first = words[0].lower()
    if "=" not in first and first not in _FLAGS:
        kind = first
        rest = words[1:]
        if kind not in _KIND_NAMES and kind not in ("cr", "exception") and not words[0].isupper():
            known = ", ".join(sorted(_KIND_NAMES) + ["cr", "exception"])
            raise FilterError(f"unknown exit kind {words[0]!r} (known: {known}, or an architectural name)")
        if kind == "cr" and rest and rest[0].isdigit():
            cr = int(rest[0])
            rest = rest[1:]
    for word in rest:
        if "=" in word:
            key, _, value = word.partition("=")
            key = _KEY_ALIASES.get(key.lower(), key.lower())
            if key == "direction":
                if value not in ("in", "out"):
                    raise FilterError(f"dir is in or out, not {value!r}")
                conditions.append(Condition(key, value))
            elif "-" in value[1:]:
                lo, _, hi = value.partition("-")
                conditions.append(Condition(key, _number(lo), _number(hi)))
            else:
                conditions.append(Condition(key, _number(value)))
        elif word.lower() in _FLAGS:
            flags.add(word.lower())
        else:
            raise FilterError(f"don't know what {word!r} means in an exit filter (use key=value or a flag)")
    return ExitFilter(text, kind, cr, tuple(conditions), frozenset(flags))
