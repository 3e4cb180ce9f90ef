"""Fixtures of the run tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def two_process_runs(tmp_path_factory):
    """Every two-process run of the multi-process tests, trained through one launch (two_process_runs.py)."""
    from two_process_runs import launch_all

    return launch_all(tmp_path_factory.mktemp("two-process-runs"))
