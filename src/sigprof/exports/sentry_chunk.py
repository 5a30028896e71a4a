"""Sentry's continuous-profiling ``profile_chunk`` (format v2) and, for
reading, its transaction ``profile`` (format v1). See
shared/design/sentry-format.md: samples carry Unix-second float timestamps and
STRING thread ids, stacks are leaf first, one chunk spans at most 66 s."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sigprof
from sigprof.exports.labels import in_app, is_special, module_relative_path
from sigprof.profile_model import Profile
from sigprof.sampler import Frame

# Relay rejects a chunk spanning over 66 s. Writers flush every 60 s; splitting
# only past 65 s keeps a flush that ran a little late in one chunk.
CHUNK_SPAN_NS = 65 * 1_000_000_000


def frame_dict(frame: Frame) -> dict[str, Any]:
    if is_special(frame):
        return {"function": frame.function, "in_app": False}
    entry: dict[str, Any] = {
        "function": frame.function,
        "abs_path": frame.filename,
        "filename": module_relative_path(frame) or frame.filename.rsplit("/", 1)[-1],
        "lineno": max(0, int(frame.lineno)),
        "in_app": in_app(frame),
    }
    if frame.module:
        entry["module"] = frame.module
    return entry


def chunk_dict(
    profile: Profile,
    samples: list[tuple[int, int, int]],
    profiler_id: str,
    chunk_id: str | None = None,
    release: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    """One chunk from (unix ns, thread id, profile stack id) samples; only
    the frames and stacks those samples use are included, renumbered."""
    frame_map: dict[int, int] = {}
    stack_map: dict[int, int] = {}
    frames: list[dict[str, Any]] = []
    stacks: list[list[int]] = []
    out_samples: list[dict[str, Any]] = []
    for timestamp_ns, thread_id, stack_id in sorted(samples):
        new_stack = stack_map.get(stack_id)
        if new_stack is None:
            ids = []
            for frame_id in profile.stacks[stack_id]:
                new_frame = frame_map.get(frame_id)
                if new_frame is None:
                    new_frame = frame_map[frame_id] = len(frames)
                    frames.append(frame_dict(profile.frames[frame_id]))
                ids.append(new_frame)
            new_stack = stack_map[stack_id] = len(stacks)
            stacks.append(ids)
        out_samples.append({
            "timestamp": timestamp_ns / 1e9,
            "thread_id": str(thread_id),
            "stack_id": new_stack,
        })
    used_threads = {s[1] for s in samples}
    chunk: dict[str, Any] = {
        "chunk_id": chunk_id or uuid.uuid4().hex,
        "profiler_id": profiler_id,
        "platform": "python",
        "version": "2",
        "client_sdk": {"name": "sigprof", "version": sigprof.__version__},
        "profile": {
            "samples": out_samples,
            "stacks": stacks,
            "frames": frames,
            "thread_metadata": {
                str(tid): {"name": profile.threads[tid].name}
                for tid in sorted(used_threads) if tid in profile.threads
            },
        },
    }
    if release:
        chunk["release"] = release
    if environment:
        chunk["environment"] = environment
    return chunk


def chunks(profile: Profile, profiler_id: str | None = None) -> Iterator[dict[str, Any]]:
    """The profile as chunks of at most 65 s each. Weighted samples are
    repeated (a chunk sample has no weight); samples without a timestamp
    are given ones spaced by the sampling interval, ending now."""
    profiler_id = profiler_id or uuid.uuid4().hex
    flat: list[tuple[int, int, int]] = []
    interval = profile.interval_ns or 10_000_000
    untimed_end = time.time_ns()
    for thread in profile.threads.values():
        untimed = sum(1 for s in thread.samples if not s[0])
        step = 0
        for timestamp_ns, stack_id, weight in thread.samples:
            copies = max(1, round(weight)) if profile.unit == "samples" else 1
            for _ in range(copies):
                when = timestamp_ns
                if not when:
                    when = untimed_end - (untimed - step) * interval
                    step += 1
                flat.append((when, thread.thread_id, stack_id))
    flat.sort()
    start = 0
    while start < len(flat):
        end = start
        while end < len(flat) and flat[end][0] - flat[start][0] < CHUNK_SPAN_NS:
            end += 1
        yield chunk_dict(profile, flat[start:end], profiler_id)
        start = end


def render(profile: Profile) -> bytes:
    """One chunk as JSON when the profile spans under 65 s; otherwise JSON
    Lines, one chunk per line (each alone is what Sentry accepts)."""
    found = [json.dumps(c, separators=(",", ":"), allow_nan=False) for c in chunks(profile)]
    if not found:
        found = [json.dumps(chunk_dict(profile, [], uuid.uuid4().hex), separators=(",", ":"))]
    return ("\n".join(found) + ("\n" if len(found) > 1 else "")).encode()


# ---- reading ----


def _frame(entry: dict[str, Any]) -> Frame:
    return Frame(
        str(entry.get("function") or "<unknown>"),
        str(entry.get("abs_path") or entry.get("filename") or "<unknown>"),
        entry.get("module"),
        int(entry.get("lineno") or 0),
    )


def _parse_time(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    text = str(value).replace("Z", "+00:00")
    return int(datetime.fromisoformat(text).timestamp() * 1e9)


def is_sentry(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("profile"), dict)
        and "samples" in document["profile"]
        and "stacks" in document["profile"]
    )


def parse_into(profile: Profile, document: dict[str, Any]) -> None:
    """Adds a v2 chunk's or a v1 profile's samples to ``profile``."""
    body = document["profile"]
    frames = [_frame(f) for f in body["frames"]]
    frame_ids = [profile.intern_frame(f) for f in frames]
    stack_ids = [profile.intern_stack(tuple(frame_ids[i] for i in s)) for s in body["stacks"]]
    names = {str(k): str(v.get("name") or "") for k, v in (body.get("thread_metadata") or {}).items()}
    v1_start = _parse_time(document["timestamp"]) if str(document.get("version")) == "1" else 0
    for sample in body["samples"]:
        if "timestamp" in sample:
            # a float of Unix seconds holds about a microsecond: round to that
            when = round(float(sample["timestamp"]) * 1e6) * 1000
        else:
            when = v1_start + int(sample["elapsed_since_start_ns"])
        tid_text = str(sample["thread_id"])
        tid = int(tid_text) if tid_text.isdigit() else abs(hash(tid_text))
        thread = profile.thread(tid, names.get(tid_text) or None)
        thread.samples.append((when, stack_ids[int(sample["stack_id"])], 1))
    _guess_interval(profile)


def _guess_interval(profile: Profile) -> None:
    """Chunks carry no sampling rate: take the median gap within a thread."""
    gaps: list[int] = []
    for thread in profile.threads.values():
        stamps = sorted(s[0] for s in thread.samples)
        gaps.extend(b - a for a, b in zip(stamps, stamps[1:]) if b > a)
    if gaps:
        gaps.sort()
        profile.interval_ns = gaps[len(gaps) // 2]


def parse(document: dict[str, Any]) -> Profile:
    profile = Profile(name="Sentry profile", unit="samples", clock="")
    parse_into(profile, document)
    return profile
