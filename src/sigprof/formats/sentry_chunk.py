"""Sentry's continuous-profiling ``profile_chunk`` (format v2) from a
``Profile``, and, for reading, chunks and transaction ``profile`` (format
v1) files. Sentry's ingestion rules apply: samples carry Unix-second
timestamps and STRING thread ids, stacks are leaf first, one chunk spans at
most 66 s.

The JSON is written by ``sigprof.formats.chunk_json``, the one chunk
builder the Sentry layer uses too; frames are converted by the Sentry
layer's ``FrameConverter``, so they carry the same fields (abs_path,
filename, module, function, lineno, in_app). Only two things differ here,
where no Sentry client and its options exist: ``in_app`` comes from
``labels.in_app`` (standard library and installed packages are not the
user's code), and a module not imported in this process (a profile read
from a file) still gets its import-root-relative ``filename``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sigprof
from sigprof.core.ids import random_hex_id
from sigprof.core.sampler import Frame
from sigprof.formats.chunk_json import LOSSES_KEY, chunk_json
from sigprof.formats.labels import in_app, module_relative_path
from sigprof.formats.profile_model import Profile
from sigprof.formats.sentry_frames import FrameConverter, SentryFrame

# Relay rejects a chunk spanning over 66 s. Writers flush every 60 s; splitting
# only past 65 s keeps a flush that ran a little late in one chunk.
CHUNK_SPAN_NS = 65 * 1_000_000_000
SDK_NAME = "sigprof"


def sentry_frames(frames: Sequence[Frame]) -> list[SentryFrame]:
    """Frames as a chunk carries them, with in_app always set."""
    converter = FrameConverter()
    converted = []
    for frame in frames:
        entry = converter.convert(frame)
        if entry["filename"] == entry["abs_path"]:  # sentry-sdk could not relativise it
            entry["filename"] = module_relative_path(frame) or entry["filename"]
        entry["in_app"] = in_app(frame)
        converted.append(entry)
    return converted


def chunk_body(
    *,
    frames: Sequence[Frame],
    stacks: Sequence[Sequence[int]],
    samples: Sequence[tuple[int, int, int]],
    unix_offset_ns: int,
    thread_names: Mapping[int, str],
    profiler_id: str,
    chunk_id: str | None = None,
    release: str | None = None,
    environment: str | None = None,
    dropped_samples: int = 0,
) -> bytes:
    """One chunk's JSON from frames, stacks (frame ids, leaf first) and
    (ns, thread id, stack id) samples; ns + unix_offset_ns is Unix time.
    dropped_samples: samples lost to a full native buffer before it."""
    tags = {"release": release, "environment": environment}
    return chunk_json(
        chunk_id=chunk_id or random_hex_id(),
        profiler_id=profiler_id,
        frames=sentry_frames(frames),
        stacks=stacks,
        samples=samples,
        unix_offset_ns=unix_offset_ns,
        thread_names=thread_names,
        options={key: value for key, value in tags.items() if value},
        sdk_name=SDK_NAME,
        sdk_version=sigprof.__version__,
        losses={"dropped_samples": dropped_samples},
    )


class Chunk(NamedTuple):
    start_ns: int  # the first sample's Unix time (0 when there are none)
    body: bytes  # the chunk's JSON


def _chunk(
    profile: Profile, samples: list[tuple[int, int, int]], profiler_id: str, dropped: int = 0
) -> Chunk:
    """One chunk from sorted (unix ns, thread id, profile stack id) samples;
    only the frames and stacks those samples use are included, renumbered."""
    frame_map: dict[int, int] = {}
    stack_map: dict[int, int] = {}
    frames: list[Frame] = []
    stacks: list[list[int]] = []
    renumbered: list[tuple[int, int, int]] = []
    for timestamp_ns, thread_id, stack_id in samples:
        new_stack = stack_map.get(stack_id)
        if new_stack is None:
            ids = []
            for frame_id in profile.stacks[stack_id]:
                new_frame = frame_map.get(frame_id)
                if new_frame is None:
                    new_frame = frame_map[frame_id] = len(frames)
                    frames.append(profile.frames[frame_id])
                ids.append(new_frame)
            new_stack = stack_map[stack_id] = len(stacks)
            stacks.append(ids)
        renumbered.append((timestamp_ns, thread_id, new_stack))
    body = chunk_body(
        frames=frames,
        stacks=stacks,
        samples=renumbered,
        unix_offset_ns=0,
        thread_names={tid: thread.name for tid, thread in profile.threads.items()},
        profiler_id=profiler_id,
        dropped_samples=dropped,
    )
    return Chunk(samples[0][0] if samples else 0, body)


# A chunk sample has no weight: a weighted profile (collapsed stacks, say)
# is expanded, and a huge weight must not exhaust memory.
MAX_EXPANDED_SAMPLES = 10_000_000


def chunks(profile: Profile, profiler_id: str | None = None) -> Iterator[Chunk]:
    """The profile as chunks of at most 65 s each. Weighted samples are
    repeated (a chunk sample has no weight); samples without a timestamp
    are given ones spaced by the sampling interval, ending now."""
    profiler_id = profiler_id or random_hex_id()
    flat: list[tuple[int, int, int]] = []
    interval = profile.interval_ns or 10_000_000
    untimed_end = time.time_ns()
    if profile.unit == "samples":
        total = sum(max(1, round(s[2])) for t in profile.threads.values() for s in t.samples)
        if total > MAX_EXPANDED_SAMPLES:
            raise ValueError(
                f"the profile's weights add up to {total} samples: too many to write as "
                f"Sentry chunks (at most {MAX_EXPANDED_SAMPLES})"
            )
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
    dropped = profile.stats.get("dropped", 0)  # the whole run's count, told by the first chunk
    start = 0
    while start < len(flat):
        end = start
        while end < len(flat) and flat[end][0] - flat[start][0] < CHUNK_SPAN_NS:
            end += 1
        yield _chunk(profile, flat[start:end], profiler_id, dropped if start == 0 else 0)
        start = end


def render(profile: Profile) -> bytes:
    """One chunk as JSON when the profile spans under 65 s; otherwise JSON
    Lines, one chunk per line (each alone is what Sentry accepts)."""
    found = [chunk.body for chunk in chunks(profile)]
    if not found:
        found = [_chunk(profile, [], random_hex_id(), profile.stats.get("dropped", 0)).body]
    return b"\n".join(found) + (b"\n" if len(found) > 1 else b"")


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
    dropped = (document.get(LOSSES_KEY) or {}).get("dropped_samples")
    if isinstance(dropped, int) and dropped > 0:
        profile.stats["dropped"] = profile.stats.get("dropped", 0) + dropped
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
