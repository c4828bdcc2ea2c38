"""One exception tree for the engine; only vmmtui turns these into messages or exit codes."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose; `str()` is one clear line."""

    title = "engine error"


class ImageError(EngineError):
    """A guest image that cannot be loaded (missing, empty, truncated, unknown, too big)."""

    title = "bad image"


class ConfigError(EngineError):
    """A machine configuration that cannot be built (bad size, bad control name)."""

    title = "bad configuration"


class OutOfHostMemory(EngineError):
    """The host-physical frame allocator ran out."""

    title = "out of host memory"


class VmxInstructionError(EngineError):
    """A VMX instruction failed (VMfailValid): carries the VM-instruction error number."""

    title = "VMX instruction error"

    def __init__(self, number: int, message: str) -> None:
        super().__init__(f"VM-instruction error {number}: {message}")
        self.number = number
