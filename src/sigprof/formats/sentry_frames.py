"""Native frames as the frame objects Sentry's profile formats carry.

Each frame is converted once per interning epoch (never per sample), with the
same fields sentry-sdk's own profiler sends: `abs_path` joined to the working
directory, `filename` relative to the module root, `module`, `function`
(a qualified name) and `lineno`; `in_app` is filled in later (by the Sentry
wing with sentry-sdk's own rules and the client's options, or by local mode).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sigprof.core.sampler import Frame

SentryFrame = dict[str, Any]

# The sampler's own markers have no file: they are shown as they are.
_SYNTHETIC_FILES = ("<sigprof>", "<unknown>")


# Converted frames, shared by every chunk and profile: most frames of a
# service recur in every chunk, and filename_for_module is not cheap. About
# 550 bytes an entry: the limit keeps it under 5 MiB (cleared when full).
_CACHE_LIMIT = 1 << 13
_cache: dict[tuple[Frame, str], SentryFrame] = {}


def json_text(text: str) -> str:
    """Text as Sentry's parsers take it. os.fsdecode turns undecodable bytes
    of a path into lone surrogates; Python escapes them in JSON, and Sentry's
    parser (serde_json) then rejects the whole payload: they become U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


class FrameConverter:
    """Converts native frames; remembers the working directory like the SDK."""

    def __init__(self) -> None:
        self.cwd = os.getcwd()

    def convert(self, frame: Frame) -> SentryFrame:
        """A new dict each time (in_app is set on it later)."""
        key = (frame, self.cwd)
        found = _cache.get(key)
        if found is None:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            found = _cache[key] = self._convert(frame)
        return dict(found)

    def _convert(self, frame: Frame) -> SentryFrame:
        # A code object can be renamed to "" (code.replace): Sentry needs a name.
        function = json_text(frame.function) or "<unknown>"
        if frame.filename in _SYNTHETIC_FILES:
            return {
                "abs_path": frame.filename,
                "filename": frame.filename,
                "function": function,
                "lineno": max(frame.lineno, 0),
                "module": None,
                "in_app": False,
            }
        abs_path = json_text(os.path.join(self.cwd, frame.filename))
        module = None if frame.module is None else json_text(frame.module)
        return {
            "abs_path": abs_path,
            "filename": filename_for_module(module, abs_path) or None,
            "function": function,
            "lineno": max(frame.lineno, 0),
            "module": module,
        }


def filename_for_module(module: str | None, abs_path: str) -> str:
    """The file's path below its top-level package's directory, by the rule of
    sentry-sdk's `filename_for_module` (kept here so formats need no SDK):
    a top-level module gives its base name, a package module the path from
    its package's parent directory, anything else the path unchanged."""
    if not abs_path or not module:
        return abs_path
    try:
        if abs_path.endswith(".pyc"):
            abs_path = abs_path[:-1]
        base_module = module.split(".", 1)[0]
        if base_module == module:
            return os.path.basename(abs_path)
        base_module_path = sys.modules[base_module].__file__
        if not base_module_path:
            return abs_path
        return abs_path.split(base_module_path.rsplit(os.sep, 2)[0], 1)[-1].lstrip(os.sep)
    except Exception:  # noqa: BLE001 - a module without a usable __file__: the path as it is
        return abs_path
