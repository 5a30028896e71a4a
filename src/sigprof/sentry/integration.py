"""`sigprof.init(...)` and `SigprofIntegration`: sentry-sdk with native profiling.

sentry-sdk sets its profilers up inside `Client.__init__`, after the
integrations, by calling `setup_profiler` (transaction profiles) or
`setup_continuous_profiler` (continuous profiling) from `sentry_sdk.client`.
The integration's `setup_once` points those two names, and the `Profile`
class `sentry_sdk.scope` builds, at sigprof's versions. Every decision and
every payload shape stays sentry-sdk's; only the sampling changes. sentry-sdk
3.x has only continuous profiling: there the root span's profile start is
sigprof's too, for `profiles_sample_rate` / `profiles_sampler` (every
sampling decision is made in `sampling`). What is replaced, per SDK
generation, is listed in `sdk_api`.

Where the native sampler cannot run, none of that is patched: sentry-sdk's
own profiler does the work, after exactly one warning.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.profiler.continuous_profiler import start_profiler as sdk_start_profiler
from sentry_sdk.profiler.continuous_profiler import stop_profiler as sdk_stop_profiler
from sentry_sdk.utils import logger

from sigprof.chunks import local_chunks
from sigprof.chunks.local_chunks import LocalChunkWriter, output_dir_from_env
from sigprof.core import thread_hooks
from sigprof.core.sample_source import SOURCE
from sigprof.core.sampler import (
    NativeUnavailable,
    SamplerError,
    check_sampling_options,
    native_unavailable_reason,
)
from sigprof.sentry import sdk_api
from sigprof.sentry.sampling import (
    RootSpanRates,
    default_tracing_for_profiles,
    drop_invalid_init_rates,
    take_root_span_rates,
)
from sigprof.sentry.scheduler import (
    NativeContinuousScheduler,
    setup_native_continuous_profiler,
    teardown_native_continuous_profiler,
)
from sigprof.sentry.session import SESSION
from sigprof.sentry.spans import profile, start_profiling_span

if sdk_api.GENERATION == 2:
    from sigprof.sentry.transaction_profiles import (
        NativeProfile,
        setup_native_profiler,
        teardown_native_profiler,
    )


class SigprofFallbackWarning(RuntimeWarning):
    """The native sampler cannot run here: sentry-sdk's own profiler is used."""


_lock = threading.Lock()
_fallback_reason: str | None = None
_init_calls = 0
_local_writer: LocalChunkWriter | None = None


class SigprofIntegration(Integration):
    """Add to `sentry_sdk.init(integrations=[...])` to profile with sigprof."""

    identifier = "sigprof"

    def __init__(
        self,
        *,
        frequency: float = 101,
        clock: str = "wall",
        max_stack_depth: int = 128,
        sample_sentry_threads: bool = False,
    ) -> None:
        # Checked here, naming the option: the sampler starts later, inside
        # a transaction or a profiler session, where an error would lose it.
        self.frequency, self.clock, self.max_stack_depth = check_sampling_options(
            frequency, clock, max_stack_depth
        )
        # sentry-sdk 3.x: profiles_sample_rate / profiles_sampler of sigprof.init
        self.root_span_rates: RootSpanRates | None = None
        # sentry-sdk's own threads (its transport worker...) are not the program's work
        self.sample_sentry_threads = bool(sample_sentry_threads)

    @staticmethod
    def setup_once() -> None:
        _export_names()
        reason = native_unavailable_reason()
        if reason is not None:
            _fall_back(reason)
            return
        _install()


def init(*args: Any, output_dir: str | None = None, **kwargs: Any) -> Any:
    """`sentry_sdk.init` with every keyword it takes, profiling natively.

    Without a DSN (no `dsn` argument, no SENTRY_DSN), `output_dir` (or the
    SIGPROF_OUTPUT_DIR environment variable when it is not given) turns on
    local continuous profiling: one Sentry `profile_chunk` file per minute
    in that directory, for `sigprof report DIR`. With a DSN, chunks go to
    Sentry as usual and the directory is ignored. A directory that cannot be
    created or written raises OSError here, at startup."""
    global _init_calls
    with _lock:
        _init_calls += 1
        again = _init_calls > 1
    # Warn through sentry-sdk's logger as its own init does: shown with debug=True.
    init_debug = sdk_api.client_init_debug()
    token = init_debug.set(bool(kwargs.get("debug"))) if init_debug is not None else None
    try:
        if again:
            logger.warning(
                "[Profiling] sigprof.init() called again: the new client replaces the old"
            )
        drop_invalid_init_rates(kwargs)
        default_tracing_for_profiles(kwargs)
    finally:
        if init_debug is not None and token is not None:
            init_debug.reset(token)
    integrations: list[Any] = list(kwargs.get("integrations") or [])
    ours = next((i for i in integrations if isinstance(i, SigprofIntegration)), None)
    if ours is None:
        ours = SigprofIntegration()
        integrations.append(ours)
    kwargs["integrations"] = integrations
    if sdk_api.GENERATION >= 3:
        ours.root_span_rates = take_root_span_rates(kwargs)
    result = sentry_sdk.init(*args, **kwargs)
    _set_up_local_chunks(output_dir)
    return result


def _set_up_local_chunks(output_dir: str | None) -> None:
    """Starts (or, on a later init(), replaces) the local chunk writer."""
    global _local_writer
    with _lock:
        previous, _local_writer = _local_writer, None
    if previous is not None:
        previous.stop()
    directory = output_dir or output_dir_from_env()
    if not directory:
        return
    options = getattr(sentry_sdk.get_client(), "options", None)
    if not isinstance(options, dict):
        options = {}
    if options.get("dsn"):
        logger.warning(
            "[Profiling] sigprof.init(): a DSN is set, so profiles go to Sentry; "
            "the output directory %s is not used",
            directory,
        )
        return
    reason = native_unavailable_reason()
    if reason is not None:
        _warn_no_local_chunks(reason)
        return
    _configure_from(options)
    try:
        writer = LocalChunkWriter(
            directory,
            release=_tag(options.get("release")),
            environment=_tag(options.get("environment")),
        )
    except OSError as error:
        given = "output_dir" if output_dir else local_chunks.ENV_OUTPUT_DIR
        raise type(error)(
            f"sigprof.init(): {given}={directory!r} cannot hold chunk files: "
            f"{error.strerror or error}"
        ) from None
    try:
        writer.start()
    except SamplerError as error:
        _warn_no_local_chunks(str(error))
        return
    with _lock:
        _local_writer = writer


def _tag(value: Any) -> str | None:
    return None if value is None else str(value).strip() or None


def _warn_no_local_chunks(reason: str) -> None:
    warnings.warn(
        f"sigprof: no local chunk files are written: the native sampler cannot run ({reason})",
        SigprofFallbackWarning,
        stacklevel=4,
    )


def local_writer() -> LocalChunkWriter | None:
    """The writer `sigprof.init(output_dir=...)` started, if any."""
    return _local_writer


def start_profiler() -> None:
    """`sdk_start_profiler()`, with a warning when continuous
    profiling is not configured (transaction profiling is on, or no init)."""
    if sdk_api.continuous_scheduler() is None:
        logger.warning(
            "[Profiling] start_profiler(): continuous profiling is not set up "
            "(call sigprof.init() without profiles_sample_rate/profiles_sampler)"
        )
        return
    sdk_start_profiler()


def stop_profiler() -> None:
    """`sdk_stop_profiler()`."""
    if sdk_api.continuous_scheduler() is None:
        logger.warning("[Profiling] stop_profiler(): continuous profiling is not set up")
        return
    sdk_stop_profiler()


def fallback_reason() -> str | None:
    """Why sentry-sdk's own profiler is in use, or None when sigprof samples."""
    return _fallback_reason


# ---- installing ----


def _export_names() -> None:
    # The reference documentation calls these through the sentry_sdk module.
    sentry_sdk.profile = profile  # type: ignore[attr-defined]
    sentry_sdk.start_profiling_span = start_profiling_span  # type: ignore[attr-defined]


def _install() -> None:
    if sdk_api.GENERATION == 2:
        installed = sdk_api.install(
            setup_continuous_profiler=_setup_continuous_profiler,
            flush_wrapper=_flush_with_chunks,
            setup_profiler=_setup_profiler,
            profile_class=NativeProfile,
            start_segment_profile=None,
        )
    else:
        installed = sdk_api.install(
            setup_continuous_profiler=_setup_continuous_profiler,
            flush_wrapper=_flush_with_chunks,
            setup_profiler=None,
            profile_class=None,
            start_segment_profile=_start_root_span_profile,
        )
    if installed:
        SOURCE.on_native_unavailable = _native_unavailable_at_start
        SOURCE.logger = logger


def _uninstall() -> None:
    sdk_api.uninstall()


def _configure_from(options: dict[str, Any]) -> SigprofIntegration | None:
    for integration in options.get("integrations") or ():
        if isinstance(integration, SigprofIntegration):
            SOURCE.configure(integration.frequency, integration.clock, integration.max_stack_depth)
            thread_hooks.install()
            thread_hooks.leave_out_sentry_threads(not integration.sample_sentry_threads)
            return integration
    return None


def _setup_profiler(options: dict[str, Any]) -> bool:
    _configure_from(options)
    teardown_native_continuous_profiler()
    return setup_native_profiler(options)


def _setup_continuous_profiler(options: dict[str, Any], sdk_info: Any, capture_func: Any) -> bool:
    integration = _configure_from(options)
    if sdk_api.GENERATION == 2:
        teardown_native_profiler()
    rates = integration.root_span_rates if integration is not None else None
    return setup_native_continuous_profiler(options, sdk_info, capture_func, rates)


def _start_root_span_profile(span: Any) -> Any:
    """sentry-sdk 3.x asks this as a root span starts (see sdk_api)."""
    scheduler = sdk_api.continuous_scheduler()
    if isinstance(scheduler, NativeContinuousScheduler):
        return scheduler.start_for_root_span(span)
    return None if scheduler is None else scheduler.auto_start()


def _flush_with_chunks(original: Any) -> Any:
    @functools.wraps(original)
    def flush(self: Any, *args: Any, **kwargs: Any) -> Any:
        # sentry_sdk.flush() and close() send the current chunk first.
        if self.transport is not None:
            try:
                SESSION.flush()
            except Exception:  # noqa: BLE001 - never let profiling break a flush
                logger.debug("[Profiling] could not flush the profile chunk", exc_info=True)
        return original(self, *args, **kwargs)

    return flush


def _fall_back(reason: str) -> None:
    global _fallback_reason
    with _lock:
        first = _fallback_reason is None
        _fallback_reason = reason
    if first:
        warnings.warn(
            f"sigprof: the native sampler cannot run here ({reason}); "
            "using sentry-sdk's own profiler instead",
            SigprofFallbackWarning,
            stacklevel=3,
        )


def _native_unavailable_at_start(error: NativeUnavailable) -> None:
    """The sampler refused to start after all: hand profiling back to the SDK
    for the next transactions and sessions."""
    _fall_back(str(error))
    _uninstall()
    client = sentry_sdk.get_client()
    options = getattr(client, "options", None)
    if not isinstance(options, dict):
        return
    if sdk_api.GENERATION == 2 and sdk_api.restore_sdk_transaction_profiler(options):
        return
    if sdk_api.continuous_scheduler() is not None:
        teardown_native_continuous_profiler()
        transport = client.transport
        if transport is not None:
            sdk_api.original_setup_continuous_profiler()(
                options, sdk_info=sdk_api.sdk_info(), capture_func=transport.capture_envelope
            )
