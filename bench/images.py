"""The bench guests (guests/bench_*.img) and their patchable loop counts.

Each bench image is one 512-byte boot sector that reads its loop count, a
little-endian dword, from image offset 0x1F8 (physical 0x7DF8) when it starts
(guests/README.md, "Bench guests"). Patching those four bytes changes how long
the guest runs without rebuilding it.
"""

from __future__ import annotations

import struct
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"
COUNT_OFFSET = 0x1F8

#: image -> the count built into it (checked, so a layout change is caught here)
DEFAULT_COUNTS = {
    "bench_loop.img": 20_000_000,
    "bench_out.img": 1_000_000,
    "bench_cpuid.img": 1_000_000,
}

#: bench_loop.img executes LOOP_INSNS_PER_ITERATION x count + LOOP_INSNS_EXTRA instructions
LOOP_INSNS_PER_ITERATION = 10
LOOP_INSNS_EXTRA = 10


def loop_instructions(iterations: int) -> int:
    """Instructions bench_loop.img executes for `iterations` (documented in its source)."""
    return LOOP_INSNS_PER_ITERATION * iterations + LOOP_INSNS_EXTRA


def image_bytes(name: str, count: int | None = None) -> bytes:
    """The image's bytes with its loop count set to `count` (None: as built)."""
    if name not in DEFAULT_COUNTS:
        raise ValueError(f"{name}: not a bench image ({', '.join(DEFAULT_COUNTS)})")
    data = bytearray((GUESTS_DIR / name).read_bytes())
    if len(data) != 512 or data[510:512] != b"\x55\xaa":
        raise ValueError(f"{name}: not a 512-byte boot sector")
    built = struct.unpack_from("<I", data, COUNT_OFFSET)[0]
    if built != DEFAULT_COUNTS[name]:
        raise ValueError(f"{name}: the dword at {COUNT_OFFSET:#x} is {built}, expected {DEFAULT_COUNTS[name]}: "
                         "has the image layout changed?")
    if count is not None:
        if not 1 <= count <= 0xFFFF_FFFF:
            raise ValueError("a loop count is from 1 to 2**32-1")
        struct.pack_into("<I", data, COUNT_OFFSET, count)
    return bytes(data)


def write_image(name: str, count: int | None, directory: Path) -> Path:
    """Write the patched image into `directory` under its own name (the loader wants *.img)."""
    path = directory / name
    path.write_bytes(image_bytes(name, count))
    return path
