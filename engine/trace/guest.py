"""The traced guest: which image re-runs a trace, and a machine loaded with it.

`replay --verify` and the replay's re-run (`engine.trace.rerun`) both start here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ImageError
from ..loader import LoadedImage, load_bytes, read_image
from ..machine import Machine
from .format import TraceError
from .reader import Trace


class ImageChanged(TraceError):
    """The image to re-run is not the one the trace was recorded with."""

    title = "image changed"


def image_for(trace: Trace, image: str | Path | None = None, *, carried_first: bool = False) -> tuple[bytes, Path]:
    """The bytes of the image to re-run `trace` with, and the path they are named by.

    `image` if given; else the file at the trace's image path while it exists, then
    the copy the trace carries (`carried_first`: the copy, then the file). ImageError
    when there is neither.
    """
    if image is not None:
        path = Path(image)
        return read_image(path), path
    path = Path(str(trace.meta.get("image_path", "")))
    carried = trace.image()
    if carried is not None and (carried_first or not path.is_file()):
        name, data = carried
        return data, path.with_name(name) if path.name else Path(name)
    if path.is_file():
        return read_image(path), path
    raise ImageError(f"{path}: the trace's image is not there any more and the trace carries no copy (name it: "
                     f"vmmtui replay --verify {trace.path} GUEST)")


def start(trace: Trace, image: str | Path | None = None, *, allow_image_change: bool = False,
          carried_first: bool = False) -> tuple[Machine, LoadedImage, bool]:
    """A machine of the trace's configuration with its image (`image_for`) loaded, not
    yet run, and whether that image differs from the traced one (refused with
    ImageChanged, naming both hashes, unless `allow_image_change`)."""
    data, path = image_for(trace, image, carried_first=carried_first)
    machine = Machine(trace.config())
    loaded = load_bytes(machine, data, path)
    recorded = str(trace.meta.get("image_sha256", ""))
    changed = loaded.sha256 != recorded
    if changed and not allow_image_change:
        raise ImageChanged(f"{path}: SHA-256 {loaded.sha256} differs from the traced image's {recorded} "
                           "(--allow-image-change compares anyway)")
    return machine, loaded, changed
