"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json):
shared frames, and one sampled profile per thread whose stacks are ROOT
first, weighted in nanoseconds when the sampling interval is known."""

from __future__ import annotations

import json
from typing import Any

import sigprof
from sigprof.core.sampler import Frame
from sigprof.formats.chunk_json import LOSSES_KEY
from sigprof.formats.labels import is_special
from sigprof.formats.profile_model import Profile

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
_UNIT_NS = {"nanoseconds": 1, "microseconds": 1_000, "milliseconds": 1_000_000, "seconds": 1_000_000_000}


def to_dict(profile: Profile) -> dict[str, Any]:
    frames = []
    for frame in profile.frames:
        entry: dict[str, Any] = {"name": frame.function}
        if not is_special(frame):
            entry["file"] = frame.filename
            entry["line"] = frame.lineno
        frames.append(entry)
    timed = profile.weight_ns(1) is not None
    unit = "nanoseconds" if timed else "none"
    profiles = []
    # the main thread first: speedscope opens activeProfileIndex
    for thread in sorted(profile.threads.values(), key=lambda t: (t.name != "MainThread", t.name)):
        samples: list[list[int]] = []
        weights: list[float] = []
        for _, stack_id, weight in sorted(thread.samples, key=lambda s: s[0]):
            samples.append(list(reversed(profile.stacks[stack_id])))
            ns = profile.weight_ns(weight)
            weights.append(round(ns) if ns is not None else weight)
        profiles.append({
            "type": "sampled",
            "name": f"{thread.name} ({thread.thread_id})",
            "unit": unit,
            "startValue": 0,
            "endValue": sum(weights),
            "samples": samples,
            "weights": weights,
        })
    document: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": profile.name,
        "activeProfileIndex": 0,
        "exporter": f"sigprof@{sigprof.__version__}",
    }
    dropped = profile.stats.get("dropped", 0)
    if dropped:  # speedscope reads only its own keys
        document[LOSSES_KEY] = {"dropped_samples": dropped}
    return document


def render(profile: Profile) -> bytes:
    return json.dumps(to_dict(profile), separators=(",", ":")).encode()


def parse(document: dict[str, Any]) -> Profile:
    """Reads sampled and evented profiles; each becomes a thread."""
    frames = [
        Frame(str(f.get("name", "?")), str(f.get("file", "<unknown>")), None, int(f.get("line") or 0))
        for f in document["shared"]["frames"]
    ]
    profile = Profile(
        name=str(document.get("name", "speedscope profile")), unit="nanoseconds", clock=""
    )
    units = {p.get("unit") for p in document["profiles"]}
    if units <= {"none"} or not units <= set(_UNIT_NS) | {"none"}:
        profile.unit = "samples"
    for index, entry in enumerate(document["profiles"]):
        scale = _UNIT_NS.get(entry.get("unit"), 1) if profile.unit == "nanoseconds" else 1
        thread = profile.thread(index, str(entry.get("name") or f"profile {index}"))
        for stack, weight in _stacks_of(entry):
            ids = tuple(profile.intern_frame(frames[i]) for i in reversed(stack))
            thread.samples.append((0, profile.intern_stack(ids), weight * scale))
    dropped = (document.get(LOSSES_KEY) or {}).get("dropped_samples")
    if isinstance(dropped, int) and dropped > 0:
        profile.stats["dropped"] = dropped
    return profile


def _stacks_of(entry: dict[str, Any]) -> list[tuple[list[int], float]]:
    if entry["type"] == "sampled":
        return [(list(s), float(w)) for s, w in zip(entry["samples"], entry["weights"])]
    # evented: the open stack between two events is one weighted sample
    result: list[tuple[list[int], float]] = []
    stack: list[int] = []
    last = float(entry.get("startValue", 0))
    for event in entry["events"]:
        at = float(event["at"])
        if stack and at > last:
            result.append((list(stack), at - last))
        last = at
        if event["type"] == "O":
            stack.append(int(event["frame"]))
        elif stack:
            stack.pop()
    return result
