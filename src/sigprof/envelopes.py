"""Profile chunks as JSON and as envelopes, and sending them through the
current client (its transport and, if on, Spotlight), as sentry-sdk does.

A chunk's frames and stacks are the interning epoch's tables as they are
(the epoch starts with the chunk), so building it is one pass over the
samples: no re-indexing, no per-frame work beyond the epoch's new frames.
"""

from __future__ import annotations

import json
import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import sentry_sdk
from sentry_sdk.consts import VERSION
from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.worker import BackgroundWorker

from sigprof.housekeeping import block_process_signals
from sigprof.sample_source import RawSample
from sigprof.sentry_frames import SentryFrame, json_text, mark_in_app


def chunk_json(
    *,
    chunk_id: str,
    profiler_id: str,
    frames: list[SentryFrame],
    stacks: Sequence[Sequence[int]],
    samples: Sequence[RawSample],
    unix_offset_ns: int,
    thread_names: Mapping[int, str],
    options: Mapping[str, Any] | None,
    sdk_name: str,
    sdk_version: str = VERSION,
    losses: Mapping[str, int] | None = None,
) -> bytes:
    """A format v2 `profile_chunk` payload, as JSON: THE chunk builder, used by
    the Sentry layer (`continuous.py`) and by local mode (`exports.sentry_chunk`,
    `local_chunks`). Sample timestamps become Unix seconds on the spans' clock
    by adding unix_offset_ns. `options` gives `release`, `environment` and
    `dist`, and sentry-sdk's in_app rules for frames without `in_app` yet.
    `losses` (see `with_losses`) is written only when something was lost.
    Raises ValueError when a stack names a frame, or a sample a stack, that
    is not there (Sentry would reject the chunk)."""
    thread_keys: dict[int, str] = {}
    for _, thread_id, _ in samples:
        if thread_id not in thread_keys:
            thread_keys[thread_id] = str(thread_id)
    mark_in_app(frames, options)
    marker = uuid.uuid4().hex  # stands for the samples, written below
    payload: dict[str, Any] = {
        "chunk_id": chunk_id,
        "client_sdk": {"name": sdk_name, "version": sdk_version},
        "platform": "python",
        "profile": {
            "frames": frames,
            "stacks": _checked_stacks(stacks, len(frames)),
            "samples": marker,
            "thread_metadata": {
                key: {"name": json_text(str(thread_names.get(tid, "")))} for tid, key in thread_keys.items()
            },
        },
        "profiler_id": profiler_id,
        "version": "2",
    }
    if options is not None:
        for key in ("release", "environment", "dist"):
            if options.get(key) is not None:
                payload[key] = json_text(str(options[key]).strip())
    if losses and any(losses.values()):
        payload[LOSSES_KEY] = dict(losses)
    head = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    samples_text = _samples_json(samples, unix_offset_ns, len(stacks))
    return head.replace(f'"{marker}"', samples_text, 1).encode()


def _checked_stacks(stacks: Sequence[Sequence[int]], frame_count: int) -> list[list[int]]:
    out = [list(stack) for stack in stacks]
    for index, stack in enumerate(out):
        if stack and (min(stack) < 0 or max(stack) >= frame_count):
            raise ValueError(f"stack {index} names a frame out of {frame_count}: {stack}")
    return out


# Where a chunk says what sigprof lost before it: {"dropped_samples": n (the
# native buffer was full), "dropped_chunks": n (the send queue was full)}.
# Sentry has no field for either (a chunk's `measurements` take only time,
# frequency, byte, percent and energy units), so this is a top-level key of
# its own: Relay accepts the chunk and drops the key; local files keep it.
LOSSES_KEY = "sigprof_losses"


def with_losses(body: bytes, losses: Mapping[str, int]) -> bytes:
    """A chunk_json body built without losses, with them added at the end
    (the send queue learns of dropped chunks after the body was built)."""
    if not any(losses.values()):
        return body
    if not body.endswith(b"}"):
        raise ValueError("not a chunk_json body")
    extra = json.dumps({LOSSES_KEY: dict(losses)}, separators=(",", ":")).encode()
    return body[:-1] + b"," + extra[1:]


def _samples_json(samples: Sequence[RawSample], unix_offset_ns: int, stack_count: int) -> str:
    """The samples array, written directly: it is the bulk of a chunk, and
    one dict per sample for json.dumps costs three times as much. Each
    (thread, stack) pair's text is made once. A timestamp is written as
    integer nanoseconds with an exponent ("1700000000123456789e-9"): a plain
    JSON number of Unix seconds, with no division or float formatting."""
    if not samples:
        return "[]"
    tails: dict[tuple[int, int], str] = {}

    def tail(key: tuple[int, int]) -> str:
        if not 0 <= key[1] < stack_count:  # once per (thread, stack): no cost per sample
            raise ValueError(f"a sample names stack {key[1]} out of {stack_count}")
        text = tails[key] = 'e-9,"thread_id":"%d","stack_id":%d}' % key  # noqa: UP031
        return text

    known = tails.get
    body = ',{"timestamp":'.join(
        [
            str(timestamp_ns + unix_offset_ns)
            + (known((thread_id, stack_id)) or tail((thread_id, stack_id)))
            for timestamp_ns, thread_id, stack_id in samples
        ]
    )
    return '[{"timestamp":' + body + "]"


def has_enough_samples(samples: Sequence[RawSample], stacks: Sequence[Sequence[int]]) -> bool:
    """Sentry drops threads with fewer than 2 samples with frames and rejects
    a chunk with none left; such a chunk is not worth sending."""
    seen = set()
    for _, thread_id, stack_id in samples:
        if not (0 <= stack_id < len(stacks) and stacks[stack_id]):
            continue
        if thread_id in seen:
            return True
        seen.add(thread_id)
    return False


class _WatchedPayload(PayloadRef):
    """A payload that calls `on_read` once, when first serialized: a
    transport's worker reads it when it starts sending the envelope."""

    def __init__(self, body: bytes, on_read: Callable[[], None]) -> None:
        super().__init__(bytes=body)
        self._on_read: Callable[[], None] | None = on_read

    def get_bytes(self) -> bytes:
        on_read, self._on_read = self._on_read, None
        if on_read is not None:
            on_read()
        return super().get_bytes()


def chunk_envelope(body: bytes, on_read: Callable[[], None] | None = None) -> Envelope:
    """One envelope per chunk, holding the chunk's JSON as it is; `on_read`
    is called when the transport first serializes it."""
    envelope = Envelope()
    envelope.add_item(
        Item(
            payload=PayloadRef(bytes=body) if on_read is None else _WatchedPayload(body, on_read),
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


def can_send() -> bool:
    """Whether the current client sends anywhere (a DSN, or Spotlight)."""
    client = sentry_sdk.get_client()
    if not client.is_active():
        return False
    return (
        getattr(client, "transport", None) is not None
        or getattr(client, "spotlight", None) is not None
    )


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
    """Starts the transport's worker thread now if it has not started yet,
    and keeps process-directed signals off it. (Best effort: private API.)

    The last chunk is sent when the interpreter exits. sentry-sdk's worker
    thread starts on the first envelope, and Python 3.12.0-3.12.x refuse new
    threads even in `threading` exit hooks; a process that sent nothing
    before exiting would lose its only chunk. And a server's C handler that
    exits, run on that thread (uWSGI's graceful stop of a worker: seen here
    about 1 run in 50), leaves nobody to send what is queued: the worker's
    last transaction and chunk were lost.
    """
    transport = getattr(sentry_sdk.get_client(), "transport", None)
    worker = getattr(transport, "_worker", None)
    ensure = getattr(worker, "_ensure_thread", None)
    if callable(ensure):
        ensure()
    if isinstance(worker, BackgroundWorker) and worker._thread not in _signal_blocking_threads:
        # Runs on the worker thread, in its queue's order.
        worker.submit(_block_process_signals_here)


# The transport worker threads that block process signals (thread idents
# are reused, thread objects are not).
_signal_blocking_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def _block_process_signals_here() -> None:
    block_process_signals()
    _signal_blocking_threads.add(threading.current_thread())


def client_options() -> tuple[dict[str, Any] | None, bool]:
    """The current client's options and whether it is active."""
    client = sentry_sdk.get_client()
    options = getattr(client, "options", None)
    return (options if isinstance(options, dict) else None), bool(client.is_active())
