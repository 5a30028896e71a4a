"""The `profile_chunk` payload (Sentry's continuous profiling format v2) as
JSON: the one chunk builder, shared by the Sentry wing and local mode. It
knows the format, not sentry-sdk.

A chunk's frames and stacks are the interning epoch's tables as they are
(the epoch starts with the chunk), so building it is one pass over the
samples: no re-indexing, no per-frame work beyond the epoch's new frames.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from sigprof.core.ids import random_hex_id
from sigprof.core.sample_source import RawSample
from sigprof.formats.sentry_frames import SentryFrame, json_text


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
    sdk_version: str,
    losses: Mapping[str, int] | None = None,
) -> bytes:
    """A format v2 `profile_chunk` payload, as JSON: THE chunk builder, used by
    the Sentry wing (`sentry.session`) and by local mode (`formats.sentry_chunk`,
    `chunks.local_chunks`). Sample timestamps become Unix seconds on the spans' clock
    by adding unix_offset_ns. `options` gives `release`, `environment` and
    `dist`; frames come with `in_app` already set.
    `losses` (see `with_losses`) is written only when something was lost.
    Raises ValueError when a stack names a frame, or a sample a stack, that
    is not there (Sentry would reject the chunk)."""
    thread_keys = {thread_id: str(thread_id) for thread_id in dict.fromkeys(map(itemgetter(1), samples))}
    marker = random_hex_id()  # stands for the samples, written below
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
    samples_text = _write_samples(samples, unix_offset_ns, len(stacks))
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
    """The samples array, written directly (in Python where the compiled
    core is absent; sigprof._native.sentry_samples_json writes the same text
    otherwise): it is the bulk of a chunk, and one dict per sample for
    json.dumps costs three times as much. Each
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


try:
    # The same text, three times faster (about 100 ns a sample against 300
    # here): with 200 idle threads the wall clock sends 20,000 a second.
    from sigprof._native import sentry_samples_json as _write_samples
except ImportError:  # the package without its core (an interpreter it is not built for)
    _write_samples = _samples_json


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
