from __future__ import annotations

from collections.abc import Iterator

import pytest

import sigprof
from tests.sentry.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Sentry's stand-in; the profiled processes are the scenarios' children."""
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = sigprof.native_unavailable_reason()
    if reason is None:
        return
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))
