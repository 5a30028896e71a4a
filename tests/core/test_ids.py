"""Chunk and profiler ids: random version-4 UUIDs, never repeated by a
forked child (uWSGI forks without Python's fork hooks)."""

from __future__ import annotations

import os
import uuid

from sigprof.core.ids import random_hex_id


def test_ids_are_version_4_uuids_in_hex() -> None:
    ids = {random_hex_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        assert len(text) == 32
        assert uuid.UUID(hex=text).version == 4


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    random_hex_id()  # the generator is seeded in this process
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(reader)
        os.write(writer, "".join(random_hex_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(random_hex_id() for _ in range(3))
    assert len(child) == 96
    assert child != parent
