"""`sigprof.init()` without a DSN: local chunk files for `sigprof report`
(issue 4). Each service runs in its own process, as a real one would."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.exports.test_sentry_chunk import vroom_parse

from .conftest import needs_native, sigprof_cli, write_script

SERVICE = """
import sys
import time

import sigprof
from sigprof.sentry import integration as sentry_init

def handle_request(seconds):
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(i * i for i in range(300))
    return total

mode = sys.argv[1]
if mode == "keyword":
    sigprof.init(output_dir=sys.argv[2], release="svc@2.0")
elif mode == "dsn":
    sigprof.init(dsn="http://key@127.0.0.1:9/1", output_dir=sys.argv[2])
else:  # the directory comes from SIGPROF_OUTPUT_DIR, or nowhere
    sigprof.init()
writer = sentry_init.local_writer()
print("writer" if writer is not None else "no writer", flush=True)
if writer is not None:
    writer.interval_s = 0.5  # one chunk per half second instead of per minute
for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
    handle_request(0.5)
"""


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import subprocess

    script = write_script(tmp_path / "service.py", SERVICE)
    full_env = {k: v for k, v in os.environ.items() if k not in ("SENTRY_DSN", "SIGPROF_OUTPUT_DIR")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, str(script), *args], cwd=str(tmp_path), env=full_env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _chunk_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("sigprof-chunk-"))


@needs_native
def test_output_dir_keyword_writes_chunks_that_report_merges(tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    assert _run(tmp_path, "keyword", str(out), "5") == "writer"
    files = _chunk_files(out)
    assert len(files) >= 2, files  # several chunks, cut every 0.5 s, the last one at exit
    profiler_ids = set()
    for path in files:
        text = path.read_text()
        vroom_parse(text)  # what Sentry would accept
        chunk = json.loads(text)
        profiler_ids.add(chunk["profiler_id"])
        assert chunk["release"] == "svc@2.0"
    assert len(profiler_ids) == 1
    report = sigprof_cli("report", str(out), "--format", "collapsed", "-o", "r.txt", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "handle_request" in (tmp_path / "r.txt").read_text()
    html = sigprof_cli("report", str(out), cwd=tmp_path)
    assert html.returncode == 0, html.stderr
    assert "handle_request" in (out / "report.html").read_text()


@needs_native
def test_environment_variable_gives_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "from-env"
    assert _run(tmp_path, "env", "-", "2", env={"SIGPROF_OUTPUT_DIR": str(out)}) == "writer"
    files = _chunk_files(out)
    assert files
    report = sigprof_cli("report", str(out), "--format", "collapsed", "-o", "r.txt", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "handle_request" in (tmp_path / "r.txt").read_text()


@pytest.mark.parametrize("mode", ["dsn", "env"])
def test_no_files_with_a_dsn_or_without_a_directory(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "profiles"
    assert _run(tmp_path, mode, str(out)) == "no writer"
    assert not out.exists() or _chunk_files(out) == []
