"""The layout self-check (CPython 3.13+): the offsets of the interpreter fields
the core reads, as the interpreter publishes them in _PyRuntime.debug_offsets,
against the ones compiled in. A table that differs in any one field is refused
with that field named, and so is sampling in a process whose own table was
changed."""

import subprocess
import sys
import textwrap

import pytest

import sigprof
from sigprof import _native

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="CPython publishes its layout (debug_offsets) from 3.13 on"
)

# Every field the frame walkers, the registry and the resolver read that
# CPython publishes, and the table's own header.
READ_FIELDS = [
    "cookie",
    "version",
    "free_threaded",
    "thread_state.interp",
    "thread_state.current_frame",
    "thread_state.thread_id",
    "interpreter_state.ceval_gil",
    "interpreter_state.gil_runtime_state_holder",
    "interpreter_frame.previous",
    "interpreter_frame.executable",
    "interpreter_frame.instr_ptr",
    "interpreter_frame.owner",
    "code_object.filename",
    "code_object.qualname",
    "code_object.firstlineno",
    "code_object.co_code_adaptive",
    "pyobject.ob_type",
]

NEXT_MINOR = 1 << 16  # in a PY_VERSION_HEX


def _word(table: bytes, position: int) -> int:
    return int.from_bytes(table[position:position + 8], sys.byteorder)


def _with_word(table: bytes, position: int, value: int) -> bytes:
    return table[:position] + value.to_bytes(8, sys.byteorder) + table[position + 8:]


def _changed(table: bytes, name: str, position: int) -> bytes:
    """The table with one field changed the way another build would have it."""
    value = _word(table, position)
    if name == "cookie":
        return _with_word(table, position, value ^ 0xFF)  # "xdebugpy" no more
    if name == "version":
        return _with_word(table, position, value + NEXT_MINOR)
    if name == "free_threaded":
        return _with_word(table, position, 1)
    return _with_word(table, position, value + 8)  # the field one word further on


def test_the_running_interpreter_passes():
    assert _native.layout_problem(_native.layout_table()) is None
    assert sigprof.native_unavailable_reason() is None


def test_every_field_read_is_compared():
    assert [name for name, _ in _native.layout_fields()] == READ_FIELDS


@pytest.mark.parametrize("name", READ_FIELDS)
def test_a_table_differing_in_one_field_is_refused_naming_it(name):
    table = _native.layout_table()
    position = dict(_native.layout_fields())[name]
    problem = _native.layout_problem(_changed(table, name, position))
    assert problem is not None and name.rsplit(".", 1)[-1] in problem, problem
    if "." in name:
        assert name in problem


def test_a_patch_release_with_the_same_layout_passes():
    table = _native.layout_table()
    position = dict(_native.layout_fields())["version"]
    micro = 1 << 8
    assert _native.layout_problem(_with_word(table, position, _word(table, position) + micro)) is None


def test_a_table_of_the_wrong_size_is_a_value_error():
    with pytest.raises(ValueError, match="bytes"):
        _native.layout_problem(_native.layout_table()[:-1])


# The process's own table changed in place (CPython itself never reads it):
# sampling is refused before any signal, with the field named, and the Sentry
# layer falls back to sentry-sdk's sampler.
CHANGED_RUNTIME_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys, warnings
    import sigprof
    from sigprof import _native

    table = _native.layout_table()
    runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
    assert ctypes.string_at(runtime, len(table)) == table, "debug_offsets opens _PyRuntime"
    position = dict(_native.layout_fields())["interpreter_frame.executable"]
    field = ctypes.c_uint64.from_address(runtime + position)
    field.value += 8

    print("reason:", sigprof.native_unavailable_reason())
    try:
        sigprof.Sampler(frequency=101).start()
    except sigprof.NativeUnavailable as error:
        print("refused:", error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sigprof.init(dsn="http://key@127.0.0.1:9/1", traces_sample_rate=1.0,
                     profile_session_sample_rate=1.0)
    print("fallback:", [w.category.__name__ for w in caught])
    """
)


def test_sampling_is_refused_when_the_runtime_table_differs(tmp_path):
    script = tmp_path / "changed_runtime.py"
    script.write_text(CHANGED_RUNTIME_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert "interpreter_frame.executable" in lines["reason"]
    assert "interpreter_frame.executable" in lines["refused"]
    assert "SigprofFallbackWarning" in lines["fallback"], result.stdout
