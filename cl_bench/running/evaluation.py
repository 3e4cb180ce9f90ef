"""Filling the accuracy matrix through Avalanche's evaluation loop.

`AccuracyMatrix` is an Avalanche plugin: before each evaluation experience it tells the model the
cell's task context (its label space: the protocol decides, see `Stream.label_space`), feeds the
batches to the model's scorer for that cell (top-1 accuracy through Avalanche's `Accuracy` metric
for classifiers), and stores the score in row `row`. Each cell's context carries a seed of its
own (run seed, row, cell), for models that sample their outputs.
"""

from __future__ import annotations

import numpy as np
from avalanche.core import SupervisedPlugin

from cl_bench.contracts.model import CellScorer, TaskContext
from cl_bench.contracts.stream import Stream
from cl_bench.seeding import derive_seed


class AccuracyMatrix(SupervisedPlugin):
    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream
        self.acc = np.full((stream.num_tasks + 1, stream.num_tasks), np.nan)
        self.control = np.full((stream.num_tasks + 1, len(stream.control_names)), np.nan)
        self.row = 0
        self._scorer: CellScorer | None = None
        self._cell: tuple[np.ndarray, int] | None = None

    def before_eval_exp(self, strategy, **kwargs) -> None:
        experience = strategy.experience
        column = int(experience.current_experience)
        split = "control" if experience.origin_stream.name == "control" else "test"
        seed = derive_seed(strategy.seed, "evaluation", self.row, split, column)
        if split == "control":
            name, classes, self._cell = self.stream.control_names[column], self.stream.control_classes[column], (self.control, column)
            context = TaskContext("control", column, name, tuple(classes), seed)
        else:
            classes, self._cell = self.stream.label_space(self.row, column), (self.acc, column)
            context = TaskContext("test", column, self.stream.task_names[column], tuple(classes), seed)
        strategy.model.set_task_context(context)
        self._scorer = strategy.model.scorer(context)

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        assert self._scorer is not None  # set by before_eval_exp, which Avalanche calls first
        self._scorer.update(strategy.mb_output, strategy.mb_y)

    def after_eval_exp(self, strategy, **kwargs) -> None:
        assert self._cell is not None and self._scorer is not None  # set by before_eval_exp
        matrix, column = self._cell
        matrix[self.row, column] = self._scorer.result()


def evaluate_row(strategy, plugin: AccuracyMatrix, row: int) -> tuple[list[float], list[float]]:
    """Evaluate every test set and control set; return row `row` of both matrices."""
    plugin.row = row
    streams = plugin.stream.benchmark.streams
    strategy.eval(streams["test"])
    if "control" in streams:
        strategy.eval(streams["control"])
    return [float(v) for v in plugin.acc[row]], [float(v) for v in plugin.control[row]]
