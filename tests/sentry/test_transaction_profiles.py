"""Transaction profiles (format v1) through sentry-sdk's real HTTP transport."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sentry_sdk

import sigprof
from tests.sentry.generations import requires_sdk2
from tests.sentry.judge import check_profile_v1, functions_in, normalize_transaction
from tests.sentry.receiver import Receiver

pytestmark = requires_sdk2


def busy_request_handler(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += sum(range(500))
    return total


def _profile_envelopes(receiver: Receiver) -> list:
    return [e for e in receiver.envelopes if "profile" in e.types()]


def test_sampled_transaction_carries_a_linked_native_profile(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    with sentry_sdk.start_transaction(name="checkout", op="task") as transaction:
        busy_request_handler(0.4)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_profile_envelopes(r)))

    (envelope,) = _profile_envelopes(receiver)
    assert sorted(envelope.types()) == ["profile", "transaction"]
    event = envelope.payload("transaction")
    profile = envelope.payload("profile")
    check_profile_v1(profile)
    normalize_transaction(event)
    linked = profile["transactions"][0]
    assert (
        linked["id"] == event["event_id"] == transaction.event_id
        if hasattr(transaction, "event_id")
        else linked["id"] == event["event_id"]
    )
    assert linked["trace_id"] == event["contexts"]["trace"]["trace_id"]
    assert linked["active_thread_id"] == str(threading.get_ident())
    names = functions_in(profile["profile"], linked["active_thread_id"])
    assert "busy_request_handler" in names
    assert "test_sampled_transaction_carries_a_linked_native_profile" in names
    # the samples lie inside the transaction
    end = int(linked["relative_end_ns"])
    assert all(0 <= int(s["elapsed_since_start_ns"]) <= end for s in profile["profile"]["samples"])
    assert int(linked["relative_end_ns"]) >= 0.3e9


def test_profiles_sampler_float_bool_and_raise(receiver: Receiver) -> None:
    decisions: list = [0.0, True, 1, False]
    seen: list = []

    def sampler(context: Any) -> Any:
        seen.append(context["transaction_context"]["name"])
        decision = decisions.pop(0) if decisions else None
        if decision is None:
            raise RuntimeError("sampler bug")
        return decision

    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sampler=sampler)
    for i in range(5):  # 0.0, True, 1, False, raises
        with sentry_sdk.start_transaction(name=f"t{i}"):
            busy_request_handler(0.15)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: len(r.payloads("transaction")) == 5)
    profiled = {e.payload("transaction")["transaction"] for e in _profile_envelopes(receiver)}
    assert profiled == {"t1", "t2"}
    assert seen == ["t0", "t1", "t2", "t3", "t4"]
    for envelope in _profile_envelopes(receiver):
        check_profile_v1(envelope.payload("profile"))


def test_lost_event_outcomes(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    recorded: list = []
    transport = sentry_sdk.get_client().transport
    assert transport is not None
    original = transport.record_lost_event

    def record(reason: str, data_category: Any = None, **kwargs: Any) -> None:
        recorded.append((reason, data_category))
        original(reason, data_category=data_category, **kwargs)

    transport.record_lost_event = record  # type: ignore[method-assign]
    with sentry_sdk.start_transaction(name="warms the sampler up"):
        busy_request_handler(0.1)
    # The sampler lingers after a profile: this one is far shorter than a tick.
    with sentry_sdk.start_transaction(name="too short"):
        pass
    sentry_sdk.get_client().options["profiles_sampler"] = lambda context: 0.0
    with sentry_sdk.start_transaction(name="not sampled"):
        busy_request_handler(0.1)
    assert recorded == [("insufficient_data", "profile"), ("sample_rate", "profile")]


def test_thirty_second_cap_stops_the_profile(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigprof.sentry import transaction_profiles

    # The cap is sentry-sdk's 30 s; shrink it so the test runs in a second.
    monkeypatch.setattr(transaction_profiles, "MAX_PROFILE_DURATION_NS", 300_000_000)
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    with sentry_sdk.start_transaction(name="long"):
        busy_request_handler(0.8)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_profile_envelopes(r)))
    profile = _profile_envelopes(receiver)[0].payload("profile")
    elapsed = [int(s["elapsed_since_start_ns"]) for s in profile["profile"]["samples"]]
    assert max(elapsed) <= 300_000_000
    assert int(profile["transactions"][0]["relative_end_ns"]) == 300_000_000
    check_profile_v1(profile)


def test_active_thread_id_follows_the_integration(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    worker_ident: list = []

    def worker(transaction: Any) -> None:
        worker_ident.append(threading.get_ident())
        transaction._profile.update_active_thread_id()  # what the ASGI integrations do
        busy_request_handler(0.3)

    with sentry_sdk.start_transaction(name="handed off") as transaction:
        thread = threading.Thread(target=worker, args=(transaction,))
        thread.start()
        thread.join()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_profile_envelopes(r)))
    profile = _profile_envelopes(receiver)[0].payload("profile")
    assert profile["transactions"][0]["active_thread_id"] == str(worker_ident[0])
    assert "busy_request_handler" in functions_in(profile["profile"], str(worker_ident[0]))


def test_profiles_span_interning_epochs(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigprof.core import sample_source

    # Without a chunk session the tables restart every EPOCH_MAX_S (60 s);
    # a transaction profile crossing restarts keeps consistent frames.
    monkeypatch.setattr(sample_source, "EPOCH_MAX_S", 0.2)
    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    with sentry_sdk.start_transaction(name="across epochs"):
        epoch_before = sample_source.SOURCE.tables.epoch
        busy_request_handler(1.2)
        epochs_crossed = sample_source.SOURCE.tables.epoch - epoch_before
    assert epochs_crossed >= 2
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(_profile_envelopes(r)))
    profile = _profile_envelopes(receiver)[0].payload("profile")
    check_profile_v1(profile)
    thread = str(threading.get_ident())
    names = functions_in(profile["profile"], thread)
    assert names.count("busy_request_handler") >= 2
    # frames and stacks met again in a later epoch are not repeated
    frames = [tuple(sorted(f.items())) for f in profile["profile"]["frames"]]
    assert len(frames) == len(set(frames))
    stacks = [tuple(stack) for stack in profile["profile"]["stacks"]]
    assert len(stacks) == len(set(stacks))
    per_sample = [
        [
            profile["profile"]["frames"][i]["function"]
            for i in profile["profile"]["stacks"][s["stack_id"]]
        ]
        for s in profile["profile"]["samples"]
        if s["thread_id"] == thread
    ]
    # the same caller chain in every sample, whichever epoch it came from
    assert all("test_profiles_span_interning_epochs" in stack for stack in per_sample)
    assert len({tuple(stack[-20:]) for stack in per_sample}) == 1
