"""Every kind of Python function is named by its qualname, at the right line."""

import asyncio
import functools
import threading

import pytest

from tests.core.workloads import SPIN_LINE, spin

SPIN = 0.3


class Widget:
    def method(self):
        return spin(SPIN)

    @classmethod
    def class_method(cls):
        return spin(SPIN)

    @staticmethod
    def static_method():
        return spin(SPIN)

    class Inner:
        def method(self):
            return spin(SPIN)


def passthrough(function):
    @functools.wraps(function)
    def wrapper(*args):
        return function(*args)

    return wrapper


class Decorated:
    @passthrough
    def method(self):
        return spin(SPIN)


def outer():
    def nested():
        return spin(SPIN)

    return nested()


lambda_function = lambda: spin(SPIN)


def generator():
    yield spin(SPIN)


async def coroutine():
    await asyncio.sleep(0)
    return spin(SPIN)


CASES = [
    ("method", lambda: Widget().method(), "Widget.method"),
    ("classmethod", Widget.class_method, "Widget.class_method"),
    ("staticmethod", Widget.static_method, "Widget.static_method"),
    ("nested class", lambda: Widget.Inner().method(), "Widget.Inner.method"),
    ("nested function", outer, "outer.<locals>.nested"),
    ("functools.wraps", lambda: Decorated().method(), "Decorated.method"),
    ("lambda", lambda_function, "<lambda>"),
    ("generator", lambda: list(generator()), "generator"),
    ("coroutine", lambda: asyncio.run(coroutine()), "coroutine"),
]


@pytest.mark.parametrize("label, call, qualname", CASES, ids=[c[0] for c in CASES])
def test_caller_named_by_qualname_with_spin_line(sampler_factory, label, call, qualname):
    sampler = sampler_factory(frequency=200, clock="cpu")
    with sampler:
        call()
    me = threading.get_ident()
    mine = [s for s in sampler.samples() if s.thread_id == me]
    in_spin = [s for s in mine if s.frames and s.frames[0].function == "spin"]
    spinning = [s.frames for s in in_spin]
    assert len(spinning) >= 0.5 * SPIN * 200, (label, len(spinning), len(mine))
    # The loop's line; a signal landing in the final thread_time() call on the
    # return line, after the loop (seen once in CI, 3.9), is right too.
    lines = [(s.timestamp_ns, s.frames[0].lineno) for s in in_spin]
    assert {line for _, line in lines} <= {SPIN_LINE, SPIN_LINE + 1}, lines
    last_in_loop = max(t for t, line in lines if line == SPIN_LINE)
    assert all(t > last_in_loop for t, line in lines if line != SPIN_LINE), lines
    for frames in spinning:
        assert frames[0].module == "tests.core.workloads"
        assert frames[0].filename.endswith("workloads.py")
    callers = {frames[1].function for frames in spinning}
    assert callers == {qualname}, (label, callers)


def test_lines_of_caller_frames_are_the_call_sites(sampler_factory):
    def caller():
        return spin(0.3)  # the call site

    call_line = caller.__code__.co_firstlineno + 1
    sampler = sampler_factory(frequency=200, clock="cpu")
    with sampler:
        caller()
    lines = {
        s.frames[1].lineno
        for s in sampler.samples()
        if s.frames and s.frames[0].function == "spin" and len(s.frames) > 1
    }
    assert lines == {call_line}
