"""The one chunk cutter of continuous profiling, whoever the chunks are for.

A `ChunkCutter` is a consumer of the process's one sample source
(`sigprof.core.sample_source.SOURCE`). While it runs it owns the source's
interning epochs: each chunk is one epoch, so a chunk's frames and stacks are
the epoch's tables as they stand and its samples carry the native stack ids
unchanged. Cut chunks wait in the cutter until their sink takes them: the
Sentry wing's session hands them to sentry-sdk's transport
(`sigprof.sentry.session`), the local writer writes them to files
(`sigprof.chunks.local_chunks`). The cutter also tells each chunk how many
samples the native buffer dropped since the chunk before it.

Locks: the cutter's own lock guards only the cut chunks; it is taken after
`SOURCE.lock`, never before, and nothing is called with it held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sigprof.core.housekeeping import os_thread_rlock
from sigprof.core.ids import random_hex_id
from sigprof.core.sample_source import SOURCE, EpochTables, RawSample
from sigprof.core.sampler import Frame


@dataclass
class CutChunk:
    chunk_id: str
    profiler_id: str
    frames: list[Frame]
    stacks: list[tuple[int, ...]]
    samples: list[RawSample]
    unix_offset_ns: int  # added to a sample's monotonic time gives unix time
    dropped_samples: int  # by the native buffer since the chunk before


class ChunkCutter:
    """Takes samples from the shared sampler and cuts them into chunks."""

    def __init__(self) -> None:
        self._lock = os_thread_rlock()
        self.profiler_id: str | None = None  # set while running
        self._chunk_id = ""
        self._chunk_started = 0.0
        self._samples: list[RawSample] = []
        self._unix_offset_ns = 0
        self._dropped_seen = 0  # SOURCE.dropped_total when the last chunk was cut
        self._cut: list[CutChunk] = []

    @property
    def running(self) -> bool:
        return self.profiler_id is not None

    def start(self, profiler_id: str) -> bool:
        """Starts taking samples (starting the shared sampler if needed), in
        chunks of a fresh epoch. False if the sampler could not start (the
        reason is in SOURCE.last_error)."""
        with SOURCE.lock:
            self._samples = []
            self._begin_chunk()
            if not SOURCE.acquire(self, new_epoch=True):
                return False
            self.profiler_id = profiler_id
            self._unix_offset_ns = SOURCE.to_unix_ns(0)
            self._dropped_seen = SOURCE.dropped_total
            return True

    def stop(self) -> None:
        """Stops taking samples; what was sampled last becomes a last chunk."""
        with SOURCE.lock:
            if self.profiler_id is None:
                return
            SOURCE.release(self)  # feeds the last samples first
            self._cut_chunk(SOURCE.tables)
            self.profiler_id = None

    def cut(self) -> None:
        """Ends the current chunk now (flush)."""
        if self.running:
            SOURCE.collect(reset=True)

    def cut_if_due(self, interval_s: float) -> float | None:
        """Ends the current chunk once it is `interval_s` old (the sink's
        periodic task calls this after each drain); the seconds until the
        next cut is due, None when not running."""
        if not self.running:
            return None
        age = time.monotonic() - self._chunk_started
        if age < interval_s:
            return interval_s - age
        SOURCE.collect(reset=True)
        return interval_s

    def take(self) -> list[CutChunk]:
        """The chunks cut since the last call, oldest first."""
        with self._lock:
            cut, self._cut = self._cut, []
        return cut

    def forget_after_fork(self) -> None:
        """In a forked child: the samples and chunks are the parent's (its
        sampler did not survive the fork). The parent's lock may be held by a
        thread that did not survive it either, so it is replaced, not taken."""
        self._lock = os_thread_rlock()
        self.profiler_id = None
        self._samples = []
        self._cut = []

    # ---- sample source consumer (called with the source's lock held) ----

    def feed(self, samples: list[RawSample], tables: EpochTables) -> None:
        self._samples.extend(samples)

    def epoch_ending(self, tables: EpochTables) -> None:
        self._cut_chunk(tables)
        self._begin_chunk()

    # ---- internals ----

    def _begin_chunk(self) -> None:
        self._chunk_id = random_hex_id()
        self._chunk_started = time.monotonic()

    def _cut_chunk(self, tables: EpochTables) -> None:
        samples, self._samples = self._samples, []
        if self.profiler_id is None or not samples:
            return  # drops so far carry over to the next chunk
        dropped = SOURCE.dropped_total - self._dropped_seen
        self._dropped_seen = SOURCE.dropped_total
        chunk = CutChunk(
            self._chunk_id,
            self.profiler_id,
            tables.frames[:],
            tables.stacks[:],
            samples,
            self._unix_offset_ns,
            dropped,
        )
        with self._lock:
            self._cut.append(chunk)
