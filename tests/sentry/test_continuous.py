"""Continuous profiling (format v2 chunks) through the real HTTP transport."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.profiler import continuous_profiler

import sigprof
from sigprof.sentry import session as continuous
from sigprof.sentry.session import SESSION
from tests.sentry.generations import (
    SDK_GENERATION,
    sent_roots,
    sent_spans,
    start_child,
    start_root,
)
from tests.sentry.judge import check_chunk, samples_between
from tests.sentry.receiver import Receiver, wait_until


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(300))


def _chunks(receiver: Receiver) -> list[dict[str, Any]]:
    return receiver.payloads("profile_chunk")


def test_manual_lifecycle_links_transactions_and_spans_to_chunks(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profile_session_sample_rate=1.0)
    sentry_sdk.profiler.start_profiler()
    profiler_id = continuous_profiler.get_profiler_id()
    assert profiler_id is not None
    with start_root("manual", op="task"), start_child("inner", op="work"):
        spin(0.4)
    sentry_sdk.profiler.stop_profiler()
    assert continuous_profiler.get_profiler_id() is None
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")) and len(sent_spans(r)) >= 2)

    # one chunk per envelope, nothing else in it, item header as Sentry wants
    for envelope, _ in receiver.items("profile_chunk"):
        assert envelope.types() == ["profile_chunk"]
        header = envelope.items[0][0]
        assert header["platform"] == "python" and header["content_type"] == "application/json"
        assert envelope.headers == {} or set(envelope.headers) <= {"sent_at"}
    chunks = _chunks(receiver)
    for chunk in chunks:
        check_chunk(chunk)
        assert chunk["profiler_id"] == profiler_id
    if SDK_GENERATION == 2:
        (event,) = receiver.payloads("transaction")
        assert event["contexts"]["profile"]["profiler_id"] == profiler_id
        assert event["contexts"]["trace"]["data"]["profiler_id"] == profiler_id
    root, span = sorted(sent_spans(receiver), key=lambda s: not s.is_root)
    thread_id = str(threading.get_ident())
    assert (root.name, root.is_root, span.name, span.is_root) == ("manual", True, "inner", False)
    assert root.profiler_id == profiler_id
    assert root.thread_id == thread_id
    assert root.thread_name == threading.current_thread().name
    assert span.profiler_id == profiler_id
    assert span.thread_id == thread_id
    # samples on the span's clock, inside the span, showing the span's code
    samples = [s for chunk in chunks for s in chunk["profile"]["samples"]]
    inside = samples_between(samples, thread_id, span.start, span.end)
    assert len(inside) >= 2  # what Sentry needs to show a thread; no rate asserted (shared CI)
    chunk = chunks[0]
    frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
    shown = {frames[i]["function"] for s in inside for i in stacks[s["stack_id"]]}
    assert "spin" in shown
    assert "test_manual_lifecycle_links_transactions_and_spans_to_chunks" in shown
    assert chunk["profile"]["thread_metadata"][thread_id]["name"] == "MainThread"
    # neither sigprof's housekeeping thread nor sentry-sdk's transport worker
    for chunk in chunks:
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        names = {meta.get("name") for meta in chunk["profile"]["thread_metadata"].values()}
        assert not any(name and name.startswith("sentry-sdk") for name in names), names
        for sample in chunk["profile"]["samples"]:
            functions = {frames[i]["function"] for i in stacks[sample["stack_id"]]}
            assert not functions & {"HousekeepingThread._run", "BackgroundWorker._target"}, functions


def test_trace_lifecycle_shares_profiler_id_back_to_back_then_renews(receiver: Receiver) -> None:
    sigprof.init(
        dsn=receiver.dsn,
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        profile_lifecycle="trace",
    )
    assert continuous_profiler.get_profiler_id() is None
    ids = []
    with start_root("first"):
        ids.append(continuous_profiler.get_profiler_id())
        spin(0.2)
    with start_root("second"):
        ids.append(continuous_profiler.get_profiler_id())
        spin(0.2)
    assert ids[0] is not None and ids[0] == ids[1]
    wait_until(lambda: continuous_profiler.get_profiler_id() is None)  # full stop after linger
    with start_root("third"):
        ids.append(continuous_profiler.get_profiler_id())
        spin(0.2)
    assert ids[2] is not None and ids[2] != ids[0]
    wait_until(lambda: continuous_profiler.get_profiler_id() is None)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: {c["profiler_id"] for c in _chunks(r)} == {ids[0], ids[2]})
    receiver.wait_for(lambda r: len(sent_roots(r)) == 3)
    roots = {root.name: root for root in sent_roots(receiver)}
    for name, expected in zip(("first", "second", "third"), ids):
        assert roots[name].profiler_id == expected
    for chunk in _chunks(receiver):
        check_chunk(chunk)


def test_auto_start_experiment_starts_at_init(receiver: Receiver) -> None:
    sigprof.init(
        dsn=receiver.dsn,
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        _experiments={"continuous_profiling_auto_start": True},
    )
    assert continuous_profiler.get_profiler_id() is None  # starts with the first transaction
    with start_root("auto"):
        spin(0.2)
    profiler_id = continuous_profiler.get_profiler_id()
    assert profiler_id is not None  # and keeps running (manual lifecycle)
    spin(0.2)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_chunks(r)) and bool(sent_roots(r)))
    assert {c["profiler_id"] for c in _chunks(receiver)} == {profiler_id}
    assert sent_roots(receiver)[0].profiler_id == profiler_id


def test_session_sample_rate_zero_never_profiles(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profile_session_sample_rate=0.0)
    sentry_sdk.profiler.start_profiler()
    assert continuous_profiler.get_profiler_id() is None
    with start_root("plain"):
        spin(0.1)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)))
    if SDK_GENERATION == 2:
        assert "profile" not in receiver.payloads("transaction")[0]["contexts"]
    assert sent_roots(receiver)[0].profiler_id is None
    assert _chunks(receiver) == []


def test_session_decision_is_made_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigprof.sentry import sampling

    monkeypatch.setattr(sampling, "_decision", None)
    decisions = []
    for _ in range(20):
        sigprof.init(profile_session_sample_rate=0.5)
        decisions.append(
            continuous_profiler.is_profile_session_sampled()
            if hasattr(continuous_profiler, "is_profile_session_sampled")
            else continuous_profiler._scheduler.sampled
        )
    assert len(set(decisions)) == 1


def test_chunks_are_cut_every_period_and_at_flush(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60 s in production; a short period keeps the test quick.
    monkeypatch.setattr(continuous, "CHUNK_SECONDS", 0.5)
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profile_session_sample_rate=1.0)
    base = SESSION.chunks_sent
    sigprof.start_profiler()
    spin(1.6)
    wait_until(lambda: SESSION.chunks_sent - base >= 2)
    monkeypatch.setattr(continuous, "CHUNK_SECONDS", 3600.0)  # from now on only flush cuts
    time.sleep(0.5)  # a periodic cut already under way lands before the count
    before_flush = SESSION.chunks_sent
    spin(0.2)
    sentry_sdk.flush()
    assert SESSION.chunks_sent == before_flush + 1
    sigprof.stop_profiler()
    receiver.wait_for(lambda r: len(_chunks(r)) >= before_flush + 1 - base)
    chunks = _chunks(receiver)
    assert len({c["chunk_id"] for c in chunks}) == len(chunks)
    assert len({c["profiler_id"] for c in chunks}) == 1
    spans = []
    for chunk in chunks:
        check_chunk(chunk)
        stamps = [s["timestamp"] for s in chunk["profile"]["samples"]]
        spans.append((min(stamps), max(stamps)))
        assert max(stamps) - min(stamps) < 1.6  # cut near the period, not at the end
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start + 0.05  # chunks follow one another in time


def test_exit_sends_the_last_chunk(receiver: Receiver, tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "app.py"
    script.write_text(
        "import time, sigprof, sentry_sdk\n"
        f"sigprof.init(dsn={receiver.dsn!r}, traces_sample_rate=1.0, profile_session_sample_rate=1.0)\n"
        "sentry_sdk.profiler.start_profiler()\n"
        "def work_until_exit():\n"
        "    deadline = time.monotonic() + 0.5\n"
        "    while time.monotonic() < deadline: sum(range(100))\n"
        "work_until_exit()\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    receiver.wait_for(lambda r: bool(_chunks(r)))
    (chunk,) = _chunks(receiver)
    check_chunk(chunk)
    assert "work_until_exit" in {f["function"] for f in chunk["profile"]["frames"]}
