"""Continuous profiling: a profiler session cut into chunks (format v2).

One `ChunkSession` exists per process. It runs while anything holds it: the
manual lifecycle (`start_profiler()` .. `stop_profiler()`), open sampled
root spans under the trace lifecycle, or open profiling spans. While it
runs it has one `profiler_id`, which sentry-sdk stamps on every span and
transaction; it sends a chunk every 60 s and when it ends, flushes or the
process exits, one envelope per chunk.

Each chunk is one interning epoch of the shared sampler: the chunk's frames
and stacks are the epoch's tables as they stand, and its samples carry the
native stack ids unchanged.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Hashable
from typing import Any

from sentry_sdk.utils import logger

from sigprof.envelopes import (
    chunk_envelope,
    chunk_json,
    client_options,
    has_enough_samples,
    prepare_transport,
    sdk_name,
    send_envelope,
)
from sigprof.sample_source import SOURCE, EpochTables, RawSample
from sigprof.sampler import Frame
from sigprof.sentry_frames import FrameConverter

CHUNK_SECONDS = 60.0
# Under the trace lifecycle the session outlives its last root span by this
# much, so back-to-back transactions share one profiler_id and one chunk.
TRACE_LINGER_S = 0.5

_PendingChunk = tuple[str, str, list[Frame], list[tuple[int, ...]], list[RawSample], int]


class ChunkSession:
    """The process's continuous profiling session and its current chunk."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.profiler_id: str | None = None
        self._holders: dict[Hashable, bool] = {}
        self._linger_until: float | None = None
        self._chunk_id = ""
        self._chunk_started = 0.0
        self._samples: list[RawSample] = []
        self._unix_offset_ns = 0
        self._pending: list[_PendingChunk] = []
        self.chunks_sent = 0
        self._pid = os.getpid()
        SOURCE.add_periodic(self.periodic)

    @property
    def running(self) -> bool:
        return self.profiler_id is not None

    def holds(self, token: Hashable) -> bool:
        return token in self._holders

    def hold(self, token: Hashable) -> bool:
        """Keeps the session running (starting it if needed) until release()."""
        self.forget_if_forked()
        with self._lock:
            if self.profiler_id is None and not self._start():
                return False
            self._holders[token] = True
            self._linger_until = None
            return True

    def release(self, token: Hashable, *, linger: bool = False) -> None:
        """Drops a hold; the last one ends the session, now or after a linger."""
        with self._lock:
            if self._holders.pop(token, None) is None or self._holders:
                return
            if linger:
                self._linger_until = time.monotonic() + TRACE_LINGER_S
                return
            self._end()
        self._send_pending()

    def end(self) -> None:
        """Ends the session whoever holds it (exit, teardown)."""
        with self._lock:
            self._holders.clear()
            self._end()
        self._send_pending()

    def flush(self) -> None:
        """Sends what the current chunk has so far and starts a new chunk."""
        with self._lock:
            if self.profiler_id is not None:
                SOURCE.collect(reset=True)
        self._send_pending()

    def periodic(self) -> None:
        """Run by the sampler's housekeeping thread after each drain."""
        with self._lock:
            if self.profiler_id is not None:
                now = time.monotonic()
                if not self._holders and self._linger_until is not None:
                    if now >= self._linger_until:
                        self._end()
                elif now - self._chunk_started >= CHUNK_SECONDS:
                    SOURCE.collect(reset=True)
        self._send_pending()

    def forget_if_forked(self) -> bool:
        """In a process forked without Python's fork hooks (uWSGI's workers):
        forgets the parent's session, and the sample source's state; True if
        it did. The parent's lock may be held by a thread that did not survive
        the fork, so it is not taken."""
        if self._pid == os.getpid():
            return False
        SOURCE.forget_if_forked()
        self.forget_after_fork()
        return True

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's session, holders and unsent chunks
        are the parent's (its sampler did not survive the fork)."""
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self.profiler_id = None
        self._holders = {}
        self._linger_until = None
        self._samples = []
        self._pending = []

    # ---- sample source consumer (called with the source's lock held) ----

    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        self._samples.extend(samples)

    def epoch_ending(self, tables: EpochTables) -> None:
        self._stash_chunk(tables)
        self._chunk_id = uuid.uuid4().hex
        self._chunk_started = time.monotonic()

    # ---- internals ----

    def _start(self) -> bool:
        self._samples = []
        self._chunk_id = uuid.uuid4().hex
        self._chunk_started = time.monotonic()
        if not SOURCE.acquire(self, new_epoch=True):
            return False
        self.profiler_id = uuid.uuid4().hex
        self._unix_offset_ns = SOURCE.to_unix_ns(0)
        prepare_transport()
        self._linger_until = None
        logger.debug("[Profiling] sigprof profiler session %s started", self.profiler_id)
        return True

    def _end(self) -> None:
        if self.profiler_id is None:
            return
        with SOURCE.lock:
            SOURCE.release(self)  # feeds the last samples first
            self._stash_chunk(SOURCE.tables)
        logger.debug("[Profiling] sigprof profiler session %s ended", self.profiler_id)
        self.profiler_id = None
        self._linger_until = None

    def _stash_chunk(self, tables: EpochTables) -> None:
        if self.profiler_id is None or not self._samples:
            self._samples = []
            return
        self._pending.append(
            (
                self._chunk_id,
                self.profiler_id,
                tables.frames[:],
                tables.stacks[:],
                self._samples,
                self._unix_offset_ns,
            )
        )
        self._samples = []

    def _send_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for chunk in pending:
            self._send(chunk)

    def _send(self, chunk: _PendingChunk) -> None:
        chunk_id, profiler_id, frames, stacks, samples, offset = chunk
        if not has_enough_samples(samples):
            logger.debug("[Profiling] Dropping chunk %s: no thread has 2 samples", chunk_id)
            return
        options, active = client_options()
        if not active:
            return
        converter = FrameConverter()
        body = chunk_json(
            chunk_id=chunk_id,
            profiler_id=profiler_id,
            frames=[converter.convert(frame) for frame in frames],
            stacks=stacks,
            samples=samples,
            unix_offset_ns=offset,
            thread_names=SOURCE.thread_names(),
            options=options,
            sdk_name=sdk_name(),
        )
        if send_envelope(chunk_envelope(body)):
            self.chunks_sent += 1


SESSION = ChunkSession()


def stats() -> dict[str, Any]:
    """What the session is doing, for tests and debugging."""
    return {"profiler_id": SESSION.profiler_id, "chunks_sent": SESSION.chunks_sent}
