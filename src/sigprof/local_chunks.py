"""Local continuous profiling: a long-running service without Sentry writes
one Sentry ``profile_chunk`` JSON file per minute into a directory, and
``sigprof report DIR`` merges them into one view.

How ``sigprof.init()`` (no DSN) should use it::

    from sigprof.local_chunks import LocalChunkWriter, output_dir_from_env

    directory = output_dir or output_dir_from_env()      # SIGPROF_OUTPUT_DIR
    if dsn is None and directory:
        writer = LocalChunkWriter(Sampler(frequency, clock), directory,
                                  release=release, environment=environment)
        writer.start()      # starts the sampler if it is not running yet
        ...
        writer.stop()       # optional: also runs at interpreter exit

Each file is a complete chunk that Sentry would accept (so it could be sent
later), written atomically: a temporary dot-file renamed into place, so a
reader never sees half a file. File names sort by time:
``sigprof-chunk-20261125T084000Z-<pid>-<seq>.json``.

The writer must be the only reader of its sampler (it calls
``drain(reset_interning=True)``, so each chunk carries every frame it uses).
After ``os.fork()`` the child has no flusher thread and writes nothing of
the parent's: call ``start()`` again there to profile the child.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sigprof.exports import sentry_chunk, write_atomically
from sigprof.profile_model import Profile, ProfileBuilder
from sigprof.sampler import Sampler

ENV_OUTPUT_DIR = "SIGPROF_OUTPUT_DIR"
CHUNK_INTERVAL_S = 60.0
FILE_PREFIX = "sigprof-chunk-"


def output_dir_from_env() -> str | None:
    return os.environ.get(ENV_OUTPUT_DIR) or None


class LocalChunkWriter:
    """Drains ``sampler`` every ``interval_s`` seconds from a daemon thread
    and writes what it took as one chunk file in ``directory``."""

    def __init__(
        self,
        sampler: Sampler,
        directory: str | None = None,
        *,
        interval_s: float = CHUNK_INTERVAL_S,
        profiler_id: str | None = None,
        release: str | None = None,
        environment: str | None = None,
    ) -> None:
        directory = directory or output_dir_from_env()
        if not directory:
            raise ValueError(f"no output directory: pass one or set {ENV_OUTPUT_DIR}")
        if not 0 < interval_s <= CHUNK_INTERVAL_S:
            raise ValueError(f"interval_s must be above 0 and at most {CHUNK_INTERVAL_S:.0f} s")
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write chunk files into {directory}")
        self.sampler = sampler
        self.directory = directory
        self.interval_s = interval_s
        self.profiler_id = profiler_id or uuid.uuid4().hex
        self.release = release
        self.environment = environment
        self.written: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owns_sampler = False
        self._excluded: set[int] = set()
        self._sequence = 0
        self._pid = os.getpid()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._pid != os.getpid():
            self._forget_parent()
        if self.running:
            return
        self._pid = os.getpid()
        if not self.sampler.running:
            self.sampler.start()
            self._owns_sampler = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sigprof-chunk-writer", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:  # the flusher
            self._excluded.add(self._thread.ident)  # only waits: not the service's time
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stops the flusher (and the sampler if start() started it) and
        writes what is left as a last chunk."""
        atexit.unregister(self.stop)
        if self._pid != os.getpid():
            # a forked child: the thread and the samples are the parent's
            self._forget_parent()
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if self._owns_sampler:
            self.sampler.stop()
            self._owns_sampler = False
        self.flush()

    def _forget_parent(self) -> None:
        self._thread = None
        self._owns_sampler = False
        self._excluded = set()
        self._pid = os.getpid()

    def flush(self) -> list[str]:
        """Writes everything sampled since the last flush; returns the
        paths written (none when there were no samples)."""
        with self._lock:
            # reset_interning: each chunk must carry all the frames it uses
            batch = self.sampler.drain(reset_interning=True)
            profile = Profile(
                unit="samples", interval_ns=int(1e9 / self.sampler.frequency),
                clock=self.sampler.clock,
            )
            builder = ProfileBuilder(profile, self.sampler.to_unix_ns, exclude_threads=self._excluded)
            builder.add(batch, self.sampler.thread_names())
            paths = []
            for chunk in sentry_chunk.chunks(profile, self.profiler_id):
                if self.release:
                    chunk["release"] = self.release
                if self.environment:
                    chunk["environment"] = self.environment
                paths.append(self._write(chunk))
            self.written.extend(paths)
            return paths

    def _write(self, chunk: dict[str, Any]) -> str:
        first = chunk["profile"]["samples"][0]["timestamp"]
        stamp = datetime.fromtimestamp(first, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._sequence += 1
        name = f"{FILE_PREFIX}{stamp}-{os.getpid()}-{self._sequence:05d}.json"
        path = os.path.join(self.directory, name)
        write_atomically(path, json.dumps(chunk, separators=(",", ":"), allow_nan=False).encode())
        return path

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except OSError as error:  # a full disk must not kill the service
                import sys

                print(f"sigprof: could not write a chunk: {error}", file=sys.stderr)

    # typing.Self is 3.11+, and sigprof must not need typing_extensions
    def __enter__(self) -> LocalChunkWriter:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---- reading a directory back ----


@dataclass
class MergedChunks:
    profile: Profile
    files_read: int = 0
    problems: list[str] = field(default_factory=list)


def read_directory(
    directory: str, since_ns: int | None = None, until_ns: int | None = None,
) -> MergedChunks:
    """Every chunk file in ``directory`` merged into one profile, keeping
    samples within [since_ns, until_ns]."""
    merged = MergedChunks(
        Profile(name=os.path.basename(os.path.abspath(directory)), unit="samples", clock="")
    )
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                document = json.loads(handle.read())
            if not sentry_chunk.is_sentry(document):
                continue
            chunk = sentry_chunk.parse(document)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            merged.problems.append(f"{path}: {error}")
            continue
        merged.files_read += 1
        if since_ns is not None or until_ns is not None:
            chunk = chunk.between(since_ns, until_ns)
        merged.profile.merge(chunk)
    if since_ns or until_ns:
        merged.profile.name += " " + _range_label(since_ns, until_ns)
    return merged


def _range_label(since_ns: int | None, until_ns: int | None) -> str:
    def label(ns: int | None) -> str:
        if ns is None:
            return "…"
        return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    return f"{label(since_ns)} to {label(until_ns)} UTC"
