"""Stress scenarios, each run as its own process (fresh interpreter state) by
tests/stress/test_stress.py and, shortened, under valgrind by
tests/valgrind/run_memcheck.py.

    python tests/stress/scenarios.py soak SECONDS (--dsn DSN | --output-dir DIR)
    python tests/stress/scenarios.py churn SECONDS CLOCK [--forks N]
    python tests/stress/scenarios.py forks_with_session COUNT DSN
    python tests/stress/scenarios.py exit MODE DSN

The last line a scenario prints on stdout is a JSON report; progress lines
("ready", ...) come before it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import sigprof
from sigprof.core.sampler import MAX_FREQUENCY

MIB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> dict[str, int]:
    """Open descriptors by kind: sockets (the Sentry transport opens one
    connection per envelope, so they come and go on their own), the
    /proc/self/task/TID/syscall state files sigprof's wall clock keeps open
    per live thread (at most 64, closed a tick after the thread ends), and
    every other file."""
    counts = {"files": 0, "sockets": 0, "state_files": 0}
    with os.scandir("/proc/self/fd") as entries:
        for entry in entries:
            try:
                target = os.readlink(entry.path)
            except FileNotFoundError:  # scandir's own descriptor, closed by now
                continue
            if target.startswith("socket:"):
                counts["sockets"] += 1
            elif target.startswith("/proc/") and target.endswith("/syscall"):
                counts["state_files"] += 1
            else:
                counts["files"] += 1
    counts["files"] -= 1  # scandir's own descriptor
    return counts


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


# ---- the mixed workload ----


def recurse(depth: int) -> int:
    return recurse(depth - 1) + 1 if depth else sum(range(200))


def deep_recursion() -> None:
    """As deep as the recursion limit allows, with a little headroom for the
    frames below this one and for the signal handler's own."""
    limit = sys.getrecursionlimit()
    depth = limit - 60
    try:
        recurse(depth)
    except RecursionError:  # a deeper caller than expected: fine, just shallower
        recurse(limit // 2)


def numbers(count: int) -> Iterator[int]:
    for i in range(count):
        yield i * i


def delegating(count: int) -> Iterator[int]:
    yield from numbers(count)
    yield from (n + 1 for n in numbers(count))


async def async_numbers(count: int) -> AsyncIterator[int]:
    for i in range(count):
        if i % 16 == 0:
            await asyncio.sleep(0)
        yield i


async def async_task(index: int) -> int:
    total = 0
    async for n in async_numbers(200):
        total += n
    if index % 5 == 0:
        try:
            await asyncio.wait_for(asyncio.sleep(1), timeout=0.001)
        except asyncio.TimeoutError:
            total += 1
    return total


async def async_round() -> int:
    results = await asyncio.gather(*(async_task(i) for i in range(40)))
    return sum(results)


class Boom(Exception):
    pass


def raise_deep(depth: int) -> None:
    if depth:
        raise_deep(depth - 1)
    raise Boom(depth)


def exceptions(count: int) -> int:
    caught = 0
    for i in range(count):
        try:
            raise_deep(i % 30)
        except Boom:
            caught += 1
        try:
            next(iter(()))
        except StopIteration:
            caught += 1
    return caught


def code_churn(round_index: int, count: int) -> None:
    """Fresh code objects every round, called while sampled, then dropped.
    Their names come back every 50 rounds: CPython 3.12+ never frees the
    names it interns, so unique names would grow the heap without sigprof
    (measured: +3.6 MiB in 240 s unprofiled), and the soak is about sigprof's."""
    for i in range(count):
        namespace: dict[str, Any] = {}
        name = f"churned_{round_index % 50}_{i}"
        source = f"def {name}(n):\n    return sum(k * {i} for k in range(n))\n"
        exec(compile(source, f"<stress-{name}>", "exec"), namespace)  # noqa: S102 - code churn
        namespace[name](300)
    gc.collect()


def mixed_round(round_index: int) -> None:
    workers = [threading.Thread(target=spin, args=(0.01,), name=f"short-{i}") for i in range(4)]
    for worker in workers:
        worker.start()
    sum(delegating(2000))
    asyncio.run(async_round())
    exceptions(200)
    deep_recursion()
    code_churn(round_index, 20)
    for worker in workers:
        worker.join()


def long_lived_worker(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(delegating(500))
        time.sleep(0.002)


# ---- soak ----


def soak(seconds: float, destination: list[str]) -> dict[str, Any]:
    """Continuous profiling at the highest frequency over the mixed workload,
    2 s chunks, RSS and descriptors read after every round."""
    from sigprof.chunks.local_chunks import LocalChunkWriter
    from sigprof.core.sample_source import SOURCE
    from sigprof.sentry import session as continuous

    continuous.CHUNK_SECONDS = 2.0
    writer = None
    if destination[0] == "--dsn":
        sigprof.init(
            dsn=destination[1],
            profile_session_sample_rate=1.0,
            profile_lifecycle="manual",
            integrations=[
                sigprof.SigprofIntegration(frequency=MAX_FREQUENCY, max_stack_depth=1024)
            ],
        )
        sigprof.start_profiler()
    else:  # no network (valgrind): the same chunks, written as local files
        SOURCE.configure(MAX_FREQUENCY, "wall", 1024)
        writer = LocalChunkWriter(destination[1], interval_s=2.0)
        writer.start()
    stop = threading.Event()
    background = [threading.Thread(target=long_lived_worker, args=(stop,)) for _ in range(2)]
    for thread in background:
        thread.start()
    # (seconds since start, RSS bytes, open descriptors by kind): a few
    # thousand rounds, kept small (tuples), as they grow the heap themselves
    rounds: list[tuple[float, int, tuple[int, int, int]]] = []
    start = time.monotonic()
    round_index = 0
    while time.monotonic() - start < seconds:
        mixed_round(round_index)
        round_index += 1
        fds = open_fds()
        rounds.append((time.monotonic() - start, rss_bytes(),
                       (fds["files"], fds["sockets"], fds["state_files"])))
    stop.set()
    for thread in background:
        thread.join()
    if writer is None:
        sigprof.stop_profiler()
        import sentry_sdk

        sentry_sdk.flush()
    else:
        writer.stop()
    return {"rounds": rounds, "round_count": round_index}


# ---- thread churn (and forks under it) ----


def tiny() -> None:
    sum(range(50))


def churn_threads(stop: threading.Event, started: list[int]) -> None:
    """Starts short threads back to back, a few at a time, until stopped."""
    count = 0
    while not stop.is_set():
        batch = [threading.Thread(target=tiny) for _ in range(8)]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join()
        count += len(batch)
        started[0] = count


def forked_child(index: int) -> int:
    """A child's work: the frame it was forked in, a thread of its own, and
    (every fourth child) a sampler of its own. Its exit code says it got
    through; the parent checks it."""
    spin(0.005)
    helper = threading.Thread(target=tiny)
    helper.start()
    helper.join()
    if index % 4 == 0:
        with sigprof.Sampler(frequency=MAX_FREQUENCY) as sampler:
            # until a sample arrives: under valgrind (one thread runs at a
            # time) the ticker may not run within a fixed spin
            deadline = time.monotonic() + 30
            while not sampler.stats()["samples"] and time.monotonic() < deadline:
                spin(0.02)
        if not sampler.samples():
            return 99
    return 10 + index % 50


def pool_task(index: int) -> int:
    spin(0.002)
    return index * index


def fork_loop(count: int) -> dict[str, Any]:
    failures = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            code = 98
            try:
                code = forked_child(index)
            finally:
                os._exit(code)
        status = wait_child(pid, time.monotonic() + 60)
        if status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 10 + index % 50:
            failures.append((index, status))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        squares = pool.map(pool_task, range(64))
    if squares != [i * i for i in range(64)]:
        failures.append(("pool", squares))
    return {"forks": count, "fork_failures": failures}


def wait_child(pid: int, deadline: float) -> int | None:
    """The child's wait status; None if it hung (then it is killed): a
    child stuck on a lock inherited mid-fork must fail, not hang the run."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.001)


def forks_with_session(count: int, dsn: str) -> dict[str, Any]:
    """Forks in a loop from a process with a continuous session and thread
    churn; every child works and leaves by sys.exit, the normal way out."""
    from sigprof.sentry import session as continuous

    continuous.CHUNK_SECONDS = 1.0
    sigprof.init(
        dsn=dsn,
        profile_session_sample_rate=1.0,
        profile_lifecycle="manual",
        integrations=[sigprof.SigprofIntegration(frequency=MAX_FREQUENCY)],
    )
    sigprof.start_profiler()
    stop = threading.Event()
    started = [0]
    churner = threading.Thread(target=churn_threads, args=(stop, started), name="churner")
    churner.start()
    failures: list[Any] = []
    try:
        for index in range(count):
            pid = os.fork()
            if pid == 0:
                spin(0.1)
                sys.exit(10 + index % 50)
            status = wait_child(pid, time.monotonic() + 60)
            if status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 10 + index % 50:
                failures.append((index, status))
    finally:
        stop.set()
        churner.join()
    import sentry_sdk

    sigprof.stop_profiler()
    sentry_sdk.flush()
    return {"forks": count, "fork_failures": failures, "threads_started": started[0]}


def churn(seconds: float, clock: str, forks: int) -> dict[str, Any]:
    """Thousands of threads a second while sampling at the highest frequency;
    the main thread spins and drains once a second, counting its own samples."""
    sampler = sigprof.Sampler(frequency=MAX_FREQUENCY, clock=clock)
    # The ticker's two wake-up fds are made at the process's first start and
    # kept (a thread leaving may post to one at any time: closed, its number
    # could be another file's); counted from after one start and stop.
    with sigprof.Sampler(frequency=MAX_FREQUENCY, clock=clock):
        pass
    fds_before = open_fds()
    stop = threading.Event()
    started = [0]
    main_ident = threading.get_ident()
    windows: list[dict[str, Any]] = []
    sampler.start()
    churner = threading.Thread(target=churn_threads, args=(stop, started), name="churner")
    began = time.monotonic()
    churner.start()
    fork_report: dict[str, Any] = {}
    try:
        # At least three windows, however slow a window is (one took 1.5 s
        # under ASan beside other work): the flatness check compares thirds.
        while time.monotonic() - began < seconds or len(windows) < 3:
            window_start, threads_before = time.monotonic(), started[0]
            spin(0.5)
            time.sleep(0.3)  # wall clock: the main thread blocked, repeated as idle
            spin(0.2)
            batch = sampler.drain()
            counters = sampler.stats()
            windows.append({
                "seconds": time.monotonic() - window_start,
                "threads": started[0] - threads_before,
                "main_samples": sum(1 for _, ident, _ in batch.samples if ident == main_ident),
                "samples": len(batch.samples),
                "rss": rss_bytes(),
                "fds": open_fds(),
                "registered_threads": counters["registered_threads"],
                "signalled_threads": len(counters["signals"]),
            })
        if forks:
            fork_report = fork_loop(forks)
    finally:
        stop.set()
        churner.join()
    final = sampler.stats()
    sampler.stop()
    return {
        "fds_before": fds_before,
        "fds_after": open_fds(),
        "windows": windows,
        "threads_started": started[0],
        "elapsed": time.monotonic() - began,
        "final": {key: value for key, value in final.items() if key != "signals"},
        **fork_report,
    }


# ---- exit paths ----


def marker_phase_at_exit(wait_for_sigterm: bool) -> None:
    """A uniquely named frame the last chunk must show: it runs for a while,
    says "ready", then ends (or, for the SIGTERM modes, spins until the
    parent's signal ends the process)."""
    spin(0.3)
    print("ready", flush=True)
    if wait_for_sigterm:
        spin(60)
        sys.exit(3)  # never reached: SIGTERM arrives long before


def exit_scenario(mode: str, dsn: str) -> None:
    """Continuous profiling with threads running, then one way of ending."""
    import sentry_sdk

    sigprof.init(
        dsn=dsn,
        profile_session_sample_rate=1.0,
        profile_lifecycle="manual",
        integrations=[sigprof.SigprofIntegration(frequency=MAX_FREQUENCY)],
    )
    sigprof.start_profiler()
    stop = threading.Event()
    for i in range(3):  # still running at exit (daemon threads are never joined)
        threading.Thread(target=long_lived_worker, args=(stop,), daemon=True,
                         name=f"daemon-{i}").start()
    if mode == "exit_during_flush":
        def flush_forever() -> None:
            while True:
                sentry_sdk.flush()
        threading.Thread(target=flush_forever, daemon=True, name="flusher").start()
    if mode == "sigterm_handler":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    spin(0.2)
    marker_phase_at_exit(mode.startswith("sigterm"))
    # a non-daemon thread the interpreter waits for at exit, sampled meanwhile
    threading.Thread(target=spin, args=(0.2,), name="joined-at-exit").start()
    if mode == "os_exit":
        os._exit(0)
    # "normal" and "exit_during_flush": fall off the end while sampling


def main(argv: list[str]) -> None:
    scenario = argv[0]
    if scenario == "soak":
        report = soak(float(argv[1]), argv[2:4])
    elif scenario == "churn":
        forks = int(argv[4]) if len(argv) > 4 and argv[3] == "--forks" else 0
        report = churn(float(argv[1]), argv[2], forks)
        if report.get("fork_failures"):  # under valgrind, the exit status is what is checked
            print(json.dumps(report), flush=True)
            raise SystemExit(1)
    elif scenario == "forks_with_session":
        report = forks_with_session(int(argv[1]), argv[2])
    elif scenario == "exit":
        exit_scenario(argv[1], argv[2])
        return
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
