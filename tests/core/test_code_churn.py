"""Functions created with exec and dropped at a high rate while sampling at
the highest frequency: no crash, and no frame ever named after another
function that happened to reuse a freed code object's address."""

import gc
import time

import pytest

from sigprof.core.sampler import MAX_FREQUENCY


def make_function(i: int):
    source = (
        f"def churn_{i}(seconds):\n"
        f"    import time\n"
        f"    end = time.thread_time() + seconds\n"
        f"    while time.thread_time() < end: pass\n"
    )
    namespace: dict = {}
    exec(compile(source, f"<churn-{i}>", "exec"), namespace)  # noqa: S102 - code churn is the point
    return namespace[f"churn_{i}"]


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_exec_churn_never_misnames(sampler_factory, clock):
    sampler = sampler_factory(frequency=MAX_FREQUENCY, clock=clock)
    checked = 0
    with sampler:
        i = 0
        while i < 600:
            function = make_function(i)
            function(0.001)
            del function
            if i % 50 == 0:
                gc.collect()
                for sample in sampler.samples():
                    for frame in sample.frames:
                        # the exec'd module body itself runs as <module> there
                        if frame.filename.startswith("<churn-") and frame.function != "<module>":
                            number = frame.filename[len("<churn-"):-1]
                            assert frame.function == f"churn_{number}", frame
                            checked += 1
            i += 1
    for sample in sampler.samples():
        for frame in sample.frames:
            if frame.filename.startswith("<churn-") and frame.function != "<module>":
                assert frame.function == f"churn_{frame.filename[7:-1]}", frame
                checked += 1
    assert checked > 50


def test_a_stack_met_again_at_a_reused_address_is_named_afresh(sampler_factory):
    # A record repeating one seen before is interned whole; when a code
    # object goes and another takes its address, a record of the new one can
    # be the old one's bit for bit (same offsets, same callers): answered
    # from the old one's stack, it would name a function that had already
    # returned. (Samples can be dated earlier than their signal, when it
    # stands for timer expirations merged while it was pending, never later.)
    sampler = sampler_factory(frequency=MAX_FREQUENCY, clock="cpu")
    ended = {}
    addresses = set()
    with sampler:
        for i in range(150):
            function = make_function(i)
            addresses.add(id(function.__code__))
            function(0.01)
            ended[f"churn_{i}"] = time.monotonic_ns()
            del function
            gc.collect()
    assert len(addresses) < len(ended)  # addresses were reused: the case under test
    checked = 0
    for sample in sampler.samples():
        for frame in sample.frames:
            if frame.filename.startswith("<churn-") and frame.function in ended:
                assert sample.timestamp_ns <= ended[frame.function], frame.function
                checked += 1
    assert checked > 100
