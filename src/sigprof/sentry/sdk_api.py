"""Every use of sentry-sdk's private API, in one place, per SDK generation.

sigprof changes where sentry-sdk's profilers get their samples, so it must
reach into names the SDK does not export. They are all here, grouped by the
SDK file they come from, so an SDK upgrade is checked against one list:

both generations (2.22+ and 3.x):
- `sentry_sdk.client`: `setup_continuous_profiler` (imported by name and
  called in `_Client.__init__`; replaced), `_client_init_debug`,
  `_Client.flush` (wrapped), `SDK_INFO`.
- `sentry_sdk.profiler.continuous_profiler`: `_scheduler` (read and set);
  `ContinuousScheduler` and `ContinuousProfile` are subclassed in
  `scheduler.py` (public names, but their attributes are the SDK's inner
  workings).
- `sentry_sdk.transport`: the transport's `_worker`, its `_ensure_thread`
  and `_thread` (`BackgroundWorker`).

2.x only (transaction profiles):
- `sentry_sdk.client.setup_profiler` (replaced), `sentry_sdk.scope.Profile`
  (replaced by sigprof's subclass).
- `sentry_sdk.profiler.transaction_profiler`: `_scheduler`,
  `ThreadScheduler`, `setup_profiler` here; `Profile` (overriding its
  `_set_initial_sampling_decision`, reading its `active`, `sampled`,
  `start_ns`, `stop_ns`) and `Scheduler` are subclassed, with
  `MAX_PROFILE_DURATION_NS` / `PROFILE_MINIMUM_SAMPLES`, in
  `transaction_profiles.py` (imported on 2.x only).
- a transaction's `_profile`.

streamed spans (3.x; 2.66+ with `trace_lifecycle="stream"`), in
`sentry_sdk.traces` (`StreamedSpan`, which 3.x also calls `Span`, and
`NoOpStreamedSpan`, `start_span`, `get_current_span`), with
`sentry_sdk.tracing_utils.has_span_streaming_enabled`:
- the span's `_segment`, `_attributes`, `_scope`, and `StreamedSpan(...)`
  itself (a root span sampled regardless of `traces_sample_rate`, as 2.x's
  `start_transaction(sampled=True)`).
- 3.x only: `StreamedSpan._start_profile` (replaced: the SDK's version asks
  the scheduler for a trace-lifecycle profile without saying which root
  span starts; sigprof's passes the span, for `profiles_sampler`), which
  calls the module's `try_autostart_continuous_profiler` and sets the span's
  `_continuous_profile`; the sampling context reads `_name`,
  `_parent_span_id`, `_parent_sampled` and `_is_segment()`.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

import sentry_sdk
from sentry_sdk.consts import VERSION
from sentry_sdk.profiler import continuous_profiler
from sentry_sdk.worker import BackgroundWorker

GENERATION = int(VERSION.split(".", 1)[0])

# Imported, not exported, by these modules.
_client: Any = importlib.import_module("sentry_sdk.client")
_scope: Any = importlib.import_module("sentry_sdk.scope")
transaction_profiler: Any = (
    importlib.import_module("sentry_sdk.profiler.transaction_profiler") if GENERATION == 2 else None
)

def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# Streamed spans: the only kind on 3.x, `trace_lifecycle="stream"` on 2.66+.
_traces: Any = _optional_module("sentry_sdk.traces")

# ---- sentry_sdk.profiler.continuous_profiler ----


def continuous_scheduler() -> Any:
    return continuous_profiler._scheduler


def set_continuous_scheduler(scheduler: Any) -> None:
    continuous_profiler._scheduler = scheduler


# ---- sentry_sdk.client ----


def client_init_debug() -> Any:
    """The context variable that makes sentry-sdk's logger print during init."""
    return getattr(_client, "_client_init_debug", None)


def sdk_info() -> dict[str, Any]:
    return dict(_client.SDK_INFO)


# (name, module or class, original): what install() replaced.
_replaced: list[tuple[str, Any, Any]] = []
_replace_lock = threading.Lock()


def install(
    *,
    setup_continuous_profiler: Callable[..., bool],
    flush_wrapper: Callable[[Any], Any],
    setup_profiler: Callable[..., bool] | None,
    profile_class: type | None,
    start_segment_profile: Callable[[Any], Any] | None,
) -> bool:
    """Points sentry-sdk's profiler set-up at sigprof's; False if done already.
    The 2.x-only and 3.x-only arguments are ignored on the other generation."""
    with _replace_lock:
        if _replaced:
            return False
        targets: list[tuple[str, Any, Any]] = [
            ("setup_continuous_profiler", _client, setup_continuous_profiler),
            ("flush", _client._Client, flush_wrapper(_client._Client.flush)),
        ]
        if GENERATION == 2:
            targets.append(("setup_profiler", _client, setup_profiler))
            targets.append(("Profile", _scope, profile_class))
        elif start_segment_profile is not None:
            starter = _segment_profile_starter(start_segment_profile)
            targets.append(("_start_profile", _traces.StreamedSpan, starter))
        for name, owner, replacement in targets:
            _replaced.append((name, owner, getattr(owner, name)))
            setattr(owner, name, replacement)
        return True


def uninstall() -> None:
    with _replace_lock:
        while _replaced:
            name, owner, original = _replaced.pop()
            setattr(owner, name, original)


def original_setup_continuous_profiler() -> Callable[..., bool]:
    return continuous_profiler.setup_continuous_profiler


# ---- sentry_sdk.transport / sentry_sdk.worker ----


def start_transport_worker(transport: Any) -> BackgroundWorker | None:
    """Starts the transport's worker thread now if it has not started yet;
    returns the worker when it is sentry-sdk's BackgroundWorker."""
    worker = getattr(transport, "_worker", None)
    ensure = getattr(worker, "_ensure_thread", None)
    if callable(ensure):
        ensure()
    return worker if isinstance(worker, BackgroundWorker) else None


def worker_thread(worker: BackgroundWorker) -> threading.Thread | None:
    thread = getattr(worker, "_thread", None)
    return thread if isinstance(thread, threading.Thread) else None


# ---- 2.x: sentry_sdk.profiler.transaction_profiler ----


def transaction_scheduler() -> Any:
    return None if transaction_profiler is None else transaction_profiler._scheduler


def set_transaction_scheduler(scheduler: Any) -> None:
    transaction_profiler._scheduler = scheduler


def restore_sdk_transaction_profiler(options: dict[str, Any]) -> bool:
    """sentry-sdk's own transaction profiler in place of sigprof's; False
    when sigprof's was not the one set up."""
    current = transaction_scheduler()
    if not isinstance(current, transaction_profiler.Scheduler) or isinstance(
        current, transaction_profiler.ThreadScheduler
    ):
        return False
    transaction_profiler._scheduler = None
    transaction_profiler.setup_profiler(options)
    return True


def transaction_profile(transaction: Any) -> Any:
    return getattr(transaction, "_profile", None)


# ---- 3.x: sentry_sdk.traces (streamed spans) ----


def _segment_profile_starter(start: Callable[[Any], Any]) -> Callable[[Any], None]:
    """Span._start_profile as the SDK writes it, with the span handed on."""

    def _start_profile(span: Any) -> None:
        if not span._is_segment():
            return
        _traces.try_autostart_continuous_profiler()
        span._continuous_profile = start(span)

    return _start_profile


def root_span_sampling_context(span: Any) -> dict[str, Any]:
    """What 3.x gives `traces_sampler` for a root span, which is the shape
    2.x gave `profiles_sampler`: `transaction_context` with `op` and `name`."""
    attributes = dict(span._attributes)
    context: dict[str, Any] = {
        "transaction_context": {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": getattr(span, "_parent_span_id", None),
            "op": attributes.get("sentry.op"),
            "name": span._name,
            "description": span._name,
            "source": attributes.get("sentry.segment.name.source"),
            "sampled": True,
            "data": attributes,
        },
        "parent_sampled": span._parent_sampled,
    }
    propagation = span._scope.get_active_propagation_context()
    custom = getattr(propagation, "custom_sampling_context", None)
    if custom:
        context.update(custom)
    return context


def streaming() -> bool:
    """Whether spans are streamed (3.x always; 2.x with trace_lifecycle="stream")."""
    if GENERATION >= 3:
        return True
    if _traces is None:
        return False
    from sentry_sdk.tracing_utils import has_span_streaming_enabled

    return bool(has_span_streaming_enabled(sentry_sdk.get_client().options))


def current_span() -> Any:
    return _traces.get_current_span() if streaming() else sentry_sdk.get_current_span()


def is_recording_span(span: Any) -> bool:
    """A sampled span that will be sent (not a streamed no-op span)."""
    if span is None or not span.sampled:
        return False
    return not isinstance(span, _traces.NoOpStreamedSpan) if streaming() else True


def root_of(span: Any) -> Any:
    if streaming():
        return getattr(span, "_segment", None)
    return getattr(span, "containing_transaction", None)


def start_child_span(parent: Any, name: str, op: str) -> Any:
    if streaming():
        return _traces.start_span(name=name, attributes={"sentry.op": op}, parent_span=parent)
    return parent.start_child(op=op, name=name)


def start_sampled_root_span(name: str, op: str, parent: Any) -> Any:
    """A new root span, sampled whatever the traces sample rate says, in the
    parent's trace when there is one."""
    if not streaming():
        link = {}
        if parent is not None:
            link = {"trace_id": parent.trace_id, "parent_span_id": parent.span_id}
        return sentry_sdk.start_transaction(name=name, op=op, sampled=True, **link)
    scope = sentry_sdk.get_current_scope()
    propagation = scope.get_active_propagation_context()
    return _traces.StreamedSpan(
        name=name,
        attributes={"sentry.op": op},
        scope=scope,
        trace_id=parent.trace_id if parent is not None else propagation.trace_id,
        parent_span_id=parent.span_id if parent is not None else propagation.parent_span_id,
        parent_sampled=True,
        sample_rate=1.0,
    )


def enter_span(span: Any) -> None:
    """A transaction starts on __enter__; a streamed span in its constructor
    (its __enter__ does nothing more)."""
    span.__enter__()


def set_profiler_id(span: Any, profiler_id: str | None) -> None:
    if profiler_id is None:
        return
    if streaming():
        span.set_attribute("sentry.profiler_id", profiler_id)
    else:
        span.set_profiler_id(profiler_id)


def has_profiler_id(span: Any) -> bool:
    if streaming():
        return "sentry.profiler_id" in span._attributes
    return span.get_profile_context() is not None
