"""sentry-sdk's continuous profiler, driven by the native sampler.

sentry-sdk routes `sentry_sdk.profiler.start_profiler()`/`stop_profiler()`,
the trace lifecycle, `continuous_profiling_auto_start` and
`get_profiler_id()` through the scheduler object in
`sentry_sdk.profiler.continuous_profiler._scheduler`. sigprof puts a
`NativeContinuousScheduler` there: the SDK's lifecycle rules stay as they
are, and the session it starts is sigprof's chunk session.
"""

from __future__ import annotations

import atexit
import os
import random
import threading
from typing import Any, Callable

from sentry_sdk.profiler import continuous_profiler as sdk_continuous
from sentry_sdk.utils import is_valid_sample_rate, logger

from sigprof.continuous import SESSION

_MANUAL = "manual-lifecycle"
LIFECYCLES = ("manual", "trace")

# (pid, rate, decision): the session sample decision is made once per
# process for a given rate, so a second init() does not re-roll it.
_decision: tuple[int, Any, bool] | None = None


def session_sampled(rate: Any) -> bool:
    """profile_session_sample_rate's decision, made once per process."""
    global _decision
    if _decision is not None and _decision[0] == os.getpid() and _decision[1] == rate:
        return _decision[2]
    if rate is None:
        sampled = False
    elif not is_valid_sample_rate(rate, source="Continuous Profiling"):
        logger.warning(
            "[Profiling] Continuous profiling is off: invalid profile_session_sample_rate"
        )
        sampled = False
    else:
        sampled = random.random() < float(rate)
    _decision = (os.getpid(), rate, sampled)
    return sampled


class NativeContinuousProfile(sdk_continuous.ContinuousProfile):
    """Handed to a sampled root span under the trace lifecycle; its stop()
    (when the root span ends) lets the session end after a short linger."""

    def stop(self) -> None:
        if self.active:
            super().stop()
            SESSION.release(self, linger=True)


class NativeContinuousScheduler(sdk_continuous.ContinuousScheduler):
    """The SDK's continuous scheduler interface, over sigprof's chunk session."""

    mode = "sigprof"  # type: ignore[assignment]

    # The base __init__ builds a pure-Python sampler and raises on invalid
    # rates; this one sets the same public attributes itself.
    def __init__(
        self,
        frequency: int,
        options: dict[str, Any],
        sdk_info: Any,
        capture_func: Callable[..., None],
    ) -> None:
        self.interval = 1.0 / frequency
        self.options = options
        self.sdk_info = sdk_info
        self.capture_func = capture_func
        self.lifecycle = options.get("profile_lifecycle")
        self.sampled = session_sampled(options.get("profile_session_sample_rate"))
        if self.sampled and self.lifecycle not in LIFECYCLES:
            logger.warning(
                "[Profiling] Continuous profiling is off: profile_lifecycle must be "
                "'manual' or 'trace', not %r",
                self.lifecycle,
            )
        self.buffer = None
        self.pid: int | None = None
        self.running = False
        self.soft_shutdown = False

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

    def auto_start(self) -> sdk_continuous.ContinuousProfile | None:
        self.resume_after_fork()
        if not self.sampled or self.lifecycle != "trace":
            return None
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
    scheduler = sdk_continuous._scheduler
    if isinstance(scheduler, NativeContinuousScheduler):
        scheduler.resume_after_fork()
    else:
        SESSION.forget_if_forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_resume_in_child)

_atexit_registered = False


def setup_native_continuous_profiler(
    options: dict[str, Any], sdk_info: Any, capture_func: Callable[..., None]
) -> bool:
    """Replaces sentry-sdk's setup_continuous_profiler()."""
    global _atexit_registered
    if sdk_continuous._scheduler is not None:
        logger.debug("[Profiling] Continuous Profiler is already setup")
        teardown_native_continuous_profiler()
    if options.get("profiler_mode") not in (None, "thread", "gevent"):
        raise ValueError("Unknown continuous profiler mode: {}".format(options["profiler_mode"]))
    from sigprof.sample_source import SOURCE

    sdk_continuous._scheduler = NativeContinuousScheduler(
        int(SOURCE.frequency), options, sdk_info, capture_func
    )
    logger.debug("[Profiling] Setting up continuous profiler in sigprof (native) mode")
    if not _atexit_registered:
        register_exit_flush()
        _atexit_registered = True
    return True


def teardown_native_continuous_profiler() -> None:
    scheduler = sdk_continuous._scheduler
    if scheduler is not None:
        if isinstance(scheduler, NativeContinuousScheduler):
            scheduler.running = False
            SESSION.release(_MANUAL)
        else:
            scheduler.teardown()
    sdk_continuous._scheduler = None


def register_exit_flush() -> None:
    """Ends the session (sending its last chunk) when the interpreter exits.

    It must run while threads can still start: the transport's worker
    thread starts on its first envelope, and at `atexit` time Python 3.12+
    refuses new threads. `threading._register_atexit` hooks run before
    that, when the main thread finishes; plain `atexit` is the fallback.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(SESSION.end)
            return
        except RuntimeError:  # already shutting down
            pass
    atexit.register(SESSION.end)
