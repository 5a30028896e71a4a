from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

import sigprof
from sigprof import cli
from sigprof.exports import sentry_chunk
from sigprof.local_chunks import ENV_OUTPUT_DIR, LocalChunkWriter, read_directory
from tests.exports.conftest import INTERVAL, T0, known_profile
from tests.exports.test_sentry_chunk import vroom_parse

from .conftest import needs_native, sigprof_cli


def _work(seconds: float) -> int:
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(i * i for i in range(300))
    return total


@needs_native
def test_writer_writes_valid_chunks_atomically(tmp_path: Path) -> None:
    writer = LocalChunkWriter(sigprof.Sampler(frequency=200), str(tmp_path), interval_s=0.3,
                              release="svc@1.0", environment="dev")
    with writer:
        _work(1.2)
    names = sorted(os.listdir(tmp_path))
    assert len(names) >= 2, names
    assert all(n.startswith("sigprof-chunk-") and n.endswith(".json") for n in names)
    assert sorted(writer.written) == sorted(str(tmp_path / n) for n in names)
    profiler_ids = set()
    functions = set()
    writer_thread_seen = False
    for name in names:
        text = (tmp_path / name).read_text()
        vroom_parse(text)
        chunk = json.loads(text)
        assert chunk["release"] == "svc@1.0" and chunk["environment"] == "dev"
        profiler_ids.add(chunk["profiler_id"])
        body = chunk["profile"]
        functions |= {f["function"] for f in body["frames"]}
        for meta in body["thread_metadata"].values():
            writer_thread_seen |= meta["name"] == "sigprof-chunk-writer"
        # each chunk stands alone: every id it uses is its own
        assert all(0 <= s["stack_id"] < len(body["stacks"]) for s in body["samples"])
        assert all(0 <= i < len(body["frames"]) for stack in body["stacks"] for i in stack)
    assert len(profiler_ids) == 1
    assert "_work" in functions
    assert not writer_thread_seen
    assert not writer.running and not writer.sampler.running


@needs_native
def test_writer_leaves_a_running_sampler_running(tmp_path: Path) -> None:
    sampler = sigprof.Sampler(frequency=100)
    sampler.start()
    try:
        writer = LocalChunkWriter(sampler, str(tmp_path), interval_s=60)
        writer.start()
        _work(0.3)
        writer.stop()
        assert sampler.running
        assert len(writer.written) == 1  # the final flush on stop
    finally:
        sampler.stop()


def test_directory_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv(ENV_OUTPUT_DIR, str(target))
    writer = LocalChunkWriter(sigprof.Sampler(), None)
    assert writer.directory == str(target) and target.is_dir()
    monkeypatch.delenv(ENV_OUTPUT_DIR)
    with pytest.raises(ValueError, match=ENV_OUTPUT_DIR):
        LocalChunkWriter(sigprof.Sampler(), None)


def _write_minutes(directory: Path, minutes: int) -> None:
    """Chunk files as a service would leave them, one per minute from T0."""
    for minute in range(minutes):
        profile = known_profile()
        for thread in profile.threads.values():
            thread.samples = [(ts + minute * 60_000_000_000, s, w) for ts, s, w in thread.samples]
        (chunk,) = sentry_chunk.chunks(profile, "d" * 32)
        (directory / f"sigprof-chunk-{minute:03d}.json").write_text(json.dumps(chunk))


def test_read_directory_merges_and_filters(tmp_path: Path) -> None:
    _write_minutes(tmp_path, 3)
    (tmp_path / ".sigprof-half-written.tmp").write_text("{")
    (tmp_path / "notes.json").write_text("[1, 2]")
    merged = read_directory(str(tmp_path))
    assert merged.files_read == 3 and merged.problems == []
    assert merged.profile.sample_count() == 3 * 13
    second_only = read_directory(str(tmp_path), T0 + 60_000_000_000, T0 + 61_000_000_000)
    assert second_only.profile.sample_count() == 13


def test_report_command(tmp_path: Path) -> None:
    _write_minutes(tmp_path, 3)
    until = str((T0 + 60_000_000_000 + 5 * INTERVAL) / 1e9)
    result = sigprof_cli("report", ".", "--until", until, "--format", "collapsed", "-o", "r.txt",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "r.txt").read_text().splitlines()
    # minute 0 whole (13 samples) plus minute 1 up to its sixth tick (6 + 4 worker samples)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 13 + 6 + 4
    html = sigprof_cli("report", ".", cwd=tmp_path)
    assert html.returncode == 0, html.stderr
    assert html.stdout.strip() == os.path.join(".", "report.html")
    assert "Model.crunch" in (tmp_path / "report.html").read_text()


def test_report_on_an_empty_directory(tmp_path: Path) -> None:
    result = sigprof_cli("report", ".", cwd=tmp_path)
    assert result.returncode == 1
    assert "no sigprof chunk files" in result.stderr


def test_parse_time_forms() -> None:
    now = 1_800_000_000.0
    assert cli.parse_time("30m", now) == int((now - 1800) * 1e9)
    assert cli.parse_time("2h", now) == int((now - 7200) * 1e9)
    assert cli.parse_time("1764000000", now) == 1_764_000_000 * 10**9
    assert cli.parse_time("2025-11-24T16:00:00Z", now) == 1_764_000_000 * 10**9
    assert cli.parse_time("2025-11-24T16:00:00", now) == 1_764_000_000 * 10**9  # UTC by default
    with pytest.raises(cli.CliError):
        cli.parse_time("yesterday-ish", now)


def test_threads_of_writer_are_daemons(tmp_path: Path) -> None:
    writer = LocalChunkWriter(sigprof.Sampler(), str(tmp_path), interval_s=60)
    assert not writer.running
    # no thread until start(): constructing one has no side effects beyond the directory
    assert not any(t.name == "sigprof-chunk-writer" for t in threading.enumerate())


@needs_native
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_writes_nothing_of_the_parents(tmp_path: Path) -> None:
    sampler = sigprof.Sampler(frequency=200)
    sampler.start()
    writer = LocalChunkWriter(sampler, str(tmp_path), interval_s=60)
    writer.start()
    _work(0.3)
    sampler.stop()  # its last samples wait in the sampler, undrained, as the fork copies it
    pid = os.fork()
    if pid == 0:  # the child leaves at once; its atexit would run writer.stop()
        writer.stop()
        os._exit(len(os.listdir(tmp_path)))
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0  # the child wrote no chunk
    writer.stop()
    assert len(os.listdir(tmp_path)) == 1
