import threading

import pytest

from tests.core.workloads import recurse, spin


def test_deep_recursion_keeps_leaf_side_and_flags_truncation(sampler_factory):
    sampler = sampler_factory(frequency=200, clock="cpu", max_stack_depth=128)
    result = []
    # Run in a thread with a big enough recursion budget for 1000 frames.
    def deep():
        result.append(recurse(1000, 0.3))
    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        with sampler:
            thread = threading.Thread(target=deep)
            thread.start()
            thread.join()
    finally:
        sys.setrecursionlimit(limit)
    # (samples taken while the recursion was still being built are shallower)
    deep_samples = [s for s in sampler.samples()
                    if s.thread_id == thread.ident and s.frames and s.frames[0].function == "spin"]
    assert len(deep_samples) >= 20
    for sample in deep_samples:
        assert len(sample.frames) == 129
        assert sample.frames[0].function == "spin"
        assert all(f.function == "recurse" for f in sample.frames[1:128])
        assert sample.frames[-1].function == "<truncated>"
    assert sampler.stats()["truncated"] >= len(deep_samples)


def test_shallow_stacks_are_not_flagged(sampler_factory):
    sampler = sampler_factory(frequency=200, clock="cpu", max_stack_depth=128)
    with sampler:
        recurse(50, 0.2)
    samples = [s for s in sampler.samples() if s.frames and s.frames[0].function == "spin"]
    assert samples
    assert all(s.frames[-1].function != "<truncated>" for s in samples)
    assert sampler.stats()["truncated"] == 0


def _spin_then_wait(all_started: threading.Barrier) -> None:
    spin(0.05)
    all_started.wait()


def test_threads_started_and_ended_while_sampling(sampler_factory):
    sampler = sampler_factory(frequency=200, clock="wall")
    seen_names = set()
    with sampler:
        for batch in range(10):
            # A thread's ident is reused by a thread started after it ends, and
            # samples are named by ident when read: a batch's threads stay
            # alive until all have started, and are read before the next batch.
            all_started = threading.Barrier(5)
            threads = [threading.Thread(target=_spin_then_wait, args=(all_started,),
                                        name=f"worker-{batch}-{i}")
                       for i in range(5)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seen_names |= {s.thread_name for s in sampler.samples()
                           if s.frames and s.frames[0].function == "spin"}
    # Threads of 50 ms CPU at 200 Hz: nearly all get sampled (a thread can be
    # missed when it finishes before the first scan after it starts).
    assert len(seen_names) >= 40, sorted(seen_names)
    assert sampler.stats()["untracked_threads"] == 0


def test_many_short_threads_reuse_registry_slots(sampler_factory):
    sampler = sampler_factory(frequency=500, clock="cpu", max_threads=16)
    with sampler:
        for _ in range(300):
            thread = threading.Thread(target=spin, args=(0.002,))
            thread.start()
            thread.join()
        spin(0.1)
        registered = sampler.stats()["registered_threads"]
    assert any(s.frames for s in sampler.samples())
    assert sampler.stats()["untracked_threads"] == 0
    # ended threads leave no slot (nor timer) behind: the main thread is left,
    # and at most a thread or two whose exit the ticker has not yet seen
    assert 1 <= registered <= 3, registered


def do_nothing() -> None:
    pass


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_threads_that_end_at_once_never_run_out_of_slots(sampler_factory, clock):
    # Faster than the ticker's and collector's rounds: a thread that finds the
    # registry full frees the slots of the threads that left itself (before
    # that, 36 of 2,000 such threads went unsampled with 16 slots, wall clock).
    sampler = sampler_factory(frequency=500, clock=clock, max_threads=4)
    with sampler:
        for _ in range(1000):
            thread = threading.Thread(target=do_nothing)
            thread.start()
            thread.join()
    assert sampler.stats()["untracked_threads"] == 0
