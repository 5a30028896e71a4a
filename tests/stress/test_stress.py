"""Stress: a long soak at the highest frequency, thread churn, forks under
churn, and every way of ending a process, each scenario in a fresh process
(tests/stress/scenarios.py). Collected only by `nox -s stress` (pyproject's
norecursedirs keeps tests/stress out of the plain `pytest` run).

SIGPROF_STRESS_SOAK_S sets the soak's length (default 180 s) and
SIGPROF_STRESS_CHURN_S the thread churn's (default 20 s per clock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver

SCENARIOS = Path(__file__).with_name("scenarios.py")
SOAK_S = float(os.environ.get("SIGPROF_STRESS_SOAK_S", "180"))
CHURN_S = float(os.environ.get("SIGPROF_STRESS_CHURN_S", "20"))
MIB = 1024 * 1024
# Growth allowed between the peaks of the first and the last third of a run,
# after the warm-up. Measured on the 180 s soak before the native buffer was
# made resident from the start: +0.5 MiB on 3.12 and 3.13, +2.1 MiB on 3.9
# (600 s on 3.12: +2.3 MiB), most of it the buffer's deeper pages faulted in
# as deep stacks first reached them. Since then (MAP_POPULATE): +1.1 MiB in
# 300 s on 3.12, +0.3 MiB in 240 s on 3.13, +1.6 MiB in 240 s on 3.9, what is
# left coming and going with each chunk's transient allocations and the
# converted-frame cache filling towards its cap. The same workload unprofiled
# stays within 0.3 MiB. 4 MiB is about twice the worst measurement; between
# the thirds lie about 600 rounds (12,000 code objects, 2,400 threads, 24,000
# tasks), so a leak above ~350 bytes per code object or ~2 KiB per thread
# fails it. Thread churn bounds a per-thread leak far tighter: 40,000+ threads.
RSS_SLACK_MIB = float(os.environ.get("SIGPROF_STRESS_RSS_SLACK_MIB", "4"))
STATE_FILES_CAP = 64  # csrc/sampler.c state_files_allowed()
WARM_UP = 0.25  # the first quarter of a run: imports, caches and tables filling


def run_scenario(*args: str, timeout: float) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(SCENARIOS), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Fatal Python error" not in result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def thirds_after_warm_up(series: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(first third, last third) of the values after the warm-up, by time."""
    end = series[-1][0]
    start = end * WARM_UP
    span = end - start
    first = [value for t, value in series if start <= t < start + span / 3]
    last = [value for t, value in series if t >= end - span / 3]
    assert first and last, "too few measurements for a flatness check"
    return first, last


def assert_flat_rss(series: list[tuple[float, float]]) -> float:
    first, last = thirds_after_warm_up(series)
    growth = (max(last) - max(first)) / MIB
    assert growth <= RSS_SLACK_MIB, f"RSS grew by {growth:.1f} MiB after the warm-up"
    return growth


@pytest.mark.timeout(SOAK_S + 900)
def test_soak_continuous_profiling_mixed_workload(receiver: Receiver) -> None:
    report = run_scenario("soak", str(SOAK_S), "--dsn", receiver.dsn, timeout=SOAK_S + 600)
    rounds = report["rounds"]
    growth = assert_flat_rss([(t, rss) for t, rss, _ in rounds])
    # files exactly flat; the transport's one connection at most; sigprof's
    # per-thread state files within its cap
    first, last = thirds_after_warm_up([(t, files) for t, _, (files, _, _) in rounds])
    assert set(first) == set(last) and len(set(last)) == 1, (first, last)
    assert max(sockets for _, _, (_, sockets, _) in rounds) <= 1
    assert max(state_files for _, _, (_, _, state_files) in rounds) <= STATE_FILES_CAP

    # the last chunk is sent by the flush at the end: everything is here now
    chunks = receiver.payloads("profile_chunk")
    assert len(chunks) >= 3
    seen: set[str] = set()
    for chunk in chunks:
        check_chunk(chunk)
        profile = chunk["profile"]
        seen.update(frame["function"] for frame in profile["frames"])
    expected = {"recurse", "numbers", "async_task", "async_numbers", "raise_deep", "code_churn"}
    assert expected <= seen, expected - seen
    assert any(name.startswith("churned_") for name in seen)
    print(f"\nsoak {SOAK_S:.0f} s on {sys.version.split()[0]}: {report['round_count']} rounds, "
          f"{len(chunks)} chunks, RSS growth after warm-up {growth:+.2f} MiB, "
          f"RSS {rounds[0][1] / MIB:.1f} -> {rounds[-1][1] / MIB:.1f} MiB, files {rounds[-1][2][0]}")


@pytest.mark.timeout(CHURN_S + 600)
@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_thread_churn(clock: str) -> None:
    report = run_scenario("churn", str(CHURN_S), clock, timeout=CHURN_S + 300)
    windows = report["windows"]
    assert len(windows) >= 3
    # the main thread keeps being sampled while thousands of threads come and go
    assert all(window["main_samples"] > 0 for window in windows), windows
    series, elapsed = [], 0.0
    for window in windows:
        elapsed += window["seconds"]
        series.append((elapsed, window["rss"]))
    growth = assert_flat_rss(series)
    # the registry and the descriptors follow the live threads, not the started ones
    assert max(window["registered_threads"] for window in windows) <= 64
    assert len({window["fds"]["files"] for window in windows}) == 1
    assert max(window["fds"]["state_files"] for window in windows) <= STATE_FILES_CAP
    assert report["fds_after"] == report["fds_before"]  # stop() closed every state file
    final = report["final"]
    assert final["untracked_threads"] == 0
    assert final["samples"] > 0
    rate = report["threads_started"] / report["elapsed"]
    print(f"\nchurn {clock} on {sys.version.split()[0]}: {rate:.0f} threads/s, "
          f"{final['samples']} samples, {final['dropped']} dropped, "
          f"RSS growth {growth:+.2f} MiB, registry peak "
          f"{max(w['registered_threads'] for w in windows)}")


@pytest.mark.timeout(900)
def test_fork_loop_and_fork_pool_under_thread_churn() -> None:
    """Raw sampler; children end with os._exit, some sampling on their own."""
    report = run_scenario("churn", "3", "wall", "--forks", "200", timeout=600)
    assert report["forks"] == 200
    assert report["fork_failures"] == []


@pytest.mark.timeout(900)
def test_fork_loop_with_a_session_children_exit_normally(receiver: Receiver) -> None:
    """A continuous session under thread churn; children end with sys.exit
    (atexit hooks, the SDK's flush), each sending its own session's chunk."""
    forks = 40
    report = run_scenario("forks_with_session", str(forks), receiver.dsn, timeout=600)
    assert report["fork_failures"] == []
    receiver.wait_for(lambda r: len({c["profiler_id"] for c in r.payloads("profile_chunk")})
                      >= forks + 1, timeout=30)
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)


EXIT_MODES = ["normal", "exit_during_flush", "os_exit", "sigterm_handler", "sigterm_default"]


@pytest.mark.parametrize("mode", EXIT_MODES)
def test_exit_paths(receiver: Receiver, mode: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(SCENARIOS), "exit", mode, receiver.dsn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        if mode.startswith("sigterm"):
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Fatal Python error" not in stderr, stderr
    if mode == "sigterm_default":
        assert process.returncode == -signal.SIGTERM, stderr
        return  # killed: no flush is possible
    assert process.returncode == 0, stderr
    if mode == "os_exit":
        return  # no exit handler runs: nothing to flush
    # the process flushed the last chunk before exiting: it shows the last phase
    chunks = receiver.payloads("profile_chunk")
    for chunk in chunks:
        check_chunk(chunk)
    last_phase = [
        chunk for chunk in chunks
        if any(frame["function"] == "marker_phase_at_exit" for frame in chunk["profile"]["frames"])
    ]
    assert last_phase, f"{len(chunks)} chunks, none from the last phase"
