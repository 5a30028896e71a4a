"""Property tests of the payload builders: any sample stream gives a chunk or
transaction profile that Sentry's parsers (vroomrs, and the ingestion rules
of tests/sentry/judge.py) accept, or a clean refusal: a ValueError for ids
that do not exist, or the builders' own "not enough samples" decision.

Streams are arbitrary where the sampler cannot rule values out: function and
file names (empty, unicode, NUL, lone surrogates as os.fsdecode gives for
undecodable paths), modules, line numbers, thread idents and names, empty
stacks, timestamps unordered, equal or huge. Example counts come from the
hypothesis profile (HYPOTHESIS_PROFILE=ci is the default: modest; `long`
for a deeper local run)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sentry_sdk.consts import VERSION

from sigprof.core.sample_source import EpochTables
from sigprof.core.sampler import Frame
from sigprof.formats.chunk_json import chunk_json, has_enough_samples
from sigprof.formats.sentry_frames import FrameConverter
from sigprof.sentry.envelopes import chunk_envelope, mark_in_app
from sigprof.sentry.transaction_profiles import PROFILE_MINIMUM_SAMPLES, NativeProfile
from tests.sentry import judge
from tests.sentry.receiver import parse_envelope

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Text as code objects and file systems can hold it.
ODD = st.sampled_from(["", " ", "\x00", "\udcff", "\ud800x", "<module>", "<sigprof>", "<unknown>",
                       "a\nb", '"', "\\", "é", "\U0001f600"])
TEXT = st.one_of(ODD, st.text(max_size=12), st.lists(ODD, max_size=3).map("".join))
FRAMES = st.builds(
    Frame,
    function=TEXT,
    filename=st.one_of(TEXT, TEXT.map(lambda t: "/srv/app/" + t + ".py")),
    module=st.one_of(st.none(), TEXT),
    lineno=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
THREAD_IDS = st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.sampled_from([0, 1, 2]))
WINDOW_NS = 60 * 10**9  # one chunk: the session cuts every 60 s


@st.composite
def streams(draw: Any, valid_ids: bool = True) -> dict[str, Any]:
    """Frames, stacks over them, samples over the stacks, within one window."""
    frames = draw(st.lists(FRAMES, min_size=0 if not valid_ids else 1, max_size=8))
    frame_ids = (st.integers(0, len(frames) - 1) if valid_ids
                 else st.integers(-2, len(frames) + 2))
    stacks = draw(st.lists(st.lists(frame_ids, max_size=6), min_size=1, max_size=6))
    stack_ids = (st.integers(0, len(stacks) - 1) if valid_ids
                 else st.integers(-2, len(stacks) + 2))
    threads = draw(st.lists(THREAD_IDS, min_size=1, max_size=5, unique=True))
    base = draw(st.integers(min_value=0, max_value=10**17))  # monotonic clock: up to 3 years up
    times = st.one_of(st.integers(base, base + WINDOW_NS), st.just(base))
    samples = draw(st.lists(st.tuples(times, st.sampled_from(threads), stack_ids), max_size=40))
    return {
        "frames": frames,
        "stacks": stacks,
        "samples": samples,
        "unix_offset_ns": draw(st.integers(min_value=0, max_value=2 * 10**18)),
        "thread_names": draw(st.dictionaries(st.sampled_from(threads), TEXT, max_size=5)),
        "options": draw(st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"release": TEXT, "environment": TEXT, "dist": TEXT,
                          "in_app_include": st.lists(TEXT, max_size=2)}))),
    }


def ids_valid(stream: dict[str, Any]) -> bool:
    n_frames, n_stacks = len(stream["frames"]), len(stream["stacks"])
    return all(0 <= i < n_frames for stack in stream["stacks"] for i in stack) and all(
        0 <= s < n_stacks for _, _, s in stream["samples"])


def build_chunk(stream: dict[str, Any]) -> bytes:
    converter = FrameConverter()
    frames = [converter.convert(frame) for frame in stream["frames"]]
    mark_in_app(frames, stream["options"])
    return chunk_json(
        chunk_id=uuid.uuid4().hex,
        profiler_id=uuid.uuid4().hex,
        frames=frames,
        stacks=stream["stacks"],
        samples=stream["samples"],
        unix_offset_ns=stream["unix_offset_ns"],
        thread_names=stream["thread_names"],
        options=stream["options"],
        sdk_name="sentry.python",
        sdk_version=VERSION,
    )


@given(streams())
def test_chunk_is_accepted(stream: dict[str, Any]) -> None:
    body = build_chunk(stream)
    payload = json.loads(body)  # strict JSON: no NaN, no lone surrogate unescaped
    assert len(payload["profile"]["samples"]) == len(stream["samples"])
    if not has_enough_samples(stream["samples"], stream["stacks"]):
        return  # the session drops such a chunk: never sent
    judge.check_chunk(payload)
    # The envelope carries the body unchanged, as one profile_chunk item.
    sent = parse_envelope(chunk_envelope(body).serialize())
    assert sent.types() == ["profile_chunk"]
    assert sent.payload("profile_chunk") == payload


@given(streams(valid_ids=False))
def test_chunk_with_missing_ids_is_refused(stream: dict[str, Any]) -> None:
    if ids_valid(stream):
        body = build_chunk(stream)
        if has_enough_samples(stream["samples"], stream["stacks"]):
            judge.check_chunk(json.loads(body))
        return
    with pytest.raises(ValueError, match="names"):
        build_chunk(stream)


EVENT = {
    "event_id": uuid.uuid4().hex,
    "transaction": "GET /",
    "start_timestamp": "2023-11-14T22:13:20.000000Z",
    "contexts": {"trace": {"trace_id": uuid.uuid4().hex}},
    "release": "1.0",
}
OPTIONS = {"in_app_exclude": [], "in_app_include": [], "project_root": "/srv/app"}


@given(streams(), st.integers(min_value=1, max_value=WINDOW_NS))
def test_transaction_profile_is_accepted(stream: dict[str, Any], duration_ns: int) -> None:
    samples = stream["samples"]
    start = min((t for t, _, _ in samples), default=0)
    profile = NativeProfile(True, start)
    profile.stop_ns = start + duration_ns  # a finished transaction: feed keeps its window
    tables = EpochTables()
    tables.frames = list(stream["frames"])
    tables.stacks = [tuple(stack) for stack in stream["stacks"]]
    profile.feed(samples, tables)
    if profile.unique_samples < PROFILE_MINIMUM_SAMPLES:
        return  # sentry-sdk's valid() refuses it: never sent
    payload = profile.to_json(EVENT, OPTIONS)
    judge.check_profile_v1(json.loads(json.dumps(payload, allow_nan=False)))
