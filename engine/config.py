"""A machine's configuration: vendor, memory, vCPUs, backing page size, exit controls."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .addresses import LARGE_PAGE_SIZE, PAGE_SIZE
from .errors import ConfigError

DEFAULT_MEM = 64 << 20
MAX_RAM = 3 << 30  # RAM stays below 0xC0000000, clear of the APIC and other MMIO
VENDORS = ("intel", "amd")
MAX_VCPUS = 16
DEFAULT_QUANTUM = 10_000
MAX_QUANTUM = 100_000_000
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'64M', '1G', '4K' or a plain byte count -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text.upper())
    if not m:
        raise ConfigError(f"not a size: {text!r} (use a number with K, M or G, for example 64M)")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class MachineConfig:
    """What a run is built from."""

    vendor: str = "intel"
    mem_size: int = DEFAULT_MEM
    vcpus: int = 1
    quantum: int = DEFAULT_QUANTUM  # instructions a vCPU runs before the next one's turn
    fast: bool = False  # run uncounted where nothing needs the time (less exact virtual time)
    page_size: int = LARGE_PAGE_SIZE
    exits: list[str] = field(default_factory=list)  # "NAME=on|off" specs, in order

    def check(self) -> None:
        """Raise ConfigError for anything the machine cannot be built with."""
        if self.vendor not in VENDORS:
            raise ConfigError(f"unknown vendor {self.vendor!r} (intel or amd)")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError(f"--vcpus is 1 to {MAX_VCPUS}, not {self.vcpus}")
        if not 1 <= self.quantum <= MAX_QUANTUM:
            raise ConfigError(f"--quantum is 1 to {MAX_QUANTUM:,} instructions, not {self.quantum}")
        if self.page_size not in (PAGE_SIZE, LARGE_PAGE_SIZE):
            raise ConfigError("--page-size is 4K or 2M")
        if not LARGE_PAGE_SIZE <= self.mem_size <= MAX_RAM or self.mem_size % LARGE_PAGE_SIZE:
            raise ConfigError(f"guest memory must be a multiple of 2 MiB from 2M to {MAX_RAM >> 20}M")
