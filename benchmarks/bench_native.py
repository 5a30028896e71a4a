"""Microbenchmark of sigprof's native core.

    python3 benchmarks/bench_native.py [--quick] [--json] [--python 3.12]

1. Capture cost per sample against stack depth (10, 60, 128 frames).
   A thread at a known depth runs a tight loop reading perf_counter_ns and
   keeps every gap above 300 ns: each signal shows up as one such gap
   (kernel delivery + handler + return). The same loop runs with
   (a) per-thread CPU timers at 500 Hz delivering a signal to a no-op C
       handler (compiled here with cc; the baseline cost of any signal),
   (b) sigprof at 500 Hz, cpu clock, and (c) wall clock,
   each in a fresh process, repeated and interleaved. Capture cost =
   median sigprof gap minus median no-op gap. Medians of per-signal
   latencies resist a busy machine far better than CPU-time differences
   (2 us at 500 Hz is 0.1% of a core, below this machine's noise).
   Timings on a shared machine are noisy, so the same captures also run
   under valgrind's callgrind: the signal handler's inclusive instruction
   count divided by the signals it handled (repeatable; perf has no hardware
   counters on this VM).
2. Drain/resolve cost per sample: samples accumulate in the ring at 500 Hz
   on four threads with 60-frame stacks, then one drain() is timed: cold (every
   frame and stack new) and warm (all interned already); samples() (frames
   resolved to Frame tuples for people) is timed separately.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DEPTHS = (10, 60, 128)
RATE = 500
GAP_MIN_NS = 1000  # the loop's own jitter stays under this
GAP_MAX_NS = 200_000  # longer gaps are preemption by other processes
SHORT_GAP_MAX_NS = 50_000  # a signal's gap: kernel entry, handler, sigreturn (and the tick)

NOOP_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <string.h>

static volatile long hits;
static timer_t timer;

static void on_signal(int signo, siginfo_t *info, void *context)
{
    (void)signo; (void)info; (void)context;
    hits++;
}

int noop_start(long interval_ns)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_signal;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGUSR2, &action, NULL) != 0) return -1;
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGUSR2;
    event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &event, &timer) != 0) return -2;
    struct itimerspec spec;
    spec.it_interval.tv_sec = 0;
    spec.it_interval.tv_nsec = interval_ns;
    spec.it_value = spec.it_interval;
    return timer_settime(timer, 0, &spec, NULL);
}

int noop_stop(void)
{
    return timer_delete(timer);
}

long noop_hits(void)
{
    return hits;
}
"""


def _build_noop() -> str:
    directory = tempfile.mkdtemp(prefix="sigprof-bench-noop-")
    source = os.path.join(directory, "noop.c")
    library = os.path.join(directory, "noop.so")
    with open(source, "w") as handle:
        handle.write(NOOP_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", library, source, "-lrt"], check=True)
    return library


# ------------------------------------------------------------------ children


def _gap_loop(iterations: int) -> list[int]:
    clock = time.perf_counter_ns
    gaps: list[int] = []
    keep = gaps.append
    previous = clock()
    for _ in range(iterations):
        now = clock()
        if now - previous > GAP_MIN_NS:
            keep(now - previous)
        previous = now
    return gaps


def _at_depth(depth: int, body: Any) -> Any:
    """Run body() with `depth` Python frames on the stack, counting this
    module's frames below it."""
    here = len(_stack_depth())
    return _descend(max(0, depth - here - 2), body)


def _stack_depth() -> list[int]:
    frame = sys._getframe(1)
    frames = []
    while frame is not None:
        frames.append(1)
        frame = frame.f_back  # type: ignore[assignment]
    return frames


def _descend(remaining: int, body: Any) -> Any:
    if remaining <= 0:
        return body()
    return _descend(remaining - 1, body)


def child_capture(kind: str, depth: int, iterations: int, noop_library: str) -> dict[str, Any]:
    result: dict[str, Any] = {"kind": kind, "depth": depth}

    def body() -> None:
        result["measured_depth"] = len(_stack_depth())
        _gap_loop(iterations // 20)  # warm up
        if kind == "noop":
            lib = ctypes.CDLL(noop_library)
            if lib.noop_start(ctypes.c_long(int(1e9 / RATE))) != 0:
                raise RuntimeError("no-op timer failed")
            cpu0 = time.thread_time()
            gaps = _gap_loop(iterations)
            cpu = time.thread_time() - cpu0
            lib.noop_stop()
            signals = int(lib.noop_hits())
        elif kind == "none":
            cpu0 = time.thread_time()
            gaps = _gap_loop(iterations)
            cpu = time.thread_time() - cpu0
            signals = 0
        else:
            import sigprof

            clock = "cpu" if kind == "sigprof_cpu" else "wall"
            sampler = sigprof.Sampler(frequency=RATE, clock=clock, max_stack_depth=256)
            sampler.start()
            before = sampler.stats()["signals"].get(threading.get_ident(), 0)
            cpu0 = time.thread_time()
            gaps = _gap_loop(iterations)
            cpu = time.thread_time() - cpu0
            stats = sampler.stats()
            signals = stats["signals"].get(threading.get_ident(), 0) - before
            sampler.stop()
            samples = [s for s in sampler.samples() if s.thread_id == threading.get_ident()]
            if samples:
                result["sampled_depth"] = statistics.median(len(s.frames) for s in samples)
            result["truncated"] = stats["truncated"]
            # captures are signals: a cpu-clock signal can stand for several
            # samples (the timer expirations the kernel merged into it)
            result["samples"] = len(samples)
        in_range = [g for g in gaps if g <= GAP_MAX_NS]
        result["short_gaps_ns"] = [g for g in gaps if g <= SHORT_GAP_MAX_NS]
        result.update(
            signals=signals,
            cpu_s=cpu,
            gaps=len(gaps),
            preempted=len(gaps) - len(in_range),
            gap_median_ns=statistics.median(in_range) if in_range else None,
            gap_sum_ns=sum(in_range),
        )

    _at_depth(depth, body)
    return result


def child_callgrind(depth: int, seconds: float) -> dict[str, Any]:
    """Runs under callgrind: sample this thread at `depth` for `seconds` of its
    CPU time, cpu clock, 500 Hz; report how many samples it took."""
    import sigprof

    result: dict[str, Any] = {"depth": depth}

    def body() -> None:
        result["measured_depth"] = len(_stack_depth())
        sampler = sigprof.Sampler(frequency=RATE, clock="cpu", max_stack_depth=256)
        sampler.start()
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        signals = sampler.stats()["signals"].get(threading.get_ident(), 0)
        sampler.stop()
        mine = [s for s in sampler.samples() if s.thread_id == threading.get_ident()]
        result["signals"] = signals  # captures: a signal can stand for several samples
        result["sampled_depth"] = statistics.median(len(s.frames) for s in mine) if mine else 0

    _at_depth(depth, body)
    return result


def callgrind_inclusive(path: str, function: str) -> int:
    """Inclusive instruction count of one function in a callgrind output file
    (its own cost lines plus the inclusive cost of the calls it makes)."""
    names: dict[str, str] = {}
    current: str | None = None
    total = 0
    with open(path) as handle:
        for line in handle:
            if line.startswith("fn="):
                spec = line[3:].strip()
                if spec.startswith("("):
                    key, _, name = spec.partition(")")
                    if name.strip():
                        names[key] = name.strip()
                    current = names.get(key)
                else:
                    current = spec
                continue
            if current != function or not line.strip():
                continue
            if line[0].isdigit() or line[0] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    total += int(parts[-1])
    return total


def run_callgrind(depths: tuple[int, ...], seconds: float, log: Any) -> dict[str, Any]:
    """Instructions per capture, from callgrind: repeatable where timings are
    not. None when valgrind is missing."""
    import shutil

    if shutil.which("valgrind") is None:
        return {"error": "valgrind is not installed"}
    out: dict[str, Any] = {}
    for depth in depths:
        directory = tempfile.mkdtemp(prefix="sigprof-bench-callgrind-")
        path = os.path.join(directory, "callgrind.out")
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={path}",
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "callgrind",
            str(depth),
            str(seconds),
        ]
        try:
            process = subprocess.run(
                command, check=False, capture_output=True, text=True, timeout=900
            )
        except subprocess.TimeoutExpired:
            out[str(depth)] = {"error": "timed out"}
            continue
        lines = process.stdout.strip().splitlines()
        if process.returncode != 0 or not lines or not os.path.exists(path):
            out[str(depth)] = {"error": process.stderr[-1000:]}
            continue
        child = json.loads(lines[-1])
        instructions = callgrind_inclusive(path, "on_sigprof")
        shutil.rmtree(directory, ignore_errors=True)
        signals = child.get("signals", 0)
        out[str(depth)] = {
            "signals": signals,
            "sampled_depth": child.get("sampled_depth"),
            "instructions": instructions,
            "instructions_per_capture": instructions / signals if signals else None,
        }
        log(f"  callgrind depth {depth}: {out[str(depth)]}")
    return out


def _churn(depth: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)

    def leaf() -> None:
        total = 0
        while not stop.is_set() and total < 200_000:
            total += 1

    while not stop.is_set():
        _descend(rng.randrange(depth - 10, depth), leaf)


def child_drain(seconds: float) -> dict[str, Any]:
    import sigprof

    out: dict[str, Any] = {}
    stop = threading.Event()
    threads = [threading.Thread(target=_churn, args=(60, stop, i), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        sampler = sigprof.Sampler(frequency=RATE, clock="wall", max_stack_depth=128)
        sampler.start()
        for phase in ("cold", "warm"):
            time.sleep(seconds)
            t0 = time.perf_counter()
            batch = sampler.drain()
            elapsed = time.perf_counter() - t0
            out[phase] = {
                "samples": len(batch.samples),
                "new_frames": len(batch.frames),
                "new_stacks": len(batch.stacks),
                "seconds": elapsed,
                "us_per_sample": 1e6 * elapsed / max(1, len(batch.samples)),
            }
        out["dropped"] = sampler.stats()["dropped"]
        sampler.stop()
        # samples() is the people-facing reader: a sampler of its own (a
        # sampler is read with drain() or samples(), not both)
        sampler = sigprof.Sampler(frequency=RATE, clock="wall", max_stack_depth=128)
        sampler.start()
        time.sleep(seconds)
        t0 = time.perf_counter()
        resolved = sampler.samples()
        elapsed = time.perf_counter() - t0
        out["samples_api"] = {
            "samples": len(resolved),
            "seconds": elapsed,
            "us_per_sample": 1e6 * elapsed / max(1, len(resolved)),
        }
        sampler.stop()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return out


# ------------------------------------------------------------------ parent


def _child(args: list[str]) -> dict[str, Any]:
    try:
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"child {args[:3]} timed out"}
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        return {"error": process.stderr[-2000:]}
    return dict(json.loads(lines[-1]))


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "spread": (max(values) - min(values)) / 2,
        "n": len(values),
    }


def run(quick: bool, log: Any, callgrind: bool = True) -> dict[str, Any]:
    library = _build_noop()
    reps = 2 if quick else 7
    iterations = 1_000_000 if quick else 4_000_000
    kinds = ["none", "noop", "sigprof_cpu", "sigprof_wall"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rng = random.Random(7)
    for rep in range(reps):
        for depth in DEPTHS:
            order = list(kinds)
            rng.shuffle(order)
            for kind in order:
                result = _child(["capture", kind, str(depth), str(iterations), library])
                runs.setdefault(str(depth), {}).setdefault(kind, []).append(result)
                if "error" in result:
                    log(f"  ! {kind} depth {depth}: {result['error']}")
    capture: dict[str, Any] = {}
    for depth, by_kind in runs.items():
        good = {
            k: [r for r in v if "error" not in r and r.get("cpu_s")] for k, v in by_kind.items()
        }
        # time lost to gaps (1 us .. 200 us) per CPU second, minus the same
        # without any timer; per signal
        base = [r["gap_sum_ns"] / r["cpu_s"] for r in good.get("none", [])]
        entry: dict[str, Any] = {}
        for kind in ("noop", "sigprof_cpu", "sigprof_wall"):
            results = good.get(kind, [])
            per_signal = [
                (r["gap_sum_ns"] / r["cpu_s"] - b) / (r["signals"] / r["cpu_s"]) / 1000
                for r, b in zip(results, base)
                if r["signals"]
            ]
            if per_signal:
                entry[kind] = {
                    "interruption_us": _spread(per_signal),
                    "signals_per_s": statistics.median(r["signals"] / r["cpu_s"] for r in results),
                    "sampled_depth": statistics.median(
                        [r.get("sampled_depth", r.get("measured_depth", 0)) for r in results]
                    ),
                }
        # Second estimate, steadier on a busy machine: the median of all short
        # gaps (1-50 us) pooled over the runs. With per-thread CPU timers the
        # signal comes with the scheduler tick, so nearly every such gap is a
        # tick with a signal; the handler's cost shifts their median.
        for kind in ("none", "noop", "sigprof_cpu", "sigprof_wall"):
            pooled = [g for r in good.get(kind, []) for g in r.get("short_gaps_ns", [])]
            per_run = [
                statistics.median(r["short_gaps_ns"])
                for r in good.get(kind, [])
                if r.get("short_gaps_ns")
            ]
            if pooled:
                entry.setdefault(kind, {})["short_gap_us"] = {
                    "median": statistics.median(pooled) / 1000,
                    "spread": (max(per_run) - min(per_run)) / 2000,
                    "n": len(pooled),
                }
        noop = entry.get("noop", {}).get("short_gap_us")
        for kind in ("sigprof_cpu", "sigprof_wall"):
            ours = entry.get(kind, {}).get("short_gap_us")
            if noop and ours:
                entry[kind]["capture_us"] = {
                    "median": ours["median"] - noop["median"],
                    "spread": ours["spread"] + noop["spread"],
                    "n": ours["n"],
                }
        if "sigprof_cpu" in entry and "capture_us" in entry["sigprof_cpu"]:
            stat = entry["sigprof_cpu"]["capture_us"]
            entry["us_median"], entry["us_spread"] = stat["median"], stat["spread"]
        capture[depth] = entry
    log("  drain/resolve")
    drain = [_child(["drain", "0.3" if quick else "1.0"]) for _ in range(2 if quick else 5)]
    drain_good = [d for d in drain if "error" not in d]
    summary: dict[str, Any] = {}
    for phase in ("cold", "warm", "samples_api"):
        values = [d[phase]["us_per_sample"] for d in drain_good]
        if values:
            summary[phase] = {
                "us_per_sample": _spread(values),
                "samples": statistics.median(d[phase]["samples"] for d in drain_good),
            }
    if callgrind:
        log("  callgrind")
        callgrind_result = run_callgrind((60,) if quick else DEPTHS, 0.3 if quick else 1.0, log)
    else:
        callgrind_result = {"error": "skipped (--no-callgrind)"}
    result = {
        "callgrind": callgrind_result,
        "capture": capture,
        "drain": summary,
        "runs": runs,
        "drain_runs": drain,
        "rate": RATE,
        "iterations": iterations,
        "reps": reps,
    }
    result["table"] = table(result)
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        (
            f"Capture cost per signal at {RATE} Hz. A thread at the given depth spins in a "
            "perf_counter_ns loop; gaps of 1-50 us are signal deliveries (with the scheduler tick). "
            "Short gap = median of those gaps pooled over the runs (±half-range of per-run "
            "medians); capture = sigprof's minus a no-op C handler's on the same per-thread CPU "
            "timer. Excess = time lost to gaps of 1-200 us per signal, minus a run without timers "
            f"(noisier). {result['reps']} fresh processes per cell:"
        ),
        "",
        (
            "| stack depth (sampled) | gap: no timer | gap: no-op handler | gap: sigprof cpu "
            "| capture (cpu) us | gap: sigprof wall | capture (wall) us | excess: no-op "
            "| excess: sigprof cpu | cpu-clock signals/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(entry: dict[str, Any] | None, key: str) -> str:
        if not entry or key not in entry:
            return "-"
        stat = entry[key]
        return f"{stat['median']:.2f} ±{stat['spread']:.2f}"

    for depth in sorted(result["capture"], key=int):
        entry = result["capture"][depth]
        cpu = entry.get("sigprof_cpu") or {}
        wall = entry.get("sigprof_wall") or {}
        noop = entry.get("noop") or {}
        sampled = cpu.get("sampled_depth", "-")
        rate = cpu.get("signals_per_s")
        lines.append(
            f"| {depth} ({sampled}) | {fmt(entry.get('none'), 'short_gap_us')} "
            f"| {fmt(noop, 'short_gap_us')} | {fmt(cpu, 'short_gap_us')} "
            f"| {fmt(cpu, 'capture_us')} | {fmt(wall, 'short_gap_us')} "
            f"| {fmt(wall, 'capture_us')} | {fmt(noop, 'interruption_us')} "
            f"| {fmt(cpu, 'interruption_us')} | {'-' if rate is None else f'{rate:.0f}'} |"
        )
    callgrind = result.get("callgrind") or {}
    rows = [
        (d, e)
        for d, e in sorted(callgrind.items(), key=lambda i: int(i[0]))
        if isinstance(e, dict) and e.get("instructions_per_capture")
    ]
    if rows:
        lines += [
            "",
            (
                "Instructions per capture (valgrind --tool=callgrind, inclusive cost of the "
                "signal handler divided by the signals it handled; repeatable):"
            ),
            "",
            "| stack depth (sampled) | instructions per capture | signals |",
            "|---|---|---|",
        ]
        for depth, entry in rows:
            lines.append(
                f"| {depth} ({entry['sampled_depth']}) "
                f"| {entry['instructions_per_capture']:.0f} | {entry['signals']} |"
            )
    elif callgrind.get("error"):
        lines += ["", f"callgrind: {callgrind['error'][:200]}"]
    drain = result["drain"]
    if drain:
        lines += [
            "",
            "Drain/resolve cost per sample (4 threads, 60-frame stacks, 500 Hz wall):",
            "",
            "| step | us per sample | samples per drain |",
            "|---|---|---|",
        ]
        names = {
            "cold": "drain(), all frames and stacks new",
            "warm": "drain(), all interned already",
            "samples_api": "samples() (resolved Frame tuples)",
        }
        for phase, name in names.items():
            if phase in drain:
                stat = drain[phase]["us_per_sample"]
                lines.append(
                    f"| {name} | {stat['median']:.2f} ±{stat['spread']:.2f} "
                    f"| {drain[phase]['samples']:.0f} |"
                )
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        if sys.argv[2] == "capture":
            out = child_capture(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        elif sys.argv[2] == "callgrind":
            out = child_callgrind(int(sys.argv[3]), float(sys.argv[4]))
        else:
            out = child_drain(float(sys.argv[3]))
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--python", help="interpreter for the venv: a path or a pyenv version")
    parser.add_argument("--no-venv", action="store_true")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the valgrind run")
    parser.add_argument("--sigprof-source", choices=["tree", "head"], default="tree")
    args = parser.parse_args()
    if not args.no_venv:
        from _venv import ensure_venv

        ensure_venv(args.python, source=args.sigprof_source)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run(args.quick, log, callgrind=not args.no_callgrind)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print("\n".join(result["table"]))


if __name__ == "__main__":
    main()
