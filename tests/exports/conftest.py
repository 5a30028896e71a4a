from __future__ import annotations

import os
import threading
import time

import pytest

import sigprof
from sigprof.core.sampler import Frame
from sigprof.formats.profile_model import Profile, ProfileBuilder

HERE = os.path.dirname(os.path.abspath(__file__))
# speedscope's published file-format schema (MIT), copied here
SPEEDSCOPE_SCHEMA = os.path.join(HERE, "speedscope-file-format-schema.json")

MAIN = Frame("<module>", "/srv/app/main.py", "__main__", 3)
HANDLE = Frame("handle", "/srv/app/server.py", "app.server", 20)
PARSE = Frame("parse", "/usr/lib/python3.12/json/decoder.py", "json.decoder", 353)
CRUNCH = Frame("Model.crunch", "/srv/app/model.py", "app.model", 41)
CRUNCH_OTHER_LINE = Frame("Model.crunch", "/srv/app/model.py", "app.model", 44)
WAIT = Frame("Condition.wait", "/usr/lib/python3.12/threading.py", "threading", 355)
T0 = 1_764_000_000_000_000_000  # a Unix time in ns
INTERVAL = 10_000_000


def known_profile() -> Profile:
    """Main thread: 3x main>handle>parse, 5x main>handle>crunch (2 on
    another line), 1x main; worker: 4x wait. Timestamps 10 ms apart."""
    profile = Profile(name="known", unit="samples", interval_ns=INTERVAL, clock="wall")
    stacks = (
        [[PARSE, HANDLE, MAIN]] * 3
        + [[CRUNCH, HANDLE, MAIN]] * 3
        + [[CRUNCH_OTHER_LINE, HANDLE, MAIN]] * 2
        + [[MAIN]]
    )
    for i, frames in enumerate(stacks):
        profile.add_sample(1001, frames, T0 + i * INTERVAL, thread_name="MainThread")
    for i in range(4):
        profile.add_sample(2002, [WAIT], T0 + i * INTERVAL, thread_name="worker-1")
    return profile


@pytest.fixture
def profile() -> Profile:
    return known_profile()


def _spin(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(i * i for i in range(200))
    return n


def busy_leaf(seconds: float) -> int:
    return _spin(seconds)


@pytest.fixture(scope="session")
def recorded_profile() -> Profile:
    """A real profile from the native sampler: the main thread spins in
    busy_leaf, a second thread sleeps."""
    reason = sigprof.native_unavailable_reason()
    if reason is not None:
        pytest.skip(f"native sampler unavailable: {reason}")
    sampler = sigprof.Sampler(frequency=200, clock="wall")
    profile = Profile(name="recorded", unit="samples", interval_ns=5_000_000, clock="wall")
    builder = ProfileBuilder(profile, sampler.to_unix_ns)
    stop = threading.Event()
    sleeper = threading.Thread(target=stop.wait, name="sleeper")
    sleeper.start()
    try:
        with sampler:
            busy_leaf(0.6)
    finally:
        stop.set()
        sleeper.join()
    builder.add(sampler.drain(), sampler.thread_names())
    assert profile.sample_count() > 10, "the sampler took almost nothing"
    return profile
