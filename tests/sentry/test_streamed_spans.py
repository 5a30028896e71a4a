"""The reference document's snippets with streamed spans: sentry-sdk 3.x (the
only kind of tracing it has) and 2.66+ with `trace_lifecycle="stream"`.

Every span goes out as a `span` envelope item; a profiled span carries the
session's `sentry.profiler_id` and its `thread.id`, and the session's chunks
(judged by Sentry's parser) hold the span's samples on that thread.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.consts import VERSION

import sigprof
from sigprof.sentry import sampling
from sigprof.sentry.session import SESSION
from tests.sentry.generations import is_transport_upload
from tests.sentry.judge import check_chunk, functions_in, samples_between
from tests.sentry.receiver import Receiver, wait_until
from tests.sentry.test_reference_snippets import (
    AUTO_START,
    BASIC,
    CODE_BLOCK,
    FUNCTION_LEVEL,
    MANUAL,
    busy,
)

SDK = tuple(int(part) for part in VERSION.split(".")[:2])
if SDK >= (3, 0):
    STREAM: dict[str, Any] = {}
elif SDK >= (2, 66):
    STREAM = {"trace_lifecycle": "stream"}
else:
    pytest.skip(f"sentry-sdk {VERSION} cannot stream spans", allow_module_level=True)

# A sampled upstream request: its trace header makes the root span sampled
# whatever traces_sample_rate says, as in a service behind another.
SAMPLED_UPSTREAM = {"sentry-trace": "771a43a4192642f0b136d5159a501700-1234567890abcdef-1"}


def run(snippet: str, receiver: Receiver, **scaffolding: Any) -> dict[str, Any]:
    """A snippet as written, except sentry_sdk.init -> sigprof.init, the DSN
    -> the receiver and (on 2.x) the option that turns span streaming on."""
    code = snippet.replace("sentry_sdk.init(", "sigprof.init(**STREAM, ").replace(
        '"YOUR_DSN"', repr(receiver.dsn)
    )
    namespace: dict[str, Any] = {
        "sigprof": sigprof, "sentry_sdk": sentry_sdk, "STREAM": STREAM, **scaffolding
    }
    exec(compile(code, "<reference snippet>", "exec"), namespace)  # noqa: S102 - the test is running it
    return namespace


def streamed_spans(receiver: Receiver) -> list[dict[str, Any]]:
    """The span items sent, less the SDK's own uploads."""
    spans = []
    for container in receiver.payloads("span"):
        assert container["version"] == 2
        spans.extend(span for span in container["items"] if not is_transport_upload(span))
    return spans


def attribute(span: dict[str, Any], key: str) -> Any:
    found = span["attributes"].get(key)
    return None if found is None else found["value"]


def chunks(receiver: Receiver) -> list[dict[str, Any]]:
    found = receiver.payloads("profile_chunk")
    for chunk in found:
        check_chunk(chunk)
    return found


def functions_during(receiver: Receiver, span: dict[str, Any]) -> set[str]:
    """Function names of the chunk samples on the span's thread in its time."""
    names = set()
    for chunk in chunks(receiver):
        inside = samples_between(
            chunk["profile"]["samples"],
            attribute(span, "thread.id"),
            span["start_timestamp"],
            span["end_timestamp"],
        )
        frames, stacks = chunk["profile"]["frames"], chunk["profile"]["stacks"]
        names.update(frames[i]["function"] for s in inside for i in stacks[s["stack_id"]])
    return names


def session_over() -> None:
    wait_until(lambda: SESSION.profiler_id is None)


def sent(receiver: Receiver, spans: int) -> list[dict[str, Any]]:
    session_over()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(streamed_spans(r)) >= spans and bool(r.payloads("profile_chunk")))
    return streamed_spans(receiver)


def pin_session_draw(monkeypatch: pytest.MonkeyPatch, draw: float) -> None:
    monkeypatch.setattr(sampling, "_decision", None)
    monkeypatch.setattr(sampling.random, "random", lambda: draw)


def test_manual_start_and_stop(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_session_draw(monkeypatch, 0.05)  # inside the snippet's 10 %

    def application_code() -> None:
        busy(0.3)

    snippet = MANUAL.replace("# Application code runs here...", "application_code()")
    run(snippet, receiver, application_code=application_code)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(r.payloads("profile_chunk")))
    shown = {f["function"] for chunk in chunks(receiver) for f in chunk["profile"]["frames"]}
    assert any(name.endswith("application_code") for name in shown)


def test_trace_lifecycle_links_root_spans_to_chunks(receiver: Receiver) -> None:
    sigprof.init(
        dsn=receiver.dsn,
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        profile_lifecycle="trace",
        **STREAM,
    )
    for i in range(3):
        with sentry_sdk.traces.start_span(name=f"/page/{i}", attributes={"sentry.op": "http.server"}):
            busy(0.15)
    spans = sent(receiver, 3)
    profiler_ids = {attribute(span, "sentry.profiler_id") for span in spans}
    assert len(profiler_ids) == 1 and None not in profiler_ids  # back to back: one session
    assert {chunk["profiler_id"] for chunk in chunks(receiver)} == profiler_ids
    for span in spans:
        assert "busy" in functions_during(receiver, span), span["name"]


def test_automatic_start(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    pin_session_draw(monkeypatch, 0.05)
    run(AUTO_START, receiver)
    for i in range(3):
        sentry_sdk.traces.continue_trace(SAMPLED_UPSTREAM)
        with sentry_sdk.traces.start_span(name=f"/page/{i}", attributes={"sentry.op": "http.server"}):
            busy(0.15)
    profiler_id = SESSION.profiler_id
    assert profiler_id is not None  # auto-started, runs until stopped
    sentry_sdk.profiler.stop_profiler()
    spans = sent(receiver, 3)
    assert {attribute(span, "sentry.profiler_id") for span in spans} == {profiler_id}
    thread_id = attribute(spans[0], "thread.id")
    assert "busy" in functions_in(chunks(receiver)[0]["profile"], thread_id)


def test_function_level_profiling(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, **STREAM)

    def process_data() -> int:
        return busy(0.3)

    namespace = run(FUNCTION_LEVEL, receiver, process_data=process_data)
    assert namespace["expensive_operation"]() > 0
    (span,) = sent(receiver, 1)
    assert span["name"] == "expensive_operation" and span["is_segment"]
    assert attribute(span, "sentry.profiler_id") == chunks(receiver)[0]["profiler_id"]
    shown = functions_during(receiver, span)
    assert "expensive_operation" in shown
    assert any(name.endswith("process_data") for name in shown)


def test_code_block_profiling(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, **STREAM)

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
    with sentry_sdk.traces.start_span(name="job"):
        namespace["complex_function"]()
    spans = {span["name"]: span for span in sent(receiver, 2)}
    block = spans["Data processing"]
    assert not block["is_segment"] and block["trace_id"] == spans["job"]["trace_id"]
    assert attribute(block, "sentry.profiler_id") == chunks(receiver)[0]["profiler_id"]
    # the root span, unprofiled itself, is linked to the session too
    assert attribute(spans["job"], "sentry.profiler_id") == attribute(block, "sentry.profiler_id")
    shown = functions_during(receiver, block)
    assert any(name.endswith("process_large_dataset") for name in shown)
    assert not any(name.endswith("finalize_results") for name in shown)


@pytest.mark.skipif(SDK < (3, 0), reason="2.x has profiles_sampler itself (transaction profiles)")
def test_profiles_sampler_decides_per_root_span(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The draw against the sampler's 10 % for everything but /api/ always
    # fails: /home is a 0-rated endpoint here, /api/orders is rated 1.0.
    monkeypatch.setattr(sampling.random, "random", lambda: 0.5)
    run(BASIC, receiver)
    for path in ("/api/orders", "/home", "/api/orders", "/home"):
        with sentry_sdk.traces.start_span(name=path, attributes={"sentry.op": "http.server"}):
            busy(0.15)
        session_over()  # the session's linger would record the next span
    spans = sent(receiver, 4)
    assert sorted(span["name"] for span in spans) == ["/api/orders"] * 2 + ["/home"] * 2
    profiler_ids = set()
    for span in spans:
        if span["name"] == "/api/orders":
            profiler_ids.add(attribute(span, "sentry.profiler_id"))
            assert "busy" in functions_during(receiver, span)
        else:
            assert attribute(span, "sentry.profiler_id") is None
            assert functions_during(receiver, span) == set()
    assert None not in profiler_ids
    assert {chunk["profiler_id"] for chunk in chunks(receiver)} == profiler_ids


@pytest.mark.skipif(SDK < (3, 0), reason="2.x has profiles_sampler itself (transaction profiles)")
def test_profiles_sampler_gets_the_2x_sampling_context(receiver: Receiver) -> None:
    contexts: list[dict[str, Any]] = []

    def profiles_sampler(sampling_context: dict[str, Any]) -> float:
        contexts.append(sampling_context)
        return 0.0

    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sampler=profiles_sampler)
    root = sentry_sdk.traces.start_span(name="/api/x", attributes={"sentry.op": "http.server"})
    with root, sentry_sdk.traces.start_span(name="child"):
        time.sleep(0.01)
    (context,) = contexts  # root spans only
    assert context["transaction_context"]["op"] == "http.server"
    assert context["transaction_context"]["name"] == "/api/x"
    assert "parent_sampled" in context
    assert SESSION.profiler_id is None
