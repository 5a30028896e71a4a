"""Which sentry-sdk generation the tests run against, and the few words a
test needs to say the same thing on both.

2.x traces with transactions (`start_transaction`, `transaction` events
holding their child spans); 3.x streams spans only (`sentry_sdk.traces.
start_span`, one `span` envelope item per span, the root span marked as the
segment). `start_root`/`start_child` start the one or the other, and
`sent_spans` reads what the receiver got as `SentSpan`s, so a test of a
subject both generations have (continuous profiling, profiling spans, the
web frameworks) runs on both with the same checks. Tests of what only 2.x
has (transaction profiles, `profiles_sample_rate` as the SDK's own option)
are marked `requires_sdk2`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sentry_sdk

from tests.sentry.judge import normalize_transaction, unix_seconds
from tests.sentry.receiver import Receiver

SDK_GENERATION = int(sentry_sdk.VERSION.split(".", 1)[0])

requires_sdk2 = pytest.mark.skipif(
    SDK_GENERATION >= 3, reason="2.x only: transactions, transaction profiles"
)


def start_root(name: str, op: str | None = None) -> Any:
    """A transaction (2.x) or a root span (3.x), as a context manager."""
    if SDK_GENERATION >= 3:
        return sentry_sdk.traces.start_span(
            name=name, attributes={"sentry.op": op} if op else None
        )
    return sentry_sdk.start_transaction(name=name, op=op)


def start_child(name: str, op: str | None = None) -> Any:
    """A child of the current span, as a context manager."""
    if SDK_GENERATION >= 3:
        return sentry_sdk.traces.start_span(
            name=name, attributes={"sentry.op": op} if op else None
        )
    return sentry_sdk.start_span(op=op, name=name)


@dataclass
class SentSpan:
    name: str
    op: str | None
    profiler_id: str | None
    thread_id: str | None
    thread_name: str | None
    start: float  # Unix seconds
    end: float
    is_root: bool
    trace_id: str
    status: str | None


def _attribute(span: dict[str, Any], key: str) -> Any:
    found = span.get("attributes", {}).get(key)
    return None if found is None else found["value"]


def _from_span_item(span: dict[str, Any]) -> SentSpan:
    return SentSpan(
        name=span["name"],
        op=_attribute(span, "sentry.op"),
        profiler_id=_attribute(span, "sentry.profiler_id"),
        thread_id=_attribute(span, "thread.id"),
        thread_name=_attribute(span, "thread.name"),
        start=unix_seconds(span["start_timestamp"]),
        end=unix_seconds(span["end_timestamp"]),
        is_root=bool(span["is_segment"]),
        trace_id=span["trace_id"],
        status=span.get("status"),
    )


def _from_transaction(event: dict[str, Any]) -> list[SentSpan]:
    normalize_transaction(event)  # Sentry's own normalization takes it
    trace = event["contexts"]["trace"]
    data = trace.get("data", {})
    root = SentSpan(
        name=event["transaction"],
        op=trace.get("op"),
        profiler_id=event["contexts"].get("profile", {}).get("profiler_id")
        or data.get("profiler_id"),
        thread_id=data.get("thread.id"),
        thread_name=data.get("thread.name"),
        start=unix_seconds(event["start_timestamp"]),
        end=unix_seconds(event["timestamp"]),
        is_root=True,
        trace_id=trace["trace_id"],
        status=trace.get("status"),
    )
    children = [
        SentSpan(
            name=span.get("description") or "",
            op=span.get("op"),
            profiler_id=span.get("data", {}).get("profiler_id"),
            thread_id=span.get("data", {}).get("thread.id"),
            thread_name=span.get("data", {}).get("thread.name"),
            start=unix_seconds(span["start_timestamp"]),
            end=unix_seconds(span["timestamp"]),
            is_root=False,
            trace_id=span["trace_id"],
            status=span.get("status"),
        )
        for span in event.get("spans", [])
    ]
    return [root, *children]


def is_transport_upload(span: dict[str, Any]) -> bool:
    """A span item of the SDK's own upload. Its stdlib integration skips
    requests to the DSN's netloc, which with the receiver's port
    ("127.0.0.1:PORT") never matches the bare host it compares with: the
    transport's POSTs show up as http.client spans."""
    return str(span["name"]).endswith("/envelope/")


def sent_spans(receiver: Receiver) -> list[SentSpan]:
    """Every span the receiver got, roots and children, in arrival order."""
    if SDK_GENERATION >= 3:
        spans = []
        for container in receiver.payloads("span"):
            spans.extend(
                _from_span_item(span)
                for span in container["items"]
                if not is_transport_upload(span)
            )
        return spans
    return [span for event in receiver.payloads("transaction") for span in _from_transaction(event)]


def sent_roots(receiver: Receiver) -> list[SentSpan]:
    return [span for span in sent_spans(receiver) if span.is_root]
