"""Host physical memory: one buffer owned by the engine, handed out in frames.

Guest RAM, the EPT/NPT tables, the VMCS region and the VMCB page all live here,
so a host-physical address (HPA) is a real offset into this buffer. The buffer is
an anonymous mapping: the host OS commits pages only when they are touched.
"""

from __future__ import annotations

import ctypes
import mmap
import struct

from .addresses import HPA, LARGE_PAGE_SIZE, PAGE_SIZE, align_up
from .errors import OutOfHostMemory

_U64 = struct.Struct("<Q")


class HostMemory:
    """A contiguous host-physical address space with a frame allocator.

    Frames are never freed: a run's guest RAM and tables live as long as the machine.
    Frame 0 is never handed out, so HPA 0 can mean "no frame".
    """

    def __init__(self, size: int) -> None:
        if size <= 0 or size % LARGE_PAGE_SIZE:
            raise ValueError("host memory size must be a positive multiple of 2 MiB")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._next_small = PAGE_SIZE  # 4 KiB frames grow up from the bottom
        self._next_large = size  # 2 MiB runs grow down from the top
        self.frames_in_use = 1

    def pointer(self, hpa: HPA) -> int:
        """The host process address of `hpa` (for `Uc.mem_map_ptr`)."""
        return self._base + hpa

    def alloc_frame(self) -> HPA:
        """One zeroed 4 KiB frame."""
        if self._next_small + PAGE_SIZE > self._next_large:
            raise OutOfHostMemory(f"host memory ({self.size >> 20} MiB) is exhausted")
        hpa = self._next_small
        self._next_small += PAGE_SIZE
        self.frames_in_use += 1
        return HPA(hpa)

    def alloc_run(self, size: int, align: int = LARGE_PAGE_SIZE) -> HPA:
        """A zeroed run of `size` bytes (a multiple of 4 KiB) aligned to `align`."""
        size = align_up(size, PAGE_SIZE)
        top = (self._next_large - size) & ~(align - 1)
        if top < self._next_small:
            raise OutOfHostMemory(f"host memory ({self.size >> 20} MiB) is exhausted")
        self._next_large = top
        self.frames_in_use += size // PAGE_SIZE
        return HPA(top)

    def read(self, hpa: HPA, size: int) -> bytes:
        """`size` bytes at `hpa`."""
        self._check(hpa, size)
        return bytes(self.view[hpa : hpa + size])

    def write(self, hpa: HPA, data: bytes) -> None:
        """Store `data` at `hpa`."""
        self._check(hpa, len(data))
        self.view[hpa : hpa + len(data)] = data

    def read_u64(self, hpa: HPA) -> int:
        """The little-endian 64-bit value at `hpa`."""
        return _U64.unpack_from(self._map, hpa)[0]

    def write_u64(self, hpa: HPA, value: int) -> None:
        """Store a little-endian 64-bit value at `hpa`."""
        _U64.pack_into(self._map, hpa, value)

    def _check(self, hpa: int, size: int) -> None:
        if hpa < 0 or size < 0 or hpa + size > self.size:
            raise ValueError(f"host-physical range {hpa:#x}+{size:#x} is outside host memory")
