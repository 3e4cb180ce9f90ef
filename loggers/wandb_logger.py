"""The `wandb` logger: one W&B run per execution of a cl_bench run.

The W&B run's id is the execution id and its group the run id, so a forced re-run shows as a
second run beside the first. Project from WANDB_PROJECT (default cl_bench); WANDB_MODE=offline
writes the run under `<out>/logs/wandb` with no network (upload it later with `wandb sync`).
"""

from __future__ import annotations

import os
from typing import Any

from cl_bench import hookimpl

from . import final_metrics, row_metrics


class WandbLogger:
    def __init__(self, folder: str) -> None:
        self.out = folder
        self.run: Any = None  # a wandb Run once the run starts

    @hookimpl
    def cl_bench_run_start(self, run_id: str, execution_id: str, config: dict[str, Any], plan: dict[str, Any]) -> None:
        import wandb

        os.makedirs(self.out, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "cl_bench"), id=execution_id, name=run_id, group=run_id,
            config={"config": config, "plan": plan}, dir=self.out, reinit="create_new",
        )

    @hookimpl
    def cl_bench_before_training(self, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any]) -> None:
        self.run.log(row_metrics(row, acc_row, control_row, timings), step=row)

    @hookimpl
    def cl_bench_experience_end(self, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any], losses: list[float]) -> None:
        import wandb

        metrics: dict[str, Any] = row_metrics(row, acc_row, control_row, timings)
        if losses:  # W&B's step is the matrix row: the task's loss curve is one table at that row
            metrics["train/loss"] = wandb.Table(columns=["iteration", "loss"], data=[[i, v] for i, v in enumerate(losses)])
            metrics["train/last_loss"] = losses[-1]
        self.run.log(metrics, step=row)

    @hookimpl
    def cl_bench_run_end(self, run_id: str, path: str, result: dict[str, Any]) -> None:
        import wandb

        self.run.summary.update(final_metrics(result))
        artifact = wandb.Artifact(f"result-{run_id}", type="result")
        artifact.add_file(path)
        self.run.log_artifact(artifact)
        self.run.finish()
        self.run = None
