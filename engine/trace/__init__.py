"""Exit traces: record a run's exits, registers, console output and inputs into an
SQLite file, and read them back (replay, verify, statistics, export).

The format is documented in docs/trace-format.md; `format.FORMAT_VERSION` is its
version.
"""

from .format import FORMAT_VERSION, TraceError
from .reader import Trace, TraceExits, open_trace
from .writer import TraceWriter

__all__ = ["FORMAT_VERSION", "Trace", "TraceError", "TraceExits", "TraceWriter", "open_trace"]
