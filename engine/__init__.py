"""vmmtui's engine: an emulated x86 machine with VT-x or AMD-V, and the VMM around it.

The engine never imports the UI; everything the TUI shows comes from this package's
public API (see ``engine.machine``).
"""

__version__ = "0.1.0"
