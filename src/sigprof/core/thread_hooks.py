"""Threads meet the native sampler as they start, not at its next scan.

`threading.Thread.start` goes through `threading._start_new_thread` (3.9 to
3.12) or `threading._start_joinable_thread` (3.13+). Wrapped, the function a
new thread runs first registers the thread (taking its registry slot and,
in the cpu clock, arming its timer) while a sampler runs, so a thread that
lives 10 ms is sampled for all of it. Nothing runs per sample, and nothing at
all for threads started while no sampler runs. Threads started any other way
(from C, or `_thread.start_new_thread` directly) are still found by the
collector's scan, a tick or so after they start.

sigprof's own threads, and sentry-sdk's own threads unless asked otherwise,
are excluded instead: never registered, in this run or a later one. They are
started with SIGPROF blocked, and unblock it only once excluded, so a signal
sent in their first instants finds them already gone from the registry.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from types import ModuleType
from typing import Any, Callable

_native: ModuleType | None
try:
    from sigprof import _native
except ImportError:  # no native sampler here: nothing to register with
    _native = None

# The function `threading.Thread.start` starts a thread with: 3.13+, then 3.9-3.12.
_START_FUNCTIONS = ("_start_joinable_thread", "_start_new_thread")
_SIGPROF_ONLY = {signal.SIGPROF}

_thread_names: dict[int, str] | None = None  # the running sampler's, by thread ident
_sentry_threads_left_out = False


def install(thread_names: dict[int, str] | None = None) -> None:
    """Wraps threading's thread start (once); thread_names, when given, is
    where the running sampler wants the names of the threads it registers."""
    global _thread_names
    if thread_names is not None:
        _thread_names = thread_names
    for name in _START_FUNCTIONS:
        start = getattr(threading, name, None)
        if start is not None and not getattr(start, "__sigprof_hooked__", False):
            setattr(threading, name, _hooked(start))


def leave_out_sentry_threads(left_out: bool) -> None:
    """Whether threads sentry-sdk starts (its transport worker, its
    monitor...) are excluded from sampling. They are by default."""
    global _sentry_threads_left_out
    _sentry_threads_left_out = left_out


def exclude_current_sentry_thread() -> None:
    """On a thread of sentry-sdk's started before the hook was in place. Not
    on the main thread, where sentry-sdk's worker is a green thread under
    gevent or eventlet."""
    if _sentry_threads_left_out and _native is not None and _os_thread_id() != os.getpid():
        _native.exclude_current_thread()


def start_unsampled(
    start: Callable[..., Any], function: Callable[..., object], *args: Any, **kwargs: Any
) -> Any:
    """`start(function, *args, **kwargs)` (`_thread.start_new_thread`, say)
    for a thread that is never sampled."""
    if _native is None:
        return start(function, *args, **kwargs)
    blocked_before = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGPROF_ONLY)
    _native.unsampled_start_begin()
    try:
        return start(_excluded(function), *args, **kwargs)
    except BaseException:
        _native.unsampled_start_end()
        raise
    finally:
        if signal.SIGPROF not in blocked_before:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGPROF_ONLY)


def _os_thread_id_getter() -> Callable[[], int]:
    from sigprof.core.housekeeping import original

    get_native_id: Callable[[], int] = original("_thread", "get_native_id")
    return get_native_id


def _os_thread_id() -> int:
    return _os_thread_id_getter()()


def _excluded(function: Callable[..., object]) -> Callable[..., object]:
    # Looked up here, by the starter: the new thread calls nothing before
    # it is excluded that could block (an import would, on the import lock,
    # and the ticker reads a blocked thread's stack without a signal).
    os_thread_id = _os_thread_id_getter()
    assert _native is not None
    exclude, started = _native.exclude_current_thread, _native.unsampled_start_end
    starter = os_thread_id()

    def run_excluded(*args: Any, **kwargs: Any) -> object:
        # Under gevent or eventlet a "thread" may be a green one on the
        # starter's own OS thread, which must stay sampled.
        try:
            if os_thread_id() != starter:
                exclude()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGPROF_ONLY)
        finally:
            started()
        return function(*args, **kwargs)

    return run_excluded


def _registered(function: Callable[..., object], name: str | None) -> Callable[..., object]:
    def run_registered(*args: Any, **kwargs: Any) -> object:
        assert _native is not None
        names = _thread_names
        _native.register_current_thread()
        # Named whoever registered it: the collector's scan may have been
        # first, and the thread is not in threading._active yet.
        if names is not None and name is not None:
            names[threading.get_ident()] = name
        return function(*args, **kwargs)

    return run_registered


def _is_sentry_thread(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None) or thread.run
    module = getattr(target, "__module__", None) or ""
    return module == "sentry_sdk" or module.startswith("sentry_sdk.")


def mark_unsampled(thread: threading.Thread) -> threading.Thread:
    """A thread of sigprof's own, not yet started: it will never be sampled."""
    thread._sigprof_unsampled = True  # type: ignore[attr-defined]
    return thread


def _hooked(start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(start)
    def start_and_register(function: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
        thread = getattr(function, "__self__", None)
        if not isinstance(thread, threading.Thread):
            return start(function, *args, **kwargs)
        if getattr(thread, "_sigprof_unsampled", False) or (
            _sentry_threads_left_out and _is_sentry_thread(thread)
        ):
            return start_unsampled(start, function, *args, **kwargs)
        if _native is not None and _native.running():
            function = _registered(function, thread.name)
        return start(function, *args, **kwargs)

    start_and_register.__sigprof_hooked__ = True  # type: ignore[attr-defined]
    return start_and_register
