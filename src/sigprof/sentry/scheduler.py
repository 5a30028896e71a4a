"""sentry-sdk's continuous profiler, driven by the native sampler.

sentry-sdk routes `sentry_sdk.profiler.start_profiler()`/`stop_profiler()`,
the trace lifecycle, `continuous_profiling_auto_start` and
`get_profiler_id()` through the scheduler object in
`sentry_sdk.profiler.continuous_profiler._scheduler`. sigprof puts a
`NativeContinuousScheduler` there: the SDK's lifecycle rules stay as they
are, and the session it starts is sigprof's chunk session.

On sentry-sdk 3.x, which removed transaction profiles, `profiles_sample_rate`
and `profiles_sampler` given to `sigprof.init` decide per root span whether
the session records that span's time. Every decision is made in `sampling`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from sentry_sdk.profiler.continuous_profiler import ContinuousProfile, ContinuousScheduler
from sentry_sdk.utils import logger

from sigprof.core.process_life import ForkStage, after_fork_in_child, at_main_thread_exit
from sigprof.sentry import sdk_api
from sigprof.sentry.sampling import RootSpanRates, lifecycle_valid, session_sampled
from sigprof.sentry.session import SESSION

_MANUAL = "manual-lifecycle"
class NativeContinuousProfile(ContinuousProfile):
    """Handed to a sampled root span under the trace lifecycle; its stop()
    (when the root span ends) lets the session end after a short linger."""

    def stop(self) -> None:
        if self.active:
            super().stop()
            SESSION.release(self, linger=True)


class NativeContinuousScheduler(ContinuousScheduler):
    """The SDK's continuous scheduler interface, over sigprof's chunk session."""

    mode = "sigprof"  # type: ignore[assignment]

    def __init__(
        self,
        frequency: int,
        options: dict[str, Any],
        sdk_info: Any,
        capture_func: Callable[..., None],
        root_span_rates: RootSpanRates | None = None,
    ) -> None:
        # The base draws the session decision anew and raises on a rate that
        # is not a number: it sees no rate, and sigprof decides once per
        # process (session_sampled), warning on a bad rate.
        base_options = {**options, "profile_session_sample_rate": None}
        super().__init__(frequency, base_options, sdk_info, capture_func)
        self.options = options
        self.root_span_rates = root_span_rates
        self.sampled = session_sampled(options.get("profile_session_sample_rate"))
        if self.sampled:
            lifecycle_valid(self.lifecycle)

    def make_sampler(self) -> Any:
        return lambda *args, **kwargs: False

    def resume_after_fork(self) -> None:
        """In a forked child, a manual session started before the fork goes
        on as a new session of the child's own (a pre-fork server that
        imports the app in its master: gunicorn --preload, uWSGI without
        lazy-apps). Without this every worker would go unprofiled while
        stamping the master's profiler_id on its spans."""
        if SESSION.forget_if_forked() and self.running:
            self.running = False
            self.ensure_running()

    def is_auto_start_enabled(self) -> bool:
        if self.pid == os.getpid():
            return False
        experiments = self.options.get("_experiments") or {}
        return bool(experiments.get("continuous_profiling_auto_start"))

    def auto_start(self) -> Any:
        self.resume_after_fork()
        if not self.sampled or self.lifecycle != "trace":
            return None
        return self._hold_for_root_span()

    def start_for_root_span(self, span: Any) -> Any:
        """sentry-sdk 3.x, as a root span starts: with `profiles_sample_rate`
        or `profiles_sampler` given to sigprof.init, their decision for this
        span; otherwise the SDK's own trace lifecycle (auto_start)."""
        if self.root_span_rates is None:
            return self.auto_start()
        self.resume_after_fork()
        if not self.root_span_rates.decide(sdk_api.root_span_sampling_context(span)):
            return None
        return self._hold_for_root_span()

    def _hold_for_root_span(self) -> NativeContinuousProfile | None:
        profile = NativeContinuousProfile()
        if not SESSION.hold(profile):
            return None
        self.pid = os.getpid()
        return profile

    def manual_start(self) -> None:
        self.resume_after_fork()
        if not self.sampled:
            logger.debug("[Profiling] Profile session not sampled: start_profiler() does nothing")
            return
        if self.lifecycle != "manual":
            logger.warning(
                "[Profiling] start_profiler() has no effect with profile_lifecycle=%r",
                self.lifecycle,
            )
            return
        self.ensure_running()

    def manual_stop(self) -> None:
        if self.lifecycle != "manual":
            logger.warning(
                "[Profiling] stop_profiler() has no effect with profile_lifecycle=%r",
                self.lifecycle,
            )
            return
        if not SESSION.holds(_MANUAL):
            logger.warning("[Profiling] stop_profiler() called but the profiler was not started")
            return
        self.teardown()

    def ensure_running(self) -> None:
        self.pid = os.getpid()
        if SESSION.hold(_MANUAL):
            self.running = True

    def teardown(self) -> None:
        self.running = False
        SESSION.release(_MANUAL)

    def reset_buffer(self) -> None:
        pass

    @property
    def profiler_id(self) -> str | None:
        # sentry-sdk asks for it as every span starts: the first request of
        # a worker forked from C (no Python fork hooks ran) resumes here.
        self.resume_after_fork()
        return SESSION.profiler_id

    def run(self) -> None:
        pass


def _resume_in_child() -> None:
    scheduler = sdk_api.continuous_scheduler()
    if isinstance(scheduler, NativeContinuousScheduler):
        scheduler.resume_after_fork()
    else:
        SESSION.forget_if_forked()


after_fork_in_child(ForkStage.SESSIONS, _resume_in_child)

_atexit_registered = False


def setup_native_continuous_profiler(
    options: dict[str, Any],
    sdk_info: Any,
    capture_func: Callable[..., None],
    root_span_rates: RootSpanRates | None = None,
) -> bool:
    """Replaces sentry-sdk's setup_continuous_profiler()."""
    global _atexit_registered
    if sdk_api.continuous_scheduler() is not None:
        logger.debug("[Profiling] Continuous Profiler is already setup")
        teardown_native_continuous_profiler()
    if options.get("profiler_mode") not in (None, "thread", "gevent"):
        raise ValueError("Unknown continuous profiler mode: {}".format(options["profiler_mode"]))
    from sigprof.core.sample_source import SOURCE

    sdk_api.set_continuous_scheduler(
        NativeContinuousScheduler(
            int(SOURCE.frequency), options, sdk_info, capture_func, root_span_rates
        )
    )
    logger.debug("[Profiling] Setting up continuous profiler in sigprof (native) mode")
    if not _atexit_registered:
        # Ends the session, sending its last chunk, as the program ends.
        at_main_thread_exit(SESSION.end)
        _atexit_registered = True
    return True


def teardown_native_continuous_profiler() -> None:
    scheduler = sdk_api.continuous_scheduler()
    if scheduler is not None:
        if isinstance(scheduler, NativeContinuousScheduler):
            scheduler.running = False
            SESSION.release(_MANUAL)
        else:
            scheduler.teardown()
    sdk_api.set_continuous_scheduler(None)
