"""Random ids (profiler, chunk) that cost no GIL hand-off.

`uuid.uuid4()` reads `os.urandom`, which releases the GIL around its system
call: the housekeeping thread then waits a switch interval (5 ms) to get the
GIL back and takes it from the running thread once more, for every id of
every chunk. These come from a generator seeded from `os.urandom` once per
process instead; the pid is checked at each call, since uWSGI forks its
workers without Python's fork hooks and a child must never repeat its
parent's ids.
"""

from __future__ import annotations

import os
import random
import uuid

_generator = random.Random()
_seeded_in = os.getpid()


def random_hex_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as uuid.uuid4().hex."""
    global _seeded_in
    pid = os.getpid()
    if pid != _seeded_in:
        _generator.seed()
        _seeded_in = pid
    return uuid.UUID(int=_generator.getrandbits(128), version=4).hex
