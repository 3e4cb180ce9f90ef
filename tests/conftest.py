"""Shared fixtures. Helpers that build toy models and streams live in toys.py."""

import os
import shutil
import tempfile

import pytest

from cl_bench.running.runner import quiet_third_party_warnings

quiet_third_party_warnings()

_OWN_CACHE: list[str] = []


def pytest_configure(config):
    # One stream cache for the whole session (child processes inherit it): the embedded streams are
    # built once and read back by every later test, and nothing lands in the user's own cache.
    if not os.environ.get("CL_BENCH_CACHE"):
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="cl_bench-test-cache-"))
        os.environ["CL_BENCH_CACHE"] = _OWN_CACHE[0]


def pytest_unconfigure(config):
    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    from cl_bench.config.registry import Registry

    return Registry()


# Under pytest-xdist (`-n 2 --dist loadgroup`, the README's command) the tests of each group run
# on one worker, one after another: two local Ray instances, or two headless browsers, at once
# would only compete for the same two cores and ports.
_SERIAL_GROUPS = ("ray", "browser")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for group in _SERIAL_GROUPS:
            if item.get_closest_marker(group):
                item.add_marker(pytest.mark.xdist_group(group))
