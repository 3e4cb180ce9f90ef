"""Experiment trackers, chosen per run with `--log wandb,mlflow`.

Each is a plugin object built for one run (see `cl_bench.LoggerSpec`) that implements the run-event
hooks: the configuration and resolved plan at start, each row of the accuracy and control matrices
with the task's timings and its per-iteration training losses, the final metrics and the result
file as an artifact at the end.
"""

from __future__ import annotations

from typing import Any

from cl_bench import LoggerSpec, hookimpl


def row_metrics(row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any]) -> dict[str, float]:
    """One matrix row as flat metric names: acc/task<j>, control/<j>, and the row's seconds."""
    metrics = {f"acc/task{j}": float(v) for j, v in enumerate(acc_row)}
    metrics.update({f"control/{j}": float(v) for j, v in enumerate(control_row)})
    metrics.update({f"seconds/{k}": float(v) for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    metrics["row"] = float(row)
    return metrics


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The result's summary metrics that are numbers (some are undefined for one-task streams)."""
    return {f"final/{k}": float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


@hookimpl
def cl_bench_loggers() -> list[LoggerSpec]:
    return [
        LoggerSpec(
            name="wandb",
            factory="cl_bench.loggers.wandb_logger:WandbLogger",
            summary="Weights & Biases: one run per execution, grouped by run id; WANDB_MODE=offline writes locally under --out/logs/wandb",
            requires=("wandb",),
        ),
        LoggerSpec(
            name="mlflow",
            factory="cl_bench.loggers.mlflow_logger:MlflowLogger",
            summary="MLflow: one run per execution in experiment 'cl_bench'; MLFLOW_TRACKING_URI, or a local file store in --out/logs/mlruns",
            requires=("mlflow",),
            install="mlflow-skinny",
        ),
    ]
