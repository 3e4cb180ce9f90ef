"""The run-result document (schema `cl_bench.result/3`): its schema names, its required fields and
`RunResult`, the document with where it was written. A leaf: it imports nothing of cl_bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "cl_bench.result/3"


# Schema 2 is schema 3 without the resolved `plan` (and with run ids of the older hashing): its
# files are read and re-scored as they are.
READABLE_SCHEMAS = ("cl_bench.result/2", SCHEMA)


# Schema 1 lacked the test-set sizes that the class-IL metrics pool by: its files cannot be
# re-scored, but their config still repeats the run.
OLDER_SCHEMAS = ("cl_bench.result/1",)


STATUSES = ("complete", "partial")


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "run_id": str,
    "created": str,
    "status": str,
    "config": dict,
    "method": dict,
    "scenario": dict,
    "backbone": dict,
    "seed": int,
    "versions": dict,
    "hardware": dict,
    "acc_matrix": list,
    "control_matrix": list,
    "metrics": dict,
    "timings": dict,
    "params": dict,
}


@dataclass
class RunResult:
    """A run's result: the JSON document and where it was written."""

    data: dict[str, Any]
    path: Path | None = None

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.data["metrics"]

    @property
    def acc_matrix(self) -> list[list[float]]:
        return self.data["acc_matrix"]

    @property
    def control_matrix(self) -> list[list[float]]:
        return self.data["control_matrix"]

    @property
    def status(self) -> str:
        return self.data["status"]

    def to_dict(self) -> dict[str, Any]:
        return self.data

