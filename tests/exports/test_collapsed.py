from __future__ import annotations

import pytest

from sigprof.core.sampler import Frame
from sigprof.formats import collapsed
from sigprof.formats.profile_model import Profile, top_functions


def test_lines_are_root_first_with_counts(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(str(tmp_path))
    text = collapsed.render(profile).decode()
    lines = text.splitlines()
    assert sorted(lines) == lines
    assert (
        "<module> (/srv/app/main.py:3);handle (app/server.py:20);"
        "Model.crunch (app/model.py:41) 3"
    ) in lines
    assert "<module> (/srv/app/main.py:3) 1" in lines
    assert "Condition.wait (threading.py:355) 4" in lines
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 13


def test_round_trip_keeps_counts(profile: Profile) -> None:
    back = collapsed.parse(collapsed.render(profile).decode())
    before = {(s.function, s.self_weight, s.total_weight) for s in top_functions(profile)[0]}
    after = {(s.function, s.self_weight, s.total_weight) for s in top_functions(back)[0]}
    assert before == after


def test_semicolons_in_names_cannot_split_frames() -> None:
    profile = Profile()
    profile.add_sample(1, [Frame("odd;name", "/a.py", None, 2)])
    (line,) = collapsed.render(profile).decode().splitlines()
    assert line.count(";") == 0 and line.endswith(" 1")


@pytest.mark.parametrize("bad", ["a;b", "a;b x", "", "a;b -1"])
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        collapsed.parse(bad)


def test_parse_reads_flamegraph_pl_style_frames() -> None:
    profile = collapsed.parse("main;work;leaf 7\nmain;work 3\n")
    root_first = [[f.function for f in reversed(profile.stack_frames(s))]
                  for _, s, _ in profile.threads[0].samples]
    assert root_first == [["main", "work", "leaf"], ["main", "work"]]
    assert profile.total_weight() == 10


def test_library_frames_from_short_names_are_not_the_users() -> None:
    from sigprof.formats.labels import in_app

    profile = collapsed.parse("<module> (app.py:1);dumps (json/__init__.py:231) 2\n")
    frames = {f.function: f for f in profile.frames}
    assert in_app(frames["dumps"]) is False
    assert in_app(frames["<module>"]) is True
