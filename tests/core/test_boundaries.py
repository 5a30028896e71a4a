"""A thread's boundaries (a profiling span's start and end) are never crossed
by a sample's date: neither a wall-clock gap's fill nor a signal's merged
expirations put code from one side on the other."""

from __future__ import annotations

import signal
import time

import pytest

from tests.core.workloads import spin


def before_mark() -> None:
    spin(0.04)


def after_mark() -> None:
    spin(0.04)
    # The signal pending since the block is delivered here, in this frame.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})
    spin(0.02)


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_no_sample_is_dated_across_a_mark(sampler_factory, clock: str) -> None:
    # With SIGPROF blocked the thread gets no sample: one signal comes when it
    # is unblocked, standing for the whole time since the last one. The stack
    # changed somewhere in that gap; the mark says where.
    sampler = sampler_factory(frequency=200, clock=clock)
    with sampler:
        spin(0.1)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPROF})
        try:
            before_mark()
            mark_from = time.monotonic_ns()
            sampler.mark_boundary()
            mark_to = time.monotonic_ns()
            after_mark()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})  # if it raised
        spin(0.05)
    samples = sampler.samples()

    def dates(function: str) -> list[int]:
        return [s.timestamp_ns for s in samples if any(f.function == function for f in s.frames)]

    assert dates("after_mark"), "the signal pending since the block came in after_mark"
    assert min(dates("after_mark")) >= mark_from, (min(dates("after_mark")) - mark_from) / 1e6
    assert all(date <= mark_to for date in dates("before_mark"))
    if clock == "wall":  # the gap before the mark is filled with the stack before it
        assert len([d for d in dates("spin") if mark_from - 45_000_000 < d <= mark_to]) >= 6
