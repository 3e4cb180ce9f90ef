"""The run-result document (schema `cl_bench.result/5`): its schema names, its required fields,
the settings that repeat a run, and `RunResult`, the document with where it was written.

Schema 4 states each fact once: the method, stream and backbone sections hold the resolved
values (hyper-parameters, parameters, weights hash), `seed` the seed, `hardware` the device,
precision and threads the run resolved to, and `execution` the settings that do not decide the
numbers (output folder, data root, device and evaluation settings as given). The run's identity
(what its run id hashes) and the settings that repeat it are derived from those
(`results.identity.identity_of_result`, `run_settings`), not stored again. Schema 3 stored them
twice more (a `config` as given and a resolved `plan`); its files stay readable. Schema 5 is
schema 4 plus `outcomes`: each cell's per-example outcomes (`results.outcomes`); schema 4 files
stay readable (their intervals count seeds only).

A leaf: it imports nothing of cl_bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "cl_bench.result/5"
SCHEMA_4 = "cl_bench.result/4"
SCHEMA_3 = "cl_bench.result/3"
SCHEMA_2 = "cl_bench.result/2"


# Schema 3 held the configuration as given (`config`) and the resolved `plan` beside the sections
# schema 4 keeps; schema 2 is schema 3 without the `plan` (and with run ids of the older
# hashing). Their files are read and re-scored as they are.
READABLE_SCHEMAS = (SCHEMA_2, SCHEMA_3, SCHEMA_4, SCHEMA)
# The schemas that state each fact once (resolved sections, `execution`); 5 adds `outcomes`.
RESOLVED_SCHEMAS = (SCHEMA_4, SCHEMA)


# Schema 1 lacked the test-set sizes that the class-IL metrics pool by: its files cannot be
# re-scored, but their config still repeats the run.
OLDER_SCHEMAS = ("cl_bench.result/1",)


STATUSES = ("complete", "partial")


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "run_id": str,
    "created": str,
    "status": str,
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


# Each schema's own sections beside REQUIRED.
REQUIRED_BY_SCHEMA: dict[str, dict[str, type]] = {SCHEMA_2: {"config": dict}, SCHEMA_3: {"config": dict, "plan": dict}, SCHEMA_4: {"execution": dict}, SCHEMA: {"execution": dict, "outcomes": dict}}

# Where and how a run executes, not what it computes: no part of the run id, kept in `execution`.
EXECUTION_SETTINGS = ("out", "data_root", "device", "eval_batch_size", "num_workers", "log", "nproc", "shard_weights")


def run_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The settings that repeat the run of a (valid) result: a `RunConfig` table.

    Schemas 4 and 5 repeat the resolved values (every hyper-parameter as the run used it, the precision
    it resolved to), so a plugin default changed since does not change the repeat; schema 2 and 3
    files repeat their configuration as given.
    """
    if data["schema"] not in RESOLVED_SCHEMAS:
        return dict(data["config"])
    execution = data["execution"]
    return {
        "method": data["method"]["name"],
        "scenario": data["scenario"]["name"],
        "backbone": data["backbone"]["name"],
        "seed": data["seed"],
        "precision": data["hardware"]["precision"],
        "method_params": dict(data["method"]["hyperparameters"]),
        "scenario_params": dict(data["scenario"]["params"]),
        "backbone_params": dict(data["backbone"]["params"]),
        **{key: execution[key] for key in EXECUTION_SETTINGS if key in execution},
        "threads": data["hardware"].get("threads_setting") if isinstance(data["hardware"].get("threads_setting"), int) else None,
    }


@dataclass
class RunResult:
    """A run's result: the JSON document and where it was written."""

    data: dict[str, Any]
    path: Path | None = None

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def method(self) -> str:
        return self.data["method"]["name"]

    @property
    def scenario(self) -> str:
        return self.data["scenario"]["name"]

    @property
    def seed(self) -> int:
        return self.data["seed"]

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

