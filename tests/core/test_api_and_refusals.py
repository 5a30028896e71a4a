"""Bad arguments get clear errors naming the option; conflicts are refused."""

import gc
import math
import signal
import subprocess
import sys
import textwrap

import pytest

import sigprof
from tests.core.workloads import spin


@pytest.mark.parametrize("frequency", [0, -1, 501, math.nan, math.inf])
def test_frequency_out_of_range(frequency):
    with pytest.raises(ValueError, match="frequency"):
        sigprof.Sampler(frequency=frequency)


@pytest.mark.parametrize("frequency", ["100", None, True])
def test_frequency_wrong_type(frequency):
    with pytest.raises(TypeError, match="frequency"):
        sigprof.Sampler(frequency=frequency)


@pytest.mark.parametrize("depth", [0, -5, 10**6, 2.5, "128", True])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="max_stack_depth"):
        sigprof.Sampler(max_stack_depth=depth)


@pytest.mark.parametrize("clock", ["WALL", "real", "", None])
def test_bad_clock(clock):
    with pytest.raises(ValueError, match="clock"):
        sigprof.Sampler(clock=clock)


@pytest.mark.parametrize("capacity", [0, 8, 17, 1000, 2**21, 16.0, "16", True])
def test_bad_buffer_capacity(capacity):
    with pytest.raises(ValueError, match="buffer_capacity"):
        sigprof.Sampler(buffer_capacity=capacity)


@pytest.mark.parametrize("threads", [0, -1, 70000, 1.5, "8", None])
def test_bad_max_threads(threads):
    with pytest.raises(ValueError, match="max_threads"):
        sigprof.Sampler(max_threads=threads)


def test_full_buffer_drops_and_counts(sampler_factory):
    # 16 records and no drain for half a second at 400 Hz: most are dropped
    # (a code object freed meanwhile drains the buffer: collect garbage first)
    gc.collect()
    sampler = sampler_factory(frequency=400, buffer_capacity=16)
    with sampler:
        spin(0.5)
    kept = len(sampler.samples())
    dropped = sampler.dropped()
    assert dropped == sampler.stats()["dropped"]
    assert dropped > 0 and kept > 0


def test_second_sampler_is_refused(sampler_factory):
    first = sampler_factory()
    second = sampler_factory()
    with first:
        with pytest.raises(sigprof.SamplerError, match="already running"):
            second.start()
        with pytest.raises(sigprof.SamplerError, match="already running"):
            first.start()
    with second:  # free again once the first stopped
        spin(0.05)


def test_stop_without_start_and_twice(sampler_factory):
    sampler = sampler_factory()
    sampler.stop()
    sampler.start()
    sampler.stop()
    sampler.stop()
    assert not sampler.running


def test_restart_gives_fresh_samples(sampler_factory):
    sampler = sampler_factory(frequency=200, clock="cpu")
    with sampler:
        spin(0.1)
    first = sampler.samples()
    with sampler:
        spin(0.1)
    second = sampler.samples()
    assert first and second
    assert min(s.timestamp_ns for s in second) > max(s.timestamp_ns for s in first)


def test_timestamps_convert_to_unix_time(sampler_factory):
    import time

    sampler = sampler_factory(frequency=200, clock="cpu")
    before = time.time_ns()
    with sampler:
        spin(0.1)
    after = time.time_ns()
    for sample in sampler.samples():
        assert before - 5_000_000 <= sampler.to_unix_ns(sample.timestamp_ns) <= after + 5_000_000


CONFLICT_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import sigprof
    mode = sys.argv[1]
    if mode == "python-handler":
        signal.signal(signal.SIGPROF, lambda *a: None)
    elif mode == "itimer":
        signal.signal(signal.SIGPROF, lambda *a: None)
        signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)
    sampler = sigprof.Sampler()
    try:
        sampler.start()
    except sigprof.SamplerError as error:
        print("REFUSED:", error)
        signal.setitimer(signal.ITIMER_PROF, 0, 0)  # its own timer, before Python resets handlers
        sys.exit(0)
    sampler.stop()
    print("STARTED")
    """
)


@pytest.mark.parametrize("mode, expected", [
    ("python-handler", "SIGPROF already has a handler"),
    ("itimer", "ITIMER_PROF"),
])
def test_foreign_sigprof_owner_is_refused_with_a_clear_message(tmp_path, mode, expected):
    script = tmp_path / "conflict.py"
    script.write_text(CONFLICT_SCRIPT)
    result = subprocess.run([sys.executable, str(script), mode], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "REFUSED:" in result.stdout and expected in result.stdout, result.stdout


def test_chaining_forwards_foreign_signals(sampler_factory):
    received = []
    previous = signal.signal(signal.SIGPROF, lambda signo, frame: received.append(signo))
    try:
        sampler = sampler_factory(frequency=200, clock="cpu", chain=True)
        with sampler:
            signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)
            spin(0.3)
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
        assert received, "the foreign handler got none of its own signals"
        assert any(s.frames and s.frames[0].function == "spin" for s in sampler.samples())
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)


def test_native_reason_is_none_here():
    assert sigprof.native_unavailable_reason() is None
