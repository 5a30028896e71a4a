"""Property test of the local Sentry export: any profile (odd frames and
thread names, untimed, equal, unordered and widely spread timestamps, empty
stacks, weights) becomes chunks that vroomrs parses, each spanning at most
66 s, with string thread ids and frames Sentry keeps. See
tests/sentry/test_payload_properties.py for the Sentry layer's builders."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigprof.core.sampler import Frame
from sigprof.formats import chunk_json, sentry_chunk
from sigprof.formats.profile_model import Profile

from .test_sentry_chunk import vroom_parse

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ODD = st.sampled_from(["", "\x00", "\udcff", "<module>", "<sigprof>", "é", "\U0001f600", '"'])
TEXT = st.one_of(ODD, st.text(max_size=10))
FRAMES = st.builds(
    Frame,
    function=TEXT,
    filename=st.one_of(TEXT, TEXT.map(lambda t: "/srv/app/" + t + ".py")),
    module=st.one_of(st.none(), TEXT),
    lineno=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
T0 = 1_764_000_000_000_000_000
SAMPLES = st.tuples(
    st.integers(min_value=1, max_value=4),  # thread
    st.lists(FRAMES, max_size=4),  # stack, leaf first
    st.one_of(st.just(0), st.integers(T0, T0 + 200 * 10**9)),  # 0: untimed
    st.integers(min_value=1, max_value=3),  # weight
)


@given(st.lists(SAMPLES, max_size=30), st.dictionaries(st.integers(1, 4), TEXT, max_size=4))
def test_any_profile_exports_as_chunks_sentry_parses(
    samples: list[Any], names: dict[int, str]
) -> None:
    profile = Profile(unit="samples", interval_ns=10_000_000)
    for thread, frames, timestamp_ns, weight in samples:
        profile.add_sample(thread, frames, timestamp_ns, weight, thread_name=names.get(thread))
    chunks = list(sentry_chunk.chunks(profile))
    assert sum(len(json.loads(c.body)["profile"]["samples"]) for c in chunks) == sum(
        w for _, _, _, w in samples)
    for chunk in chunks:
        vroom_parse(chunk.body.decode())
        document = json.loads(chunk.body)
        body = document["profile"]
        stamps = [s["timestamp"] for s in body["samples"]]
        assert max(stamps) - min(stamps) <= 66
        assert all(isinstance(s["thread_id"], str) for s in body["samples"])
        for frame in body["frames"]:
            assert frame["function"] and frame["lineno"] >= 0
    vroom_parse(sentry_chunk.render(profile).decode().splitlines()[0])


RAW_SAMPLES = st.lists(
    st.tuples(
        st.integers(min_value=-(2**40), max_value=2**62),  # monotonic ns
        st.integers(min_value=0, max_value=2**64 - 1),  # threading.get_ident()
        st.integers(min_value=0, max_value=9),  # stack id
    ),
    max_size=50,
)


@given(RAW_SAMPLES, st.integers(min_value=-(2**40), max_value=2**60))
def test_native_samples_json_is_the_python_text(samples, unix_offset_ns):
    # The bridge's writer (used whenever the core is there) and the Python one
    # (where it is not) write the same bytes, and refuse the same stacks.
    native = pytest.importorskip("sigprof._native")
    assert native.sentry_samples_json(samples, unix_offset_ns, 10) == chunk_json._samples_json(
        samples, unix_offset_ns, 10
    )
    for writer in (native.sentry_samples_json, chunk_json._samples_json):
        with pytest.raises(ValueError, match="names stack 9 out of 9"):
            writer([*samples, (0, 1, 9)], unix_offset_ns, 9)
