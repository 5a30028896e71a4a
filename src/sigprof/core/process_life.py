"""Process life shared by the wings: the hooks that run in a forked child,
before the program execs and as it ends, registered here so their order is
set in one place rather than by which module happened to be imported first."""

from __future__ import annotations

import atexit
import enum
import os
import threading
from typing import Callable


class ForkStage(enum.IntEnum):
    """Order of the hooks run in a forked child: the layer below forgets the
    parent first, so a layer above may already use it again."""

    SAMPLER = 0  # the native sampler of the parent is gone
    SAMPLE_SOURCE = 1  # the shared source, its consumers and its thread
    SESSIONS = 2  # chunk cutters and Sentry's schedulers
    RUN = 3  # `sigprof run`'s recording of the child (--subprocesses)


_child_hooks: list[tuple[ForkStage, int, Callable[[], None]]] = []


def after_fork_in_child(stage: ForkStage, hook: Callable[[], None]) -> None:
    """Runs `hook` in the child after `os.fork()`, after every hook of an
    earlier stage (and, within a stage, in registration order)."""
    _child_hooks.append((stage, len(_child_hooks), hook))
    _child_hooks.sort(key=lambda entry: (entry[0], entry[1]))


def _run_child_hooks() -> None:
    for _, _, hook in _child_hooks:
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_child_hooks)


_exec_hooks: list[Callable[[str], None]] = []


def before_exec(hook: Callable[[str], None]) -> None:
    """Runs `hook(path)` as the program calls an os.exec* function (the
    native sampler's exec guard calls run_exec_hooks), in registration order."""
    _exec_hooks.append(hook)


def run_exec_hooks(path: str) -> None:
    for hook in _exec_hooks:
        hook(path)


def at_interpreter_exit(hook: Callable[[], None]) -> None:
    """Runs `hook` at `atexit` time (after every at_main_thread_exit hook)."""
    atexit.register(hook)


def at_main_thread_exit(hook: Callable[[], None]) -> None:
    """Runs `hook` when the main thread finishes, before `atexit`.

    Two things need that moment: a last chunk must be sent while threads can
    still start (the transport's worker thread starts on its first envelope,
    and at `atexit` time Python 3.12+ refuses new threads), and it must be
    cut before the native sampler is stopped at `atexit`.
    `threading._register_atexit` hooks run then; plain `atexit` is the
    fallback (already shutting down, or an interpreter without it)."""
    register = getattr(threading, "_register_atexit", None)
    if callable(register):
        try:
            register(hook)
            return
        except RuntimeError:  # the interpreter is already shutting down
            pass
    atexit.register(hook)


def interrupt_thread_after(native_id: int, seconds: float) -> None:
    """A SIGINT to the thread `native_id` after `seconds`, from a kernel timer,
    so that it arrives as a real Ctrl-C does (0 cancels the one armed)."""
    from sigprof import _native

    _native.interrupt_thread_after(native_id, seconds)
