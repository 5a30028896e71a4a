"""Continuous profiling: a profiler session cut into chunks (format v2).

One `ChunkSession` exists per process. It runs while anything holds it: the
manual lifecycle (`start_profiler()` .. `stop_profiler()`), open sampled
root spans under the trace lifecycle, or open profiling spans. While it
runs it has one `profiler_id`, which sentry-sdk stamps on every span and
transaction; it sends a chunk every 60 s and when it ends, flushes or the
process exits, one envelope per chunk.

Chunks are cut by the one chunk cutter (`sigprof.chunks.cutter`, one
interning epoch of the shared sampler per chunk); this module is their sink
into sentry-sdk's transport.

Built chunks wait in a bounded send queue. sentry-sdk's HTTP transport keeps
up to `transport_queue_size` (100) envelopes of every kind in memory and
sends one at a time: a slow Sentry would fill it with chunks (megabytes
each) and crowd out transactions. So at most MAX_IN_FLIGHT chunks wait in
the transport's queue at once (a chunk leaves it when the transport starts
sending it, or lets go of it); the rest wait here, the oldest dropped first
when the queue is full. What was lost (chunks here, samples to a full native
buffer) is logged, counted as a `queue_overflow` client report for dropped
chunks, and written into the next chunk handed over (`envelopes.LOSSES_KEY`).
"""

from __future__ import annotations

import os
import time
import weakref
from collections import deque
from collections.abc import Hashable
from typing import Any

import sentry_sdk
from sentry_sdk import transport as sdk_transport
from sentry_sdk.consts import VERSION
from sentry_sdk.utils import logger

from sigprof.chunks.cutter import ChunkCutter, CutChunk
from sigprof.core.drop_warning import DropWarning
from sigprof.core.housekeeping import os_thread_rlock
from sigprof.core.ids import random_hex_id
from sigprof.core.sample_source import SOURCE
from sigprof.formats.chunk_json import chunk_json, has_enough_samples, with_losses
from sigprof.formats.sentry_frames import FrameConverter
from sigprof.sentry.envelopes import (
    chunk_envelope,
    client_options,
    mark_in_app,
    prepare_transport,
    sdk_name,
    send_envelope,
)

CHUNK_SECONDS = 60.0
# Under the trace lifecycle the session outlives its last root span by this
# much, so back-to-back transactions share one profiler_id and one chunk.
TRACE_LINGER_S = 0.5

# The send queue's bounds (see the module docstring), and how many chunks
# sentry-sdk's HTTP transport may hold at once.
MAX_QUEUED_CHUNKS = 8
MAX_QUEUED_BYTES = 16 << 20
MAX_IN_FLIGHT = 2
# A chunk the transport still holds after this long stops counting against
# MAX_IN_FLIGHT (something kept a reference to it: it is not coming back).
IN_FLIGHT_TIMEOUT_S = 120.0

# Transports that queue envelopes for a worker thread (BaseHttpTransport
# before 2.4x, HttpTransportCore after).
_QUEUEING_TRANSPORTS = tuple(
    cls
    for cls in (
        getattr(sdk_transport, "HttpTransportCore", None),
        getattr(sdk_transport, "BaseHttpTransport", None),
    )
    if isinstance(cls, type)
) or (sdk_transport.HttpTransport,)


class ChunkSession:
    """The process's continuous profiling session and its current chunk."""

    def __init__(self) -> None:
        self._lock = os_thread_rlock()
        # One sender at a time: a flush or the session's end returns only once
        # a chunk another thread took to build is in the transport too (at
        # exit the transport is closed right after).
        self._send_lock = os_thread_rlock()
        self._cutter = ChunkCutter()
        self._holders: dict[Hashable, bool] = {}
        self._linger_until: float | None = None
        self._queue: deque[bytes] = deque()  # built chunk bodies, oldest first
        self.queued_bytes = 0
        self._in_flight: dict[int, float] = {}  # hand-off number -> monotonic time
        self._handed_off = 0
        self._unsent_samples_dropped = 0  # not yet told in a chunk
        self._unsent_chunks_dropped = 0
        self.drop_warning = DropWarning()
        self.chunks_sent = 0
        self.chunks_dropped = 0
        self._pid = os.getpid()
        SOURCE.add_periodic(self.periodic)

    @property
    def profiler_id(self) -> str | None:
        return self._cutter.profiler_id

    @property
    def running(self) -> bool:
        return self._cutter.running

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
                SOURCE.wake_housekeeping()  # a round now learns when the linger ends
                return
            self._end()
        self._send_pending(everything=True)

    def end(self) -> None:
        """Ends the session whoever holds it (exit, teardown)."""
        with self._lock:
            self._holders.clear()
            self._end()
        self._send_pending(everything=True)

    def flush(self) -> None:
        """Sends what the current chunk has so far and starts a new chunk;
        every queued chunk goes to the transport."""
        with self._lock:
            self._cutter.cut()
        self._send_pending(everything=True)

    def periodic(self) -> float | None:
        """Run by the sampler's housekeeping thread after each drain; the
        seconds until the session wants the next round (a chunk due, its
        linger ending)."""
        wish = None
        with self._lock:
            if self.profiler_id is not None:
                now = time.monotonic()
                if not self._holders and self._linger_until is not None:
                    if now >= self._linger_until:
                        self._end()
                    else:
                        wish = self._linger_until - now
                else:
                    wish = self._cutter.cut_if_due(CHUNK_SECONDS)
            ended = self.profiler_id is None
        # Once the session is over the housekeeping thread soon stops: the
        # transport takes what is left, not a later round.
        self._send_pending(everything=ended)
        return wish

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
        self._lock = os_thread_rlock()
        self._send_lock = os_thread_rlock()
        self._cutter.forget_after_fork()
        self._holders = {}
        self._linger_until = None
        self._queue = deque()
        self.queued_bytes = 0
        self._in_flight = {}

    # ---- internals ----

    def _start(self) -> bool:
        if not self._cutter.start(random_hex_id()):
            return False
        prepare_transport()
        self._linger_until = None
        logger.debug("[Profiling] sigprof profiler session %s started", self.profiler_id)
        return True

    def _end(self) -> None:
        profiler_id = self._cutter.profiler_id
        if profiler_id is None:
            return
        self._cutter.stop()
        logger.debug("[Profiling] sigprof profiler session %s ended", profiler_id)
        self._linger_until = None

    def _send_pending(self, *, everything: bool = False) -> None:
        """Builds the stashed chunks into the send queue and hands the
        transport what it can take now (with `everything`: all of it, for
        flush and the end of a session)."""
        with self._send_lock:
            built = [(self._build(chunk), chunk.dropped_samples) for chunk in self._cutter.take()]
            with self._lock:
                for body, dropped_samples in built:
                    self._unsent_samples_dropped += dropped_samples
                    if body is not None:
                        self._enqueue(body)
                transport = getattr(sentry_sdk.get_client(), "transport", None)
                throttled = not everything and isinstance(transport, _QUEUEING_TRANSPORTS)
                room = MAX_IN_FLIGHT - self._count_in_flight() if throttled else len(self._queue)
                bodies = [self._dequeue() for _ in range(min(room, len(self._queue)))]
                losses = {
                    "dropped_samples": self._unsent_samples_dropped,
                    "dropped_chunks": self._unsent_chunks_dropped,
                }
                if bodies:
                    self._unsent_samples_dropped = self._unsent_chunks_dropped = 0
            for index, body in enumerate(bodies):
                self._hand_off(with_losses(body, losses) if index == 0 else body)

    def _build(self, chunk: CutChunk) -> bytes | None:
        if not has_enough_samples(chunk.samples, chunk.stacks):
            logger.debug(
                "[Profiling] Dropping chunk %s: no thread has 2 samples with frames", chunk.chunk_id
            )
            return None
        options, active = client_options()
        if not active:
            return None
        converter = FrameConverter()
        sentry_frames = [converter.convert(frame) for frame in chunk.frames]
        mark_in_app(sentry_frames, options)
        return chunk_json(
            chunk_id=chunk.chunk_id,
            profiler_id=chunk.profiler_id,
            frames=sentry_frames,
            stacks=chunk.stacks,
            samples=chunk.samples,
            unix_offset_ns=chunk.unix_offset_ns,
            thread_names=SOURCE.thread_names(),
            options=options,
            sdk_name=sdk_name(),
            sdk_version=VERSION,
        )

    # ---- the send queue (lock held) ----

    def _enqueue(self, body: bytes) -> None:
        self._queue.append(body)
        self.queued_bytes += len(body)
        # The newest chunk always stays, even alone over the byte bound.
        while len(self._queue) > MAX_QUEUED_CHUNKS or (
            self.queued_bytes > MAX_QUEUED_BYTES and len(self._queue) > 1
        ):
            self._dequeue()
            self._chunk_dropped()

    def _dequeue(self) -> bytes:
        body = self._queue.popleft()
        self.queued_bytes -= len(body)
        return body

    def _count_in_flight(self) -> int:
        expired = time.monotonic() - IN_FLIGHT_TIMEOUT_S
        for number, since in list(self._in_flight.items()):
            if since < expired:
                self._in_flight.pop(number, None)
        return len(self._in_flight)

    def _chunk_dropped(self) -> None:
        self.chunks_dropped += 1
        self._unsent_chunks_dropped += 1
        transport = getattr(sentry_sdk.get_client(), "transport", None)
        record = getattr(transport, "record_lost_event", None)
        if callable(record):
            record("queue_overflow", data_category="profile_chunk")
        unwarned = self.drop_warning.count(1)
        if unwarned:
            logger.warning(
                "[Profiling] sigprof dropped %d profile chunks: Sentry does not take them as "
                "fast as they come (at most %d chunks or %d MiB wait to be sent)",
                unwarned,
                MAX_QUEUED_CHUNKS,
                MAX_QUEUED_BYTES >> 20,
            )

    # ---- handing over (no lock held: a transport may call back) ----

    def _hand_off(self, body: bytes) -> None:
        with self._lock:
            self._handed_off += 1
            number = self._handed_off
            self._in_flight[number] = time.monotonic()

        def landed() -> None:
            # No lock: this runs in the transport's thread, or in a garbage
            # collection in any thread holding any lock; dict.pop is atomic.
            self._in_flight.pop(number, None)

        # A chunk counts against MAX_IN_FLIGHT until the transport starts
        # sending it, or lets go of it unsent (queue full, rate limited).
        envelope = chunk_envelope(body, on_read=landed)
        weakref.finalize(envelope.items[0], landed)
        if send_envelope(envelope):
            self.chunks_sent += 1


SESSION = ChunkSession()


def stats() -> dict[str, Any]:
    """What the session is doing, for tests and debugging."""
    return {
        "profiler_id": SESSION.profiler_id,
        "chunks_sent": SESSION.chunks_sent,
        "chunks_dropped": SESSION.chunks_dropped,
        "chunks_queued": len(SESSION._queue),
        "queued_bytes": SESSION.queued_bytes,
    }
