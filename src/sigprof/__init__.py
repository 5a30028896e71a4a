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
from sigprof.sentry_init import (
    SigprofFallbackWarning,
    SigprofIntegration,
    init,
    start_profiler,
    stop_profiler,
)
from sigprof.spans import ProfilingSpan, profile, start_profiling_span

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Frame",
    "NativeUnavailable",
    "ProfilingSpan",
    "Sample",
    "Sampler",
    "SamplerError",
    "SigprofFallbackWarning",
    "SigprofIntegration",
    "init",
    "native_unavailable_reason",
    "profile",
    "start_profiler",
    "start_profiling_span",
    "stop_profiler",
]
