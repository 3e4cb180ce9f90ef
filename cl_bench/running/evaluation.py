"""Filling the accuracy matrix through Avalanche's evaluation loop.

`AccuracyMatrix` is an Avalanche plugin: before each evaluation experience it tells the model the
cell's task context (its label space: the protocol decides, see `Stream.label_space`), feeds the
batches to the model's scorer for that cell (top-1 accuracy through Avalanche's `Accuracy` metric
for classifiers), and stores the score in row `row`, with the cell's per-example outcomes as the
result file keeps them (`results.outcomes`): each is checked to recompute its cell exactly, and a
scorer's outcomes that do not are dropped with a warning (the cell is then stored without them).
Each cell's context carries a seed of its own (run seed, row, cell), for models that sample their
outputs.

In a multi-process run whose model and method allow it (`shards_evaluation`), each process
evaluates a contiguous share of every cell's evaluation batches (whole batches: each holds the
examples it holds in one process), checks that its share's outcomes recompute its share's score,
and rank 0 gathers the outcomes in order and computes the cell from them with the outcome codec:
the number one process gets. A cell whose scorer keeps no outcomes is evaluated by rank 0 alone
(docs/multi-process.md, Sharded evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import numpy as np
from avalanche.core import SupervisedPlugin

from cl_bench.contracts.model import CellScorer, TaskContext
from cl_bench.contracts.stream import Stream
from cl_bench.results import outcomes as outcome_codec
from cl_bench.running.distributed import evaluation_share
from cl_bench.seeding import derive_seed


class AccuracyMatrix(SupervisedPlugin):
    def __init__(self, stream: Stream, world: Any = None) -> None:
        super().__init__()
        self.stream = stream
        self.world = world  # a multi-process run whose processes share each cell's batches (None: this process evaluates whole cells)
        self.acc = np.full((stream.num_tasks + 1, stream.num_tasks), np.nan)
        self.control = np.full((stream.num_tasks + 1, len(stream.control_names)), np.nan)
        rows = stream.num_tasks + 1
        self.acc_outcomes: list[list[Any]] = [[None] * stream.num_tasks for _ in range(rows)]
        self.control_outcomes: list[list[Any]] = [[None] * len(stream.control_names) for _ in range(rows)]
        self.batch_sizes: list[int] = [0] * rows  # the evaluation batch size of each row
        self.control_sizes: list[int] = [0] * len(stream.control_names)
        self.row = 0
        self._scorer: CellScorer | None = None
        self._context: TaskContext | None = None
        self._cell: tuple[np.ndarray, list[list[Any]], int] | None = None
        self._batches: list[int] = []
        self._mode = "whole"  # this cell here: whole, shared (this process's share of its batches), skipped (rank 0 evaluates it alone)

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
        self._context, self._batches, self._mode = context, [], "whole"
        if self.world is not None:
            share = evaluation_share(len(strategy.dataloader), self.world.size, self.world.rank)
            shared = dataclasses.replace(context, first_batch=share.start)
            strategy.model.set_task_context(shared)
            self._scorer = strategy.model.scorer(shared)
            if keeps_outcomes(self._scorer):
                self._mode = "shared"
                strategy.dataloader = strategy.eval_batches(share)
                return
            if not self.world.leader:  # a scorer without outcomes: rank 0 evaluates the cell alone
                self._mode = "skipped"
                strategy.dataloader = strategy.eval_batches(range(0))
                return
        strategy.model.set_task_context(context)
        self._scorer = strategy.model.scorer(context)

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        assert self._scorer is not None  # set by before_eval_exp, which Avalanche calls first
        self._scorer.update(strategy.mb_output, strategy.mb_y)
        self._batches.append(len(strategy.mb_y))

    def after_eval_exp(self, strategy, **kwargs) -> None:
        assert self._cell is not None and self._scorer is not None  # set by before_eval_exp
        if self._mode == "skipped":
            return
        if self._mode == "shared":
            gathered = self._gather()
            if gathered is None:  # not rank 0
                return
            outcomes, self._batches = gathered
            if outcomes is not None:
                stored, recompute = outcome_codec.encode_cell(outcomes, max(self._batches, default=1))
                assert recompute is not None  # outcomes is a list
                self._store(recompute(), stored)
                return
            # some process's scorer kept no outcomes that recompute its share: rank 0 scores the cell alone
            self._batches = []
            self._scorer = self._score_whole(strategy)
        self._check_and_store(self._scorer.result(), self._scorer)

    def _store(self, value: float, stored: Any) -> None:
        assert self._cell is not None
        matrix, kept, column = self._cell
        matrix[self.row, column] = value
        batch = max(self._batches, default=1)
        self.batch_sizes[self.row] = max(self.batch_sizes[self.row], batch)
        if matrix is self.control:
            self.control_sizes[column] = sum(self._batches)
        kept[self.row][column] = stored

    def _check_and_store(self, value: float, scorer: CellScorer) -> None:
        """Store a cell one process scored whole, with its scorer's outcomes where they recompute it."""
        outcomes = scorer.outcomes() if hasattr(scorer, "outcomes") else None
        checked = recomputing(outcomes, self._batches, value)
        if outcomes is not None and checked is None:
            warnings.warn(
                f"{type(scorer).__name__}'s per-example outcomes do not recompute its cell {value!r}; the cell is stored without outcomes",
                RuntimeWarning,
                stacklevel=1,
            )
        self._store(value, outcome_codec.encode_cell(checked, max(self._batches, default=1))[0])

    def _gather(self) -> tuple[list[Any] | None, list[int]] | None:
        """This process's share of the cell sent to rank 0: there, every share's outcomes in order
        (None when some share has none that recompute its score) and the batch sizes; None elsewhere."""
        assert self.world is not None and self._scorer is not None
        outcomes = share_outcomes(self._scorer, self._batches)
        payload = json.dumps({"outcomes": outcomes, "batches": self._batches}).encode()
        shares = [json.loads(data) for data in self.world.gather_bytes(payload)]
        if not self.world.leader:
            return None
        batches = [int(b) for share in shares for b in share["batches"]]
        if any(share["outcomes"] is None for share in shares):
            return None, batches
        return [v for share in shares for v in share["outcomes"]], batches

    def _score_whole(self, strategy) -> CellScorer:
        """Rank 0 evaluates the current cell's every batch itself (the shares' outcomes fell short)."""
        import torch

        assert self._context is not None
        strategy.model.set_task_context(self._context)
        scorer = strategy.model.scorer(self._context)
        with torch.no_grad():
            for batch in strategy.eval_batches(None):
                inputs, targets = batch[0].to(strategy.device), batch[1].to(strategy.device)
                with strategy._autocast():
                    outputs = strategy.model(inputs)
                scorer.update(outputs, targets)
                self._batches.append(len(targets))
        return scorer


def shards_evaluation(model: Any, method: Any) -> bool:
    """Whether a multi-process run may share each cell's batches out: unless the model or the
    method sets `shards_evaluation = False` (its evaluation draws at random in a way that depends
    on the batches before, or changes its state)."""
    return bool(getattr(model, "shards_evaluation", True)) and bool(getattr(method, "shards_evaluation", True))


def keeps_outcomes(scorer: CellScorer) -> bool:
    """Whether a scorer gives per-example outcomes: one that defines `outcomes()` itself, or the
    default one set up by `CellScorer.__init__` (a subclass that skips it keeps none)."""
    method = getattr(type(scorer), "outcomes", None)
    return method is not None and (method is not CellScorer.outcomes or hasattr(scorer, "_correct"))


def recomputing(outcomes: Any, batches: list[int], value: float) -> list[Any] | None:
    """`outcomes` as plain values (booleans or floats) when there is one per example fed in
    `batches` and they recompute `value`, the cell scored from them; None otherwise (or for none)."""
    if outcomes is None or len(outcomes) != sum(batches):
        return None
    values = [bool(v) if isinstance(v, (bool, np.bool_)) else float(v) for v in outcomes]
    _, recompute = outcome_codec.encode_cell(values, max(batches, default=1))
    return values if recompute is not None and recompute() == value else None


def share_outcomes(scorer: CellScorer, batches: list[int]) -> list[Any] | None:
    """A process's share of a cell as it travels to rank 0: its per-example outcomes (booleans or
    floats), or None when they are missing or do not recompute the share's own score (the check a
    whole cell gets in one process, `recomputing`; the shares are whole batches, so it applies to each)."""
    if not batches:
        return []
    return recomputing(scorer.outcomes() if hasattr(scorer, "outcomes") else None, batches, scorer.result())


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
