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
from tests.sentry.judge import (
    check_chunk,
    check_profile_v1,
    functions_in,
    normalize_transaction,
    samples_between,
)
from tests.sentry.receiver import Receiver


def make_app() -> Any:
    app = flask.Flask("shop")

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
    receiver.wait_for(lambda r: len(r.payloads("transaction")) == REQUESTS)
    wanted = {e["contexts"]["profile"]["profiler_id"] for e in receiver.payloads("transaction")}
    # each session's last chunk is sent just after the session ends
    receiver.wait_for(lambda r: wanted <= {c["profiler_id"] for c in r.payloads("profile_chunk")})
    chunks = receiver.payloads("profile_chunk")
    for chunk in chunks:
        check_chunk(chunk)
    by_id = {chunk["chunk_id"]: chunk for chunk in chunks}
    for event in receiver.payloads("transaction"):
        normalize_transaction(event)
        data = event["contexts"]["trace"]["data"]
        profiler_id = event["contexts"]["profile"]["profiler_id"]
        assert data["profiler_id"] == profiler_id
        mine = [c for c in by_id.values() if c["profiler_id"] == profiler_id]
        shown = set()
        for chunk in mine:
            inside = samples_between(
                chunk["profile"]["samples"],
                data["thread.id"],
                event["start_timestamp"],
                event["timestamp"],
            )
            frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
            shown.update(frames[i]["function"] for s in inside for i in stacks[s["stack_id"]])
        assert "make_app.<locals>.report_view" in shown
