"""Build the native core (csrc/, a static library compiled with strict warnings)
and the one Cython bridge module that exposes it (src/sigprof/_native.pyx)."""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup


def native_skip_reason() -> str | None:
    """Why this install gets the pure-Python package, or None to build the core.

    The range of interpreters lives in src/sigprof/_native_support.py, which
    native_unavailable_reason() reads at run time too. Everywhere else
    (Windows, macOS, PyPy, free-threaded or newer CPython) the package still
    installs: it imports, native_unavailable_reason() says why, and the Sentry
    layer falls back to sentry-sdk's own profiler. Never a build failure.
    """
    if os.environ.get("SIGPROF_NO_NATIVE") == "1":
        return "SIGPROF_NO_NATIVE=1"
    spec = importlib.util.spec_from_file_location(
        "_native_support", os.path.join("src", "sigprof", "_native_support.py")
    )
    assert spec is not None and spec.loader is not None
    support = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(support)
    reason: str | None = support.this_interpreter_unsupported_reason()
    return reason


STRICT = os.environ.get("SIGPROF_WERROR") == "1"
SANITIZE = os.environ.get("SIGPROF_SANITIZE", "")  # e.g. "address,undefined"

core_cflags = ["-fPIC", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-fno-strict-aliasing"]
if STRICT:
    core_cflags.append("-Werror")
link_args = []
if SANITIZE:
    sanitize_flags = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
    core_cflags += sanitize_flags
    link_args += sanitize_flags

python_include = sysconfig.get_paths()["include"]

core = (
    "sigprof_core",
    {
        "sources": sorted(glob("csrc/*.c")),
        "include_dirs": ["csrc", python_include],
        "cflags": core_cflags,
    },
)

bridge = Extension(
    "sigprof._native",
    sources=["src/sigprof/_native.pyx"],
    include_dirs=["csrc"],
    libraries=["sigprof_core", "rt"],
    extra_compile_args=["-O2", "-g"] + ([f"-fsanitize={SANITIZE}"] if SANITIZE else []),
    extra_link_args=link_args,
    depends=sorted(glob("csrc/*.h")),
)

skip_reason = native_skip_reason()
if skip_reason is None:
    setup(
        # A sanitized build keeps its objects apart: setuptools reuses what is
        # in build/ by timestamp, not by flags, so it would otherwise link the
        # plain objects (or leave sanitized ones to a plain build).
        options={"build": {"build_base": f"build/sanitize-{SANITIZE}"}} if SANITIZE else {},
        libraries=[core],
        ext_modules=cythonize(
            [bridge],
            include_path=["src/sigprof"],
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        ),
    )
else:
    print(f"sigprof: installing without the native core: {skip_reason}", file=sys.stderr)
    setup()
