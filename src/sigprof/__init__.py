"""sigprof: a signal-driven native sampling profiler for Python services.

The Sentry names (`init`, `SigprofIntegration`, `profile`, ...) load
sentry-sdk, so they resolve on first use: `import sigprof` and
`sigprof run` leave a profiled program's modules as it made them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sigprof.core.sampler import (
    Batch,
    Frame,
    NativeUnavailable,
    Sample,
    Sampler,
    SamplerError,
    native_unavailable_reason,
)

if TYPE_CHECKING:
    from sigprof.sentry.integration import (
        SigprofFallbackWarning,
        SigprofIntegration,
        init,
        start_profiler,
        stop_profiler,
    )
    from sigprof.sentry.spans import ProfilingSpan, profile, start_profiling_span

__version__ = "0.1.0"

# name -> the module defining it; imported when the name is first asked for.
_SENTRY_NAMES = {
    "SigprofFallbackWarning": "sigprof.sentry.integration",
    "SigprofIntegration": "sigprof.sentry.integration",
    "init": "sigprof.sentry.integration",
    "start_profiler": "sigprof.sentry.integration",
    "stop_profiler": "sigprof.sentry.integration",
    "ProfilingSpan": "sigprof.sentry.spans",
    "profile": "sigprof.sentry.spans",
    "start_profiling_span": "sigprof.sentry.spans",
}


def __getattr__(name: str) -> Any:
    module = _SENTRY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'sigprof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SENTRY_NAMES))


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
