"""`start_profiling_span(...)` and the `@profile()` decorator.

A profiling span is a Sentry span whose duration is guaranteed to be
sampled:

- it is decided once, on entry, with its `sample_rate` (default 1.0); a span
  that loses the draw runs its block untouched (no span, no samples);
- a profiled span opens a child of the current span when that span is
  sampled, otherwise a new transaction (on sentry-sdk 3.x a new root span;
  sampled, and in the current trace if there is one);
- unless that transaction already has a running transaction profile, the
  span holds the continuous profiling session open, whatever
  `profile_session_sample_rate` decided: the span and its transaction carry
  the session's `profiler_id`, `thread.id` and `thread.name`, and the
  samples go out in that session's chunks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from types import TracebackType
from typing import Any, Callable, TypeVar

import sentry_sdk
from sentry_sdk.utils import logger

from sigprof.core.sample_source import SOURCE
from sigprof.sentry import sdk_api
from sigprof.sentry.envelopes import can_send
from sigprof.sentry.sampling import profiling_span_sampled
from sigprof.sentry.session import SESSION

F = TypeVar("F", bound=Callable[..., Any])
_Span = TypeVar("_Span", bound="ProfilingSpan")

_NEW, _OPEN, _CLOSED = "new", "open", "closed"


def _active_transaction_profile(root: Any) -> Any:
    """sentry-sdk 2.x: the root's transaction profile, when sigprof samples
    it (the span's samples are in it then, not in the session's chunks)."""
    if sdk_api.GENERATION != 2 or sdk_api.streaming():
        return None
    from sigprof.sentry.transaction_profiles import active_native_profile  # 2.x only

    return active_native_profile(root)


def _text(option: str, value: Any) -> str | None:
    """sentry-sdk fails on a span whose name or op is not a string (as it
    logs the span): such a value becomes its str(), with a warning."""
    if value is None or isinstance(value, str):
        return value
    logger.warning(
        "[Profiling] A profiling span's %s must be a string, not %s: using %r",
        option,
        type(value).__name__,
        str(value),
    )
    return str(value)


class ProfilingSpan:
    """A span whose block is sampled; see the module docstring."""

    def __init__(
        self,
        description: str | None = None,
        op: str | None = None,
        *,
        name: str | None = None,
        sample_rate: float | None = None,
    ) -> None:
        self.description = _text("description", description if description is not None else name)
        self.op = _text("op", op)
        self.sample_rate = sample_rate
        self.span: Any = None
        self.profiled = False
        self._state = _NEW
        self._held = False
        self._detached_parent: Any = None

    @property
    def profiler_id(self) -> str | None:
        return SESSION.profiler_id if self._held else None

    # ---- context manager, sync and async ----

    def __enter__(self: _Span) -> _Span:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    async def __aenter__(self: _Span) -> _Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # ---- the work ----

    def open(self, *, current: bool = True) -> None:
        """Starts the span. With current=False the span is not made the
        scope's current span (generators: see `resumed`)."""
        if self._state != _NEW:
            logger.warning("[Profiling] A profiling span can be entered only once")
            return
        self._state = _OPEN
        # Without a client that sends (no init, no DSN) nothing could be sent.
        self.profiled = can_send() and profiling_span_sampled(self.sample_rate)
        if not self.profiled:
            return
        # Samples before this are the caller's, those after it the block's.
        SOURCE.mark_boundary()
        parent = sdk_api.current_span()
        op = self.op or "function"
        scope = sentry_sdk.get_current_scope()
        previous = scope.span
        if sdk_api.is_recording_span(parent):
            span = sdk_api.start_child_span(parent, self.description or "profiling span", op)
        else:
            span = sdk_api.start_sampled_root_span(self.description or "profiling span", op, parent)
        sdk_api.enter_span(span)
        if not current:
            scope.span = previous
        self.span = span
        root = sdk_api.root_of(span)
        if _active_transaction_profile(root) is None and SESSION.hold(self):
            self._held = True
            profiler_id = SESSION.profiler_id
            sdk_api.set_profiler_id(span, profiler_id)
            if root is not None and root is not span and not sdk_api.has_profiler_id(root):
                sdk_api.set_profiler_id(root, profiler_id)

    def close(self, exc: BaseException | None = None) -> None:
        if self._state == _CLOSED:
            logger.warning("[Profiling] A profiling span was exited more than once")
            return
        if self._state == _NEW:
            logger.warning("[Profiling] A profiling span was exited without being entered")
            return
        self._state = _CLOSED
        span = self.span
        if self.profiled:
            SOURCE.mark_boundary()  # before the span's end is taken
        try:
            if span is not None:
                scope = sentry_sdk.get_current_scope()
                current = scope.span
                span.__exit__(type(exc) if exc is not None else None, exc, None)
                if current is not span:  # a detached span must not move the scope's span
                    scope.span = current
        finally:
            if self._held:
                self._held = False
                SESSION.release(self, linger=True)

    def resumed(self) -> _Current:
        """Makes the span current while a generator's body runs."""
        return _Current(self.span)


class _Current:
    def __init__(self, span: Any) -> None:
        self._span = span
        self._scope: Any = None
        self._previous: Any = None

    def __enter__(self) -> None:
        if self._span is not None:
            self._scope = sentry_sdk.get_current_scope()
            self._previous = self._scope.span
            self._scope.span = self._span

    def __exit__(self, *exc_info: object) -> None:
        if self._scope is not None:
            self._scope.span = self._previous


def start_profiling_span(
    description: str | None = None,
    op: str | None = None,
    *,
    name: str | None = None,
    sample_rate: float | None = None,
) -> ProfilingSpan:
    """`with start_profiling_span(description="Data processing"): ...` (or
    `async with`): the block is profiled and linked to its own span."""
    return ProfilingSpan(description, op, name=name, sample_rate=sample_rate)


def profile(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    op: str | None = None,
    sample_rate: float | None = None,
) -> Any:
    """`@profile()` (or `@profile`): each call is profiled in its own span.
    Works on functions, methods, async functions and generators."""

    span_op = _text("op", op) or "function"  # checked once, not at every call

    def decorate(target: Any) -> Any:
        if isinstance(target, (classmethod, staticmethod)):
            return type(target)(decorate(target.__func__))
        if not callable(target):
            raise TypeError(
                f"sigprof.profile() decorates functions and methods, not {type(target).__name__}"
            )
        span_name = _text("name", name) or getattr(target, "__qualname__", None) or repr(target)

        def make() -> ProfilingSpan:
            return ProfilingSpan(span_name, span_op, sample_rate=sample_rate)

        return _wrap(target, make)

    if func is None:
        return decorate
    return decorate(func)


def _wrap(target: Any, make: Callable[[], ProfilingSpan]) -> Any:
    if inspect.isasyncgenfunction(target):
        return _wrap_async_generator(target, make)
    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with make():
                return await target(*args, **kwargs)

        return async_wrapper
    if inspect.isgeneratorfunction(target):
        return _wrap_generator(target, make)

    @functools.wraps(target)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make():
            return target(*args, **kwargs)

    return wrapper


def _wrap_generator(target: Any, make: Callable[[], ProfilingSpan]) -> Any:
    # The span covers the generator's life (first resume to exhaustion or
    # close) but is the current span only while the generator's body runs.
    @functools.wraps(target)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        generator = target(*args, **kwargs)
        span = make()
        span.open(current=False)
        error: BaseException | None = None
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                with span.resumed():
                    try:
                        if to_throw is not None:
                            thrown, to_throw = to_throw, None
                            item = generator.throw(thrown)
                        else:
                            item = generator.send(to_send)
                    except StopIteration as stop:
                        return stop.value
                try:
                    to_send = yield item
                except GeneratorExit:
                    generator.close()
                    raise
                except BaseException as thrown:  # noqa: BLE001 - passed on into the generator
                    to_throw = thrown
        except GeneratorExit:
            raise
        except BaseException as failure:
            error = failure
            raise
        finally:
            span.close(error)

    return wrapper


def _wrap_async_generator(target: Any, make: Callable[[], ProfilingSpan]) -> Any:
    @functools.wraps(target)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        generator = target(*args, **kwargs)
        span = make()
        span.open(current=False)
        error: BaseException | None = None
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                with span.resumed():
                    try:
                        if to_throw is not None:
                            thrown, to_throw = to_throw, None
                            item = await generator.athrow(thrown)
                        else:
                            item = await generator.asend(to_send)
                    except StopAsyncIteration:
                        return
                try:
                    to_send = yield item
                except GeneratorExit:
                    await generator.aclose()
                    raise
                except BaseException as thrown:  # noqa: BLE001 - passed on into the generator
                    to_throw = thrown
        except GeneratorExit:
            raise
        except BaseException as failure:
            error = failure
            raise
        finally:
            span.close(error)

    return wrapper
