from __future__ import annotations

from collections.abc import Iterator

import pytest
import sentry_sdk

from sigprof.core.sample_source import SOURCE
from sigprof.sentry.session import SESSION
from tests.sentry.generations import SDK_GENERATION
from tests.sentry.receiver import Receiver

# It builds transaction profiles (2.x only) beside chunks, from one import.
collect_ignore = ["test_payload_properties.py"] if SDK_GENERATION >= 3 else []


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        SESSION.end()
        client = sentry_sdk.get_client()
        if client.is_active():
            client.close(timeout=5)  # before the server goes away
        server.close()


@pytest.fixture(autouse=True)
def fresh_profiling() -> Iterator[None]:
    """Every test starts and ends with no session, no sampler, no client."""
    yield
    SESSION.end()
    SOURCE.stop_now()
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=5)
    sentry_sdk.init()  # a client with no DSN: nothing from a test leaks into the next
