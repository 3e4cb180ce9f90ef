"""Continual-learning metrics as pure functions of the accuracy matrix (docs/metrics.md).

`A` has rows i = 0..T (0 = before training, i = after training task i) and columns j = 1..T (the
test set of task j); in code both are 0-based arrays, so column c holds task c + 1. `C` has the
same rows for the control sets. Accuracies are percentages; `zs_retention` is a ratio. A metric
that a matrix cannot define (bwt with one task, say) is None.

`last` and `avg` follow each protocol's literature. Class-IL papers pool the test images of every
class seen so far (`last_pooled`: after the last task; `avg_incremental`: after each task, averaged
over tasks), so the per-task cells are weighted by the tasks' test-set sizes `n`. MTIL, X-TAIL and
domain-IL papers average over tasks (data sets, domains) with equal weight (`last_task_mean`,
`avg_all_cells`). All four stay available under those names, whatever the protocol.

The instruct protocol (continual instruction tuning, TRACE) adds `op` and `trace_bwt`, as MoRAM's
TRACE code reports them; its cells are each task's own score (accuracy, ROUGE-L, ...) in [0, 100].
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

METRICS = (
    "last",
    "avg",
    "transfer",
    "plasticity",
    "bwt",
    "forgetting",
    "fwt",
    "zs_retention",
    "last_task_mean",
    "avg_all_cells",
    "last_pooled",
    "avg_incremental",
)
INSTRUCT_METRICS = ("op", "trace_bwt")  # added for the instruct protocol only
LOWER_IS_BETTER = frozenset({"forgetting"})
POOLED_PROTOCOLS = frozenset({"class-il"})  # where `last` and `avg` pool test images over seen tasks


def _matrix(acc_matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    a = np.asarray(acc_matrix, dtype=float)
    if a.ndim != 2 or a.shape[1] < 1 or a.shape[0] != a.shape[1] + 1:
        raise ValueError(f"the accuracy matrix must have T + 1 rows and T columns, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the accuracy matrix has missing (non-finite) entries")
    return a


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sizes(test_sizes: Sequence[int] | np.ndarray, tasks: int) -> np.ndarray:
    n = np.asarray(test_sizes, dtype=float)
    if n.shape != (tasks,) or not np.isfinite(n).all() or (n < 1).any():
        raise ValueError(f"test_sizes must hold one positive count per task ({tasks}), got {list(test_sizes)!r}")
    return n


def last_task_mean(a: np.ndarray) -> float:
    """Mean accuracy over every task after the last one: mean_j A[T, j] (MTIL, X-TAIL 'Last')."""
    return float(a[-1].mean())


def avg_all_cells(a: np.ndarray) -> float:
    """MTIL 'Average': mean of A[i, j] over every i >= 1 and every j."""
    return float(a[1:].mean())


def seen_accuracy(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Row i >= 1: accuracy over the pooled test images of tasks 1..i, sum_{j<=i} n_j A[i, j] / sum_{j<=i} n_j."""
    t = a.shape[1]
    return np.array([float(np.dot(a[i, :i], n[:i]) / n[:i].sum()) for i in range(1, t + 1)])


def last_pooled(a: np.ndarray, n: np.ndarray) -> float:
    """Class-IL 'Last': accuracy over every test image after the last task, sum_j n_j A[T, j] / sum_j n_j."""
    return float(seen_accuracy(a, n)[-1])


def avg_incremental(a: np.ndarray, n: np.ndarray) -> float:
    """Class-IL 'Average' (average incremental accuracy): mean over i >= 1 of the accuracy on tasks 1..i."""
    return float(seen_accuracy(a, n).mean())


def transfer(a: np.ndarray) -> float | None:
    """MTIL 'Transfer': mean over j >= 2 of mean_{1 <= i < j} A[i, j] (zero-shot on tasks not yet learned)."""
    t = a.shape[1]
    return _mean([float(a[1:j, j - 1].mean()) for j in range(2, t + 1)])


def plasticity(a: np.ndarray) -> float:
    """How well each task is learned: mean_j A[j, j]."""
    t = a.shape[1]
    return float(np.mean([a[j, j - 1] for j in range(1, t + 1)]))


def bwt(a: np.ndarray) -> float | None:
    """Backward transfer: mean over j < T of A[T, j] - A[j, j] (negative = forgetting)."""
    t = a.shape[1]
    return _mean([float(a[t, j - 1] - a[j, j - 1]) for j in range(1, t)])


def forgetting(a: np.ndarray) -> float | None:
    """Mean over j < T of max_{j <= i < T} (A[i, j] - A[T, j])."""
    t = a.shape[1]
    return _mean([float(max(a[i, j - 1] for i in range(j, t)) - a[t, j - 1]) for j in range(1, t)])


def fwt(a: np.ndarray) -> float | None:
    """Forward transfer: mean over j >= 2 of A[j-1, j] - A[0, j]."""
    t = a.shape[1]
    return _mean([float(a[j - 1, j - 1] - a[0, j - 1]) for j in range(2, t + 1)])


def op(a: np.ndarray) -> float:
    """TRACE's overall performance: mean_j A[T, j], every task's score after the last task."""
    return float(a[-1].mean())


def trace_bwt(a: np.ndarray) -> float:
    """TRACE's backward transfer (MoRAM, TRACE/inference/collect_results.py): the mean over all T
    tasks of min(A[T, j] - A[j, j], 0). Gains count as zero and the last task (always 0) is in the
    mean, so it is never positive and is smaller in size than `bwt` by up to a factor (T - 1) / T."""
    t = a.shape[1]
    return float(np.mean([min(float(a[t, j - 1] - a[j, j - 1]), 0.0) for j in range(1, t + 1)]))


def zs_retention(c: Sequence[Sequence[float]] | np.ndarray | None) -> float | None:
    """Pre-trained ability kept: mean over control sets of C[T] / C[0]."""
    if c is None:
        return None
    m = np.asarray(c, dtype=float)
    if m.size == 0 or m.ndim != 2 or m.shape[1] == 0:
        return None
    if not np.isfinite(m).all():
        raise ValueError("the control matrix has missing (non-finite) entries")
    if (m[0] <= 0).any():
        return None  # a control set the pre-trained model never gets right says nothing about retention
    return float(np.mean(m[-1] / m[0]))


def compute(acc_matrix, control_matrix=None, *, protocol: str, test_sizes: Sequence[int], only: Collection[str] | None = None) -> dict[str, float | None]:
    """Every metric of an accuracy matrix (and control matrix), keyed by name.

    `protocol` picks what `last` and `avg` are (see the module's docstring); `test_sizes` holds the
    number of test images of each task, in task order. `only` names the metrics to compute (all
    by default): the intervals recompute a few of them thousands of times.
    """
    a = _matrix(acc_matrix)
    n = _sizes(test_sizes, a.shape[1])
    if control_matrix is not None and len(control_matrix) and np.asarray(control_matrix, dtype=float).shape[0] != a.shape[0]:
        raise ValueError("the control matrix must have the same rows as the accuracy matrix")
    pooled = protocol in POOLED_PROTOCOLS
    formulas: dict[str, Callable[[], float | None]] = {
        "last": lambda: last_pooled(a, n) if pooled else last_task_mean(a),
        "avg": lambda: avg_incremental(a, n) if pooled else avg_all_cells(a),
        "transfer": lambda: transfer(a),
        "plasticity": lambda: plasticity(a),
        "bwt": lambda: bwt(a),
        "forgetting": lambda: forgetting(a),
        "fwt": lambda: fwt(a),
        "zs_retention": lambda: zs_retention(control_matrix),
        "last_task_mean": lambda: last_task_mean(a),
        "avg_all_cells": lambda: avg_all_cells(a),
        "last_pooled": lambda: last_pooled(a, n),
        "avg_incremental": lambda: avg_incremental(a, n),
    }
    if protocol == "instruct":
        formulas.update(op=lambda: op(a), trace_bwt=lambda: trace_bwt(a))
    return {name: formula() for name, formula in formulas.items() if only is None or name in only}
