"""Where the native core is built and can sample: the one place that says so.

setup.py loads this file by path to decide whether to compile the core (an
interpreter outside it gets the pure-Python package, never a build failure),
and native_unavailable_reason() asks it first at run time. It imports nothing
from sigprof, so that setup.py can run it before sigprof is installed.
"""

from __future__ import annotations

import sys
import sysconfig

# The CPython minor versions whose private frame and thread-state layouts the
# core reads (csrc/python_internal.h refuses to compile for any other).
NATIVE_PYTHONS = ((3, 9), (3, 15))


def unsupported_reason(
    platform: str, implementation: str, version: tuple[int, int], gil_disabled: bool
) -> str | None:
    """Why the core cannot sample on this interpreter, or None if it can."""
    if platform != "linux":
        return f"the native sampler needs Linux; this is {platform}"
    if implementation != "cpython":
        return f"the native sampler needs CPython; this is {implementation}"
    oldest, newest = NATIVE_PYTHONS
    if not oldest <= version <= newest:
        return (
            f"the native sampler supports CPython {oldest[0]}.{oldest[1]} to "
            f"{newest[0]}.{newest[1]}; this is {version[0]}.{version[1]}"
        )
    if gil_disabled:
        # The core reads other threads' frames from a signal handler, safe only
        # while the GIL keeps them from changing.
        return "the native sampler does not support free-threaded CPython builds"
    return None


def this_interpreter_unsupported_reason() -> str | None:
    return unsupported_reason(
        sys.platform,
        sys.implementation.name,
        (sys.version_info[0], sys.version_info[1]),
        bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    )
