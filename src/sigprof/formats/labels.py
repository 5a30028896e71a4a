"""How frames are named for people and for other tools: short file names,
``function (file:line)`` labels, and whether a frame is the user's code."""

from __future__ import annotations

import functools
import os
import sys
import sysconfig

from sigprof.core.sampler import Frame

_LIBRARY_DIRS = tuple(
    {
        os.path.normcase(os.path.abspath(p)) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
)


def is_special(frame: Frame) -> bool:
    """<unknown>, <truncated> and the like: no real file behind them."""
    return frame.filename.startswith("<") and frame.lineno == 0


def module_relative_path(frame: Frame) -> str | None:
    """The file relative to its import root ("pkg/mod.py"), from the module
    name, as Sentry's ``filename`` field wants; None when unknown."""
    module = frame.module
    if not module or module == "__main__" or is_special(frame):
        return None
    parts = module.split(".")
    base = os.path.basename(frame.filename)
    if base.startswith("__init__."):
        parts.append(base.rsplit(".", 1)[0])
    path = frame.filename.replace(os.sep, "/").split("/")
    tail = path[-len(parts):]
    if len(tail) == len(parts) and [os.path.splitext(p)[0] for p in tail] == parts:
        return "/".join(tail)
    return None


_PACKAGE_DIRS = ("/site-packages/", "/dist-packages/")


def display_filename(frame: Frame) -> str:
    """A short file name: an installed package's from its site-packages
    folder on (a virtual environment under the current directory too),
    else relative to the current directory when under it, else relative to
    its import root, else as recorded."""
    if is_special(frame):
        return frame.filename
    filename = frame.filename
    slashed = filename.replace(os.sep, "/")
    for package_dir in _PACKAGE_DIRS:
        at = slashed.rfind(package_dir)
        if at >= 0:
            return slashed[at + 1:]
    if os.path.isabs(filename):
        cwd = os.getcwd() + os.sep
        if filename.startswith(cwd):
            return filename[len(cwd):]
    return module_relative_path(frame) or filename


def frame_label(frame: Frame) -> str:
    """``function (file:line)``, the frame notation py-spy and inferno use."""
    if is_special(frame):
        return frame.function
    return f"{frame.function} ({display_filename(frame)}:{frame.lineno})"


def in_app(frame: Frame) -> bool:
    """False for the standard library, installed packages and sigprof's
    placeholders; Sentry greys those out."""
    if is_special(frame) or frame.filename.startswith("<frozen"):
        return False
    if not os.path.isabs(frame.filename) and _is_library_relative(frame.filename):
        return False
    path = os.path.normcase(os.path.abspath(frame.filename))
    if "site-packages" in path or "dist-packages" in path:
        return False
    return not path.startswith(_LIBRARY_DIRS) and not frame.filename.startswith("<")


@functools.lru_cache(maxsize=4096)
def _is_library_relative(filename: str) -> bool:
    """A short name from a saved file ("json/encoder.py", as collapsed
    stacks carry them) that names a file of this Python's library."""
    if os.path.exists(filename):
        return False
    return any(os.path.exists(os.path.join(root, filename)) for root in _LIBRARY_DIRS)


def python_version() -> str:
    return "{}.{}.{}".format(*sys.version_info[:3])
