"""Continual-learning metrics as pure functions of the accuracy matrix (DESIGN section 7).

`A` has rows i = 0..T (0 = before training, i = after training task i) and columns j = 1..T (the
test set of task j); in code both are 0-based arrays, so column c holds task c + 1. `C` has the
same rows for the control sets. Accuracies are percentages; `zs_retention` is a ratio. A metric
that a matrix cannot define (bwt with one task, say) is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("last", "avg", "transfer", "plasticity", "bwt", "forgetting", "fwt", "zs_retention")
LOWER_IS_BETTER = frozenset({"forgetting"})


def _matrix(acc_matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    a = np.asarray(acc_matrix, dtype=float)
    if a.ndim != 2 or a.shape[1] < 1 or a.shape[0] != a.shape[1] + 1:
        raise ValueError(f"the accuracy matrix must have T + 1 rows and T columns, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the accuracy matrix has missing (non-finite) entries")
    return a


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def last(a: np.ndarray) -> float:
    """Mean accuracy over every task after the last one: mean_j A[T, j]."""
    return float(a[-1].mean())


def avg(a: np.ndarray) -> float:
    """MTIL 'Average': mean of A[i, j] over every i >= 1 and every j."""
    return float(a[1:].mean())


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
    """Mean over j < T of max_{j <= l < T} (A[l, j] - A[T, j])."""
    t = a.shape[1]
    return _mean([float(max(a[l, j - 1] for l in range(j, t)) - a[t, j - 1]) for j in range(1, t)])


def fwt(a: np.ndarray) -> float | None:
    """Forward transfer: mean over j >= 2 of A[j-1, j] - A[0, j]."""
    t = a.shape[1]
    return _mean([float(a[j - 1, j - 1] - a[0, j - 1]) for j in range(2, t + 1)])


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


def compute(acc_matrix, control_matrix=None) -> dict[str, float | None]:
    """Every section-7 metric of an accuracy matrix (and control matrix), keyed by name."""
    a = _matrix(acc_matrix)
    if control_matrix is not None and len(control_matrix) and np.asarray(control_matrix, dtype=float).shape[0] != a.shape[0]:
        raise ValueError("the control matrix must have the same rows as the accuracy matrix")
    return {
        "last": last(a),
        "avg": avg(a),
        "transfer": transfer(a),
        "plasticity": plasticity(a),
        "bwt": bwt(a),
        "forgetting": forgetting(a),
        "fwt": fwt(a),
        "zs_retention": zs_retention(control_matrix),
    }
