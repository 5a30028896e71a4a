"""A C call that holds the GIL is sampled in its calling frame, in proportion
to its time. sentry-sdk's sampler thread cannot run during such a call."""

import time

import pytest

from tests.core.workloads import sum_size_holding_the_gil


def python_work(seconds: float) -> None:
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        total += 1


def c_call(n: int) -> int:
    return sum(range(n))  # one C call, GIL held throughout


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_gil_holding_c_call_gets_its_share(sampler_factory, clock):
    n = sum_size_holding_the_gil(0.1)
    sampler = sampler_factory(frequency=101, clock=clock)
    # The wall clock samples wall time, the cpu clock CPU time: they differ
    # when other processes take the CPU away.
    now = time.perf_counter if clock == "wall" else time.thread_time
    in_c = in_python = 0.0
    with sampler:
        for _ in range(8):
            start = now()
            c_call(n)
            in_c += now() - start
            start = now()
            python_work(0.1)
            in_python += now() - start
    samples = [s for s in sampler.samples() if s.frames]
    c_samples = sum(1 for s in samples if s.frames[0].function == "c_call")
    py_samples = sum(1 for s in samples if s.frames[0].function == "python_work")
    expected = in_c / (in_c + in_python)
    observed = c_samples / (c_samples + py_samples)
    assert c_samples + py_samples >= 100
    assert abs(observed - expected) <= 0.08, (observed, expected, c_samples, py_samples)
