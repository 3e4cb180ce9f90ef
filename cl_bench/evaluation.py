"""Filling the accuracy matrix through Avalanche's evaluation loop.

`AccuracyMatrix` is an Avalanche plugin: before each evaluation experience it sets the model's
label space for that cell (the protocol decides, see `Stream.label_space`), it counts correct
predictions with Avalanche's `Accuracy` metric, and it stores the percentage in row `row`.
"""

from __future__ import annotations

import numpy as np
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import Accuracy

from .stream import Stream


class AccuracyMatrix(SupervisedPlugin):
    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream
        self.acc = np.full((stream.num_tasks + 1, stream.num_tasks), np.nan)
        self.control = np.full((stream.num_tasks + 1, len(stream.control_names)), np.nan)
        self.row = 0
        self._accuracy = Accuracy()
        self._cell: tuple[np.ndarray, int] | None = None

    def before_eval_exp(self, strategy, **kwargs) -> None:
        experience = strategy.experience
        column = int(experience.current_experience)
        if experience.origin_stream.name == "control":
            classes, self._cell = self.stream.control_classes[column], (self.control, column)
        else:
            classes, self._cell = self.stream.label_space(self.row, column), (self.acc, column)
        strategy.model.set_label_space(classes)
        self._accuracy.reset()

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self._accuracy.update(strategy.mb_output, strategy.mb_y)

    def after_eval_exp(self, strategy, **kwargs) -> None:
        matrix, column = self._cell
        matrix[self.row, column] = 100.0 * self._accuracy.result()


def evaluate_row(strategy, plugin: AccuracyMatrix, row: int) -> tuple[list[float], list[float]]:
    """Evaluate every test set and control set; return row `row` of both matrices."""
    plugin.row = row
    streams = plugin.stream.benchmark.streams
    strategy.eval(streams["test"])
    if "control" in streams:
        strategy.eval(streams["control"])
    return [float(v) for v in plugin.acc[row]], [float(v) for v in plugin.control[row]]
