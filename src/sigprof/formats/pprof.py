"""pprof: a gzipped ``perftools.profiles.Profile`` protobuf (profile.proto,
as ``go tool pprof`` and Grafana Pyroscope read it), encoded here by hand
so sigprof needs no protobuf runtime.

Values per sample: ``samples/count`` and ``wall`` or ``cpu`` in
nanoseconds; each sample is labelled with its thread's name and id.
Location and function ids start at 1 (0 means "none" in profile.proto).
"""

from __future__ import annotations

import gzip
from collections import defaultdict

from sigprof.formats.profile_model import Profile


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 fields: two's complement, ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _field_packed(number: int, values: list[int]) -> bytes:
    return _field_bytes(number, b"".join(_varint(v) for v in values)) if values else b""


class _Strings:
    def __init__(self) -> None:
        self.table: list[str] = [""]  # index 0 must be the empty string
        self._ids: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        found = self._ids.get(text)
        if found is None:
            found = self._ids[text] = len(self.table)
            self.table.append(text)
        return found


def render(profile: Profile) -> bytes:
    strings = _Strings()
    time_kind = "cpu" if profile.clock == "cpu" else "wall"
    out = bytearray()
    for kind, unit in (("samples", "count"), (time_kind, "nanoseconds")):
        out += _field_bytes(1, _field_varint(1, strings(kind)) + _field_varint(2, strings(unit)))

    # aggregate: one pprof sample per (thread, stack)
    totals: dict[tuple[int, int], float] = defaultdict(float)
    for thread in profile.threads.values():
        for _, stack_id, weight in thread.samples:
            totals[(thread.thread_id, stack_id)] += weight
    functions: dict[tuple[str, str], int] = {}
    locations: dict[int, int] = {}  # profile frame id -> location id
    thread_key, thread_id_key = strings("thread"), strings("thread_id")
    for (tid, stack_id), weight in sorted(totals.items()):
        location_ids = []
        for frame_id in profile.stacks[stack_id]:  # leaf first, as pprof wants
            if frame_id not in locations:
                locations[frame_id] = len(locations) + 1
            location_ids.append(locations[frame_id])
        ns = profile.weight_ns(weight)
        count = round(weight) if profile.unit == "samples" else 0
        values = [count, round(ns) if ns is not None else 0]
        labels = _field_bytes(3, _field_varint(1, thread_key) + _field_varint(2, strings(profile.threads[tid].name)))
        labels += _field_bytes(3, _field_varint(1, thread_id_key) + _field_varint(3, tid))
        out += _field_bytes(2, _field_packed(1, location_ids) + _field_packed(2, values) + labels)

    for frame_id, location_id in locations.items():
        frame = profile.frames[frame_id]
        key = (frame.function, frame.filename)
        if key not in functions:
            functions[key] = len(functions) + 1
        line = _field_varint(1, functions[key]) + _field_varint(2, frame.lineno)
        out += _field_bytes(4, _field_varint(1, location_id) + _field_bytes(4, line))
    for (name, filename), function_id in functions.items():
        out += _field_bytes(5, _field_varint(1, function_id) + _field_varint(2, strings(name))
                            + _field_varint(3, strings(name)) + _field_varint(4, strings(filename)))

    start_ns, end_ns = profile.time_range_ns()
    # the string table must be complete before it is written: everything above interned already
    for text in strings.table:
        out += _field_bytes(6, text.encode())
    out += _field_varint(9, start_ns)
    out += _field_varint(10, max(0, end_ns - start_ns))
    out += _field_bytes(11, _field_varint(1, strings(time_kind)) + _field_varint(2, strings("nanoseconds")))
    out += _field_varint(12, profile.interval_ns)
    return gzip.compress(bytes(out))
