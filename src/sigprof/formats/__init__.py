"""Writers for every output format ``sigprof run --format`` knows. Each
format module has ``render(profile) -> bytes``."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from sigprof.formats.profile_model import Profile

FORMATS = ("html", "speedscope", "collapsed", "sentry", "pprof")
EXTENSIONS: dict[str, str] = {
    "html": ".html",
    "speedscope": ".speedscope.json",
    "collapsed": ".collapsed.txt",
    "sentry": ".chunk.json",
    "pprof": ".pb.gz",
}


def renderer(fmt: str) -> Callable[[Profile], bytes]:
    """The render function of a format; ValueError names the known ones."""
    if fmt == "html":
        from sigprof.formats import html as module
    elif fmt == "speedscope":
        from sigprof.formats import speedscope as module  # type: ignore[no-redef]
    elif fmt == "collapsed":
        from sigprof.formats import collapsed as module  # type: ignore[no-redef]
    elif fmt == "sentry":
        from sigprof.formats import sentry_chunk as module  # type: ignore[no-redef]
    elif fmt == "pprof":
        from sigprof.formats import pprof as module  # type: ignore[no-redef]
    else:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return module.render


def write_atomically(path: str, data: bytes) -> None:
    """Writes to a temporary file beside ``path`` and renames it over, so a
    reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".sigprof-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def write_profile(profile: Profile, fmt: str, path: str) -> None:
    write_atomically(path, renderer(fmt)(profile))
