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
    stacks = [s.frames for s in sampler.samples() if s.thread_id == me]
    spinning = [frames for frames in stacks if frames and frames[0].function == "spin"]
    assert len(spinning) >= 0.5 * SPIN * 200, (label, len(spinning), len(stacks))
    for frames in spinning:
        assert frames[0].lineno == SPIN_LINE
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
