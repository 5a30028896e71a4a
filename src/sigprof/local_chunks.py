"""Local continuous profiling: a long-running service without Sentry writes
one Sentry ``profile_chunk`` JSON file per minute into a directory, and
``sigprof report DIR`` merges them into one view.

``sigprof.init(output_dir=DIR)`` without a DSN (or with ``SIGPROF_OUTPUT_DIR``
set) starts a ``LocalChunkWriter``; it can also be used directly::

    from sigprof.local_chunks import LocalChunkWriter

    writer = LocalChunkWriter("/var/tmp/profiles", release="svc@1.2")
    writer.start()      # samples until stop() or interpreter exit
    ...
    writer.stop()       # optional: also runs at interpreter exit

The writer is a consumer of the process's one native sampler
(``sigprof.sample_source.SOURCE``, the one the Sentry layer's transaction
profiles, chunks and profiling spans share; only one native sampler can run
per process). Like the Sentry layer's chunk session it cuts the sampler's
interning epochs, one per chunk, so a chunk's frames and stacks are the
epoch's tables as they stand; the JSON is written by the same builder
(``sigprof.envelopes.chunk_json``). Frequency and clock are the source's
(``SigprofIntegration(frequency=..., clock=...)`` under ``sigprof.init``).

Each file is a complete chunk that Sentry would accept (so it could be sent
later), written atomically: a temporary dot-file renamed into place, so a
reader never sees half a file. File names sort by time:
``sigprof-chunk-20261125T084000Z-<pid>-<seq>.json``.

After ``os.fork()`` the child writes nothing of the parent's: call
``start()`` again there to profile the child.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, final

from sigprof.exports import sentry_chunk, write_atomically
from sigprof.housekeeping import os_thread_rlock
from sigprof.profile_model import Profile
from sigprof.sample_source import SOURCE, EpochTables, RawSample
from sigprof.sampler import Frame

ENV_OUTPUT_DIR = "SIGPROF_OUTPUT_DIR"
CHUNK_INTERVAL_S = 60.0
FILE_PREFIX = "sigprof-chunk-"

# (frames, stacks, samples, unix offset, samples the native buffer dropped
# since the previous chunk) of a chunk waiting to be written
_PendingChunk = tuple[list[Frame], list[tuple[int, ...]], list[RawSample], int, int]


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
        self.profiler_id = profiler_id or uuid.uuid4().hex
        self.release = release
        self.environment = environment
        self.written: list[str] = []
        # Both OS-thread locks (the housekeeping thread shares them; see
        # os_thread_rlock). _lock is taken after SOURCE.lock, never before;
        # _write_lock is held across a whole write and never with SOURCE.lock.
        self._lock = os_thread_rlock()
        self._write_lock = os_thread_rlock()
        self._running = False
        self._samples: list[RawSample] = []
        self._pending: list[_PendingChunk] = []
        self._chunk_started = 0.0
        self._unix_offset_ns = 0
        self._dropped_seen = 0  # SOURCE.dropped_total at the last chunk
        self._sequence = 0
        self._pid = os.getpid()
        self._exit_hook_registered = False

    @property
    def running(self) -> bool:
        return self._running and self._pid == os.getpid()

    def start(self) -> None:
        """Starts taking samples (starting the shared sampler if needed).
        Raises sigprof.SamplerError when the native sampler cannot run."""
        if self._pid != os.getpid():
            self._forget_parent()
        if self._running:
            return
        SOURCE.add_periodic(self._periodic)
        with SOURCE.lock:
            self._samples = []
            self._chunk_started = time.monotonic()
            if not SOURCE.acquire(self, new_epoch=True):
                from sigprof.sampler import SamplerError

                raise SamplerError(SOURCE.last_error or "the native sampler did not start")
            self._unix_offset_ns = SOURCE.to_unix_ns(0)
            self._dropped_seen = SOURCE.dropped_total
            self._running = True
        if not self._exit_hook_registered:
            _at_exit(self.stop)
            self._exit_hook_registered = True

    def stop(self) -> None:
        """Stops taking samples and writes what is left as a last chunk. The
        shared sampler stops too unless someone else still uses it."""
        if self._pid != os.getpid():
            # a forked child: the samples are the parent's
            self._forget_parent()
            return
        with SOURCE.lock:
            if not self._running:
                return
            SOURCE.release(self)  # feeds the last samples first
            self._stash(SOURCE.tables)
            self._running = False
        self._write_pending()

    def flush(self) -> list[str]:
        """Writes everything sampled since the last chunk now; returns the
        paths written (none when there were no samples)."""
        if self.running:
            SOURCE.collect(reset=True)
        return self._write_pending()

    def _forget_parent(self) -> None:
        self._running = False
        self._samples = []
        self._pending = []
        self._lock = os_thread_rlock()
        self._write_lock = os_thread_rlock()
        self._pid = os.getpid()

    # ---- sample source consumer (called with the source's lock held) ----

    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        self._samples.extend(samples)

    def epoch_ending(self, tables: EpochTables) -> None:
        self._stash(tables)
        self._chunk_started = time.monotonic()

    # ---- internals ----

    def _stash(self, tables: EpochTables) -> None:
        samples, self._samples = self._samples, []
        if samples:  # without, drops carry over to the next chunk
            dropped = SOURCE.dropped_total - self._dropped_seen
            self._dropped_seen = SOURCE.dropped_total
            with self._lock:
                self._pending.append(
                    (tables.frames[:], tables.stacks[:], samples, self._unix_offset_ns, dropped)
                )

    def _periodic(self) -> None:
        """Run by the sampler's housekeeping thread after each drain."""
        if not self.running:
            return
        if time.monotonic() - self._chunk_started >= self.interval_s:
            SOURCE.collect(reset=True)
        try:
            self._write_pending()
        except OSError as error:  # a full disk must not kill the service
            print(f"sigprof: could not write a chunk: {error}", file=sys.stderr)

    def _write_pending(self) -> list[str]:
        # One writer at a time: stop() returns only once a chunk the
        # housekeeping thread took is on disk too.
        with self._write_lock:
            return self._write_chunks()

    def _write_chunks(self) -> list[str]:
        with self._lock:
            pending, self._pending = self._pending, []
        names = SOURCE.thread_names()
        paths = []
        for frames, stacks, samples, offset, dropped in pending:
            body = sentry_chunk.chunk_body(
                frames=frames,
                stacks=stacks,
                samples=samples,
                unix_offset_ns=offset,
                thread_names=names,
                profiler_id=self.profiler_id,
                release=self.release,
                environment=self.environment,
                dropped_samples=dropped,
            )
            paths.append(self._write(samples[0][0] + offset, body))
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


def _at_exit(hook: Callable[[], None]) -> None:
    """Runs ``hook`` when the main thread finishes, before ``atexit``: the
    native sampler is stopped at ``atexit``, and the last chunk is written
    first (as the Sentry layer sends its last chunk)."""
    register = getattr(threading, "_register_atexit", None)
    if callable(register):
        try:
            register(hook)
            return
        except RuntimeError:  # the interpreter is already shutting down
            pass
    atexit.register(hook)


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
