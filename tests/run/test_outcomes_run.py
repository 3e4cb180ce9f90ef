"""Per-example outcomes in real runs: the cells are the numbers cl_bench gave before it kept
outcomes (Avalanche's `Accuracy` alone), bit for bit, and every cell recomputes from its outcomes."""

from __future__ import annotations

import warnings

import pytest
from toys import ToyPlugin

from cl_bench import CellScorer, RunConfig, run
from cl_bench.config.registry import Registry
from cl_bench.contracts.model import Backbone
from cl_bench.results.outcomes import decode_bits
from cl_bench.results.validation import validate


class AvalancheAccuracyOnly(CellScorer):
    """The default scorer as it was before per-example outcomes: Avalanche's `Accuracy`, nothing kept."""

    def __init__(self) -> None:
        from avalanche.evaluation.metrics import Accuracy

        self._accuracy = Accuracy()

    def update(self, outputs, targets) -> None:
        self._accuracy.update(outputs, targets)


def toy_run(folder, method: str):
    # 3 tasks of 2 classes x 20 images, evaluated in batches of 7: every cell is a running mean over
    # uneven batches, where (k / n) * n is not always k in floating point
    config = RunConfig(method=method, scenario="toy", backbone="toy-clip", out=str(folder), progress=False, iters=3, eval_batch_size=7)
    for key, value in (("scenario.tasks", 3), ("scenario.per_class", 20)):
        config.set(key, value)
    return run(config, registry=Registry([ToyPlugin()]))


@pytest.mark.parametrize("method", ["seq-lora", "finetune"])
def test_a_runs_matrices_are_those_of_avalanches_accuracy_bit_for_bit(tmp_path, monkeypatch, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no cell may lose its outcomes
        now = toy_run(tmp_path / "now", method)
    monkeypatch.setattr(Backbone, "scorer", lambda self, context: AvalancheAccuracyOnly())
    before = toy_run(tmp_path / "before", method)
    assert now.acc_matrix == before.acc_matrix and now.control_matrix == before.control_matrix
    assert now.metrics == before.metrics
    outcomes = now.data["outcomes"]
    assert outcomes["batch_sizes"] == [7] * 4 and outcomes["control_sizes"] == [40]
    assert all(isinstance(cell, str) and len(decode_bits(cell, 40)) == 40 for row in outcomes["acc"] + outcomes["control"] for cell in row)
    validate(now.data)  # every cell recomputes exactly from its bitmap
    # a scorer that keeps no outcomes leaves its cells null, and the result is still valid
    assert all(cell is None for row in before.data["outcomes"]["acc"] for cell in row)
    validate(before.data)
