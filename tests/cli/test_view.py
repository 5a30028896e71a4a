from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from sigprof.formats import collapsed, pprof, sentry_chunk, speedscope
from tests.exports.conftest import known_profile

from .conftest import sigprof_cli


def _functions_in(page: str) -> set:
    match = re.search(r'id="sigprof-data">(.*?)</script>', page, re.DOTALL)
    assert match is not None
    return {f[0] for f in json.loads(match.group(1))["functions"]}


@pytest.mark.parametrize(
    "name, render",
    [
        ("chunk.json", sentry_chunk.render),
        ("profile.speedscope.json", speedscope.render),
        ("stacks.txt", collapsed.render),
    ],
)
def test_view_turns_a_saved_profile_into_html(tmp_path: Path, name: str, render: object) -> None:
    (tmp_path / name).write_bytes(render(known_profile()))  # type: ignore[operator]
    result = sigprof_cli("view", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = Path(tmp_path / result.stdout.strip())
    assert out.suffix == ".html" and out.exists()
    assert {"Model.crunch", "handle", "parse", "Condition.wait"} <= _functions_in(out.read_text())


def test_view_reads_a_sentry_sdk_chunk_list(tmp_path: Path) -> None:
    lines = [c.body.decode() for c in sentry_chunk.chunks(known_profile())]
    (tmp_path / "chunks.jsonl").write_text("\n".join(lines * 2))
    result = sigprof_cli("view", "chunks.jsonl", "-o", "out.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "out.html"


def test_view_open_starts_a_browser(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(collapsed.render(known_profile()))
    fake = tmp_path / "fake-browser"
    fake.write_text(f"#!/bin/sh\necho \"$1\" > {tmp_path / 'opened'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = sigprof_cli("view", "p.txt", "--open", cwd=tmp_path, env={"BROWSER": str(fake)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "opened").read_text().strip() == (tmp_path / "p.html").as_uri()


def test_view_explains_pprof(tmp_path: Path) -> None:
    (tmp_path / "p.pb.gz").write_bytes(pprof.render(known_profile()))
    result = sigprof_cli("view", "p.pb.gz", cwd=tmp_path)
    assert result.returncode == 1
    assert "go tool pprof" in result.stderr


@pytest.mark.parametrize("content, message", [
    ('{"hello": 1}', "neither speedscope nor a Sentry profile"),
    ("{not json", "invalid JSON"),
    ("just some words\n", "not collapsed stacks"),
])
def test_view_rejects_what_it_cannot_read(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad").write_text(content)
    result = sigprof_cli("view", "bad", cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "bad.html").exists()


def test_view_missing_file(tmp_path: Path) -> None:
    result = sigprof_cli("view", "gone.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot read gone.json" in result.stderr
    assert os.listdir(tmp_path) == []


def test_view_never_overwrites_a_file_it_named(tmp_path: Path) -> None:
    """a.pyspy.json and a.sigprof.json each get their own page; a page a
    second view would have written over gets a new name."""
    (tmp_path / "a.pyspy.json").write_bytes(speedscope.render(known_profile()))
    (tmp_path / "a.sigprof.json").write_bytes(sentry_chunk.render(known_profile()))
    (tmp_path / "a.html").write_text("mine")
    written = [sigprof_cli("view", name, cwd=tmp_path).stdout.strip()
               for name in ("a.pyspy.json", "a.sigprof.json", "a.pyspy.json")]
    assert written == ["a.pyspy.html", "a.sigprof.html", "a.pyspy-2.html"]
    assert (tmp_path / "a.html").read_text() == "mine"
    for name in written:
        assert "Model.crunch" in _functions_in((tmp_path / name).read_text())


# `py-spy record --format raw` (0.4.2) of a one-function program: a sample with
# no Python frame is written " 1"; with --threads --subprocesses the process
# and the thread lead each stack as frames
PY_SPY_RAW = "<module> (ps.py:5);work (ps.py:4) 111\n 1\n"
PY_SPY_RAW_THREADS = (
    'process 27346:"/tmp/venv/bin/python ps.py";thread (27346) 1\n'
    'process 27346:"/tmp/venv/bin/python ps.py";thread (27346);<module> (ps.py:5);work (ps.py:4) 109\n'
)


@pytest.mark.parametrize("raw", [PY_SPY_RAW, PY_SPY_RAW_THREADS])
def test_view_reads_py_spy_raw_output(tmp_path: Path, raw: str) -> None:
    (tmp_path / "raw.txt").write_text(raw)
    result = sigprof_cli("view", "raw.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "work" in _functions_in((tmp_path / "raw.html").read_text())
    profile = collapsed.parse(raw)
    assert profile.sample_count() == 2 and profile.total_weight() == (112 if raw == PY_SPY_RAW else 110)
