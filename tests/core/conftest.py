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
