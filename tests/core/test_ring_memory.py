"""The sample buffer's memory is resident from the start: deep stacks
arriving late in a run do not make the process grow (the stress soak saw
~0.5 MiB a minute of such growth at max_stack_depth=1024)."""

import sys
import threading

from sigprof.core.sampler import MAX_FREQUENCY
from tests.core.workloads import spin

MIB = 1024 * 1024
DEPTH = 1024
CAPACITY = 1024  # slots of ~16 KiB at this depth: a ~16 MiB buffer


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def signals(sampler) -> int:
    return sum(sampler.stats()["signals"].values())


def spin_until_signals(sampler, count: int) -> None:
    # signals, not samples: each signal is one record (one buffer slot), and
    # a cpu-clock signal can stand for several samples
    target = signals(sampler) + count
    while signals(sampler) < target:
        spin(0.05)


def at_depth(depth: int, work) -> None:
    if depth <= 1:
        work()
    else:
        at_depth(depth - 1, work)


def test_deep_stacks_late_in_a_run_do_not_grow_rss(sampler_factory):
    sampler = sampler_factory(frequency=MAX_FREQUENCY, clock="cpu", max_stack_depth=DEPTH,
                              buffer_capacity=CAPACITY)
    measured = {}

    def run():
        # Shallow stacks fill every slot's first page only; then stacks
        # deeper than the limit write every slot whole. Each phase takes more
        # signals than the buffer has slots, so every slot is written.
        spin_until_signals(sampler, CAPACITY + CAPACITY // 4)
        measured["shallow"] = rss_bytes()
        at_depth(DEPTH + 50, lambda: spin_until_signals(sampler, CAPACITY + CAPACITY // 4))
        measured["deep"] = rss_bytes()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEPTH + 500)
    try:
        with sampler:
            # a thread: the main thread's C stack may be too small for the depth
            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
    finally:
        sys.setrecursionlimit(limit)
    assert sampler.stats()["truncated"] >= CAPACITY  # the deep phase's stacks filled their slots
    # Written lazily, the buffer's untouched pages would add about 12 MiB here.
    growth = (measured["deep"] - measured["shallow"]) / MIB
    assert growth < 4, f"RSS grew {growth:.1f} MiB with deep stacks"
