"""vmmtui: the command line and the Textual app over the engine."""

from engine import __version__

__all__ = ["__version__"]
