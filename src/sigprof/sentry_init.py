"""`sigprof.init(...)` and `SigprofIntegration`: sentry-sdk with native profiling.

sentry-sdk sets its profilers up inside `Client.__init__`, after the
integrations, by calling `setup_profiler` (transaction profiles) or
`setup_continuous_profiler` (continuous profiling) from `sentry_sdk.client`.
The integration's `setup_once` points those two names, and the `Profile`
class `sentry_sdk.scope` builds, at sigprof's versions. Every decision and
every payload shape stays sentry-sdk's; only the sampling changes.

Where the native sampler cannot run, none of that is patched: sentry-sdk's
own profiler does the work, after exactly one warning.
"""

from __future__ import annotations

import functools
import importlib
import threading
import warnings
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.profiler import continuous_profiler as sdk_continuous
from sentry_sdk.profiler import transaction_profiler as sdk_profiler
from sentry_sdk.utils import is_valid_sample_rate, logger

# The names patched below are imported, not exported, by these modules.
_sdk_client: Any = importlib.import_module("sentry_sdk.client")
_sdk_scope: Any = importlib.import_module("sentry_sdk.scope")

from sigprof import local_chunks
from sigprof.continuous import SESSION
from sigprof.continuous_scheduler import (
    setup_native_continuous_profiler,
    teardown_native_continuous_profiler,
)
from sigprof.local_chunks import LocalChunkWriter, output_dir_from_env
from sigprof.sample_source import SOURCE
from sigprof.sampler import (
    CLOCKS,
    MAX_STACK_DEPTH,
    NativeUnavailable,
    SamplerError,
    check_frequency,
    check_int,
    native_unavailable_reason,
)
from sigprof.spans import profile, start_profiling_span
from sigprof.transaction_profiles import (
    NativeProfile,
    setup_native_profiler,
    teardown_native_profiler,
)


class SigprofFallbackWarning(RuntimeWarning):
    """The native sampler cannot run here: sentry-sdk's own profiler is used."""


_lock = threading.Lock()
_originals: dict[str, Any] = {}
_fallback_reason: str | None = None
_init_calls = 0
_local_writer: LocalChunkWriter | None = None


class SigprofIntegration(Integration):
    """Add to `sentry_sdk.init(integrations=[...])` to profile with sigprof."""

    identifier = "sigprof"

    def __init__(
        self, *, frequency: float = 101, clock: str = "wall", max_stack_depth: int = 128
    ) -> None:
        # Checked here, naming the option: the sampler starts later, inside
        # a transaction or a profiler session, where an error would lose it.
        self.frequency = check_frequency(frequency)
        if clock not in CLOCKS:
            raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
        self.clock = clock
        self.max_stack_depth = check_int("max_stack_depth", max_stack_depth, 1, MAX_STACK_DEPTH)

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
    init_debug = getattr(_sdk_client, "_client_init_debug", None)
    token = init_debug.set(bool(kwargs.get("debug"))) if init_debug is not None else None
    try:
        if again:
            logger.warning(
                "[Profiling] sigprof.init() called again: the new client replaces the old"
            )
        for key in ("profiles_sample_rate", "profile_session_sample_rate"):
            # sentry-sdk compares these with 0 before validating them, so a
            # string would make init() itself raise; warn like it does instead.
            rate = kwargs.get(key)
            if rate is not None and not is_valid_sample_rate(rate, source=f"Profiling ({key})"):
                kwargs[key] = None
        _default_tracing_for_profiles(kwargs)
    finally:
        if init_debug is not None and token is not None:
            init_debug.reset(token)
    integrations: list[Any] = list(kwargs.get("integrations") or [])
    if not any(isinstance(integration, SigprofIntegration) for integration in integrations):
        integrations.append(SigprofIntegration())
    kwargs["integrations"] = integrations
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


_TRACING_KEYS = ("traces_sample_rate", "traces_sampler", "enable_tracing")


def _default_tracing_for_profiles(kwargs: dict[str, Any]) -> None:
    """Transaction profiles exist only for sampled transactions: asking for
    them without any tracing option would silently produce nothing (the
    reference document's first snippet does exactly that). Trace everything
    then, and say so."""
    wants_profiles = kwargs.get("profiles_sampler") is not None or bool(
        kwargs.get("profiles_sample_rate")
    )
    if wants_profiles and all(kwargs.get(key) is None for key in _TRACING_KEYS):
        kwargs["traces_sample_rate"] = 1.0
        logger.warning(
            "[Profiling] profiles_sample_rate/profiles_sampler need sampled transactions; "
            "sigprof.init() set traces_sample_rate=1.0 because no tracing option was given"
        )


def start_profiler() -> None:
    """`sentry_sdk.profiler.start_profiler()`, with a warning when continuous
    profiling is not configured (transaction profiling is on, or no init)."""
    if sdk_continuous._scheduler is None:
        logger.warning(
            "[Profiling] start_profiler(): continuous profiling is not set up "
            "(call sigprof.init() without profiles_sample_rate/profiles_sampler)"
        )
        return
    sdk_continuous.start_profiler()


def stop_profiler() -> None:
    """`sentry_sdk.profiler.stop_profiler()`."""
    if sdk_continuous._scheduler is None:
        logger.warning("[Profiling] stop_profiler(): continuous profiling is not set up")
        return
    sdk_continuous.stop_profiler()


def fallback_reason() -> str | None:
    """Why sentry-sdk's own profiler is in use, or None when sigprof samples."""
    return _fallback_reason


# ---- installing ----


def _export_names() -> None:
    # The reference documentation calls these through the sentry_sdk module.
    sentry_sdk.profile = profile  # type: ignore[attr-defined]
    sentry_sdk.start_profiling_span = start_profiling_span  # type: ignore[attr-defined]


def _install() -> None:
    with _lock:
        if _originals:
            return
        _originals["setup_profiler"] = _sdk_client.setup_profiler
        _originals["setup_continuous_profiler"] = _sdk_client.setup_continuous_profiler
        _originals["Profile"] = _sdk_scope.Profile
        _originals["flush"] = _sdk_client._Client.flush
        _sdk_client.setup_profiler = _setup_profiler
        _sdk_client.setup_continuous_profiler = _setup_continuous_profiler
        _sdk_scope.Profile = NativeProfile
        _sdk_client._Client.flush = _flush_with_chunks(_originals["flush"])
        SOURCE.on_native_unavailable = _native_unavailable_at_start


def _uninstall() -> None:
    with _lock:
        if not _originals:
            return
        _sdk_client.setup_profiler = _originals.pop("setup_profiler")
        _sdk_client.setup_continuous_profiler = _originals.pop("setup_continuous_profiler")
        _sdk_scope.Profile = _originals.pop("Profile")
        _sdk_client._Client.flush = _originals.pop("flush")


def _configure_from(options: dict[str, Any]) -> None:
    for integration in options.get("integrations") or ():
        if isinstance(integration, SigprofIntegration):
            SOURCE.configure(integration.frequency, integration.clock, integration.max_stack_depth)
            return


def _setup_profiler(options: dict[str, Any]) -> bool:
    _configure_from(options)
    teardown_native_continuous_profiler()
    return setup_native_profiler(options)


def _setup_continuous_profiler(options: dict[str, Any], sdk_info: Any, capture_func: Any) -> bool:
    _configure_from(options)
    teardown_native_profiler()
    return setup_native_continuous_profiler(options, sdk_info, capture_func)


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
    if isinstance(sdk_profiler._scheduler, sdk_profiler.Scheduler) and not isinstance(
        sdk_profiler._scheduler, sdk_profiler.ThreadScheduler
    ):
        sdk_profiler._scheduler = None
        sdk_profiler.setup_profiler(options)
    elif sdk_continuous._scheduler is not None:
        teardown_native_continuous_profiler()
        from sentry_sdk.client import SDK_INFO

        transport = client.transport
        if transport is not None:
            sdk_continuous.setup_continuous_profiler(
                options, sdk_info=SDK_INFO, capture_func=transport.capture_envelope
            )
