"""A hex view of guest memory by guest-physical or guest-virtual address."""

from __future__ import annotations

from rich.text import Text

from ..session import Session


def read(session: Session, address: int, size: int, space: str) -> bytes:
    """`size` bytes at `address` in "gpa" or "gva" space (raises EngineError if unmapped)."""
    if space == "gpa":
        return session.machine.read_gpa(address, size)
    return session.machine.read_gva(address, size, session.vcpu)


def memory_view(session: Session, address: int, size: int = 256, space: str = "gpa", width: int = 80) -> Text:
    """Rows of 16 bytes (8 when narrower than 78 columns): address, hex bytes, characters."""
    data = read(session, address, size, space)
    per_row = 16 if width >= 78 else 8
    out = Text(f"{space.upper()} {address:#x} ({size} bytes)\n", style="bold")
    for off in range(0, len(data), per_row):
        row = data[off : off + per_row]
        hexes = " ".join(f"{b:02x}" for b in row)
        chars = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        out.append(f"{address + off:010x}  ", style="cyan")
        out.append(f"{hexes:<{3 * per_row - 1}}  ")
        out.append(chars + "\n", style="dim")
    return out
