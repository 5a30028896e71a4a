"""The cpu clock delivers the asked rate per CPU-second of each thread, also
above the kernel tick and when the thread shares its CPU: Linux checks CPU
timers only at the scheduler tick of a running thread and folds the
expirations it finds into one signal (its si_overrun), each of which stands
for a sample."""

import os
import subprocess
import sys
import threading
import time

import pytest

from tests.core.workloads import spin

HOG = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"


def _sample_own_spin(sampler_factory, frequency: int, seconds: float):
    sampler = sampler_factory(frequency=frequency, clock="cpu")
    me = threading.get_ident()
    start = time.monotonic_ns()
    with sampler:
        burned = spin(seconds)
    end = time.monotonic_ns()
    samples = [s for s in sampler.samples() if s.thread_id == me]
    signals = sampler.stats()["signals"][me]
    return samples, signals, burned, start, end


def _check_timeline(samples, start: int, end: int) -> None:
    stamps = [s.timestamp_ns for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert start <= stamps[0] and stamps[-1] <= end


def test_rate_above_the_kernel_tick(sampler_factory):
    # 500 Hz is above this machine's tick (CONFIG_HZ 250): about 250 signals
    # per CPU-second arrive, each standing for two expirations.
    samples, signals, burned, start, end = _sample_own_spin(sampler_factory, 500, 1.0)
    asked = 500 * burned
    assert 0.9 * asked <= len(samples) <= asked + 2, (len(samples), asked, signals)
    _check_timeline(samples, start, end)


@pytest.mark.timeout(120)
def test_rate_when_the_thread_shares_its_cpu(sampler_factory):
    # Three busy processes per CPU: the thread runs in slices, often between
    # ticks, and most of its expirations arrive merged (each signal standing
    # for 2 to 20 here). The CPU time after the last tick the thread ran
    # through is never sampled (up to a third of a second here): the spin is
    # long enough for that tail to stay a small part. Without the merged
    # expirations counted, 18-68% of the asked samples arrived here.
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(3 * (os.cpu_count() or 1))]
    try:
        samples, signals, burned, start, end = _sample_own_spin(sampler_factory, 200, 2.0)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    asked = 200 * burned
    assert 0.8 * asked <= len(samples) <= asked + 2, (len(samples), asked, signals)
    _check_timeline(samples, start, end)
