"""Benchmark workloads: fixed amounts of work that know their own ground truth.

Every workload times each of its *category* functions (with both
``time.perf_counter`` and ``time.thread_time``) on the thread that runs it,
so a profiler's samples can be checked against how long each function really
ran. Category functions have unique names; a sample belongs to a category
when any frame of its stack has that function name.

The amount of work is fixed by ``scale`` (1.0 is about one second of work on
an unloaded 2020s x86 core), never by a time limit, so a slower profiler
shows up as a longer wall time and more CPU time.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# One "unit" of pure-Python work is about 1 ms.
UNIT_ITERATIONS = 12_000


@dataclass
class ThreadTruth:
    """What one thread did: seconds per category, wall and CPU."""

    name: str
    running: bool  # a CPU-bound thread (as opposed to one that mostly blocks)
    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    wall_total: float = 0.0
    cpu_total: float = 0.0
    native_id: int = 0  # threading.get_native_id(): what out-of-process samplers see

    def add(self, category: str, wall: float, cpu: float) -> None:
        self.wall[category] = self.wall.get(category, 0.0) + wall
        self.cpu[category] = self.cpu.get(category, 0.0) + cpu


@dataclass
class WorkloadResult:
    threads: dict[int, ThreadTruth] = field(default_factory=dict)
    # categories whose time is spent inside long GIL-holding C calls
    gil_categories: tuple[str, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)


# Set by the worker: called with "steady" once a workload's threads are set
# up and with "end" when its steady phase ends, so that what a profiler does
# per tick can be told from what it pays once per new thread.
mark_phase: Callable[[str], None] = lambda phase: None


class Recorder:
    """Times category calls on the current thread."""

    def __init__(self, result: WorkloadResult, name: str, running: bool) -> None:
        self.truth = ThreadTruth(name=name, running=running)
        self.ident = threading.get_ident()
        self.truth.native_id = threading.get_native_id()
        result.threads[self.ident] = self.truth
        self._wall0 = time.perf_counter()
        self._cpu0 = time.thread_time()

    def call(self, category: Callable[..., object], *args: object) -> object:
        w0, c0 = time.perf_counter(), time.thread_time()
        value = category(*args)
        self.truth.add(category.__name__, time.perf_counter() - w0, time.thread_time() - c0)
        return value

    def finish(self) -> None:
        self.truth.wall_total = time.perf_counter() - self._wall0
        self.truth.cpu_total = time.thread_time() - self._cpu0


def _spin(units: float) -> int:
    total = 0
    for i in range(int(units * UNIT_ITERATIONS)):
        total += i * i % 7
    return total


def _descend(depth: int, leaf: Callable[[float], int], units: float) -> int:
    if depth <= 0:
        return leaf(units)
    return _descend(depth - 1, leaf, units) + 0


# ---------------------------------------------------------------- cpu_deep


def deep_alpha(depth: int, units: float) -> int:
    return _descend(depth, _spin, units)


def deep_beta(depth: int, units: float) -> int:
    return _descend(depth, _spin, units)


def _schedule(scale: float, seed: int = 1) -> list[tuple[bool, float]]:
    """A fixed, seeded sequence of (alpha?, units): alpha gets about 2/3 of
    the work, beta 1/3, in calls of 0.3 to 2.7 ms in random order. Random, so
    that no sampling interval can alias with a period of the workload."""
    rng = random.Random(seed)
    return [(rng.random() < 2 / 3, rng.uniform(0.3, 2.7)) for _ in range(int(scale * 667))]


def _deep_loop(rec: Recorder, scale: float, depth: int, seed: int = 1) -> None:
    for alpha, units in _schedule(scale, seed):
        rec.call(deep_alpha if alpha else deep_beta, depth, units)


def cpu_deep(scale: float) -> WorkloadResult:
    """Pure-Python CPU work about 60 frames deep."""
    result = WorkloadResult()
    rec = Recorder(result, "MainThread", running=True)
    _deep_loop(rec, scale, depth=52)  # + harness frames + leaf: about 60
    rec.finish()
    return result


# ---------------------------------------------------------------- cpu_shallow


def _tiny(x: int) -> int:
    return x * 3 % 11


def shallow_alpha(units: float) -> int:
    total = 0
    for i in range(int(units * UNIT_ITERATIONS / 3)):
        total += _tiny(i)
    return total


def shallow_beta(units: float) -> int:
    total = 0
    for i in range(int(units * UNIT_ITERATIONS / 3)):
        total += _tiny(i)
    return total


def cpu_shallow(scale: float) -> WorkloadResult:
    """Many small calls, about 5 frames deep."""
    result = WorkloadResult()
    rec = Recorder(result, "MainThread", running=True)
    for alpha, units in _schedule(scale):
        rec.call(shallow_alpha if alpha else shallow_beta, units)
    rec.finish()
    return result


# ---------------------------------------------------------------- threads_mixed


def mixed_recv(sock: socket.socket) -> None:
    try:
        sock.recv(1)
    except socket.timeout:
        pass


def mixed_sleep(seconds: float) -> None:
    time.sleep(seconds)


def threads_mixed(scale: float) -> WorkloadResult:
    """8 threads: 4 CPU-bound (deep_alpha/deep_beta 20 frames deep), 2 blocked
    in socket recv, 2 in sleep. The main thread waits for the CPU threads."""
    result = WorkloadResult()
    done = threading.Event()
    lock = threading.Lock()
    peers: list[socket.socket] = []

    def cpu_worker() -> None:
        rec = Recorder(result, threading.current_thread().name, running=True)
        _deep_loop(rec, scale / 4, depth=20, seed=int(threading.current_thread().name[4:]) + 2)
        rec.finish()

    def recv_worker() -> None:
        a, b = socket.socketpair()
        with lock:
            peers.extend((a, b))
        a.settimeout(0.05)
        rec = Recorder(result, threading.current_thread().name, running=False)
        while not done.is_set():
            rec.call(mixed_recv, a)
        rec.finish()

    def sleep_worker() -> None:
        rec = Recorder(result, threading.current_thread().name, running=False)
        while not done.is_set():
            rec.call(mixed_sleep, 0.05)
        rec.finish()

    cpu = [threading.Thread(target=cpu_worker, name=f"cpu-{i}") for i in range(4)]
    blocking = [threading.Thread(target=recv_worker, name=f"recv-{i}") for i in range(2)]
    blocking += [threading.Thread(target=sleep_worker, name=f"sleep-{i}") for i in range(2)]
    for thread in blocking + cpu:
        thread.start()
    for thread in cpu:
        thread.join()
    done.set()
    for thread in blocking:
        thread.join()
    for sock in peers:
        sock.close()
    return result


# ---------------------------------------------------------------- idle_threads


def threads_idle_wait(event: threading.Event) -> None:
    event.wait()


def idle_threads(scale: float) -> WorkloadResult:
    """200 threads blocked on an Event while the main thread does cpu_deep."""
    result = WorkloadResult()
    release = threading.Event()
    started = threading.Barrier(201)

    def idle() -> None:
        started.wait()
        threads_idle_wait(release)

    rec = Recorder(result, "MainThread", running=True)
    threads = [threading.Thread(target=idle, name=f"idle-{i}", daemon=True) for i in range(200)]
    for thread in threads:
        thread.start()
    started.wait()
    mark_phase("steady")
    _deep_loop(rec, scale, depth=52)
    mark_phase("end")
    rec.finish()
    release.set()
    for thread in threads:
        thread.join()
    return result


# ---------------------------------------------------------------- gil_c_call

_SORT_INPUT: list[float] | None = None


def gil_sum(n: int) -> int:
    return sum(range(n))


def gil_sort(values: list[float], n: int) -> int:
    return len(sorted(values[:n]))


def gil_python(units: float) -> int:
    return _spin(units)


def gil_c_call(scale: float) -> WorkloadResult:
    """Long C calls that hold the GIL (sum over a range, sorting a large list)
    between pure-Python work; each C call lasts several milliseconds."""
    global _SORT_INPUT
    if _SORT_INPUT is None:
        rng = random.Random(5)
        _SORT_INPUT = [rng.random() for _ in range(150_000)]
    values = _SORT_INPUT
    result = WorkloadResult(gil_categories=("gil_sum", "gil_sort"))
    rec = Recorder(result, "MainThread", running=True)
    rng = random.Random(3)  # seeded: the same work every run, in no fixed rhythm
    for _ in range(int(scale * 22)):
        rec.call(gil_python, rng.uniform(3.0, 13.0))
        rec.call(gil_sum, rng.randrange(300_000, 900_000))
        rec.call(gil_python, rng.uniform(1.0, 7.0))
        rec.call(gil_sort, values, rng.randrange(75_000, 150_000))
    rec.finish()
    return result


WORKLOADS: dict[str, Callable[[float], WorkloadResult]] = {
    "cpu_deep": cpu_deep,
    "cpu_shallow": cpu_shallow,
    "threads_mixed": threads_mixed,
    "idle_threads": idle_threads,
    "gil_c_call": gil_c_call,
    # "web" lives in web.py: it needs a server, a load generator and Sentry
}
