"""Build the native core (csrc/, a static library compiled with strict warnings)
and the one Cython bridge module that exposes it (src/sigprof/_native.pyx)."""

import os
import sys
import sysconfig
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

STRICT = os.environ.get("SIGPROF_WERROR") == "1"
SANITIZE = os.environ.get("SIGPROF_SANITIZE", "")  # e.g. "address,undefined"
# The core is POSIX C (signals, pthreads, C11 atomics) and samples on Linux only;
# MSVC cannot build it. On Windows, or with SIGPROF_NO_NATIVE=1, the package is
# pure Python: it imports, sigprof.native_unavailable_reason() says why, and the
# Sentry layer falls back to sentry-sdk's own profiler.
NATIVE = sys.platform != "win32" and os.environ.get("SIGPROF_NO_NATIVE") != "1"

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
    libraries=["sigprof_core"] + (["rt"] if sys.platform.startswith("linux") else []),
    extra_compile_args=["-O2", "-g"] + ([f"-fsanitize={SANITIZE}"] if SANITIZE else []),
    extra_link_args=link_args,
    depends=sorted(glob("csrc/*.h")),
)

if NATIVE:
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
    setup()
