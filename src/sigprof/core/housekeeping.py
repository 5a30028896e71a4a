"""A background OS thread that runs a task repeatedly, even under gevent or
eventlet. It is never sampled (see sigprof.core.thread_hooks).

gevent's (and eventlet's) monkey patching turns `threading.Thread` into a greenlet, which
would only run when the event loop yields; the drains and chunk flushes must
not depend on that. So this thread is started with the original
`_thread.start_new_thread` and sleeps on an original lock.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any, Callable

from sigprof.core.thread_hooks import start_unsampled

# Stay deliverable on threads that block process-directed signals: faults
# (they cannot wait) and SIGPROF (the thread is sampled like any other).
_KEPT_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
                 signal.SIGSYS, signal.SIGPROF}


def original(module: str, name: str) -> Any:
    # eventlet first: sentry-sdk imports gevent whenever it is installed, and
    # gevent's getoriginal() hands back whatever eventlet patched in.
    if "eventlet" in sys.modules:
        try:
            from eventlet import patcher  # type: ignore[import-untyped,import-not-found,unused-ignore]

            if patcher.is_monkey_patched("thread"):
                return getattr(patcher.original(module), name)
        except ImportError:  # pragma: no cover - a partial eventlet
            pass
    if "gevent" in sys.modules:
        try:
            from gevent.monkey import get_original  # type: ignore[import-untyped,import-not-found,unused-ignore]

            return get_original(module, name)
        except ImportError:  # pragma: no cover - gevent without monkey
            pass
    return getattr(__import__(module), name)


def block_process_signals() -> None:
    """Process-directed signals then go to another thread of the process.
    A host's C handler that exits or takes locks (uWSGI's workers call exit()
    in theirs) must not run on a thread that holds sigprof's locks or has the
    last envelopes to send. Python-level handlers run on the main thread
    anyway. Never on the main thread itself, where a green thread of gevent or
    eventlet runs: the program would no longer get its signals."""
    if original("_thread", "get_native_id")() == os.getpid():
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _KEPT_SIGNALS)


def os_thread_rlock() -> Any:
    """An RLock that blocks the OS thread even under monkey patching. The
    housekeeping thread shares its owners' locks with the program's threads,
    and a green lock cannot be handed from one OS thread to another (under
    eventlet a green thread waiting for one the housekeeping thread held was
    never woken)."""
    return original("_thread", "RLock")()


class HousekeepingThread:
    """Runs `task` until it returns None; its return value is the pause, in
    seconds, before the next round. `wake()` cuts a pause short."""

    def __init__(self, name: str, task: Callable[[], float | None]) -> None:
        self.name = name
        self._task = task
        self._lock = original("_thread", "allocate_lock")()
        self._wakeup = original("_thread", "allocate_lock")()
        self._wakeup.acquire()
        self._running_in: int | None = None

    def ensure_running(self, pid: int) -> None:
        with self._lock:
            if self._running_in == pid:
                return
            self._running_in = pid
        start_unsampled(original("_thread", "start_new_thread"), self._run, ())

    def mark_exiting(self) -> None:
        """Called by the task, under the owner's lock, before it returns None:
        the next ensure_running() then starts a new thread."""
        with self._lock:
            self._running_in = None

    def wake(self) -> None:
        try:
            self._wakeup.release()
        except RuntimeError:  # already woken and not yet waited on
            pass

    def _run(self) -> None:
        block_process_signals()
        while True:
            try:
                pause = self._task()
            except Exception:
                logging.getLogger("sigprof").exception("[Profiling] a housekeeping round failed")
                pause = 1.0
            if pause is None:
                return
            self._wakeup.acquire(True, pause)
