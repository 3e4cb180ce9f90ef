"""The `mlflow` logger: one MLflow run per execution, in the experiment `cl_bench`.

Tracking store: MLFLOW_TRACKING_URI when set, else a local file store in `<out>/logs/mlruns` (MLflow 3
keeps its file store behind MLFLOW_ALLOW_FILE_STORE, which this logger sets for that default only).
Tags hold the run id and execution id; parameters the resolved plan, flattened.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cl_bench import hookimpl

from . import final_metrics, row_metrics

EXPERIMENT = "cl_bench"


def flat_params(plan: dict[str, Any]) -> dict[str, str]:
    """The plan's settings as MLflow parameters: method.lr, scenario.order, backbone.name, seed, ..."""
    params = {"method": plan["method"]["name"], "scenario": plan["scenario"]["name"], "backbone": plan["backbone"]["name"]}
    params.update({f"method.{k}": v for k, v in plan["method"]["hyperparameters"].items()})
    params.update({f"scenario.{k}": v for k, v in plan["scenario"]["params"].items()})
    params.update({f"backbone.{k}": v for k, v in plan["backbone"]["params"].items()})
    params.update({k: plan[k] for k in ("seed", "device", "precision")})
    return {k: str(v)[:6000] for k, v in params.items()}  # MLflow's limit on a value


class MlflowLogger:
    def __init__(self, folder: str) -> None:
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(folder).resolve() / "mlruns").as_uri()
        self.client: Any = None  # an MlflowClient once the run starts
        self.run_id = None
        self.iterations = 0  # training iterations logged so far

    @hookimpl
    def cl_bench_run_start(self, run_id: str, execution_id: str, plan: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        else:  # a server that does not answer costs seconds, not MLflow's default minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        run = self.client.create_run(experiment_id, run_name=run_id, tags={"cl_bench.run_id": run_id, "cl_bench.execution_id": execution_id})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat_params(plan).items()])

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    @hookimpl
    def cl_bench_before_training(self, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any]) -> None:
        self._log(row_metrics(row, acc_row, control_row, timings), row)

    @hookimpl
    def cl_bench_experience_end(self, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any], losses: list[float]) -> None:
        from mlflow.entities import Metric

        self._log(row_metrics(row, acc_row, control_row, timings), row)
        stamp = int(time.time() * 1000)
        # train/loss at the run's global iteration (iterations of the tasks before counted)
        first = self.iterations
        self.iterations += len(losses)
        for start in range(0, len(losses), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=[Metric("train/loss", v, stamp, first + start + i) for i, v in enumerate(losses[start : start + 1000])])

    @hookimpl
    def cl_bench_run_end(self, path: str, result: dict[str, Any]) -> None:
        self._log(final_metrics(result), len(result["acc_matrix"]) - 1)
        self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id)
