"""Guest-physical memory: where RAM is, how it gets backed, and reading it by GPA.

The guest sees RAM from 0 up to the configured size, minus the legacy PC hole at
0xA0000-0xFFFFF (video memory and ROMs on a PC: here nothing answers there, so
it is unknown MMIO). RAM is backed on first touch: the VMM takes host frames
and writes the second-level (EPT / NPT) entries, in 2 MiB large pages by default
or 4 KiB pages where asked. The EPT / NPT tables are the source of truth; the
owner mirrors each new mapping into Unicorn through `on_map`.
"""

from __future__ import annotations

from collections.abc import Callable

from .addresses import LARGE_PAGE_SIZE, PAGE_SIZE
from .config import MAX_RAM
from .errors import ConfigError
from .hostmem import HostMemory
from .slat import SecondLevelTables

LEGACY_HOLE = (0xA_0000, 0x10_0000)

#: on_map(gpa, size, hpa): a new guest-physical range is now backed by host memory.
MapListener = Callable[[int, int, int], None]


class GuestMemory:
    """The guest-physical address space of one machine."""

    def __init__(self, host: HostMemory, slat: SecondLevelTables, ram_size: int, page_size: int,
                 on_map: MapListener) -> None:
        if page_size not in (PAGE_SIZE, LARGE_PAGE_SIZE):
            raise ConfigError("the backing page size is 4K or 2M")
        if ram_size < LARGE_PAGE_SIZE or ram_size > MAX_RAM or ram_size % LARGE_PAGE_SIZE:
            raise ConfigError(f"guest memory must be a multiple of 2 MiB from 2M to {MAX_RAM >> 20}M")
        self.host = host
        self.slat = slat
        self.ram_size = ram_size
        self.page_size = page_size
        self._on_map = on_map
        # Backed pieces: GPA of each backing unit -> HPA. With 2 MiB units this is
        # also the fast GPA -> HPA cache used by reads from the host side.
        self._backed: dict[int, int] = {}

    def is_ram(self, gpa: int) -> bool:
        """Whether `gpa` is RAM (backed or not yet)."""
        return 0 <= gpa < self.ram_size and not LEGACY_HOLE[0] <= gpa < LEGACY_HOLE[1]

    def is_backed(self, gpa: int) -> bool:
        """Whether the page holding `gpa` has host memory behind it."""
        return (gpa & ~(self.page_size - 1)) in self._backed

    def back(self, gpa: int) -> list[tuple[int, int, int]]:
        """Give the backing unit holding `gpa` host memory; returns the (gpa, size, hpa)
        ranges newly mapped (empty if it already was)."""
        unit = gpa & ~(self.page_size - 1)
        if unit in self._backed or not self.is_ram(gpa):
            return []
        if self.page_size == PAGE_SIZE:
            hpa = self.host.alloc_frame()
            pieces = [(unit, PAGE_SIZE, hpa)]
            self.slat.map(unit, hpa, PAGE_SIZE)
        else:
            hpa = self.host.alloc_run(LARGE_PAGE_SIZE)
            pieces = self._large_pieces(unit, hpa)
            for piece_gpa, size, piece_hpa in pieces:
                if size == LARGE_PAGE_SIZE:
                    self.slat.map(piece_gpa, piece_hpa, size)
                else:  # a large page cut by the legacy hole: 4 KiB entries
                    for off in range(0, size, PAGE_SIZE):
                        self.slat.map(piece_gpa + off, piece_hpa + off, PAGE_SIZE)
        self._backed[unit] = hpa
        for piece in pieces:
            self._on_map(*piece)
        return pieces

    def back_range(self, gpa: int, size: int) -> None:
        """Back every unit that [gpa, gpa + size) touches (the loader does this)."""
        for addr in range(gpa & ~(self.page_size - 1), gpa + size, self.page_size):
            self.back(addr)  # skips what is not RAM

    def _large_pieces(self, unit: int, hpa: int) -> list[tuple[int, int, int]]:
        lo, hi = LEGACY_HOLE
        end = min(unit + LARGE_PAGE_SIZE, self.ram_size)
        if end <= lo or unit >= hi:
            return [(unit, end - unit, hpa)]
        pieces = []
        if unit < lo:
            pieces.append((unit, lo - unit, hpa))
        if end > hi:
            pieces.append((hi, end - hi, hpa + (hi - unit)))
        return pieces

    def hpa(self, gpa: int) -> int | None:
        """The host-physical address behind `gpa`, None when it is not backed RAM."""
        unit = gpa & ~(self.page_size - 1)
        base = self._backed.get(unit)
        if base is None or not self.is_ram(gpa):
            return None
        return base + (gpa - unit)

    def read(self, gpa: int, size: int) -> bytes:
        """`size` bytes from guest-physical `gpa`; unbacked RAM reads as zeros and
        anything that is not RAM as all ones (as the guest would see it)."""
        out = bytearray()
        while size > 0:
            n = min(size, PAGE_SIZE - (gpa & (PAGE_SIZE - 1)))
            hpa = self.hpa(gpa)
            if hpa is not None:
                out += self.host.view[hpa : hpa + n]
            else:
                out += (b"\0" if self.is_ram(gpa) else b"\xff") * n
            gpa += n
            size -= n
        return bytes(out)

    def write(self, gpa: int, data: bytes) -> None:
        """Store `data` at guest-physical `gpa`, backing RAM as needed (loader, debugger)."""
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, PAGE_SIZE - (gpa & (PAGE_SIZE - 1)))
            if not self.is_ram(gpa):
                raise ValueError(f"guest-physical {gpa:#x} is not RAM")
            self.back(gpa)
            hpa = self.hpa(gpa)
            assert hpa is not None
            self.host.view[hpa : hpa + n] = data[pos : pos + n]
            gpa += n
            pos += n
