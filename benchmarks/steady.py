"""The steady-state figure: what continuous profiling costs once it runs.

One busy thread about 60 frames deep (the main thread), alone or with 200
idle threads blocked on an Event, profiled at 101 Hz by sigprof (wall and cpu
clock, through ``sigprof.init``) or by sentry-sdk's continuous profiler, in
a fresh process per run. Envelopes are serialised and discarded in the
process (``DiscardingTransport``), so what a chunk costs is charged to the
process, not what a network costs.

Over a window that starts after a warm-up, from ``/proc/self/task/*``:

- **others**: the CPU of every thread but the profiled ones (schedstat,
  nanoseconds): the profiler's threads, sentry-sdk's transport and monitor;
- **profiler threads**: sigprof's ticker, collector and housekeeping thread,
  or sentry-sdk's sampler thread;
- **GIL hand-offs**: the busy thread's voluntary context switches. A thread
  that only computes never blocks, except when another thread asks for the
  GIL: after the switch interval it drops the GIL and sleeps on the GIL's
  condition variables until it has it back, about one voluntary switch per
  hand-off (two when it has to wait both for the taker and for the GIL's
  return; none when the other thread was quick enough that nothing had to
  sleep). Preemption by the kernel is an involuntary switch and is not
  counted; without a profiler the count is 0. The same count over the first
  half second after the profiler started is the session-start figure;
- **samples**: those of the chunks whose timestamps fall in the window, of
  every thread and of the busy thread (against what it is owed: a sample per
  tick of wall time, or of its CPU time in the cpu clock); the cost per
  sample is the others' CPU divided by them.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from typing import Any

from workloads import _descend, _spin

IDLE_THREADS = 200
STARTUP_WINDOW_S = 0.5  # the session-start hand-offs are counted over this


def discarding_transport() -> Any:
    """A sentry-sdk transport that serialises each envelope, as the HTTP
    transport would, and keeps the profile chunks' payloads to count samples
    after the run; nothing is sent."""
    from sentry_sdk.transport import Transport

    class DiscardingTransport(Transport):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.chunks: list[bytes] = []

        def capture_envelope(self, envelope: Any) -> None:
            envelope.serialize_into(io.BytesIO())
            for item in envelope.items:
                if item.type == "profile_chunk":
                    self.chunks.append(item.get_bytes())

    return DiscardingTransport()


def _task_cpu_ns() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/schedstat") as handle:
                out[int(name)] = int(handle.read().split()[0])
        except OSError:
            continue  # ended meanwhile
    return out


def _voluntary_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as handle:
        for line in handle:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def _profiler_tids(profiled: set[int]) -> set[int]:
    """sigprof's threads (its native ones are named sigprof-*; its
    housekeeping thread is the one thread `threading` does not know) or
    sentry-sdk's sampler thread."""
    known = {t.native_id: t.name for t in threading.enumerate()}
    out = set()
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid in profiled:
            continue
        try:
            with open(f"/proc/self/task/{name}/comm") as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        thread_name = known.get(tid)
        if comm.startswith("sigprof-") or thread_name is None or "profil" in thread_name.lower():
            out.add(tid)
    return out


class _Marks:
    """Snapshots the busy thread takes at its phase boundaries."""

    def __init__(self, busy_tid: int, schedule: list[tuple[str, float]]) -> None:
        self.busy_tid = busy_tid
        self.schedule = schedule  # (name, seconds after start), in order
        self.taken: dict[str, dict[str, Any]] = {}
        self.start = time.perf_counter()

    def due(self) -> bool:
        """Takes any mark now due; False once the last one is taken."""
        if not self.schedule:
            return False
        name, at = self.schedule[0]
        if time.perf_counter() - self.start >= at:
            self.schedule.pop(0)
            self.taken[name] = {
                "wall": time.perf_counter(),
                "unix": time.time(),
                "cpu": _task_cpu_ns(),
                "handoffs": _voluntary_switches(self.busy_tid),
            }
        return bool(self.schedule)


def _busy_leaf(marks: _Marks) -> int:
    while marks.due():
        _spin(0.5)
    return 0


def _count_samples(chunks: list[bytes], since: float, until: float, busy: int) -> tuple[int, int]:
    total = on_busy = 0
    for raw in chunks:
        document = json.loads(raw)
        profile = document.get("profile", document)
        for sample in profile.get("samples", []):
            if since <= float(sample["timestamp"]) < until:
                total += 1
                on_busy += int(sample["thread_id"]) == busy
    return total, on_busy


def run_steady(spec: dict[str, Any], contender: Any, transport: Any) -> dict[str, Any]:
    warmup, window = float(spec["steady_warmup_s"]), float(spec["steady_window_s"])
    # after the window, a chunk's length and a margin: every sample of the
    # window is in a chunk sent before stop
    tail = float(spec.get("chunk_seconds") or 0) + 0.5
    stop_idle = threading.Event()
    idle = [
        threading.Thread(target=stop_idle.wait, name=f"idle-{i}", daemon=True)
        for i in range(int(spec.get("idle_threads", 0)))
    ]
    for thread in idle:
        thread.start()
    busy_tid = threading.get_native_id()
    profiled = {busy_tid} | {t.native_id for t in idle if t.native_id is not None}
    contender.start()
    marks = _Marks(
        busy_tid,
        [
            ("start", 0.0),
            ("started", STARTUP_WINDOW_S),
            ("window", warmup),
            ("end", warmup + window),
            ("tail", warmup + window + tail),
        ],
    )
    _descend(58, lambda units: _busy_leaf(marks), 0.0)
    profiler = _profiler_tids(profiled)
    contender.stop()
    stop_idle.set()
    for thread in idle:
        thread.join()

    first, last = marks.taken["window"], marks.taken["end"]
    seconds = last["wall"] - first["wall"]

    def cpu_ns(tids: set[int] | None) -> int:
        return sum(
            ns - first["cpu"].get(tid, 0)
            for tid, ns in last["cpu"].items()
            if (tids is None and tid not in profiled) or (tids is not None and tid in tids)
        )

    others, profiler_ns = cpu_ns(None), cpu_ns(profiler)
    out: dict[str, Any] = {
        "window_s": seconds,
        "others_cpu_pct": 100 * others / 1e9 / seconds,
        "profiler_cpu_pct": 100 * profiler_ns / 1e9 / seconds,
        "handoffs_per_s": (last["handoffs"] - first["handoffs"]) / seconds,
        "startup_handoffs": marks.taken["started"]["handoffs"] - marks.taken["start"]["handoffs"],
        "mode": contender.mode,
    }
    if transport is not None:
        total, on_busy = _count_samples(
            transport.chunks, first["unix"], last["unix"], threading.get_ident()
        )
        # owed: a sample per tick of the profiler's clock
        busy_s = (last["cpu"][busy_tid] - first["cpu"][busy_tid]) / 1e9
        owed = float(spec["rate"]) * (busy_s if contender.mode == "cpu" else seconds)
        out.update(
            samples=total,
            busy_samples=on_busy,
            busy_samples_pct=100 * on_busy / owed,
            us_per_sample=1e6 * others / 1e9 / total if total else None,
            us_per_busy_sample=1e6 * others / 1e9 / on_busy if on_busy else None,
        )
    return out
