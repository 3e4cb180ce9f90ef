"""Filling the accuracy matrix through Avalanche's evaluation loop.

`AccuracyMatrix` is an Avalanche plugin: before each evaluation experience it tells the model the
cell's task context (its label space: the protocol decides, see `Stream.label_space`), feeds the
batches to the model's scorer for that cell (top-1 accuracy through Avalanche's `Accuracy` metric
for classifiers), and stores the score in row `row`, with the cell's per-example outcomes as the
result file keeps them (`results.outcomes`): each is checked to recompute its cell exactly, and a
scorer's outcomes that do not are dropped with a warning (the cell is then stored without them).
Each cell's context carries a seed of its own (run seed, row, cell), for models that sample their
outputs.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from avalanche.core import SupervisedPlugin

from cl_bench.contracts.model import CellScorer, TaskContext
from cl_bench.contracts.stream import Stream
from cl_bench.results import outcomes as outcome_codec
from cl_bench.seeding import derive_seed


class AccuracyMatrix(SupervisedPlugin):
    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream
        self.acc = np.full((stream.num_tasks + 1, stream.num_tasks), np.nan)
        self.control = np.full((stream.num_tasks + 1, len(stream.control_names)), np.nan)
        rows = stream.num_tasks + 1
        self.acc_outcomes: list[list[Any]] = [[None] * stream.num_tasks for _ in range(rows)]
        self.control_outcomes: list[list[Any]] = [[None] * len(stream.control_names) for _ in range(rows)]
        self.batch_sizes: list[int] = [0] * rows  # the evaluation batch size of each row
        self.control_sizes: list[int] = [0] * len(stream.control_names)
        self.row = 0
        self._scorer: CellScorer | None = None
        self._cell: tuple[np.ndarray, list[list[Any]], int] | None = None
        self._batches: list[int] = []

    def before_eval_exp(self, strategy, **kwargs) -> None:
        experience = strategy.experience
        column = int(experience.current_experience)
        split = "control" if experience.origin_stream.name == "control" else "test"
        seed = derive_seed(strategy.seed, "evaluation", self.row, split, column)
        if split == "control":
            name, classes, self._cell = self.stream.control_names[column], self.stream.control_classes[column], (self.control, self.control_outcomes, column)
            context = TaskContext("control", column, name, tuple(classes), seed)
        else:
            classes, self._cell = self.stream.label_space(self.row, column), (self.acc, self.acc_outcomes, column)
            context = TaskContext("test", column, self.stream.task_names[column], tuple(classes), seed)
        strategy.model.set_task_context(context)
        self._scorer = strategy.model.scorer(context)
        self._batches = []

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        assert self._scorer is not None  # set by before_eval_exp, which Avalanche calls first
        self._scorer.update(strategy.mb_output, strategy.mb_y)
        self._batches.append(len(strategy.mb_y))

    def after_eval_exp(self, strategy, **kwargs) -> None:
        assert self._cell is not None and self._scorer is not None  # set by before_eval_exp
        matrix, kept, column = self._cell
        value = self._scorer.result()
        matrix[self.row, column] = value
        batch = max(self._batches, default=1)
        self.batch_sizes[self.row] = max(self.batch_sizes[self.row], batch)
        if matrix is self.control:
            self.control_sizes[column] = sum(self._batches)
        outcomes = self._scorer.outcomes() if hasattr(self._scorer, "outcomes") else None
        stored, recompute = outcome_codec.encode_cell(outcomes, batch)
        if stored is not None and (len(outcomes or ()) != sum(self._batches) or recompute is None or recompute() != value):
            warnings.warn(
                f"{type(self._scorer).__name__}'s per-example outcomes do not recompute its cell {value!r}; the cell is stored without outcomes",
                RuntimeWarning,
                stacklevel=1,
            )
            stored = None
        kept[self.row][column] = stored


def evaluate_row(strategy, plugin: AccuracyMatrix, row: int) -> tuple[list[float], list[float]]:
    """Evaluate every test set and control set; return row `row` of both matrices (the row's
    outcomes stay in the plugin: `row_outcomes`)."""
    plugin.row = row
    plugin.batch_sizes[row] = 0
    streams = plugin.stream.benchmark.streams
    strategy.eval(streams["test"])
    if "control" in streams:
        strategy.eval(streams["control"])
    return [float(v) for v in plugin.acc[row]], [float(v) for v in plugin.control[row]]


def row_outcomes(plugin: AccuracyMatrix, row: int) -> dict[str, Any]:
    """Row `row`'s outcomes as the runner keeps them: its cells and its evaluation batch size."""
    return {"acc": list(plugin.acc_outcomes[row]), "control": list(plugin.control_outcomes[row]), "batch_size": plugin.batch_sizes[row] or 1}
