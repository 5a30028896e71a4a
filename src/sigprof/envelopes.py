"""Profile chunks as JSON and as envelopes, and sending them through the
current client (its transport and, if on, Spotlight), as sentry-sdk does.

A chunk's frames and stacks are the interning epoch's tables as they are
(the epoch starts with the chunk), so building it is one pass over the
samples: no re-indexing, no per-frame work beyond the epoch's new frames.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sentry_sdk
from sentry_sdk.consts import VERSION
from sentry_sdk.envelope import Envelope, Item, PayloadRef

from sigprof.sample_source import RawSample
from sigprof.sentry_frames import SentryFrame, mark_in_app


def chunk_payload(
    *,
    chunk_id: str,
    profiler_id: str,
    frames: list[SentryFrame],
    stacks: Sequence[Sequence[int]],
    samples: Sequence[RawSample],
    unix_offset_ns: int,
    thread_names: Mapping[int, str],
    options: dict[str, Any] | None,
    sdk_name: str,
) -> dict[str, Any]:
    """A format v2 `profile_chunk` payload. Sample timestamps become Unix
    seconds on the spans' clock by adding unix_offset_ns."""
    thread_keys: dict[int, str] = {}
    for _, thread_id, _ in samples:
        if thread_id not in thread_keys:
            thread_keys[thread_id] = str(thread_id)
    keys = thread_keys
    out_samples = [
        {
            "timestamp": (timestamp_ns + unix_offset_ns) / 1e9,
            "thread_id": keys[tid],
            "stack_id": sid,
        }
        for timestamp_ns, tid, sid in samples
    ]
    mark_in_app(frames, options)
    payload: dict[str, Any] = {
        "chunk_id": chunk_id,
        "client_sdk": {"name": sdk_name, "version": VERSION},
        "platform": "python",
        "profile": {
            "frames": frames,
            "stacks": [list(stack) for stack in stacks],
            "samples": out_samples,
            "thread_metadata": {
                key: {"name": str(thread_names.get(tid, ""))} for tid, key in keys.items()
            },
        },
        "profiler_id": profiler_id,
        "version": "2",
    }
    if options is not None:
        for key in ("release", "environment", "dist"):
            if options.get(key) is not None:
                payload[key] = str(options[key]).strip()
    return payload


def has_enough_samples(samples: Sequence[RawSample]) -> bool:
    """Sentry drops threads with fewer than 2 samples and rejects a chunk with
    none left; such a chunk is not worth sending."""
    seen = set()
    for _, thread_id, _ in samples:
        if thread_id in seen:
            return True
        seen.add(thread_id)
    return False


def chunk_envelope(payload: dict[str, Any]) -> Envelope:
    """One envelope per chunk, the payload serialised once, strictly (no NaN)."""
    body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
    envelope = Envelope()
    envelope.add_item(
        Item(
            payload=PayloadRef(bytes=body),
            type="profile_chunk",
            content_type="application/json",
            headers={"platform": "python"},
        )
    )
    return envelope


def sdk_name() -> str:
    try:
        from sentry_sdk.client import SDK_INFO

        return str(SDK_INFO["name"])
    except (ImportError, KeyError):  # pragma: no cover - older layouts
        return "sentry.python"


def send_envelope(envelope: Envelope) -> bool:
    """Sends through the current client like the SDK's own capture function."""
    client = sentry_sdk.get_client()
    sent = False
    spotlight = getattr(client, "spotlight", None)
    if spotlight is not None:
        spotlight.capture_envelope(envelope)
        sent = True
    transport = getattr(client, "transport", None)
    if transport is not None:
        transport.capture_envelope(envelope)
        sent = True
    return sent


def prepare_transport() -> None:
    """Starts the transport's worker thread now if it has not started yet.

    The last chunk is sent when the interpreter exits. sentry-sdk's worker
    thread starts on the first envelope, and Python 3.12.0-3.12.x refuse new
    threads even in `threading` exit hooks; a process that sent nothing
    before exiting would lose its only chunk. (Best effort: private API.)
    """
    transport = getattr(sentry_sdk.get_client(), "transport", None)
    worker = getattr(transport, "_worker", None)
    ensure = getattr(worker, "_ensure_thread", None)
    if callable(ensure):
        ensure()


def client_options() -> tuple[dict[str, Any] | None, bool]:
    """The current client's options and whether it is active."""
    client = sentry_sdk.get_client()
    options = getattr(client, "options", None)
    return (options if isinstance(options, dict) else None), bool(client.is_active())
