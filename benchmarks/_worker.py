"""One measured run, in a fresh process: python _worker.py '<json spec>'.

Sets the contender up, starts it, runs the workload (the measured region:
wall with perf_counter, CPU of the whole process with process_time), stops
it, reads back what it took and prints one JSON line of figures. run.py
starts one of these per run; it never reuses a process.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import threading
import time
import traceback
from typing import Any, Callable

import workloads
from contenders import (
    Collected,
    Context,
    SigprofSampler,
    Unavailable,
    contender_classes,
    sink_dump,
)
from workloads import WORKLOADS, WorkloadResult, _spin


def _peak_rss_kib() -> int:
    """VmHWM: this process's peak RSS. (ru_maxrss survives execve on Linux,
    so a worker forked from a large parent would report the parent's.)"""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _sampler_threads_cpu_s() -> float:
    """CPU used so far by the profiler's own threads in this process:
    sigprof's native ticker and collector (named at the OS level) and Python
    threads named for a profiler (sentry-sdk's sampler thread). Read from
    schedstat, in nanoseconds: precise where whole-process CPU differences
    drown in noise."""
    named = {t.native_id for t in threading.enumerate() if "profil" in t.name.lower()}
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as handle:
                comm = handle.read().strip()
            if comm.startswith("sigprof-") or int(tid) in named:
                with open(f"/proc/self/task/{tid}/schedstat") as handle:
                    total += int(handle.read().split()[0])
        except OSError:
            continue  # the thread ended meanwhile
    return total / 1e9


# ------------------------------------------------------------------ soak


def _soak_frame(depth: int, variant: int, rng: random.Random) -> int:
    if depth <= 0:
        return _spin(0.2)
    pick = rng.randrange(4)
    if pick == 0:
        return _soak_a(depth - 1, variant, rng)
    if pick == 1:
        return _soak_b(depth - 1, variant, rng)
    if pick == 2:
        return _soak_c(depth - 1, variant, rng)
    return _soak_frame(depth - 1, variant, rng)


def _soak_a(depth: int, variant: int, rng: random.Random) -> int:
    return _soak_frame(depth, variant, rng)


def _soak_b(depth: int, variant: int, rng: random.Random) -> int:
    return _soak_frame(depth, variant, rng)


def _soak_c(depth: int, variant: int, rng: random.Random) -> int:
    return _soak_frame(depth, variant, rng)


def soak(seconds: float, threads: int = 4) -> dict[str, Any]:
    """Varied stacks (random paths through four functions, 5 to 60 deep, so
    interning tables see new stacks all the time) on several threads for a
    fixed time; RSS is read every half second."""
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            _soak_frame(rng.randrange(5, 60), seed, rng)

    workers = [threading.Thread(target=worker, args=(i,), name=f"soak-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    series: list[list[float]] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        time.sleep(0.5)
        series.append([round(time.perf_counter() - start, 2), _rss_kib()])
    stop.set()
    for thread in workers:
        thread.join()
    return {"rss_series_kib": series, "threads": threads + 1}


# ------------------------------------------------------------------ figures


def figures(truth: WorkloadResult, collected: Collected, mode: str, rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    samples = collected.samples
    if collected.native_thread_ids:
        by_native = {t.native_id: tid for tid, t in truth.threads.items()}
        samples = [(by_native.get(tid, -tid), stack, w) for tid, stack, w in samples]
    running = {tid: t for tid, t in truth.threads.items() if t.running}
    out["samples_total"] = sum(w for _, _, w in samples) if not collected.weighted else len(samples)
    if not running:
        return out
    opaque = collected.thread_ids_opaque

    def in_running(thread_id: int) -> bool:
        return opaque or thread_id in running

    # Everything below counts only samples inside a category function and the
    # time spent in them, so samples taken outside the measured window (a
    # profiler started early or stopped late) change nothing.
    categories: set[str] = set()
    for t in running.values():
        categories.update(t.wall if mode == "wall" else t.cpu)

    def category_of(stack: tuple[str, ...]) -> str | None:
        for name in stack:
            if name in categories:
                return name
        return None

    hits: dict[int, dict[str, float]] = {}
    for thread_id, stack, weight in samples:
        if not in_running(thread_id):
            continue
        category = category_of(stack)
        if category is not None:
            per = hits.setdefault(0 if opaque else thread_id, {})
            per[category] = per.get(category, 0.0) + weight

    # achieved samples per second per running thread, against its time in categories
    if not collected.weighted:
        basis = {
            tid: sum((t.wall if mode == "wall" else t.cpu).values()) for tid, t in running.items()
        }
        if opaque:
            total_basis = sum(basis.values())
            got = sum(hits.get(0, {}).values())
            achieved = [got / total_basis] if total_basis > 0 else []
        else:
            achieved = [sum(hits.get(tid, {}).values()) / b for tid, b in basis.items() if b > 0]
        if achieved:
            out["achieved_per_thread"] = sum(achieved) / len(achieved)
            out["achieved_min"] = min(achieved)
            out["achieved_pct"] = 100.0 * out["achieved_per_thread"] / rate
            out["achieved_min_pct"] = 100.0 * out["achieved_min"] / rate

    # attribution: each category's share of the category samples against its
    # share of the time, over the running threads
    truth_time: dict[str, float] = {}
    for t in running.values():
        for category, seconds in (t.wall if mode == "wall" else t.cpu).items():
            truth_time[category] = truth_time.get(category, 0.0) + seconds
    sample_hits: dict[str, float] = {}
    for per in hits.values():
        for category, weight in per.items():
            sample_hits[category] = sample_hits.get(category, 0.0) + weight
    total_hits, truth_total = sum(sample_hits.values()), sum(truth_time.values())
    if total_hits > 0 and truth_total > 0:
        detail = {}
        worst = 0.0
        for category in sorted(categories):
            sample_share = sample_hits.get(category, 0.0) / total_hits
            truth_share = truth_time.get(category, 0.0) / truth_total
            detail[category] = [round(100 * sample_share, 2), round(100 * truth_share, 2)]
            worst = max(worst, abs(sample_share - truth_share))
        out["attribution_error_pp"] = 100 * worst
        out["attribution"] = detail  # category: [sample %, truth %]
        out["category_samples"] = total_hits
        if truth.gil_categories:
            out["gil_samples_pct"] = sum(detail[c][0] for c in truth.gil_categories if c in detail)
            out["gil_truth_pct"] = sum(detail[c][1] for c in truth.gil_categories if c in detail)
    return out


# ------------------------------------------------------------------ cost


def cost_blocks(
    contender: Any, blocks: int, scale: float, count: Callable[[], int]
) -> dict[str, Any]:
    """Alternate blocks of cpu_deep with the profiler off and on (off-on,
    on-off, ...) in this one process: process-to-process differences (memory
    layout, hash seed) are several percent here, more than a sampler's cost.

    An "on" block pays sampling, stop and sending what was taken (sentry-sdk
    serialises and sends at stop), not start. Blocks come in two sizes, so
    the fixed cost of each stop-and-send (which a real session pays once a
    minute, not once a block) can be told from the cost of each sample:
    CPU difference = fixed + per_sample x samples. ``count()`` gives the
    running thread's samples taken since it was last called."""
    from workloads import Recorder, WorkloadResult, _deep_loop

    out: dict[str, list[float]] = {}
    count()
    for index in range(blocks):
        for size, block_scale in (("large", scale), ("small", scale / 8)):
            for phase in ("off", "on") if index % 2 == 0 else ("on", "off"):
                if phase == "on":
                    contender.start()
                cpu0 = time.process_time()
                _deep_loop(
                    Recorder(WorkloadResult(), "MainThread", running=True), block_scale, depth=52
                )
                if phase == "on":
                    contender.stop()
                    if "sentry_sdk" in sys.modules:
                        import sentry_sdk

                        sentry_sdk.flush(timeout=30)
                spent = time.process_time() - cpu0
                out.setdefault(f"cpu_{phase}_{size}_s", []).append(spent)
                if phase == "on":
                    out.setdefault(f"samples_{size}", []).append(count())
    out["cpu_on_s"] = out["cpu_on_large_s"]
    out["cpu_off_s"] = out["cpu_off_large_s"]
    return out


# ------------------------------------------------------------------ main


def run(spec: dict[str, Any]) -> dict[str, Any]:
    classes = contender_classes(spec.get("sigprof_via") == "init")
    transport = None
    if spec.get("steady") and spec["contender"] != "none":
        from steady import discarding_transport

        transport = discarding_transport()
    ctx = Context(
        transport=transport,
        rate=float(spec["rate"]),
        dsn=spec.get("dsn"),
        sink_url=spec.get("sink_url"),
        project=str(spec["project"]),
        workload=str(spec["workload"]),
        chunk_seconds=spec.get("chunk_seconds"),
    )
    contender = classes[spec["contender"]](ctx)
    if isinstance(contender, SigprofSampler) and spec.get("soak"):
        contender.keep_samples = False
        contender.drain_seconds = float(spec.get("chunk_seconds") or 1.0)
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        contender.setup()
    except Unavailable as error:
        return {**out, "unavailable": str(error)}
    if spec.get("steady"):
        from steady import run_steady

        return {**out, **run_steady(spec, contender, transport)}

    web = None
    workload: Callable[[float], WorkloadResult]
    if ctx.workload == "web":
        from web import WebRun

        # a deep transport queue: at this request rate the default (100)
        # drops envelopes, profile chunks included
        contender.init_sentry(traces_sample_rate=1.0, transport_queue_size=100_000)
        web = WebRun(float(spec["scale"]))
        workload = web
    elif ctx.workload == "soak":
        workload = WORKLOADS["cpu_deep"]  # unused
    else:
        workload = WORKLOADS[ctx.workload]

    if spec.get("cost_blocks"):
        main = threading.get_ident()
        seen = {"n": 0}

        def count() -> int:
            if contender.uses_sentry:
                import sentry_sdk

                sentry_sdk.flush(timeout=30)
                time.sleep(0.02)
                dump = sink_dump(ctx, keep_profiles=False)
                return int(dump["profile_samples_by_thread"].get(str(main), 0))
            total = int(getattr(contender, "thread_counts", {}).get(main, 0))
            new, seen["n"] = total - seen["n"], total
            return new

        contender.start()  # warm up: first start pays imports and allocations
        contender.stop()
        blocks = cost_blocks(contender, int(spec["cost_blocks"]), float(spec["scale"]), count)
        return {**out, **blocks, "mode": contender.mode}
    gc.collect()
    rss_before = _rss_kib()
    try:
        contender.start()
    except Unavailable as error:
        return {**out, "unavailable": str(error)}
    soak_result: dict[str, Any] | None = None
    phases: dict[str, tuple[float, float]] = {}
    workloads.mark_phase = lambda phase: phases.__setitem__(
        phase, (_sampler_threads_cpu_s(), time.perf_counter())
    )
    sampler0 = _sampler_threads_cpu_s()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if ctx.workload == "soak":
        soak_result = soak(float(spec["soak_seconds"]))
        truth = WorkloadResult()
    else:
        truth = workload(float(spec["scale"]))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sampler_threads_cpu = _sampler_threads_cpu_s() - sampler0
    contender.stop()
    rss_after_stop = _rss_kib()
    if web is not None:
        web.close()

    profiles: list[dict[str, Any]] = []
    if ctx.dsn is not None and "sentry_sdk" in sys.modules:
        import sentry_sdk

        sentry_sdk.flush(timeout=30)
        time.sleep(0.05)
        dump = sink_dump(ctx, keep_profiles=not spec.get("soak"))
        profiles = dump.pop("profiles", [])
        out["payload"] = dump
        out["payload_bytes_per_min"] = dump["bytes"] / (wall / 60.0) if wall > 0 else 0.0
    collected = contender.collect(profiles)
    out.update(
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_kib=_peak_rss_kib(),
        rss_before_kib=rss_before,
        rss_after_stop_kib=rss_after_stop,
        sampler_threads_cpu_s=sampler_threads_cpu,
        mode=contender.mode,
        notes=collected.notes,
    )
    if "steady" in phases and "end" in phases:
        (cpu_a, wall_a), (cpu_b, wall_b) = phases["steady"], phases["end"]
        out["steady_sampler_threads_cpu_pct"] = 100 * (cpu_b - cpu_a) / (wall_b - wall_a)
    if collected.profiler_cpu_s is not None:
        out["profiler_cpu_s"] = collected.profiler_cpu_s
    if spec.get("soak"):
        out["soak"] = soak_result
        out["samples_total"] = (
            dump["profile_samples"] if contender.uses_sentry else contender_sample_count(contender)
        )
        return out
    out.update(figures(truth, collected, contender.mode, ctx.rate))
    out["extra"] = truth.extra
    return out


def contender_sample_count(contender: Any) -> int:
    return int(getattr(contender, "sample_count", 0))


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        result = run(spec)
    except Exception as error:  # noqa: BLE001 - reported, never hidden
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no atexit flushes or teardown outside the measured region


if __name__ == "__main__":
    main()
