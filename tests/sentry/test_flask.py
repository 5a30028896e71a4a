"""A real Flask app with sentry-sdk's FlaskIntegration, served over HTTP by
werkzeug's threaded WSGI server: every sampled request's transaction is
linked to samples that show the view function."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

flask = pytest.importorskip("flask")
from sentry_sdk.integrations.flask import FlaskIntegration
from werkzeug.serving import make_server

import sigprof
from tests.sentry.generations import SDK_GENERATION, requires_sdk2, sent_roots
from tests.sentry.judge import (
    check_chunk,
    check_profile_v1,
    functions_in,
    normalize_transaction,
    samples_between,
)
from tests.sentry.receiver import Receiver

SHORT_VIEW_CPU_S = 0.003
short_view_cpu: list[float] = []  # the CPU time each short request's view burnt


def make_app() -> Any:
    app = flask.Flask("shop")

    @app.route("/api/short")
    def short_view() -> str:
        start = time.thread_time()
        while time.thread_time() - start < SHORT_VIEW_CPU_S:
            sum(range(400))
        short_view_cpu.append(time.thread_time() - start)
        return "short"

    @app.route("/api/report/<int:n>")
    def report_view(n: int) -> str:
        deadline = time.monotonic() + 0.25
        total = 0
        while time.monotonic() < deadline:
            total += sum(range(400))
        return f"report {n}: {total}"

    return app


@pytest.fixture
def served_app() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body.decode()


REQUESTS = 4


@requires_sdk2
def test_transaction_profiles_show_the_view(receiver: Receiver, served_app: str) -> None:
    sigprof.init(
        dsn=receiver.dsn,
        integrations=[FlaskIntegration()],
        traces_sample_rate=1.0,
        profiles_sample_rate=1.0,
    )
    for n in range(REQUESTS):
        assert _get(f"{served_app}/api/report/{n}").startswith(f"report {n}")
    import sentry_sdk

    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(r.payloads("profile")) == REQUESTS)
    for envelope in receiver.envelopes:
        if "transaction" not in envelope.types():
            continue
        event = envelope.payload("transaction")
        profile = envelope.payload("profile")
        normalize_transaction(event)
        check_profile_v1(profile)
        linked = profile["transactions"][0]
        assert event["transaction"] == "report_view"
        assert event["contexts"]["trace"]["op"] == "http.server"
        assert linked["id"] == event["event_id"]
        assert linked["trace_id"] == event["contexts"]["trace"]["trace_id"]
        thread_id = linked["active_thread_id"]
        assert thread_id != str(threading.get_ident())  # a server thread, not the test's
        assert "make_app.<locals>.report_view" in functions_in(profile["profile"], thread_id)


def test_trace_lifecycle_chunks_show_the_view(receiver: Receiver, served_app: str) -> None:
    sigprof.init(
        dsn=receiver.dsn,
        integrations=[FlaskIntegration()],
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        profile_lifecycle="trace",
    )
    for n in range(REQUESTS):
        _get(f"{served_app}/api/report/{n}")
    from sentry_sdk.profiler import continuous_profiler

    from tests.sentry.receiver import wait_until

    wait_until(lambda: continuous_profiler.get_profiler_id() is None)
    import sentry_sdk

    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(sent_roots(r)) == REQUESTS)
    roots = sent_roots(receiver)
    assert {root.op for root in roots} == {"http.server"}
    wanted = {root.profiler_id for root in roots}
    assert None not in wanted
    # each session's last chunk is sent just after the session ends
    receiver.wait_for(lambda r: wanted <= {c["profiler_id"] for c in r.payloads("profile_chunk")})
    chunks = receiver.payloads("profile_chunk")
    for chunk in chunks:
        check_chunk(chunk)
    if SDK_GENERATION == 2:
        for event in receiver.payloads("transaction"):
            profile_context = event["contexts"]["profile"]
            assert event["contexts"]["trace"]["data"]["profiler_id"] == profile_context["profiler_id"]
    for root in roots:
        assert root.thread_id != str(threading.get_ident())  # a server thread, not the test's
        mine = [c for c in chunks if c["profiler_id"] == root.profiler_id]
        shown = set()
        for chunk in mine:
            inside = samples_between(
                chunk["profile"]["samples"], root.thread_id, root.start, root.end
            )
            frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
            shown.update(frames[i]["function"] for s in inside for i in stacks[s["stack_id"]])
        assert "make_app.<locals>.report_view" in shown


def test_thread_per_request_views_get_the_samples_their_time_is_owed(
    receiver: Receiver, served_app: str
) -> None:
    # werkzeug's threaded server starts a thread per request: each lives a
    # few tens of ms. Before threads registered themselves as they started,
    # the collector's scan found few of them in time (the trial: the
    # view in 10 of 2,789 samples; this test at 101 Hz on the old build: 38
    # samples for 61 owed).
    import sentry_sdk

    # At 500 Hz a 3 ms view spans one or two ticks, so what it is owed varies
    # little from request to request; at 101 Hz a view met a tick about one
    # time in three, and 200 views (about 61 samples owed) gave a spread of
    # about 7 samples, too wide to judge a 90% share (CI on 3.9 saw 46).
    sigprof.init(
        dsn=receiver.dsn, integrations=[FlaskIntegration(), sigprof.SigprofIntegration(frequency=500)],
        traces_sample_rate=1.0, profile_session_sample_rate=1.0,
    )
    short_view_cpu.clear()
    sentry_sdk.profiler.start_profiler()
    for _ in range(200):  # a bounded load, one request at a time
        assert _get(f"{served_app}/api/short") == "short"
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    in_view = 0
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        for sample in chunk["profile"]["samples"]:
            if any(frames[i]["function"] == "make_app.<locals>.short_view"
                   for i in stacks[sample["stack_id"]]):
                in_view += 1
    owed = sum(short_view_cpu) * 500
    assert len(short_view_cpu) == 200
    # Linux delivers a CPU timer's expiration at the next scheduler tick
    # (4 ms here, two intervals at 500 Hz), so a sample due in the view's
    # last ~2 ms lands in the code after it, and the view gains back only
    # what was due in werkzeug's short code before it: 66-76% of the owed
    # samples before each thread's first expiry was drawn early by the
    # kernel's lateness (357-390 of 300 while a thread reusing an ident took
    # the previous thread's gap), 227-239 of 300 since (3.12, beside one busy
    # process).
    assert in_view >= 0.6 * owed, f"{in_view} samples in the view, {owed:.0f} owed"
