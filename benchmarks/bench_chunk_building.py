"""The Python-side cost of one 60 s continuous-profiling chunk: sigprof vs sentry-sdk.

    python benchmarks/bench_chunk_building.py [--repeat 7] [--seconds 60]

Both sides get the same samples: 8 threads, 60-frame stacks, 101 Hz for
60 s (48,480 samples over 160 distinct stacks). Measured, per chunk:

- sigprof: what `ChunkSession` does with the interned batches that
  `Sampler.drain()` returns: convert the epoch's frames (cached across
  chunks, as in a running service), write the chunk's JSON (the samples
  array directly, no dict per sample), and serialise the envelope.
- sentry-sdk: what its `ProfileBuffer` does with the samples its sampler
  thread extracted: `ProfileChunk.write()` once per tick (indexing every
  thread's stack), `to_json()`, and serialising the envelope.

Neither side's sampling is counted (sentry-sdk's frame walking at every
tick, sigprof's native capture), only building and serialising. The two
are timed alternately, `--repeat` times each; the table shows medians and
the ratio. Timings are noisy on a shared machine: read the ratio, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sentry_sdk.consts import VERSION
from sentry_sdk.envelope import Envelope
from sentry_sdk.profiler.continuous_profiler import ProfileChunk

from sigprof.core.sampler import Frame
from sigprof.formats.chunk_json import chunk_json
from sigprof.formats.sentry_frames import FrameConverter
from sigprof.sentry.envelopes import chunk_envelope, mark_in_app

THREADS = 8
DEPTH = 60
SHARED_ROOT = 50  # frames every stack shares (server loop, framework)
VARIANTS = 20  # distinct leaf paths per thread
FREQUENCY = 101
OPTIONS: dict[str, Any] = {
    "in_app_exclude": [],
    "in_app_include": [],
    "project_root": "/srv/app",
    "release": "shop@1.0",
    "environment": "production",
    "dist": None,
}
SDK_INFO = {"name": "sentry.python", "version": "bench"}


class Workload:
    """One chunk's samples, in both shapes: interned (sigprof's drain) and
    extracted per tick (sentry-sdk's sampler)."""

    def __init__(self, seconds: float) -> None:
        self.frames: list[Frame] = []
        frame_index: dict[Frame, int] = {}

        def intern(frame: Frame) -> int:
            if frame not in frame_index:
                frame_index[frame] = len(self.frames)
                self.frames.append(frame)
            return frame_index[frame]

        root = [
            Frame(
                f"Server.layer_{i}",
                f"/srv/app/server/layer_{i % 7}.py",
                f"server.layer_{i % 7}",
                10 + i,
            )
            for i in range(SHARED_ROOT)
        ]
        self.stacks: list[tuple[int, ...]] = []
        stack_of: dict[tuple[int, int], int] = {}
        for thread in range(THREADS):
            for variant in range(VARIANTS):
                leaf = [
                    Frame(
                        f"Handler{thread}.step_{variant}_{j}",
                        f"/srv/app/handlers/h{thread}.py",
                        f"handlers.h{thread}",
                        100 + variant * 10 + j,
                    )
                    for j in range(DEPTH - SHARED_ROOT)
                ]
                # leaf first, like both samplers
                ids = tuple(intern(f) for f in reversed(root + leaf))
                stack_of[(thread, variant)] = len(self.stacks)
                self.stacks.append(ids)
        ticks = int(seconds * FREQUENCY)
        self.thread_ids = [140000000000000 + 4096 * t for t in range(THREADS)]
        start_ns = 1_000_000_000_000
        self.samples: list[tuple[int, int, int]] = []
        self.ticks: list[tuple[int, list[tuple[int, int]]]] = []
        for tick in range(ticks):
            ts = start_ns + tick * 1_000_000_000 // FREQUENCY
            row = []
            for t, tid in enumerate(self.thread_ids):
                sid = stack_of[(t, (tick // 7 + t) % VARIANTS)]
                self.samples.append((ts + t * 1000, tid, sid))
                row.append((tid, sid))
            self.ticks.append((ts, row))
        self.unix_offset_ns = 1_700_000_000_000_000_000 - start_ns
        self.sentry_ticks = self._as_sentry_extracts()

    def _as_sentry_extracts(self) -> list[tuple[float, list[tuple[str, Any]]]]:
        """sentry-sdk's ExtractedSample per tick: (tid, (stack key, frame ids, frames))."""
        converter = FrameConverter()
        processed = [converter.convert(f) for f in self.frames]
        frame_ids = [(f.filename, f.lineno, f.function) for f in self.frames]
        extracted = []
        for stack in self.stacks:
            ids = tuple(frame_ids[i] for i in stack)
            extracted.append(((len(ids), hash(ids)), ids, [processed[i] for i in stack]))
        start = 1_700_000_000.0
        return [
            (start + ts / 1e9, [(str(tid), extracted[sid]) for tid, sid in row])
            for ts, row in self.ticks
        ]


def sigprof_chunk(work: Workload) -> int:
    converter = FrameConverter()
    frames = [converter.convert(frame) for frame in work.frames]
    mark_in_app(frames, OPTIONS)
    body = chunk_json(
        chunk_id=uuid.uuid4().hex,
        profiler_id=uuid.uuid4().hex,
        frames=frames,
        stacks=work.stacks,
        samples=work.samples,
        unix_offset_ns=work.unix_offset_ns,
        thread_names={tid: f"worker-{i}" for i, tid in enumerate(work.thread_ids)},
        options=OPTIONS,
        sdk_name="sentry.python",
        sdk_version=VERSION,
    )
    return len(chunk_envelope(body).serialize())


def sentry_chunk(work: Workload) -> int:
    chunk = ProfileChunk()
    for ts, sample in work.sentry_ticks:
        chunk.write(ts, sample)
    payload = chunk.to_json(uuid.uuid4().hex, OPTIONS, SDK_INFO)  # type: ignore[arg-type]
    envelope = Envelope()
    envelope.add_profile_chunk(payload)
    return len(envelope.serialize())


def timed(function: Callable[[Workload], int], work: Workload) -> tuple[float, int]:
    gc.collect()
    start = time.perf_counter()
    size = function(work)
    return time.perf_counter() - start, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Workload(args.seconds)
    ours: list[float] = []
    theirs: list[float] = []
    sizes = {}
    for _ in range(args.repeat):  # interleaved, so drift hits both alike
        elapsed, sizes["sigprof"] = timed(sigprof_chunk, work)
        ours.append(elapsed)
        elapsed, sizes["sentry-sdk"] = timed(sentry_chunk, work)
        theirs.append(elapsed)
    import sentry_sdk

    print(
        f"one {args.seconds:g} s chunk: {THREADS} threads, {DEPTH}-frame stacks, {FREQUENCY} Hz, "
        f"{len(work.samples)} samples, {len(work.stacks)} stacks, {len(work.frames)} frames; "
        f"Python {sys.version.split()[0]}, sentry-sdk {sentry_sdk.VERSION}, "
        f"median of {args.repeat} interleaved runs"
    )
    print(f"{'builder':<12} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'envelope KiB':>13}")
    for name, runs in (("sigprof", ours), ("sentry-sdk", theirs)):
        print(
            f"{name:<12} {statistics.median(runs) * 1e3:>10.1f} {min(runs) * 1e3:>8.1f} "
            f"{max(runs) * 1e3:>8.1f} {sizes[name] / 1024:>13.0f}"
        )
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"ratio sentry-sdk / sigprof: {ratio:.2f}x")


if __name__ == "__main__":
    main()
