from __future__ import annotations

import pytest

from sigprof.core.sampler import Batch, Frame
from sigprof.formats.profile_model import (
    Profile,
    ProfileBuilder,
    build_tree,
    strip_root_frames,
    top_functions,
)

from .conftest import CRUNCH, HANDLE, MAIN, PARSE, T0, WAIT


def test_tree_totals_and_self(profile: Profile) -> None:
    root = build_tree(profile, [1001])
    assert root.total == 9
    main = root.children[(MAIN.function, MAIN.filename)]
    assert (main.total, main.self_weight) == (9, 1)
    handle = main.children[(HANDLE.function, HANDLE.filename)]
    assert handle.total == 8
    crunch = handle.children[(CRUNCH.function, CRUNCH.filename)]
    # frames merge by function and file; lines are kept apart
    assert crunch.total == 5 and crunch.self_weight == 5
    assert crunch.lines == {41: 3, 44: 2}
    parse = handle.children[(PARSE.function, PARSE.filename)]
    assert parse.total == 3


def test_top_functions_ranks_by_self(profile: Profile) -> None:
    stats, grand = top_functions(profile, limit=10)
    assert grand == 13
    assert [s.function for s in stats[:3]] == ["Model.crunch", "Condition.wait", "parse"]
    crunch = stats[0]
    assert (crunch.self_weight, crunch.total_weight, crunch.lineno) == (5, 5, 41)
    main = next(s for s in stats if s.function == "<module>")
    assert (main.self_weight, main.total_weight) == (1, 9)


def test_recursion_counts_once_in_total() -> None:
    profile = Profile()
    rec = Frame("rec", "/a.py", None, 1)
    profile.add_sample(1, [rec, rec, rec])
    stats, grand = top_functions(profile)
    assert (stats[0].self_weight, stats[0].total_weight, grand) == (1, 1, 1)


def test_select_threads_by_name_pattern_and_id(profile: Profile) -> None:
    assert set(profile.select_threads(["worker-*"]).threads) == {2002}
    assert set(profile.select_threads(["1001"]).threads) == {1001}
    assert set(profile.select_threads(["mainthread", "nothing"]).threads) == {1001}


def test_between_keeps_the_time_range(profile: Profile) -> None:
    cut = profile.between(T0 + 2 * 10_000_000, T0 + 3 * 10_000_000)
    assert cut.sample_count() == 4  # two per thread


def test_builder_maps_ids_across_interning_resets() -> None:
    a, b, c = (Frame(n, "/x.py", None, 1) for n in "abc")
    profile = Profile()
    builder = ProfileBuilder(profile)
    builder.add(Batch(0, [a, b], 0, [(0, 1)], [(5, 7, 0)]), {7: "T"})
    # ids continue: frame 2 is new, stack 1 uses old frame 0
    builder.add(Batch(2, [c], 1, [(2, 0)], [(7, 7, 1)]), {})
    # after a reset ids restart at 0 and mean different frames
    builder.add(Batch(0, [c], 0, [(0,)], [(8, 7, 0)]), {})
    got = [[f.function for f in profile.stack_frames(s)] for _, s, _ in profile.threads[7].samples]
    assert got == [["a", "b"], ["c", "a"], ["c"]]
    assert profile.threads[7].name == "T"


def test_builder_rejects_gaps() -> None:
    builder = ProfileBuilder(Profile())
    with pytest.raises(ValueError):
        builder.add(Batch(3, [], 0, [], []), {})


def test_strip_root_frames_drops_launcher_frames(profile: Profile) -> None:
    stripped = strip_root_frames(profile, lambda f: f.function == "<module>")
    heads = {tuple(f.function for f in stripped.stack_frames(s))[-1]
             for t in stripped.threads.values() for _, s, _ in t.samples}
    assert heads == {"handle", WAIT.function}
    # the lone "<module>" sample had nothing else: it goes
    assert stripped.sample_count() == profile.sample_count() - 1
