"""Canary frames: proof that a guest changed no host memory outside its own frames.

`GuardedHostMemory` is a test-only subclass of `engine.hostmem.HostMemory` that
the child process puts in place of the real one (`install()`), before the
`Machine` is built. It changes nothing the engine sees except *where* frames
land:

- every 4 KiB frame (`alloc_frame`, growing up) gets a guard frame just below it;
- every run (`alloc_run`, growing down) gets at least one guard frame just above
  it, and the slack its alignment leaves between it and the allocation above is
  guard too;
- guards are filled with 0xA5; everything never handed out stays zero.

Each allocation is labelled by the engine module that asked for it (guest RAM from
`guestmem`, EPT / NPT tables from `slat`, bitmaps, VMCS / VMCB and VMXON / host-save
areas from `vmx` / `svm`, the reset trampoline's scratch frame from `loader`).

`check(machine)` at the end of a run returns the list of violations (empty = clean):

1. every guard byte is still 0xA5;
2. every byte between the allocator's two high-water marks is still zero;
3. every frame whose contents must not change during a run (the I/O and MSR
   bitmaps / IOPM / MSRPM, the VMXON region, the trampoline's scratch frame) is as
   it was when the run started (`snapshot()` after load);
4. every EPT / NPT leaf maps RAM (a guest-physical address that `GuestMemory.is_ram`
   accepts) to host memory inside a guest-RAM allocation, at the offset
   `GuestMemory.hpa` gives, and every table the tables point to is a table frame;
5. every range the engine exposed to Unicorn (`mem_map_ptr` through the map
   listener) lies inside a guest-RAM allocation;
6. the VMCS / VMCB fields that hold host-physical pointers and the controls (I/O and
   MSR bitmap addresses, EPTP / nCR3, the control words) are unchanged.

Guest writes can only reach host memory through (4) and (5), so together with the
guards around every frame this is the "no host memory outside the guest's frames
changes" property of issue 6, item 3.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from engine import hostmem as _hostmem
from engine.addresses import PAGE_SIZE

GUARD_BYTE = 0xA5
_GUARD_PAGE = bytes([GUARD_BYTE]) * PAGE_SIZE
_ZERO_CHUNK = bytes(1 << 20)
HOST_SCALE = 3  # the guarded host memory is this many times larger (address space only: it is lazy)

# Fields of the control structures that a guest must never be able to change.
INVARIANT_FIELDS = {
    "intel": ("IO_BITMAP_A", "IO_BITMAP_B", "MSR_BITMAP", "EPT_POINTER", "PIN_BASED_VM_EXEC_CONTROL",
              "CPU_BASED_VM_EXEC_CONTROL", "SECONDARY_VM_EXEC_CONTROL", "VM_EXIT_CONTROLS",
              "VM_ENTRY_CONTROLS", "EXCEPTION_BITMAP", "CR0_GUEST_HOST_MASK", "CR4_GUEST_HOST_MASK"),
    "amd": ("INTERCEPT_CR", "INTERCEPT_DR", "INTERCEPT_EXCEPTIONS", "INTERCEPT_MISC1", "INTERCEPT_MISC2",
            "INTERCEPT_MISC3", "IOPM_BASE_PA", "MSRPM_BASE_PA", "GUEST_ASID", "NP_ENABLE", "N_CR3"),
}

# Who asked for a frame, by the engine file that called the allocator.
_KINDS = (
    ("guestmem.py", "ram"),
    ("slat.py", "slat"),
    ("ept.py", "slat"),
    ("npt.py", "slat"),
    ("controls.py", "bitmap"),
    ("intercepts.py", "bitmap"),
    ("hardware.py", "control"),
    ("loader.py", "scratch"),
    ("vcpu.py", "scratch"),
)
# Allocations whose bytes must not change while the guest runs.
STABLE_KINDS = ("bitmap", "scratch")


@dataclass
class Allocation:
    hpa: int
    size: int
    kind: str
    who: str  # "file:function" of the engine code that asked


@dataclass
class _Ledger:
    allocations: list[Allocation] = field(default_factory=list)
    guards: list[tuple[int, int]] = field(default_factory=list)  # (hpa, size)
    mapped: list[tuple[int, int, int]] = field(default_factory=list)  # (gpa, size, hpa) given to Unicorn
    stable: dict[int, bytes] = field(default_factory=dict)  # hpa -> bytes at snapshot()
    fields: dict[str, int] = field(default_factory=dict)


def _caller() -> tuple[str, str]:
    """(kind, who) of the first engine frame above the allocator."""
    f = sys._getframe(2)
    while f is not None:
        path = f.f_code.co_filename.replace("\\", "/")
        if "/engine/" in path and not path.endswith("/hostmem.py"):
            name = path.rsplit("/", 1)[-1]
            who = f"{path.split('/engine/', 1)[1]}:{f.f_code.co_name}"
            for suffix, kind in _KINDS:
                if name == suffix:
                    return kind, who
            return "other", who
        f = f.f_back
    return "other", "?"


class GuardedHostMemory(_hostmem.HostMemory):
    """HostMemory with a guard frame next to every allocation (see the module doc)."""

    def __init__(self, size: int) -> None:
        super().__init__(size * HOST_SCALE)
        self.ledger = _Ledger()

    def _guard(self, hpa: int, size: int) -> None:
        if size <= 0:
            return
        self.view[hpa : hpa + size] = bytes([GUARD_BYTE]) * size
        self.ledger.guards.append((hpa, size))

    def alloc_frame(self):  # noqa: ANN201 - same signature as the base class
        guard = super().alloc_frame()
        self._guard(guard, PAGE_SIZE)
        hpa = super().alloc_frame()
        kind, who = _caller()
        self.ledger.allocations.append(Allocation(hpa, PAGE_SIZE, kind, who))
        return hpa

    def alloc_run(self, size: int, align: int = _hostmem.LARGE_PAGE_SIZE):  # noqa: ANN201
        top = self._next_large
        super().alloc_run(PAGE_SIZE, align=PAGE_SIZE)  # at least one guard frame above
        hpa = super().alloc_run(size, align)
        real = _hostmem.align_up(size, PAGE_SIZE)
        self._guard(hpa + real, top - (hpa + real))  # the guard plus the alignment slack
        kind, who = _caller()
        self.ledger.allocations.append(Allocation(hpa, real, kind, who))
        return hpa


@contextmanager
def install() -> Iterator[None]:
    """Build machines on GuardedHostMemory inside the block (child process only)."""
    import engine.machine as machine_mod

    saved = machine_mod.HostMemory
    machine_mod.HostMemory = GuardedHostMemory  # type: ignore[misc]
    try:
        yield
    finally:
        machine_mod.HostMemory = saved  # type: ignore[misc]


def watch(machine: Any) -> None:
    """Record every range the engine exposes to Unicorn (call right after Machine())."""
    host = machine.host
    assert isinstance(host, GuardedHostMemory), "build the machine inside canary.install()"
    inner = machine.mem._on_map

    def on_map(gpa: int, size: int, hpa: int) -> None:
        host.ledger.mapped.append((gpa, size, hpa))
        inner(gpa, size, hpa)

    machine.mem._on_map = on_map


def _fields(machine: Any) -> dict[str, int]:
    names = set(INVARIANT_FIELDS[machine.vendor])
    return {name: value for _area, name, _enc, value in machine.hw.structure_fields(0) if name in names}


def snapshot(machine: Any) -> None:
    """Remember what must not change from here on (call after load, before run)."""
    ledger: _Ledger = machine.host.ledger
    view = machine.host.view
    ledger.stable = {a.hpa: bytes(view[a.hpa : a.hpa + a.size]) for a in ledger.allocations
                     if a.kind in STABLE_KINDS}
    ledger.fields = _fields(machine)


def _within(ranges: list[tuple[int, int]], hpa: int, size: int) -> bool:
    return any(lo <= hpa and hpa + size <= lo + n for lo, n in ranges)


def check(machine: Any) -> list[str]:
    """Every violation of the canary properties, one line each (empty: clean)."""
    host: GuardedHostMemory = machine.host
    ledger = host.ledger
    view = host.view
    problems: list[str] = []
    by_hpa = {a.hpa: a for a in ledger.allocations}
    # 1. guards
    for hpa, size in ledger.guards:
        data = bytes(view[hpa : hpa + size])
        if data != bytes([GUARD_BYTE]) * size:
            bad = next(i for i, b in enumerate(data) if b != GUARD_BYTE)
            below = max((a for a in ledger.allocations if a.hpa < hpa + bad), key=lambda a: a.hpa, default=None)
            problems.append(f"guard {hpa:#x}+{size:#x} changed at {hpa + bad:#x} "
                            f"(byte {data[bad]:#04x}; nearest allocation below: "
                            f"{below.kind} {below.hpa:#x} from {below.who})" if below else
                            f"guard {hpa:#x}+{size:#x} changed at {hpa + bad:#x}")
    # 2. never-allocated memory
    lo, hi = host._next_small, host._next_large
    pos = lo
    while pos < hi:
        n = min(len(_ZERO_CHUNK), hi - pos)
        if bytes(view[pos : pos + n]) != _ZERO_CHUNK[:n]:
            chunk = bytes(view[pos : pos + n])
            bad = next(i for i, b in enumerate(chunk) if b)
            problems.append(f"unallocated host memory changed at {pos + bad:#x} (byte {chunk[bad]:#04x})")
            break
        pos += n
    # 3. frames that must not change
    for hpa, before in ledger.stable.items():
        after = bytes(view[hpa : hpa + len(before)])
        if after != before:
            a = by_hpa[hpa]
            bad = next(i for i, (x, y) in enumerate(zip(before, after)) if x != y)
            problems.append(f"{a.kind} allocation {hpa:#x}+{a.size:#x} ({a.who}) changed at offset {bad:#x}: "
                            f"{before[bad]:#04x} -> {after[bad]:#04x}")
    # 4. the second-level tables
    ram = [(a.hpa, a.size) for a in ledger.allocations if a.kind == "ram"]
    tables = {a.hpa for a in ledger.allocations if a.kind == "slat"}
    try:
        for m in machine.slat.mappings():
            if not machine.mem.is_ram(m.gpa) or not machine.mem.is_ram(m.gpa + m.size - 1):
                problems.append(f"{machine.slat.kind} maps non-RAM gpa {m.gpa:#x}+{m.size:#x} to {m.hpa:#x}")
            elif not _within(ram, m.hpa, m.size):
                problems.append(f"{machine.slat.kind} maps gpa {m.gpa:#x}+{m.size:#x} to host {m.hpa:#x}, "
                                "outside guest RAM")
            elif machine.mem.hpa(m.gpa) != m.hpa:
                problems.append(f"{machine.slat.kind} maps gpa {m.gpa:#x} to {m.hpa:#x}, the VMM's record says "
                                f"{machine.mem.hpa(m.gpa)}")
        for step_table in _table_frames(machine):
            if step_table not in tables:
                problems.append(f"{machine.slat.kind} points to a table at {step_table:#x}, not a table frame")
    except Exception as e:  # a corrupt table can make the walker fail
        problems.append(f"walking the {machine.slat.kind} tables failed: {type(e).__name__}: {e}")
    # 5. what Unicorn was given
    for gpa, size, hpa in ledger.mapped:
        if not _within(ram, hpa, size):
            problems.append(f"Unicorn maps gpa {gpa:#x}+{size:#x} to host {hpa:#x}, outside guest RAM")
    # 6. control-structure pointers and controls
    try:
        now = _fields(machine)
    except Exception as e:
        problems.append(f"reading the {machine.hw.structure_name} failed: {type(e).__name__}: {e}")
        now = ledger.fields
    for name, before in ledger.fields.items():
        if now.get(name) != before:
            problems.append(f"{machine.hw.structure_name} field {name} changed: {before:#x} -> {now.get(name)}")
    return problems


def _table_frames(machine: Any) -> Iterator[int]:
    """The HPA of every table reachable from the root (the root included)."""
    slat = machine.slat
    stack = [(slat.root, 0)]
    seen = set()
    while stack:
        table, level = stack.pop()
        if table in seen:
            continue
        seen.add(table)
        yield table
        if level == 3:
            continue
        for value in slat._entries(table):
            if value and not slat._is_leaf(value, level):
                stack.append((slat.address(value), level + 1))
