"""Shared fixtures. Helpers that build toy models and streams live in toys.py."""

import pytest

from cl_bench.runner import quiet_third_party_warnings

quiet_third_party_warnings()


@pytest.fixture(scope="session")
def registry():
    from cl_bench.plugins import Registry

    return Registry()
