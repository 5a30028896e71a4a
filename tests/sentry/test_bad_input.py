"""Bad input warns like sentry-sdk does, never crashes, never loses a transaction."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.profiler import continuous_profiler

import sigprof
from tests.sentry.generations import (
    SDK_GENERATION,
    requires_sdk2,
    sent_roots,
    sent_spans,
    start_root,
)
from tests.sentry.judge import check_chunk
from tests.sentry.receiver import Receiver

SDK_LOGGER = "sentry_sdk.errors"


def busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(300))


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def _profiles(receiver: Receiver) -> list[Any]:
    """Profile data of either kind: transaction profiles (2.x), chunks."""
    return [*receiver.payloads("profile"), *receiver.payloads("profile_chunk")]


@pytest.mark.parametrize("rate", [-0.5, 1.5, float("nan"), "0.5", "abc", [1]])
def test_invalid_profiles_sample_rate(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, rate: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profiles_sample_rate=rate)
    _still_sent(receiver)
    assert _profiles(receiver) == []
    if not (isinstance(rate, float) and rate < 0):  # the SDK treats a negative rate as "off"
        assert "sample rate" in _warnings(caplog).lower()


@pytest.mark.parametrize("rate", [-1, 2, float("nan"), "1.0", None])
def test_invalid_profile_session_sample_rate(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, rate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigprof.sentry import sampling

    monkeypatch.setattr(sampling, "_decision", None)
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(
        dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profile_session_sample_rate=rate
    )
    sentry_sdk.profiler.start_profiler()
    assert continuous_profiler.get_profiler_id() is None
    _still_sent(receiver)
    sentry_sdk.profiler.stop_profiler()
    assert _profiles(receiver) == []
    if rate is not None:
        assert "sample rate" in _warnings(caplog).lower()


def test_init_twice_keeps_everything(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(
        dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profile_session_sample_rate=1.0
    )
    sentry_sdk.profiler.start_profiler()
    first_id = continuous_profiler.get_profiler_id()
    busy(0.3)
    sigprof.init(
        dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profile_session_sample_rate=1.0
    )
    assert "called again" in _warnings(caplog)
    # the first session's samples were sent as its last chunk
    receiver.wait_for(
        lambda r: any(c["profiler_id"] == first_id for c in r.payloads("profile_chunk"))
    )
    sentry_sdk.profiler.start_profiler()
    with start_root("after second init"):
        busy(0.2)
    sentry_sdk.profiler.stop_profiler()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)) and len(r.payloads("profile_chunk")) == 2)
    for chunk in receiver.payloads("profile_chunk"):
        check_chunk(chunk)
    second_id = sent_roots(receiver)[0].profiler_id
    assert second_id is not None and second_id != first_id


def test_stop_profiler_without_start(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(
        dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profile_session_sample_rate=1.0
    )
    sentry_sdk.profiler.stop_profiler()
    sigprof.stop_profiler()
    assert _warnings(caplog).count("not started") == 2


@requires_sdk2  # on 3.x profiles_sample_rate rates root spans of the continuous session
def test_start_profiler_without_continuous_setup_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(debug=True, traces_sample_rate=1.0, profiles_sample_rate=1.0)
    sigprof.start_profiler()
    assert "continuous profiling is not set up" in _warnings(caplog)


@pytest.mark.parametrize("target", [42, "name", None.__class__(), [1, 2]])
def test_decorating_a_non_callable_raises_type_error(target: Any) -> None:
    with pytest.raises(TypeError, match="decorates functions"):
        sigprof.profile()(target)
    if target is not None:
        with pytest.raises(TypeError, match="decorates functions"):
            sigprof.profile(target)


def test_span_exited_twice(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(dsn=receiver.dsn, debug=True, traces_sample_rate=1.0)
    span = sigprof.start_profiling_span(description="twice")
    span.__enter__()
    busy(0.1)
    span.__exit__(None, None, None)
    span.__exit__(None, None, None)
    span.__enter__()
    assert "exited more than once" in _warnings(caplog)
    assert "entered only once" in _warnings(caplog)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)))
    assert [span.name for span in sent_spans(receiver)] == ["twice"]


def test_invalid_span_sample_rate_runs_the_block(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(dsn=receiver.dsn, debug=True, traces_sample_rate=1.0)

    @sigprof.profile(sample_rate="often")  # type: ignore[arg-type]
    def work() -> int:
        return 7

    assert work() == 7
    assert "invalid sample_rate" in _warnings(caplog)


def test_exceptions_pass_through_and_mark_the_span(receiver: Receiver) -> None:
    sigprof.init(dsn=receiver.dsn, debug=True, traces_sample_rate=1.0)

    @sigprof.profile()
    def fails() -> None:
        busy(0.05)
        raise ValueError("boom")

    with start_root("errors"), pytest.raises(ValueError, match="boom"):
        fails()
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)))
    (span,) = [span for span in sent_spans(receiver) if not span.is_root]
    if SDK_GENERATION >= 3:
        assert span.status == "error"  # streamed spans know "ok" and "error"
    else:
        event_span = receiver.payloads("transaction")[0]["spans"][0]
        # sentry-sdk before 2.3x carried the status as a tag
        status = event_span.get("status", event_span.get("tags", {}).get("status"))
        assert status == "internal_error"


def test_decorator_without_any_client_just_runs() -> None:
    sentry_sdk.init()  # no DSN: the client is inactive

    @sigprof.profile()
    def work() -> int:
        return 5

    with sigprof.start_profiling_span(description="no client") as span:
        assert work() == 5
    assert not span.profiled and span.span is None
    assert not sigprof.core.sample_source.SOURCE.running


def _still_sent(receiver: Receiver, name: str = "still sent") -> None:
    with start_root(name):
        busy(0.15)
    sentry_sdk.flush()
    receiver.wait_for(lambda r: name in [root.name for root in sent_roots(r)])


@pytest.mark.parametrize("returned", ["yes", -1, float("nan"), 2, [0.5]])
def test_profiles_sampler_returning_junk(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, returned: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(
        dsn=receiver.dsn, debug=True, traces_sample_rate=1.0, profiles_sampler=lambda _: returned
    )
    _still_sent(receiver)
    assert _profiles(receiver) == []
    assert "sample rate" in _warnings(caplog).lower()


@pytest.mark.parametrize("behaviour", ["returns None", "raises"])
def test_profiles_sampler_returning_none_or_raising(receiver: Receiver, behaviour: str) -> None:
    def sampler(context: Any) -> Any:
        if behaviour == "raises":
            raise RuntimeError("sampler bug")
        return None

    sigprof.init(dsn=receiver.dsn, traces_sample_rate=1.0, profiles_sampler=sampler)
    _still_sent(receiver)
    assert _profiles(receiver) == []


@pytest.mark.parametrize("lifecycle", ["always", "Manual", None, 3])
def test_bad_profile_lifecycle_warns_and_profiles_nothing(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, lifecycle: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(
        dsn=receiver.dsn,
        debug=True,
        traces_sample_rate=1.0,
        profile_session_sample_rate=1.0,
        profile_lifecycle=lifecycle,
    )
    assert f"profile_lifecycle must be 'manual' or 'trace', not {lifecycle!r}" in _warnings(caplog)
    sigprof.start_profiler()
    assert continuous_profiler.get_profiler_id() is None
    _still_sent(receiver)
    sigprof.stop_profiler()
    assert receiver.payloads("profile_chunk") == []


@pytest.mark.parametrize(
    "options, error, option",
    [
        ({"frequency": 0}, ValueError, "frequency"),
        ({"frequency": 10_000}, ValueError, "frequency"),
        ({"frequency": float("nan")}, ValueError, "frequency"),
        ({"frequency": "101"}, TypeError, "frequency"),
        ({"max_stack_depth": 0}, ValueError, "max_stack_depth"),
        ({"max_stack_depth": "deep"}, ValueError, "max_stack_depth"),
        ({"clock": "real"}, ValueError, "clock"),
    ],
)
def test_integration_options_are_checked_where_they_are_given(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    # not later, when a transaction starts the sampler and would be lost with it
    with pytest.raises(error, match=option):
        sigprof.SigprofIntegration(**options)


def test_output_dir_that_is_a_file(tmp_path: Any) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match=r"output_dir=.*a-file.*not a directory"):
        sigprof.init(output_dir=str(path))
    with pytest.raises(NotADirectoryError, match="output_dir="):
        sigprof.init(output_dir=str(path / "below"))


def test_output_dir_from_the_environment_is_named(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    monkeypatch.setenv("SIGPROF_OUTPUT_DIR", str(path))
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    with pytest.raises(NotADirectoryError, match="SIGPROF_OUTPUT_DIR="):
        sigprof.init()


def test_output_dir_that_does_not_exist_is_created(tmp_path: Any) -> None:
    from sigprof.sentry import integration as sentry_init

    directory = tmp_path / "new" / "deeper"
    sigprof.init(output_dir=str(directory))
    try:
        assert directory.is_dir()
        assert sentry_init.local_writer() is not None
    finally:
        writer = sentry_init.local_writer()
        if writer is not None:
            writer.stop()


def test_span_arguments_of_the_wrong_type_do_not_lose_the_transaction(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SDK_LOGGER)
    sigprof.init(dsn=receiver.dsn, debug=True, traces_sample_rate=1.0)

    @sigprof.profile(name=5)  # type: ignore[arg-type]
    def work() -> int:
        busy(0.05)
        return 3

    with sigprof.start_profiling_span(description=123, op=object()):  # type: ignore[arg-type]
        assert work() == 3
    sentry_sdk.flush()
    receiver.wait_for(lambda r: bool(sent_roots(r)))
    spans = sent_spans(receiver)
    assert [span.name for span in spans if span.is_root] == ["123"]
    assert [span.name for span in spans if not span.is_root] == ["5"]
    for option in ("description", "op", "name"):
        assert f"span's {option} must be a string" in _warnings(caplog)
