"""Judging payloads with Sentry's own parsers (vroomrs, sentry-relay) plus the
ingestion rules of Relay (Sentry's event server) that they do not apply: a
chunk spans at most 66 s, thread ids are strings, a thread needs two samples
with frames."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from importlib import metadata
from typing import Any

import sentry_relay
import vroomrs

MAX_V1_NS = 30_000_000_000
MAX_CHUNK_S = 66.0


def _check_tables(profile: dict[str, Any]) -> None:
    frames, stacks = profile["frames"], profile["stacks"]
    for stack in stacks:
        assert all(isinstance(i, int) and 0 <= i < len(frames) for i in stack), "malformed stacks"
    for sample in profile["samples"]:
        assert isinstance(sample["stack_id"], int)
        assert 0 <= sample["stack_id"] < len(stacks), "malformed samples"
    for frame in frames:
        lineno = frame.get("lineno")
        assert lineno is None or (isinstance(lineno, int) and lineno >= 0)
        assert isinstance(frame.get("function"), str) and frame["function"]
        if "in_app" in frame:
            assert isinstance(frame["in_app"], bool)


def _as_relay_forwards_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """The SDK sends u64s as decimal strings; Relay parses them and forwards
    numbers, which is what vroom reads."""
    out = json.loads(json.dumps(payload, allow_nan=False))
    for sample in out["profile"]["samples"]:
        sample["elapsed_since_start_ns"] = int(sample["elapsed_since_start_ns"])
        sample["thread_id"] = int(sample["thread_id"])
    for transaction in out["transactions"]:
        for key in ("relative_start_ns", "relative_end_ns", "active_thread_id"):
            transaction[key] = int(transaction[key])
    out.update(INGESTION_FIELDS)
    out["sampled"] = True  # Relay marks profiles it forwards from sampled transactions
    (out["transaction"],) = out.pop("transactions")  # Relay forwards the one transaction
    out["transaction"].setdefault("segment_id", "a" * 16)  # Relay: the transaction's span id
    return out


# What Sentry's ingestion adds before vroom reads a profile or a chunk.
INGESTION_FIELDS = {
    "organization_id": 1,
    "project_id": 1,
    "received": 1700000000,
    "retention_days": 90,
}


def check_profile_v1(payload: dict[str, Any]) -> Any:
    """A transaction profile Sentry would keep; returns vroomrs' Profile."""
    text = json.dumps(_as_relay_forwards_v1(payload), allow_nan=False)
    parsed = vroomrs.profile_from_json_str(text, "python")
    assert payload["version"] == "1" and payload["platform"] == "python"
    uuid.UUID(payload["event_id"])
    assert payload["device"]["architecture"] and payload["os"]["name"]
    (transaction,) = payload["transactions"]
    assert transaction["name"] and transaction["id"] and transaction["trace_id"]
    start, end = int(transaction["relative_start_ns"]), int(transaction["relative_end_ns"])
    profile = payload["profile"]
    _check_tables(profile)
    kept: Counter[str] = Counter()
    for sample in profile["samples"]:
        assert isinstance(sample["elapsed_since_start_ns"], str)
        assert isinstance(sample["thread_id"], str)
        elapsed = int(sample["elapsed_since_start_ns"])
        assert elapsed <= MAX_V1_NS, "profiling_duration_is_too_long"
        if start <= elapsed <= end and profile["stacks"][sample["stack_id"]]:
            kept[sample["thread_id"]] += 1
    assert any(n >= 2 for n in kept.values()), "profiling_not_enough_samples"
    return parsed


def check_chunk(payload: dict[str, Any]) -> Any:
    """A profile chunk Sentry would keep; returns vroomrs' ProfileChunk."""
    text = json.dumps({**payload, **INGESTION_FIELDS}, allow_nan=False)
    parsed = vroomrs.profile_chunk_from_json_str(text, "python")
    assert payload["version"] == "2" and payload["platform"] == "python"
    uuid.UUID(payload["chunk_id"])
    uuid.UUID(payload["profiler_id"])
    assert payload["client_sdk"]["name"] and payload["client_sdk"]["version"]
    profile = payload["profile"]
    _check_tables(profile)
    timestamps = [sample["timestamp"] for sample in profile["samples"]]
    assert all(isinstance(sample["thread_id"], str) for sample in profile["samples"])
    assert max(timestamps) - min(timestamps) <= MAX_CHUNK_S
    per_thread = Counter(
        sample["thread_id"] for sample in profile["samples"] if profile["stacks"][sample["stack_id"]]
    )
    assert any(n >= 2 for n in per_thread.values()), "profiling_not_enough_samples"
    assert parsed.get_profiler_id() == payload["profiler_id"]
    return parsed


_RELAY_VERSION = tuple(int(part) for part in metadata.version("sentry-relay").split(".")[:2])
# Relay before 0.9 (the newest on Python 3.9) predates continuous profiling:
# it wants contexts.profile.profile_id, which a continuous profile's context
# (profiler_id only) never has.
_PRE_CONTINUOUS = _RELAY_VERSION < (0, 9)
_NO_PROFILE_ID = {"type": "missing_attribute", "name": "contexts.profile.profile_id"}


def normalize_transaction(event: dict[str, Any]) -> dict[str, Any]:
    """Relay's store normaliser over a transaction; it must report no error."""
    normalized: dict[str, Any] = sentry_relay.StoreNormalizer().normalize_event(dict(event))
    assert normalized["type"] == "transaction"
    errors = normalized.get("errors") or []
    if _PRE_CONTINUOUS and "profiler_id" in event["contexts"].get("profile", {}):
        errors = [error for error in errors if error != _NO_PROFILE_ID]
    assert not errors, errors
    return normalized


def functions_in(profile: dict[str, Any], thread_id: str) -> list[str]:
    """Every function name in the samples of one thread."""
    frames, stacks = profile["frames"], profile["stacks"]
    names = []
    for sample in profile["samples"]:
        if sample["thread_id"] == thread_id:
            names.extend(frames[i]["function"] for i in stacks[sample["stack_id"]])
    return names


def unix_seconds(value: Any) -> float:
    """An event timestamp (RFC 3339 string as the SDK sends it, or a number)."""
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def samples_between(
    chunk_samples: list[dict[str, Any]], thread_id: str, start: Any, end: Any
) -> list[dict[str, Any]]:
    start, end = unix_seconds(start), unix_seconds(end)
    return [
        s for s in chunk_samples if s["thread_id"] == thread_id and start <= s["timestamp"] <= end
    ]
