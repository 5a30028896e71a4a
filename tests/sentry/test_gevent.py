"""gevent with monkey patching: sampling still works, and nothing of
sigprof's runs as a greenlet (its housekeeping is a real OS thread)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sentry.generations import sent_roots
from tests.sentry.judge import check_chunk, samples_between
from tests.sentry.receiver import Receiver

pytest.importorskip("gevent")

APP = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import json, os, sys, threading, time
    import gevent
    import sentry_sdk
    # 3.x: a root span, 2.x: a transaction
    start_root = sentry_sdk.traces.start_span if int(sentry_sdk.VERSION[0]) >= 3 else sentry_sdk.start_transaction
    import sigprof
    from sigprof.core.sample_source import SOURCE

    sigprof.init(dsn=sys.argv[1], traces_sample_rate=1.0, profile_session_sample_rate=1.0)
    sentry_sdk.profiler.start_profiler()

    def greenlet_work(seconds):
        # never yields to the hub: a greenlet-based sampler could not run now
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(range(300))

    with start_root(name="gevent request"):
        drained_before = SOURCE._last_drain
        gevent.spawn(greenlet_work, 2.5).join()  # long enough for a drain (every ~1 s) under load
        drained_during = SOURCE._last_drain
        gevent.joinall([gevent.spawn(gevent.sleep, 0.05) for _ in range(10)])
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    with open(f"/proc/self/task/{os.getpid()}/status") as status:
        main_blocked = next(line.split()[1] for line in status if line.startswith("SigBlk:"))
    print(json.dumps({
        # the OS thread's ident (threading.get_ident() is patched to greenlets)
        "main": monkey.get_original("_thread", "get_ident")(),
        "drained_while_greenlet_hogged": drained_during > drained_before,
        "main_blocked_signals": int(main_blocked, 16),
    }))
    """
)


def test_gevent_monkey_patched_app(receiver: Receiver, tmp_path: Path) -> None:
    script = tmp_path / "gevent_app.py"
    script.write_text(APP)
    result = subprocess.run(
        [sys.executable, str(script), receiver.dsn],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["drained_while_greenlet_hogged"]
    # sentry-sdk's worker, a green thread on the main thread, left its signals alone
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        assert not facts["main_blocked_signals"] >> (number - 1) & 1, number
    receiver.wait_for(lambda r: bool(sent_roots(r)) and bool(r.payloads("profile_chunk")))
    (root,) = sent_roots(receiver)
    assert root.thread_id == str(facts["main"])  # greenlets run on the hub's OS thread
    shown = set()
    housekeeping_threads = set()
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        inside = samples_between(chunk["profile"]["samples"], root.thread_id, root.start, root.end)
        shown.update(frames[i]["function"] for s in inside for i in stacks[s["stack_id"]])
        for sample in chunk["profile"]["samples"]:
            if any(
                frames[i]["function"] == "HousekeepingThread._run"
                for i in stacks[sample["stack_id"]]
            ):
                housekeeping_threads.add(sample["thread_id"])
    assert "greenlet_work" in shown
    assert not housekeeping_threads  # sigprof's own thread is never sampled
