"""The Sentry wing's sampling decisions (sigprof.sentry.sampling), one by
one, on either SDK generation: they take plain values and the user's
callables, not the SDK's objects."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sigprof.sentry import sampling


@pytest.fixture
def warnings_seen(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """The module's warnings, here without sentry-sdk's filter (it shows
    them only to a client with debug=True)."""
    monkeypatch.setattr(sampling, "logger", logging.getLogger("tests.sigprof.sampling"))
    caplog.set_level(logging.WARNING, logger="tests.sigprof.sampling")
    return caplog


@pytest.fixture
def draw(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The values random.random() returns next, in order."""
    values: list[float] = []
    monkeypatch.setattr(sampling.random, "random", lambda: values.pop(0))
    monkeypatch.setattr(sampling, "_decision", None)
    return values


def test_session_is_drawn_once_per_process_and_rate(draw: list[float]) -> None:
    draw.extend([0.3, 0.9])
    assert sampling.session_sampled(0.5)  # 0.3 < 0.5
    assert sampling.session_sampled(0.5)  # not drawn again
    assert draw == [0.9]
    assert not sampling.session_sampled(0.6)  # a new rate draws anew: 0.9
    assert not sampling.session_sampled(None)


@pytest.mark.parametrize("rate", ["0.5", -0.1, 1.5, float("nan"), [1]])
def test_invalid_session_rate_never_samples(
    draw: list[float], rate: Any, warnings_seen: pytest.LogCaptureFixture
) -> None:
    assert not sampling.session_sampled(rate)
    assert "invalid profile_session_sample_rate" in warnings_seen.text


def test_lifecycle_is_manual_or_trace(warnings_seen: pytest.LogCaptureFixture) -> None:
    assert sampling.lifecycle_valid("manual") and sampling.lifecycle_valid("trace")
    assert not warnings_seen.text
    assert not sampling.lifecycle_valid("auto")
    assert "profile_lifecycle must be" in warnings_seen.text


def test_root_span_rate_and_sampler(draw: list[float]) -> None:
    draw.extend([0.2, 0.2, 0.4, 0.4])
    assert sampling.RootSpanRates(0.3, None).decide({})
    assert not sampling.RootSpanRates(0.1, None).decide({})
    seen: list[dict[str, Any]] = []

    def profiles_sampler(context: dict[str, Any]) -> float:
        seen.append(context)
        return 0.0 if context["transaction_context"]["name"] == "/health" else 0.5

    rates = sampling.RootSpanRates(1.0, profiles_sampler)  # the sampler wins over the rate
    assert not rates.decide({"transaction_context": {"name": "/health", "op": "http"}})
    assert rates.decide({"transaction_context": {"name": "/api", "op": "http"}})  # 0.4 < 0.5
    assert [c["transaction_context"]["name"] for c in seen] == ["/health", "/api"]
    assert draw == []


def test_root_span_sampler_bool_and_failures(draw: list[float]) -> None:
    draw.extend([0.999])
    assert sampling.RootSpanRates(None, lambda _: True).decide({})  # True is rate 1

    def broken(_: dict[str, Any]) -> float:
        raise ZeroDivisionError

    assert not sampling.RootSpanRates(1.0, broken).decide({})
    assert not sampling.RootSpanRates(None, lambda _: "often").decide({})
    assert not sampling.RootSpanRates(None, None).decide({})
    assert draw == []


def test_take_root_span_rates_removes_the_2x_options() -> None:
    kwargs: dict[str, Any] = {"profiles_sample_rate": 0.5, "dsn": "x"}
    rates = sampling.take_root_span_rates(kwargs)
    assert rates is not None and rates.rate == 0.5 and rates.sampler is None
    assert kwargs == {"dsn": "x"}
    assert sampling.take_root_span_rates({"dsn": "x"}) is None


@pytest.mark.parametrize(
    ("given", "traced"),
    [
        ({"profiles_sample_rate": 1.0}, True),
        ({"profiles_sampler": lambda _: 1.0}, True),
        ({"profiles_sample_rate": 0.0}, False),  # nothing asked for
        ({"profiles_sample_rate": 1.0, "traces_sample_rate": 0.0}, False),  # the user's choice
        ({"profiles_sample_rate": 1.0, "traces_sampler": lambda _: 0.1}, False),
        ({"profile_session_sample_rate": 1.0}, False),  # continuous needs no transactions
    ],
)
def test_tracing_defaults_on_only_when_profiles_need_it(given: dict[str, Any], traced: bool) -> None:
    kwargs = dict(given)
    sampling.default_tracing_for_profiles(kwargs)
    added = {key: kwargs[key] for key in kwargs if key not in given}
    assert added == ({"traces_sample_rate": 1.0} if traced else {})


def test_invalid_init_rates_are_dropped_not_raised() -> None:
    kwargs: dict[str, Any] = {
        "profiles_sample_rate": "1", "profile_session_sample_rate": 0.25, "dsn": None,
    }
    sampling.drop_invalid_init_rates(kwargs)
    assert kwargs == {"profiles_sample_rate": None, "profile_session_sample_rate": 0.25, "dsn": None}


def test_transaction_profile_decision_survives_a_raising_sampler(
    warnings_seen: pytest.LogCaptureFixture,
) -> None:
    decided: list[bool] = []
    assert sampling.transaction_profile_sampled(lambda: decided.append(True))
    assert decided == [True]

    def raising() -> None:
        raise KeyError("user code")

    assert not sampling.transaction_profile_sampled(raising)
    assert "profiles_sampler raised" in warnings_seen.text


def test_profiling_span_rate(draw: list[float]) -> None:
    draw.extend([0.5, 0.5])
    assert sampling.profiling_span_sampled(None)  # no draw
    assert sampling.profiling_span_sampled(0.6)
    assert not sampling.profiling_span_sampled(0.4)
    assert not sampling.profiling_span_sampled("0.4")  # invalid: never, no draw
    assert draw == []
