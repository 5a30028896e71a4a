"""The low-level sampler: start and stop native sampling, read what it took.

    sampler = sigprof.Sampler(frequency=101, clock="wall", max_stack_depth=128)
    with sampler:
        work()
    sampler.samples()   # [Sample(timestamp_ns, thread_id, thread_name, frames)]
    sampler.stats()

``samples()`` is for people and tests; higher layers use ``drain()``, which
gives frames and stacks interned (each sent once, then referred to by id).
Use one or the other on a sampler, not both.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
from typing import Any, Callable, NamedTuple

from sigprof._native_support import this_interpreter_unsupported_reason
from sigprof.core import thread_hooks
from sigprof.core.naming import ModuleIndex, QualnameIndex
from sigprof.core.process_life import (
    ForkStage,
    after_fork_in_child,
    at_interpreter_exit,
    run_exec_hooks,
)

DEFAULT_FREQUENCY = 101
MAX_FREQUENCY = 500  # a 2 ms interval: faster livelocks some event loops
MAX_STACK_DEPTH = 4096
MAX_BUFFER_CAPACITY = 1 << 20
CLOCKS = ("wall", "cpu")


def clock_anchor(tries: int = 5) -> tuple[int, int]:
    """(Unix ns, monotonic ns) of one instant. The two clocks are read apart,
    and the GIL may pass to another thread between the reads: of a few
    monotonic brackets around a Unix read, the tightest is kept."""
    best: tuple[int, int, int] | None = None
    for _ in range(tries):
        before = time.monotonic_ns()
        unix_ns = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, unix_ns, (before + after) // 2)
    assert best is not None
    return best[1], best[2]


class NativeUnavailable(RuntimeError):
    """The native sampler cannot run in this process; str() says why."""


class SamplerError(RuntimeError):
    """The native sampler refused to start (another profiler owns SIGPROF,
    a sampler is already running, ...); str() says why."""


class Frame(NamedTuple):
    function: str
    filename: str
    module: str | None
    lineno: int


class Sample(NamedTuple):
    timestamp_ns: int  # CLOCK_MONOTONIC, as time.monotonic_ns() and time.perf_counter_ns()
    thread_id: int  # threading.get_ident()
    thread_name: str | None
    frames: tuple[Frame, ...]  # leaf first


class Batch(NamedTuple):
    """What drain() returns: the frames and stacks not given before (their ids
    count on from first_frame_id and first_stack_id), and the samples as
    (timestamp_ns, thread_id, stack_id). A stack is a tuple of frame ids, leaf
    first."""

    first_frame_id: int
    frames: list[Frame]
    first_stack_id: int
    stacks: list[tuple[int, ...]]
    samples: list[tuple[int, int, int]]


UNKNOWN_FRAME = Frame("<unknown>", "<unknown>", None, 0)
TRUNCATED_FRAME = Frame("<truncated>", "<sigprof>", None, 0)


def native_unavailable_reason() -> str | None:
    """Why the native sampler cannot run here, or None if it can."""
    reason = this_interpreter_unsupported_reason()
    if reason is not None:
        return reason
    try:
        from sigprof import _native
    except ImportError as error:
        return f"the native extension could not be imported: {error}"
    ok, why = _native.supported()
    return None if ok else why


def check_frequency(frequency: object) -> float:
    if isinstance(frequency, bool) or not isinstance(frequency, (int, float)):
        raise TypeError(f"frequency must be a number of samples per second, not {frequency!r}")
    if not math.isfinite(frequency) or not 0 < frequency <= MAX_FREQUENCY:
        raise ValueError(
            f"frequency must be above 0 and at most {MAX_FREQUENCY} Hz (a 2 ms interval), "
            f"not {frequency!r}"
        )
    return float(frequency)


def check_clock(clock: object) -> str:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
    return str(clock)


def check_sampling_options(
    frequency: object, clock: object, max_stack_depth: object
) -> tuple[float, str, int]:
    """The options every sampler takes, checked: the Sampler and the Sentry
    integration (which checks them at init, long before its sampler starts)."""
    return (
        check_frequency(frequency),
        check_clock(clock),
        check_int("max_stack_depth", max_stack_depth, 1, MAX_STACK_DEPTH),
    )


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value


def _check_capacity(value: object) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 16 <= value <= MAX_BUFFER_CAPACITY
        or value & (value - 1)
    ):
        raise ValueError(
            f"buffer_capacity must be a power of two from 16 to {MAX_BUFFER_CAPACITY}, "
            f"or None, not {value!r}"
        )
    return value


_running: Sampler | None = None
_running_lock = threading.Lock()


class Sampler:
    """Samples every Python thread's stack with signals, from native code."""

    def __init__(
        self,
        frequency: float = DEFAULT_FREQUENCY,
        clock: str = "wall",
        max_stack_depth: int = 128,
        *,
        max_threads: int = 1024,
        chain: bool = False,
        buffer_capacity: int | None = None,
    ) -> None:
        self.frequency, self.clock, self.max_stack_depth = check_sampling_options(
            frequency, clock, max_stack_depth
        )
        self.max_threads = check_int("max_threads", max_threads, 1, 65536)
        self.chain = bool(chain)
        self.buffer_capacity = _check_capacity(buffer_capacity)
        self._pid: int | None = None
        self._anchor: tuple[int, int] = (0, 0)  # (unix ns, monotonic ns) taken together
        self._batches: list[Batch] = []
        self._frames: list[Frame] = []
        self._stacks: list[tuple[int, ...]] = []
        self._thread_names: dict[int, str] = {}
        self._modules = ModuleIndex()
        self._qualnames = QualnameIndex() if sys.version_info < (3, 11) else None

    # ---- lifecycle ----

    @property
    def running(self) -> bool:
        return _running is self and self._pid == os.getpid()

    def start(self) -> None:
        global _running
        reason = native_unavailable_reason()
        if reason is not None:
            raise NativeUnavailable(reason)
        from sigprof import _native

        with _running_lock:
            if _running is not None and _running._pid == os.getpid():
                raise SamplerError("a sigprof sampler is already running: one per process")
            self._anchor = clock_anchor()
            try:
                _native.start(
                    int(1e9 / self.frequency),
                    self.clock,
                    self.max_stack_depth,
                    self.max_threads,
                    self.buffer_capacity or 0,  # 0: the core sizes it from the depth
                    self.chain,
                    threading._active,  # type: ignore[attr-defined]
                    self._thread_names,
                )
            except RuntimeError as error:
                raise SamplerError(str(error)) from None
            _install_exec_guard()
            thread_hooks.install(self._thread_names)
            self._pid = os.getpid()
            self._frames, self._stacks, self._batches = [], [], []
            _running = self

    def mark_boundary(self) -> None:
        """The calling thread crosses a boundary now (a profiling span starts
        or ends): no sample is dated across it, neither a wall-clock gap's
        fill nor a signal's merged expirations. Nothing if the thread is not
        sampled."""
        if self.running:
            from sigprof import _native

            _native.mark_current_thread()

    def stop(self) -> None:
        """Stops sampling; what was taken stays readable."""
        global _running
        with _running_lock:
            if not self.running:
                return
            from sigprof import _native

            _native.stop()
            _running = None
        self._batches.append(self._drain_native(False))

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- reading ----

    def drain(self, *, reset_interning: bool = False) -> Batch:
        """Everything taken since the last drain, interned. With
        reset_interning, frame and stack ids start again from 0 after this
        batch (a new Sentry chunk, say)."""
        batches, self._batches = self._batches, []
        if self.running:
            batches.append(self._drain_native(reset_interning))
        return _merge(batches)

    def samples(self) -> list[Sample]:
        """Every sample taken since the last call, frames resolved."""
        batch = self.drain()
        self._frames.extend(batch.frames)
        self._stacks.extend(batch.stacks)
        frames, stacks, names = self._frames, self._stacks, self._thread_names
        stack_frames: dict[int, tuple[Frame, ...]] = {}
        result = []
        for timestamp_ns, thread_id, stack_id in batch.samples:
            resolved = stack_frames.get(stack_id)
            if resolved is None:
                resolved = tuple(frames[i] for i in stacks[stack_id])
                stack_frames[stack_id] = resolved
            result.append(Sample(timestamp_ns, thread_id, names.get(thread_id), resolved))
        return result

    def stats(self) -> dict[str, Any]:
        """samples, dropped, unresolved_frames, truncated, untracked_threads,
        stale_signals, ticks, registered_threads (threads holding a registry
        slot now), collector_gil_rounds (times the native collector thread
        took the GIL, each one taken from whichever thread ran), signals: {thread id: signals received; with the cpu clock
        one signal can stand for several samples}, and
        handler_replaced (see handler_replaced())."""
        from sigprof import _native

        _native.collect()  # count what the handlers wrote so far
        counters = _native.counters()
        stats = {
            key: counters[key]
            for key in (
                "samples", "dropped", "unresolved_frames", "truncated",
                "untracked_threads", "stale_signals", "ticks", "registered_threads",
                "collector_gil_rounds", "signals",
            )
        }
        stats["handler_replaced"] = self.handler_replaced()
        return stats

    def handler_replaced(self) -> bool:
        """True while this sampler runs but SIGPROF no longer reaches it:
        a profiler started after it (vmprof, say) installed its own handler.
        sigprof cannot refuse that; it takes no samples from then on."""
        from sigprof import _native

        return self.running and not _native.handler_ours()

    def dropped(self) -> int:
        """Samples lost so far in this run because the native buffer was full
        (the sampler was not drained for too long)."""
        from sigprof import _native

        if self._pid is None:
            return 0
        dropped = _native.counters()["dropped"]
        return dropped if isinstance(dropped, int) else 0

    def ring_usage(self) -> tuple[int, int]:
        """(records that arrived at the native buffer so far in this run,
        dropped ones included; its capacity in records): how fast it fills."""
        from sigprof import _native

        if self._pid is None:
            return 0, 0
        counters = _native.counters()
        written, dropped, capacity = (
            counters["ring_written"], counters["dropped"], counters["ring_capacity"]
        )
        assert isinstance(written, int) and isinstance(dropped, int) and isinstance(capacity, int)
        return written + dropped, capacity

    def to_unix_ns(self, timestamp_ns: int) -> int:
        """A sample's timestamp on the Unix clock sentry-sdk stamps spans with."""
        unix_ns, monotonic_ns = self._anchor
        return unix_ns + (timestamp_ns - monotonic_ns)

    def thread_names(self) -> dict[int, str]:
        """Names of the threads seen so far, by thread id."""
        return dict(self._thread_names)

    # ---- internals ----

    def _drain_native(self, reset_interning: bool) -> Batch:
        from sigprof import _native

        for thread in threading.enumerate():
            if thread.ident is not None:
                self._thread_names[thread.ident] = thread.name
        first_frame, raw_frames, first_stack, stacks, samples = _native.drain(reset_interning)
        frames = [self._frame(raw) for raw in raw_frames]
        return Batch(first_frame, frames, first_stack, stacks, samples)

    def _frame(self, raw: tuple[int, str | None, str | None, int, int]) -> Frame:
        kind, name, filename, lineno, first_lineno = raw
        if name is None or filename is None:
            from sigprof import _native

            return TRUNCATED_FRAME if kind == _native.FRAME_TRUNCATED else UNKNOWN_FRAME
        if self._qualnames is not None:
            name = self._qualnames.qualname(filename, first_lineno, name)
        return Frame(name, filename, self._modules.module_for(filename), lineno)


def _merge(batches: list[Batch]) -> Batch:
    if not batches:
        return Batch(0, [], 0, [], [])
    if len(batches) == 1:
        return batches[0]
    frames: list[Frame] = []
    stacks: list[tuple[int, ...]] = []
    samples: list[tuple[int, int, int]] = []
    for batch in batches:
        frames.extend(batch.frames)
        stacks.extend(batch.stacks)
        samples.extend(batch.samples)
    return Batch(batches[0].first_frame_id, frames, batches[0].first_stack_id, stacks, samples)


def _guard_exec(exec_function: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps execv / execve (the os.exec* family goes through them): a
    SIGPROF pending when execve replaces the program would kill the new one.
    The exec hooks of process_life run first (`sigprof run` writes the
    profile up to the exec)."""
    from sigprof import _native

    @functools.wraps(exec_function)
    def exec_without_pending_sigprof(*args: Any, **kwargs: Any) -> Any:
        run_exec_hooks(os.fsdecode(args[0] if args else kwargs.get("path", "")))
        _native.ignore_sigprof_for_exec()
        try:
            return exec_function(*args, **kwargs)
        finally:  # only reached when exec failed
            _native.restore_sigprof_after_failed_exec()

    exec_without_pending_sigprof.__sigprof_guarded__ = True  # type: ignore[attr-defined]
    return exec_without_pending_sigprof


def _install_exec_guard() -> None:
    """In os and in posix, whose functions os re-exports: a program may call
    posix.execv itself. A reference taken before the sampler started (`from
    os import execv` at import) keeps the unguarded function."""
    import posix  # Linux only, as is the native sampler

    for module in (os, posix):
        for name in ("execv", "execve"):
            function = getattr(module, name)
            if not getattr(function, "__sigprof_guarded__", False):
                setattr(module, name, _guard_exec(function))


def _stop_at_exit() -> None:
    sampler = _running
    if sampler is not None:
        sampler.stop()


def _forget_in_child() -> None:
    global _running
    _running = None


at_interpreter_exit(_stop_at_exit)
after_fork_in_child(ForkStage.SAMPLER, _forget_in_child)
