from __future__ import annotations

import json

import pytest
import vroomrs

from sigprof.core.sampler import Frame
from sigprof.formats import sentry_chunk
from sigprof.formats.profile_model import Profile, top_functions

from .conftest import INTERVAL, T0


def chunk_documents(profile: Profile, profiler_id: str | None = None) -> list[dict]:
    return [json.loads(chunk.body) for chunk in sentry_chunk.chunks(profile, profiler_id)]


def vroom_parse(text: str) -> vroomrs.ProfileChunk:
    """vroomrs reads chunks as Sentry stores them: Relay adds these
    ingestion fields, which an SDK never sends."""
    document = json.loads(text)
    document.update(organization_id=1, project_id=2, received=int(T0 / 1e9), retention_days=90)
    return vroomrs.profile_chunk_from_json_str(json.dumps(document), "python")


def test_known_profile_chunk_shape(profile: Profile) -> None:
    (chunk,) = chunk_documents(profile, profiler_id="a" * 32)
    assert chunk["version"] == "2" and chunk["platform"] == "python"
    assert chunk["profiler_id"] == "a" * 32 and len(chunk["chunk_id"]) == 32
    body = chunk["profile"]
    assert all(isinstance(s["thread_id"], str) for s in body["samples"])
    assert {s["thread_id"] for s in body["samples"]} == {"1001", "2002"}
    assert body["thread_metadata"] == {"1001": {"name": "MainThread"}, "2002": {"name": "worker-1"}}
    first = body["samples"][0]
    assert first["timestamp"] == pytest.approx(T0 / 1e9)
    leaf_first = [body["frames"][i]["function"] for i in body["stacks"][first["stack_id"]]]
    assert leaf_first in (["parse", "handle", "<module>"], ["Condition.wait"])
    frames = {f["function"]: f for f in body["frames"]}
    assert frames["handle"]["filename"] == "app/server.py"
    assert frames["handle"]["abs_path"] == "/srv/app/server.py"
    assert frames["handle"]["module"] == "app.server"
    assert frames["handle"]["in_app"] is True
    assert chunk["client_sdk"]["name"] == "sigprof"


def test_frames_have_the_sentry_layers_fields() -> None:
    """One builder, one frame conversion: every frame has the six fields the
    Sentry layer's chunks carry, the sampler's markers included."""
    profile = Profile(interval_ns=INTERVAL)
    truncated = Frame("<truncated>", "<sigprof>", None, 0)
    for i in range(2):
        profile.add_sample(1, [Frame("f", "/a.py", None, 1), truncated], T0 + i * INTERVAL)
    (chunk,) = chunk_documents(profile)
    for frame in chunk["profile"]["frames"]:
        assert set(frame) == {"abs_path", "filename", "module", "function", "lineno", "in_app"}
    marker = next(f for f in chunk["profile"]["frames"] if f["function"] == "<truncated>")
    assert marker["in_app"] is False and marker["abs_path"] == "<sigprof>"
    back = sentry_chunk.parse(chunk)
    assert truncated in back.frames


def test_vroomrs_accepts_known_profile(profile: Profile) -> None:
    text = sentry_chunk.render(profile).decode()
    parsed = vroom_parse(text)
    assert parsed.get_platform() == "python"
    assert parsed.start_timestamp() == pytest.approx(T0 / 1e9, abs=1e-3)
    # 9 main-thread samples 10 ms apart
    assert parsed.end_timestamp() - parsed.start_timestamp() == pytest.approx(0.08, abs=1e-3)
    functions = {
        f.get_function(): (f.get_sample_count(), f.get_sum_self_time_ns())
        for f in parsed.extract_functions_metrics(
            min_depth=0, filter_system_frames=False, filter_non_leaf_functions=False
        )
    }
    count, self_ns = functions["Model.crunch"]
    assert count == 5 and self_ns == pytest.approx(5 * INTERVAL, rel=1e-3)


def test_vroomrs_accepts_recorded_profile(recorded_profile: Profile) -> None:
    text = sentry_chunk.render(recorded_profile).decode()
    parsed = vroom_parse(text)
    names = {
        f.get_function()
        for f in parsed.extract_functions_metrics(
            min_depth=0, filter_system_frames=False, filter_non_leaf_functions=False
        )
    }
    assert "_spin" in names or "busy_leaf" in names


def test_vroomrs_rejects_numeric_thread_ids(profile: Profile) -> None:
    # the acceptance test above can fail: Sentry wants string thread ids
    document = json.loads(sentry_chunk.render(profile))
    for sample in document["profile"]["samples"]:
        sample["thread_id"] = int(sample["thread_id"])
    with pytest.raises(ValueError):
        vroom_parse(json.dumps(document))


def test_long_profiles_split_into_chunks_relay_accepts() -> None:
    profile = Profile(interval_ns=INTERVAL)
    frame = Frame("f", "/a.py", None, 1)
    for second in range(150):
        profile.add_sample(1, [frame], T0 + second * 1_000_000_000)
    found = chunk_documents(profile, "b" * 32)
    assert [len(c["profile"]["samples"]) for c in found] == [65, 65, 20]
    assert {c["profiler_id"] for c in found} == {"b" * 32}
    for chunk in found:
        stamps = [s["timestamp"] for s in chunk["profile"]["samples"]]
        assert max(stamps) - min(stamps) <= 66
    lines = sentry_chunk.render(profile).decode().splitlines()
    assert len(lines) == 3
    for line in lines:
        vroom_parse(line)


def test_weighted_samples_are_repeated_and_untimed_ones_get_times() -> None:
    profile = Profile(interval_ns=INTERVAL)
    profile.add_sample(1, [Frame("f", "/a.py", None, 1)], weight=3)
    (chunk,) = chunk_documents(profile, "c" * 32)
    stamps = [s["timestamp"] for s in chunk["profile"]["samples"]]
    assert len(stamps) == 3 and stamps == sorted(stamps) and stamps[0] > 0


def test_a_huge_weight_is_refused_not_expanded() -> None:
    profile = Profile(interval_ns=INTERVAL)
    profile.add_sample(1, [Frame("f", "/a.py", None, 1)], weight=10**12)
    with pytest.raises(ValueError, match="too many"):
        sentry_chunk.render(profile)


def test_round_trip(profile: Profile) -> None:
    back = sentry_chunk.parse(json.loads(sentry_chunk.render(profile)))
    assert back.interval_ns == INTERVAL
    assert back.threads[1001].name == "MainThread"
    before = {(s.function, s.self_weight, s.total_weight) for s in top_functions(profile)[0]}
    after = {(s.function, s.self_weight, s.total_weight) for s in top_functions(back)[0]}
    assert before == after


def test_reads_v1_transaction_profiles() -> None:
    document = {
        "version": "1", "platform": "python", "timestamp": "2026-11-25T08:00:00+00:00",
        "profile": {
            "frames": [{"function": "a", "abs_path": "/x.py", "lineno": 3}],
            "stacks": [[0]],
            "samples": [
                {"elapsed_since_start_ns": "0", "thread_id": "5", "stack_id": 0},
                {"elapsed_since_start_ns": "10000000", "thread_id": "5", "stack_id": 0},
            ],
            "thread_metadata": {"5": {"name": "main"}},
        },
    }
    profile = sentry_chunk.parse(document)
    stamps = [ts for ts, _, _ in profile.threads[5].samples]
    assert stamps[1] - stamps[0] == 10_000_000
    assert profile.threads[5].name == "main"
