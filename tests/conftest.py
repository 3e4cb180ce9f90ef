"""Shared fixtures. Helpers that build toy models and streams live in toys.py."""

import pytest

from cl_bench.running.runner import quiet_third_party_warnings

quiet_third_party_warnings()


@pytest.fixture(scope="session")
def registry():
    from cl_bench.config.registry import Registry

    return Registry()
