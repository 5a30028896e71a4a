"""Decodes sigprof's hand-written pprof with the protobuf library and a
profile.proto descriptor built here, independently of the encoder."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from sigprof.formats import pprof
from sigprof.formats.profile_model import Profile

from .conftest import INTERVAL, T0


def _message_class(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


F = descriptor_pb2.FieldDescriptorProto


def _profile_proto() -> Any:
    """perftools.profiles.Profile, field numbers from profile.proto."""
    file = descriptor_pb2.FileDescriptorProto(name="profile.proto", package="perftools.profiles")

    def message(name: str, fields: list) -> None:
        m = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = ".perftools.profiles." + type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ValueType", [("type", 1, F.TYPE_INT64, opt, ""), ("unit", 2, F.TYPE_INT64, opt, "")])
    message("Label", [("key", 1, F.TYPE_INT64, opt, ""), ("str", 2, F.TYPE_INT64, opt, ""),
                      ("num", 3, F.TYPE_INT64, opt, ""), ("num_unit", 4, F.TYPE_INT64, opt, "")])
    message("Sample", [("location_id", 1, F.TYPE_UINT64, rep, ""), ("value", 2, F.TYPE_INT64, rep, ""),
                       ("label", 3, F.TYPE_MESSAGE, rep, "Label")])
    message("Line", [("function_id", 1, F.TYPE_UINT64, opt, ""), ("line", 2, F.TYPE_INT64, opt, "")])
    message("Location", [("id", 1, F.TYPE_UINT64, opt, ""), ("mapping_id", 2, F.TYPE_UINT64, opt, ""),
                         ("address", 3, F.TYPE_UINT64, opt, ""), ("line", 4, F.TYPE_MESSAGE, rep, "Line"),
                         ("is_folded", 5, F.TYPE_BOOL, opt, "")])
    message("Function", [("id", 1, F.TYPE_UINT64, opt, ""), ("name", 2, F.TYPE_INT64, opt, ""),
                         ("system_name", 3, F.TYPE_INT64, opt, ""), ("filename", 4, F.TYPE_INT64, opt, ""),
                         ("start_line", 5, F.TYPE_INT64, opt, "")])
    message("Profile", [
        ("sample_type", 1, F.TYPE_MESSAGE, rep, "ValueType"), ("sample", 2, F.TYPE_MESSAGE, rep, "Sample"),
        ("location", 4, F.TYPE_MESSAGE, rep, "Location"), ("function", 5, F.TYPE_MESSAGE, rep, "Function"),
        ("string_table", 6, F.TYPE_STRING, rep, ""), ("time_nanos", 9, F.TYPE_INT64, opt, ""),
        ("duration_nanos", 10, F.TYPE_INT64, opt, ""), ("period_type", 11, F.TYPE_MESSAGE, opt, "ValueType"),
        ("period", 12, F.TYPE_INT64, opt, ""),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return _message_class(pool.FindMessageTypeByName("perftools.profiles.Profile"))


def _decode(data: bytes) -> Any:
    message = _profile_proto()()
    message.ParseFromString(gzip.decompress(data))
    return message


def _stacks(decoded: Any) -> dict[tuple, list]:
    s = decoded.string_table
    functions = {f.id: (s[f.name], s[f.filename]) for f in decoded.function}
    locations = {loc.id: (functions[loc.line[0].function_id], loc.line[0].line) for loc in decoded.location}
    result: dict[tuple, list] = {}
    for sample in decoded.sample:
        labels = {s[label.key]: (s[label.str] if label.str else label.num) for label in sample.label}
        names = tuple(locations[i][0][0] for i in sample.location_id)
        leaf_line = locations[sample.location_id[0]][1]
        result[(labels["thread"], labels["thread_id"], names, leaf_line)] = list(sample.value)
    return result


def test_known_profile_decodes(profile: Profile) -> None:
    decoded = _decode(pprof.render(profile))
    s = decoded.string_table
    assert s[0] == ""
    assert [(s[t.type], s[t.unit]) for t in decoded.sample_type] == [("samples", "count"), ("wall", "nanoseconds")]
    assert (s[decoded.period_type.type], decoded.period) == ("wall", INTERVAL)
    assert decoded.time_nanos == T0
    assert decoded.duration_nanos == 8 * INTERVAL
    stacks = _stacks(decoded)
    # leaf first, as pprof wants; two crunch lines are two locations of one function
    assert stacks[("MainThread", 1001, ("parse", "handle", "<module>"), 353)] == [3, 3 * INTERVAL]
    assert stacks[("worker-1", 2002, ("Condition.wait",), 355)] == [4, 4 * INTERVAL]
    assert stacks[("MainThread", 1001, ("Model.crunch", "handle", "<module>"), 41)] == [3, 3 * INTERVAL]
    assert stacks[("MainThread", 1001, ("Model.crunch", "handle", "<module>"), 44)] == [2, 2 * INTERVAL]
    assert len(stacks) == 5
    assert len({f.id for f in decoded.function}) == 5
    lines = sorted(loc.line[0].line for loc in decoded.location)
    assert lines == [3, 20, 41, 44, 353, 355]


def test_recorded_profile_decodes(recorded_profile: Profile) -> None:
    decoded = _decode(pprof.render(recorded_profile))
    total = sum(sample.value[0] for sample in decoded.sample)
    assert total == recorded_profile.sample_count()
    s = decoded.string_table
    assert "busy_leaf" in {s[f.name] for f in decoded.function}


def test_garbage_does_not_decode() -> None:
    # the decoding above can fail: a truncated message is an error
    with pytest.raises(DecodeError):
        _decode(gzip.compress(b"\x0a\x05\x08"))


def test_negative_and_large_varints_round_trip() -> None:
    assert pprof._varint(0) == b"\x00"
    assert pprof._varint(300) == b"\xac\x02"
    assert len(pprof._varint(-1)) == 10
