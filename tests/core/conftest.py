import sys
from collections.abc import Iterator

import pytest

import sigprof


@pytest.fixture
def sampler_factory() -> Iterator:
    """Builds samplers and makes sure none is left running after a test."""
    made = []

    def make(**options: object) -> sigprof.Sampler:
        sampler = sigprof.Sampler(**options)
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.stop()


def pytest_report_header() -> str:
    return f"sigprof native: {sigprof.native_unavailable_reason() or 'available'} on {sys.version}"


def pytest_collection_modifyitems(items: list) -> None:
    """The core tests need the native sampler: skip them, with the reason,
    where it cannot run (the package still installs there)."""
    reason = sigprof.native_unavailable_reason()
    if reason is None:
        return
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))
