from __future__ import annotations

import json

import jsonschema
import pytest

from sigprof.formats import speedscope
from sigprof.formats.profile_model import Profile, top_functions

from .conftest import SPEEDSCOPE_SCHEMA


@pytest.fixture(scope="module")
def schema() -> dict:
    with open(SPEEDSCOPE_SCHEMA) as handle:
        return json.load(handle)


def test_known_profile_is_valid_and_root_first(profile: Profile, schema: dict) -> None:
    document = json.loads(speedscope.render(profile))
    jsonschema.validate(document, schema)
    assert [p["name"] for p in document["profiles"]] == ["MainThread (1001)", "worker-1 (2002)"]
    main = document["profiles"][0]
    frames = document["shared"]["frames"]
    first = [frames[i]["name"] for i in main["samples"][0]]
    assert first == ["<module>", "handle", "parse"]
    assert main["unit"] == "nanoseconds"
    assert main["weights"] == [10_000_000] * 9
    assert main["endValue"] == 90_000_000


def test_recorded_profile_is_valid(recorded_profile: Profile, schema: dict) -> None:
    document = json.loads(speedscope.render(recorded_profile))
    jsonschema.validate(document, schema)
    names = {f["name"] for f in document["shared"]["frames"]}
    assert "busy_leaf" in names


def test_schema_rejects_a_broken_file(profile: Profile, schema: dict) -> None:
    # the validation above can fail: drop a required field
    document = json.loads(speedscope.render(profile))
    del document["profiles"][0]["weights"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_round_trip(profile: Profile) -> None:
    back = speedscope.parse(json.loads(speedscope.render(profile)))
    assert back.unit == "nanoseconds"
    before = {(s.function, s.self_weight * 10_000_000) for s in top_functions(profile)[0]}
    after = {(s.function, s.self_weight) for s in top_functions(back)[0]}
    assert before == after


def test_parse_evented() -> None:
    document = {
        "shared": {"frames": [{"name": "a"}, {"name": "b"}]},
        "profiles": [{
            "type": "evented", "name": "t", "unit": "milliseconds", "startValue": 0, "endValue": 10,
            "events": [
                {"type": "O", "frame": 0, "at": 0}, {"type": "O", "frame": 1, "at": 2},
                {"type": "C", "frame": 1, "at": 5}, {"type": "C", "frame": 0, "at": 10},
            ],
        }],
    }
    profile = speedscope.parse(document)
    stats = {s.function: (s.self_weight, s.total_weight) for s in top_functions(profile)[0]}
    assert stats == {"a": (7_000_000, 10_000_000), "b": (3_000_000, 3_000_000)}
