"""Samples dropped to a full native buffer reach the user in local mode: a
warning line from `sigprof run`, the count in the exports that have room for
it (Sentry JSON, speedscope, HTML stats) and in local chunk files, and back
through `sigprof view`/`report`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from sigprof.chunks.local_chunks import LocalChunkWriter, read_directory
from sigprof.core.sample_source import SOURCE
from sigprof.formats import readers, write_profile
from sigprof.formats.chunk_json import LOSSES_KEY
from tests.exports.test_sentry_chunk import vroom_parse

from .conftest import needs_native, sigprof_cli, write_script

# The main thread keeps the GIL (a switch interval of 100 s: a thread that
# asks for it waits that long) while its CPU timer keeps adding records, so
# sigprof's drain cannot run; it goes on until 300 more records arrived
# than the buffer holds. Records come at the kernel's tick (250 a second
# here), so that takes about 9 s with the default buffer (2048 records).
# (Threads waiting for the GIL take no signal and add no record.)
GIL_HOG = """
    import sys
    from sigprof.core.sample_source import SOURCE
    arrived, capacity = SOURCE.sampler.ring_usage()
    target = arrived + capacity + 300
    sys.setswitchinterval(100)
    while SOURCE.sampler.ring_usage()[0] < target:
        sum(range(10_000))
    sys.setswitchinterval(0.005)
"""

DROPPED_LINE = re.compile(r"sigprof: warning: (\d+) samples dropped: the native buffer was full")


@needs_native
def test_run_warns_and_the_exports_keep_the_count(tmp_path: Path) -> None:
    # one (long) run; the speedscope export is made from what it wrote
    write_script(tmp_path / "hog.py", GIL_HOG)
    out = tmp_path / "out.sentry.json"
    result = sigprof_cli(
        "run", "-f", "500", "--no-summary", "--format", "sentry", "-o", str(out), "hog.py",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    counts = [int(n) for n in DROPPED_LINE.findall(result.stderr)]
    assert counts and counts == sorted(counts)  # said as it happens, and at the end if more
    assert json.loads(out.read_text())[LOSSES_KEY]["dropped_samples"] == counts[-1]
    vroom_parse(out.read_text())  # Sentry's parser takes the extra key
    # read back (`sigprof view` shows it again) and written as speedscope
    profile = readers.load(str(out))
    assert profile.stats["dropped"] == counts[-1]
    speedscope = tmp_path / "out.speedscope.json"
    write_profile(profile, "speedscope", str(speedscope))
    assert json.loads(speedscope.read_text())[LOSSES_KEY]["dropped_samples"] == counts[-1]
    assert readers.load(str(speedscope)).stats["dropped"] == counts[-1]


@needs_native
def test_quiet_when_nothing_is_dropped(tmp_path: Path) -> None:
    write_script(tmp_path / "calm.py", "import time\ntime.sleep(0.3)\n")
    result = sigprof_cli("run", "--format", "sentry", "-o", "out.json", "calm.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dropped" not in result.stderr
    assert LOSSES_KEY not in json.loads((tmp_path / "out.json").read_text())


@needs_native
def test_local_chunk_files_count_dropped_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SOURCE, "buffer_capacity", 16)  # 16 records per quarter-second drain at 200 Hz
    SOURCE.configure(200, "wall", 128)
    try:
        before = SOURCE.dropped_total
        with LocalChunkWriter(str(tmp_path), interval_s=0.5):
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:
                sum(range(300))
            # stop sampling first: what the lingering sampler would drop after
            # the writer's last chunk is no chunk's
            SOURCE.stop_now()
        dropped = SOURCE.dropped_total - before
    finally:
        SOURCE.stop_now()
        SOURCE.configure(101, "wall", 128)
    told = 0
    for path in sorted(tmp_path.glob("sigprof-chunk-*.json")):
        document = json.loads(path.read_text())
        vroom_parse(path.read_text())
        told += document.get(LOSSES_KEY, {}).get("dropped_samples", 0)
    assert dropped > 0 and told == dropped
    assert read_directory(str(tmp_path)).profile.stats["dropped"] == dropped
