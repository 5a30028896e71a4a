from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sigprof
from sigprof.chunks.local_chunks import ENV_OUTPUT_DIR, LocalChunkWriter, read_directory
from sigprof.core.sample_source import SOURCE, EpochTables
from sigprof.formats import sentry_chunk
from sigprof.local import cli
from tests.exports.conftest import INTERVAL, T0, known_profile
from tests.exports.test_sentry_chunk import vroom_parse

from .conftest import needs_native, sigprof_cli


def _work(seconds: float) -> int:
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(i * i for i in range(300))
    return total


@pytest.fixture
def source_idle() -> Iterator[None]:
    """The writer shares the process's one native sampler (SOURCE) with the
    Sentry layer: each test leaves it stopped for the next."""
    yield
    SOURCE.stop_now()


@needs_native
def test_writer_writes_valid_chunks_atomically(tmp_path: Path, source_idle: None) -> None:
    SOURCE.configure(200, "wall", 128)
    writer = LocalChunkWriter(str(tmp_path), interval_s=0.3, release="svc@1.0", environment="dev")
    with writer:
        _work(1.5)
    names = sorted(os.listdir(tmp_path))
    assert len(names) >= 2, names
    assert all(n.startswith("sigprof-chunk-") and n.endswith(".json") for n in names)
    assert sorted(writer.written) == sorted(str(tmp_path / n) for n in names)
    profiler_ids = set()
    functions = set()
    for name in names:
        text = (tmp_path / name).read_text()
        vroom_parse(text)
        chunk = json.loads(text)
        assert chunk["release"] == "svc@1.0" and chunk["environment"] == "dev"
        profiler_ids.add(chunk["profiler_id"])
        body = chunk["profile"]
        functions |= {f["function"] for f in body["frames"]}
        for frame in body["frames"]:
            assert set(frame) == {"abs_path", "filename", "module", "function", "lineno", "in_app"}
        # each chunk stands alone: every id it uses is its own
        assert all(0 <= s["stack_id"] < len(body["stacks"]) for s in body["samples"])
        assert all(0 <= i < len(body["frames"]) for stack in body["stacks"] for i in stack)
    assert len(profiler_ids) == 1
    assert "_work" in functions
    assert not writer.running


class _Consumer:
    def __init__(self) -> None:
        self.samples = 0

    def feed(self, samples: list, tables: EpochTables) -> None:
        self.samples += len(samples)

    def epoch_ending(self, tables: EpochTables) -> None:
        pass


@needs_native
def test_writer_shares_the_one_native_sampler(tmp_path: Path, source_idle: None) -> None:
    other = _Consumer()  # another consumer, as a transaction profile would be
    assert SOURCE.acquire(other)
    sampler = SOURCE.sampler
    writer = LocalChunkWriter(str(tmp_path), interval_s=60)
    writer.start()
    assert SOURCE.sampler is sampler  # joined the running sampler, started none
    _work(0.3)
    writer.stop()
    assert SOURCE.running  # still held by the other consumer
    assert len(writer.written) == 1  # the final flush on stop
    SOURCE.release(other)
    assert other.samples > 0


@needs_native
def test_writer_refuses_when_another_sampler_runs(tmp_path: Path, source_idle: None) -> None:
    sampler = sigprof.Sampler(frequency=100)
    sampler.start()
    try:
        writer = LocalChunkWriter(str(tmp_path), interval_s=60)
        with pytest.raises(sigprof.SamplerError):
            writer.start()
        assert not writer.running
    finally:
        sampler.stop()


def test_directory_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv(ENV_OUTPUT_DIR, str(target))
    writer = LocalChunkWriter(None)
    assert writer.directory == str(target) and target.is_dir()
    monkeypatch.delenv(ENV_OUTPUT_DIR)
    with pytest.raises(ValueError, match=ENV_OUTPUT_DIR):
        LocalChunkWriter(None)


def _write_minutes(directory: Path, minutes: int) -> None:
    """Chunk files as a service would leave them, one per minute from T0."""
    for minute in range(minutes):
        profile = known_profile()
        for thread in profile.threads.values():
            thread.samples = [(ts + minute * 60_000_000_000, s, w) for ts, s, w in thread.samples]
        (chunk,) = sentry_chunk.chunks(profile, "d" * 32)
        (directory / f"sigprof-chunk-{minute:03d}.json").write_bytes(chunk.body)


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


def test_constructing_a_writer_starts_nothing(tmp_path: Path) -> None:
    writer = LocalChunkWriter(str(tmp_path), interval_s=60)
    assert not writer.running and writer.written == []
    assert os.listdir(tmp_path) == []


@needs_native
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_writes_nothing_of_the_parents(tmp_path: Path, source_idle: None) -> None:
    writer = LocalChunkWriter(str(tmp_path), interval_s=60)
    writer.start()
    _work(0.3)
    pid = os.fork()
    if pid == 0:  # the child leaves at once; its exit hooks would run writer.stop()
        writer.stop()
        os._exit(len(os.listdir(tmp_path)))
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0  # the child wrote no chunk
    writer.stop()
    assert len(os.listdir(tmp_path)) == 1
