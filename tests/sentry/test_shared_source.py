"""Every consumer reads the process's one sample source: a `sigprof run`
recording and a Sentry continuous session in the same process both see the
samples, the same ones."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

import sigprof
from sigprof.local.recording import Recorder
from tests.cli.conftest import sigprof_cli, write_script
from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver


def spin_for_both(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(300))


def _chunk_samples(chunks: list[dict[str, Any]], thread_id: str) -> list[tuple[float, set[str]]]:
    found = []
    for chunk in chunks:
        profile = chunk["profile"]
        frames, stacks = profile["frames"], profile["stacks"]
        for sample in profile["samples"]:
            if sample["thread_id"] == thread_id:
                functions = {frames[i]["function"] for i in stacks[sample["stack_id"]]}
                found.append((float(sample["timestamp"]), functions))
    return found


@pytest.mark.parametrize("first", ["recorder", "session"])
def test_recording_and_sentry_session_share_the_samples(receiver: Receiver, first: str) -> None:
    sigprof.init(dsn=receiver.dsn, profile_session_sample_rate=1.0)
    recorder = Recorder(101, "wall", name="shared")
    if first == "recorder":
        recorder.start()
        sentry_sdk.profiler.start_profiler()
    else:
        sentry_sdk.profiler.start_profiler()
        recorder.start()
    spin_for_both(0.5)
    # The session ends before the recording (both orders of starting, one of stopping)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    profile = recorder.stop()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))

    thread_id = threading.get_ident()
    chunks = receiver.payloads("profile_chunk")
    for chunk in chunks:
        check_chunk(chunk)
    in_chunks = _chunk_samples(chunks, str(thread_id))
    recorded = {
        when: {frame.function for frame in profile.stack_frames(stack_id)}
        for when, stack_id, _ in profile.threads[thread_id].samples
    }
    assert any("spin_for_both" in functions for _, functions in in_chunks)
    assert any("spin_for_both" in functions for functions in recorded.values())
    # The recording spans the session: every sample the session sent while
    # spinning, the recording has too, at the same moment (a float of Unix
    # seconds holds it to a fraction of a microsecond; samples are ~10 ms apart).
    recorded_times = sorted(recorded)
    spinning = [(when, fns) for when, fns in in_chunks if "spin_for_both" in fns]
    assert len(spinning) >= 2
    for when, _ in spinning:
        nearest = min(recorded_times, key=lambda ns: abs(ns / 1e9 - when))
        assert abs(nearest / 1e9 - when) < 2e-6
        assert "spin_for_both" in recorded[nearest]


PROGRAM_WITH_SENTRY = """
    import sys, time
    import sentry_sdk
    import sigprof

    def spin_in_both(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(300))

    sigprof.init(dsn=sys.argv[1], profile_session_sample_rate=1.0)
    sentry_sdk.profiler.start_profiler()
    spin_in_both(0.6)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
"""


def test_sigprof_run_of_a_program_profiling_into_sentry(receiver: Receiver, tmp_path: Path) -> None:
    # Before the Recorder read the shared source, the program's session
    # found the one sampler taken and sent nothing.
    write_script(tmp_path / "app.py", PROGRAM_WITH_SENTRY)
    out = tmp_path / "out.json"
    result = sigprof_cli(
        "run", "--no-summary", "--format", "sentry", "-o", str(out), "app.py", receiver.dsn,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    sent = {
        frame["function"] for chunk in receiver.payloads("profile_chunk")
        for frame in chunk["profile"]["frames"]
    }
    check_chunk(receiver.payloads("profile_chunk")[0])
    assert "spin_in_both" in sent
    recorded = {frame["function"] for frame in json.loads(out.read_text())["profile"]["frames"]}
    assert "spin_in_both" in recorded
