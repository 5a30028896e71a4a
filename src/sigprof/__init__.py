"""sigprof: a signal-driven native sampling profiler for Python services."""

from sigprof.sampler import (
    Batch,
    Frame,
    NativeUnavailable,
    Sample,
    Sampler,
    SamplerError,
    native_unavailable_reason,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Frame",
    "NativeUnavailable",
    "Sample",
    "Sampler",
    "SamplerError",
    "native_unavailable_reason",
]
