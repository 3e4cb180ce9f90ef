"""How an accuracy-matrix cell is computed from its per-example outcomes, in the exact float
arithmetic the scorers use, so that a result file's outcomes recompute each cell bit for bit
(docs/results.md, Per-example outcomes). A leaf: the scorers (`contracts.model.CellScorer`,
`blocks.text_scores`) and the result checks (`results.outcomes`) share it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_score(values: Sequence[float]) -> float:
    """A cell of per-example scores in [0, 1]: 100 * (left-to-right sum) / count, 0 for none.

    The sum is spelled out (Python 3.12's `sum` of floats compensates its rounding, 3.11's does
    not): the same arithmetic on every Python."""
    total = 0.0
    for value in values:
        total += value
    return 100.0 * total / len(values) if len(values) else 0.0


def running_accuracy(right: np.ndarray, batch_size: int) -> float:
    """The cell Avalanche's `Accuracy` metric gives for these outcomes (booleans, in the order fed)
    in batches of `batch_size`: its `Mean` of per-batch accuracies weighted by batch sizes,
    sum_b (k_b / n_b) * n_b / sum_b n_b, in its float arithmetic, times 100."""
    summed, weight = 0.0, 0.0
    for start in range(0, len(right), batch_size):
        batch = right[start : start + batch_size]
        value, size = float(int(batch.sum())) / len(batch), float(len(batch))
        summed += value * size
        weight += size
    return 100.0 * float(summed / weight if weight else 0.0)
