"""Workloads whose ground truth is known: they spin on the CPU for measured
amounts of thread CPU time, on a single known line."""

import time


def spin(seconds: float) -> float:
    """Burns `seconds` of this thread's CPU time; returns what it burned."""
    start = time.thread_time()
    end = start + seconds
    while time.thread_time() < end: pass
    return time.thread_time() - start


SPIN_LINE = spin.__code__.co_firstlineno + 4


def spin_wall(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass


def recurse(depth: int, seconds: float) -> float:
    if depth <= 1:
        return spin(seconds)
    return recurse(depth - 1, seconds)


def sum_size_holding_the_gil(seconds: float) -> int:
    """n such that sum(range(n)), one C call that never lets the GIL go,
    takes about `seconds` of this thread's CPU time here."""
    n = 1_000_000
    while True:
        start = time.thread_time()
        sum(range(n))
        elapsed = time.thread_time() - start
        if elapsed > 0.02:
            return int(n * seconds / elapsed)
        n *= 4
