"""Local continuous profiling: a long-running service without Sentry writes
one Sentry ``profile_chunk`` JSON file per minute into a directory, and
``sigprof report DIR`` merges them into one view.

``sigprof.init(output_dir=DIR)`` without a DSN (or with ``SIGPROF_OUTPUT_DIR``
set) starts a ``LocalChunkWriter``; it can also be used directly::

    from sigprof.chunks.local_chunks import LocalChunkWriter

    writer = LocalChunkWriter("/var/tmp/profiles", release="svc@1.2")
    writer.start()      # samples until stop() or interpreter exit
    ...
    writer.stop()       # optional: also runs at interpreter exit

The writer is a consumer of the process's one native sampler
(``sigprof.core.sample_source.SOURCE``, the one the Sentry layer's transaction
profiles, chunks and profiling spans share; only one native sampler can run
per process). Its chunks are cut by the same ``ChunkCutter``
(``sigprof.chunks.cutter``) as the Sentry layer's chunk session's: one
interning epoch per chunk; the JSON is written by the same builder
(``sigprof.formats.chunk_json``); this module is the file sink. Frequency and clock are the source's
(``SigprofIntegration(frequency=..., clock=...)`` under ``sigprof.init``).

Each file is a complete chunk that Sentry would accept (so it could be sent
later), written atomically: a temporary dot-file renamed into place, so a
reader never sees half a file. File names sort by time:
``sigprof-chunk-20261125T084000Z-<pid>-<seq>.json``.

After ``os.fork()`` the child writes nothing of the parent's: call
``start()`` again there to profile the child.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import final

from sigprof.chunks.cutter import ChunkCutter
from sigprof.core.housekeeping import os_thread_rlock
from sigprof.core.ids import random_hex_id
from sigprof.core.process_life import at_main_thread_exit
from sigprof.core.sample_source import SOURCE
from sigprof.formats import sentry_chunk, write_atomically
from sigprof.formats.profile_model import Profile

ENV_OUTPUT_DIR = "SIGPROF_OUTPUT_DIR"
CHUNK_INTERVAL_S = 60.0
FILE_PREFIX = "sigprof-chunk-"


def output_dir_from_env() -> str | None:
    return os.environ.get(ENV_OUTPUT_DIR) or None


@final  # so __enter__ can name the class: typing.Self is 3.11+
class LocalChunkWriter:
    """Takes samples from the shared native sampler and writes them as one
    chunk file in ``directory`` every ``interval_s`` seconds (from the
    sampler's housekeeping thread), and a last one on stop()."""

    def __init__(
        self,
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
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a directory", directory)
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write chunk files into {directory}")
        self.directory = directory
        self.interval_s = interval_s
        self.profiler_id = profiler_id or random_hex_id()
        self.release = release
        self.environment = environment
        self.written: list[str] = []
        self._cutter = ChunkCutter()
        # An OS-thread lock (the housekeeping thread shares it; see
        # os_thread_rlock), held across a whole write, never with SOURCE.lock.
        self._write_lock = os_thread_rlock()
        self._sequence = 0
        self._pid = os.getpid()
        self._exit_hook_registered = False

    @property
    def running(self) -> bool:
        return self._cutter.running and self._pid == os.getpid()

    def start(self) -> None:
        """Starts taking samples (starting the shared sampler if needed).
        Raises sigprof.SamplerError when the native sampler cannot run."""
        if self._pid != os.getpid():
            self._forget_parent()
        if self._cutter.running:
            return
        SOURCE.add_periodic(self._periodic)
        if not self._cutter.start(self.profiler_id):
            from sigprof.core.sampler import SamplerError

            raise SamplerError(SOURCE.last_error or "the native sampler did not start")
        if not self._exit_hook_registered:
            at_main_thread_exit(self.stop)
            self._exit_hook_registered = True

    def stop(self) -> None:
        """Stops taking samples and writes what is left as a last chunk. The
        shared sampler stops too unless someone else still uses it."""
        if self._pid != os.getpid():
            # a forked child: the samples are the parent's
            self._forget_parent()
            return
        if not self._cutter.running:
            return
        self._cutter.stop()
        self._write_pending()

    def flush(self) -> list[str]:
        """Writes everything sampled since the last chunk now; returns the
        paths written (none when there were no samples)."""
        if self.running:
            self._cutter.cut()
        return self._write_pending()

    def _forget_parent(self) -> None:
        self._cutter.forget_after_fork()
        self._write_lock = os_thread_rlock()
        self._pid = os.getpid()

    # ---- internals ----

    def _periodic(self) -> float | None:
        """Run by the sampler's housekeeping thread after each drain; the
        seconds until the next chunk is due."""
        if not self.running:
            return None
        next_cut = self._cutter.cut_if_due(self.interval_s)
        try:
            self._write_pending()
        except OSError as error:  # a full disk must not kill the service
            print(f"sigprof: could not write a chunk: {error}", file=sys.stderr)
        return next_cut

    def _write_pending(self) -> list[str]:
        # One writer at a time: stop() returns only once a chunk the
        # housekeeping thread took is on disk too.
        with self._write_lock:
            return self._write_chunks()

    def _write_chunks(self) -> list[str]:
        names = SOURCE.thread_names()
        paths = []
        for chunk in self._cutter.take():
            body = sentry_chunk.chunk_body(
                frames=chunk.frames,
                stacks=chunk.stacks,
                samples=chunk.samples,
                unix_offset_ns=chunk.unix_offset_ns,
                thread_names=names,
                profiler_id=chunk.profiler_id,
                chunk_id=chunk.chunk_id,
                release=self.release,
                environment=self.environment,
                dropped_samples=chunk.dropped_samples,
            )
            paths.append(self._write(chunk.samples[0][0] + chunk.unix_offset_ns, body))
        self.written.extend(paths)
        return paths

    def _write(self, first_unix_ns: int, body: bytes) -> str:
        stamp = datetime.fromtimestamp(first_unix_ns / 1e9, timezone.utc)
        self._sequence += 1
        name = f"{FILE_PREFIX}{stamp:%Y%m%dT%H%M%SZ}-{os.getpid()}-{self._sequence:05d}.json"
        path = os.path.join(self.directory, name)
        write_atomically(path, body)
        return path

    def __enter__(self) -> LocalChunkWriter:
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
