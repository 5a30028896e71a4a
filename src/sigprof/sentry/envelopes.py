"""Profile chunks as envelopes, and sending them through the current client
(its transport and, if on, Spotlight), as sentry-sdk does."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any, Callable

import sentry_sdk
from sentry_sdk.envelope import Envelope, Item, PayloadRef
from sentry_sdk.utils import set_in_app_in_frames

from sigprof.core.housekeeping import block_process_signals
from sigprof.core.thread_hooks import exclude_current_sentry_thread
from sigprof.formats.sentry_frames import SentryFrame
from sigprof.sentry import sdk_api


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
    return str(sdk_api.sdk_info().get("name", "sentry.python"))


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
    worker = sdk_api.start_transport_worker(getattr(sentry_sdk.get_client(), "transport", None))
    if worker is not None and sdk_api.worker_thread(worker) not in _signal_blocking_threads:
        # Runs on the worker thread, in its queue's order.
        worker.submit(_block_process_signals_here)


# The transport worker threads that block process signals (thread idents
# are reused, thread objects are not).
_signal_blocking_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def _block_process_signals_here() -> None:
    exclude_current_sentry_thread()
    block_process_signals()
    _signal_blocking_threads.add(threading.current_thread())


def client_options() -> tuple[dict[str, Any] | None, bool]:
    """The current client's options and whether it is active."""
    client = sentry_sdk.get_client()
    options = getattr(client, "options", None)
    return (options if isinstance(options, dict) else None), bool(client.is_active())


def mark_in_app(frames: list[SentryFrame], options: Mapping[str, Any] | None) -> None:
    """Sets `in_app` exactly as sentry-sdk does for its own profiles."""
    if options is None:
        return
    set_in_app_in_frames(
        frames,
        options.get("in_app_exclude"),
        options.get("in_app_include"),
        options.get("project_root"),
    )
