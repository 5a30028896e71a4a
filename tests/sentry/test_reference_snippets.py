"""Every code snippet of the user's reference document
(tests/sentry/sentry-profiling.md, a copy of the page as the user gave it),
run as written except `sentry_sdk.init` ->
`sigprof.init` and the DSN pointing at the local receiver. The only
scaffolding added defines the snippets' placeholders (process_data, ...)
and runs the application around them."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.profiler import continuous_profiler

import sigprof
from tests.sentry.generations import SentSpan, requires_sdk2, sent_roots, sent_spans, start_root
from tests.sentry.judge import (
    check_chunk,
    check_profile_v1,
    functions_in,
    samples_between,
    unix_seconds,
)
from tests.sentry.receiver import Receiver, wait_until

# 3.x's versions of the tests left to 2.x here are in test_streamed_spans.py

# The snippets, verbatim, in the document's order.
BASIC = """import sentry_sdk

def profiles_sampler(sampling_context):
    # Custom sampling logic - return value between 0.0 and 1.0 or a boolean
    # Example: Sample more for certain endpoints
    op = sampling_context.get("transaction_context", {}).get("op", "")
    name = sampling_context.get("transaction_context", {}).get("name", "")
    
    # Sample all API endpoints at higher rate
    if op == "http.server" and "/api/" in name:
        return 1.0
    # Use lower sampling rate for everything else
    return 0.1

sentry_sdk.init(
    dsn="YOUR_DSN",  # Replace with environment variable reference
    
    # Set a uniform sample rate (recommended for development only)
    profiles_sample_rate=0.1,  # 10% sampling in production
    
    # OR use dynamic sampling for more control
    profiles_sampler=profiles_sampler
)"""

FUNCTION_LEVEL = """import sentry_sdk

@sentry_sdk.profile()
def expensive_operation():
    # This function will be profiled
    results = process_data()
    return results"""

CODE_BLOCK = """def complex_function():
    # Regular code here
    
    # Start profiling a specific section
    with sentry_sdk.start_profiling_span(description="Data processing"):
        process_large_dataset()
    
    # Continue with non-profiled code
    finalize_results()"""

MANUAL = """import sentry_sdk

sentry_sdk.init(
    dsn="YOUR_DSN",  # Use environment variable
    traces_sample_rate=0.1,
    
    # Collect profiles for 10% of sessions
    profile_session_sample_rate=0.1,
)

# Start profiler manually
sentry_sdk.profiler.start_profiler()

# Application code runs here...

# Stop profiler when appropriate
sentry_sdk.profiler.stop_profiler()"""

AUTO_START = """import sentry_sdk

sentry_sdk.init(
    dsn="YOUR_DSN",  # Use environment variable
    traces_sample_rate=0.1,
    profile_session_sample_rate=0.1,
    _experiments={
      "continuous_profiling_auto_start": True,
    },
)"""

SNIPPETS = [BASIC, FUNCTION_LEVEL, CODE_BLOCK, MANUAL, AUTO_START]


def _document() -> Path:
    return Path(__file__).resolve().parent / "sentry-profiling.md"


def test_the_snippets_are_the_documents() -> None:
    text = _document().read_text()
    blocks = re.findall(r"```python\n(.*?)\n```", text, re.DOTALL)
    assert blocks == SNIPPETS


def run(snippet: str, receiver: Receiver, **scaffolding: Any) -> dict[str, Any]:
    """Runs a snippet: sentry_sdk.init -> sigprof.init, DSN -> the receiver."""
    code = snippet.replace("sentry_sdk.init(", "sigprof.init(").replace(
        '"YOUR_DSN"', repr(receiver.dsn)
    )
    namespace: dict[str, Any] = {"sigprof": sigprof, "sentry_sdk": sentry_sdk, **scaffolding}
    exec(compile(code, "<reference snippet>", "exec"), namespace)  # noqa: S102 - the test is running it
    return namespace


def busy(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += sum(range(300))
    return total


@requires_sdk2  # transaction profiles and their lost-event outcomes
def test_basic_setup_profiles_api_endpoints_always_and_the_rest_at_ten_percent(
    receiver: Receiver,
) -> None:
    run(BASIC, receiver)
    transport = sentry_sdk.get_client().transport
    assert transport is not None
    lost: list[tuple[str, Any]] = []
    record = transport.record_lost_event

    def count_lost(reason: str, data_category: Any = None, **kwargs: Any) -> None:
        lost.append((reason, data_category))
        record(reason, data_category=data_category, **kwargs)

    transport.record_lost_event = count_lost  # type: ignore[method-assign]

    def handle(path: str, seconds: float) -> None:
        with sentry_sdk.start_transaction(op="http.server", name=path):
            busy(seconds)

    for _ in range(10):
        handle("/api/orders", 0.15)  # long enough for a profile Sentry keeps
    api_lost = list(lost)
    for _ in range(100):
        handle("/home", 0.01)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(r.payloads("transaction")) == 110)
    profiled: dict[str, int] = {}
    for envelope in receiver.envelopes:
        if "profile" in envelope.types():
            profile = envelope.payload("profile")
            check_profile_v1(profile)
            name = profile["transactions"][0]["name"]
            profiled[name] = profiled.get(name, 0) + 1
    assert api_lost == []
    assert profiled.get("/api/orders") == 10
    # /home: the profile decision is drawn at 10 %; the rest are lost as sample_rate
    home_sampled = 100 - lost.count(("sample_rate", "profile"))
    assert 1 <= home_sampled <= 30  # binomial(100, 0.1): outside this ~3e-5
    assert profiled.get("/home", 0) <= home_sampled


def _chunks(receiver: Receiver) -> list[dict[str, Any]]:
    return receiver.payloads("profile_chunk")


def _linked_functions(receiver: Receiver, span: SentSpan) -> set:
    names = set()
    for chunk in _chunks(receiver):
        check_chunk(chunk)
        inside = samples_between(chunk["profile"]["samples"], span.thread_id, span.start, span.end)
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        names.update(frames[i]["function"] for s in inside for i in stacks[s["stack_id"]])
    return names


def test_function_level_profiling(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0)

    def process_data() -> int:
        return busy(0.3)

    namespace = run(FUNCTION_LEVEL, receiver, process_data=process_data)
    assert namespace["expensive_operation"]() > 0
    wait_until(lambda: sigprof.sentry.session.SESSION.profiler_id is None)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)) and bool(_chunks(r)))
    (root,) = sent_spans(receiver)
    assert root.name == "expensive_operation" and root.is_root
    shown = _linked_functions(receiver, root)
    assert "expensive_operation" in shown
    assert any(name.endswith("process_data") for name in shown)


def test_code_block_profiling(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0)

    def process_large_dataset() -> None:
        busy(0.3)

    def finalize_results() -> None:
        busy(0.05)

    namespace = run(
        CODE_BLOCK,
        receiver,
        process_large_dataset=process_large_dataset,
        finalize_results=finalize_results,
    )
    with start_root("job"):
        namespace["complex_function"]()
    wait_until(lambda: sigprof.sentry.session.SESSION.profiler_id is None)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)) and bool(_chunks(r)))
    (span,) = [span for span in sent_spans(receiver) if not span.is_root]
    assert span.name == "Data processing"
    shown = _linked_functions(receiver, span)
    assert any(name.endswith("process_large_dataset") for name in shown)
    assert not any(name.endswith("finalize_results") for name in shown), _around_end(receiver, span)


def _around_end(receiver: Receiver, span: SentSpan) -> str:
    """The span's thread's samples near its end: ms from the end, the
    innermost function of interest."""
    end = unix_seconds(span.end)
    near = []
    for chunk in _chunks(receiver):
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        for sample in chunk["profile"]["samples"]:
            if sample["thread_id"] == span.thread_id and abs(sample["timestamp"] - end) < 0.05:
                names = [frames[i]["function"].rsplit(".", 1)[-1] for i in stacks[sample["stack_id"]]]
                near.append((round((sample["timestamp"] - end) * 1000, 2), names[:3]))
    return f"samples within 50 ms of the span's end (ms after it, leaf first): {sorted(near)}"


@pytest.mark.parametrize("draw, sampled", [(0.05, True), (0.5, False)])
def test_manual_start_and_stop(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, draw: float, sampled: bool
) -> None:
    from sigprof.sentry import sampling

    # The session draw (10 %) is made once per process: pin it both ways.
    monkeypatch.setattr(sampling, "_decision", None)
    monkeypatch.setattr(sampling.random, "random", lambda: draw)

    def application_code() -> None:
        busy(0.3)

    snippet = MANUAL.replace("# Application code runs here...", "application_code()")
    run(snippet, receiver, application_code=application_code)
    sentry_sdk.flush()
    if not sampled:
        time.sleep(0.3)
        assert _chunks(receiver) == []
        return
    receiver.wait_for(lambda r: bool(_chunks(r)))
    (chunk,) = _chunks(receiver)
    check_chunk(chunk)
    shown = {f["function"] for f in chunk["profile"]["frames"]}
    assert any(name.endswith("application_code") for name in shown)


@requires_sdk2  # start_transaction(sampled=True); 3.x continues a sampled trace instead
def test_automatic_start_with_transactions(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigprof.sentry import sampling

    monkeypatch.setattr(sampling, "_decision", None)
    monkeypatch.setattr(sampling.random, "random", lambda: 0.05)  # a sampled session
    run(AUTO_START, receiver)
    assert continuous_profiler.get_profiler_id() is None
    # the web application: requests, some of which are traced
    for i in range(3):
        with sentry_sdk.start_transaction(op="http.server", name=f"/page/{i}", sampled=True):
            busy(0.15)
    profiler_id = continuous_profiler.get_profiler_id()
    assert profiler_id is not None
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(r.payloads("transaction")) == 3 and bool(_chunks(r)))
    for event in receiver.payloads("transaction"):
        assert event["contexts"]["profile"]["profiler_id"] == profiler_id
    for chunk in _chunks(receiver):
        check_chunk(chunk)
        assert chunk["profiler_id"] == profiler_id
    thread_id = receiver.payloads("transaction")[0]["contexts"]["trace"]["data"]["thread.id"]
    assert "busy" in functions_in(_chunks(receiver)[0]["profile"], thread_id)
