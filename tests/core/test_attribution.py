"""Sample shares match the CPU shares the workload measured itself."""

import time
from collections import Counter

import pytest

from tests.core.workloads import spin

# Long blocks: each block gets its share of samples give or take one, so the
# error stays well under the tolerance (fine interleaving would make every
# sample a coin toss, with a binomial spread of several points at 400 samples).
ROUND_SECONDS = 0.1


def func_a(seconds: float) -> float:
    return spin(seconds)


def func_b(seconds: float) -> float:
    return spin(seconds)


def func_c(seconds: float) -> float:
    return spin(seconds)


def run_workload(total: float) -> tuple:
    """Returns (CPU seconds, wall seconds) spent in each function: the wall
    clock samples wall time, which differs from CPU time when other processes
    take the CPU away."""
    cpu, wall = Counter(), Counter()
    deadline = time.thread_time() + total
    while time.thread_time() < deadline:
        for name, function, share in (("func_a", func_a, 0.5), ("func_b", func_b, 0.3),
                                      ("func_c", func_c, 0.2)):
            start = time.perf_counter()
            cpu[name] += function(ROUND_SECONDS * share)
            wall[name] += time.perf_counter() - start
    return cpu, wall


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_sample_shares_match_cpu_shares(sampler_factory, clock):
    sampler = sampler_factory(frequency=101, clock=clock)
    with sampler:
        cpu, wall = run_workload(4.0)
    burned = cpu if clock == "cpu" else wall
    counts = Counter()
    for sample in sampler.samples():
        names = [frame.function for frame in sample.frames]
        for name in ("func_a", "func_b", "func_c"):
            if name in names:
                counts[name] += 1
    total_samples = sum(counts.values())
    total_burned = sum(burned.values())
    assert total_samples >= 300, counts
    for name in ("func_a", "func_b", "func_c"):
        expected = burned[name] / total_burned
        observed = counts[name] / total_samples
        assert abs(observed - expected) <= 0.03, (name, observed, expected, counts)
