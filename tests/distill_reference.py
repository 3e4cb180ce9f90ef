"""Hand restatements for the distillation methods' tests (lwf, zscl): the soft-target
cross-entropy written out with explicit softmax formulas, and a run-event recorder of the training
losses (a sensitive check where the toy model's accuracy cells stay at chance)."""

from __future__ import annotations

import math

from cl_bench import hookimpl


def soft_cross_entropy(student: list[list[float]], teacher: list[list[float]], T: float) -> float:
    """T² · mean over rows of −Σ_j p_j log q_j, p = softmax(teacher/T), q = softmax(student/T), by hand."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        t_exp = [math.exp(v / T - max(t_row) / T) for v in t_row]
        p = [e / sum(t_exp) for e in t_exp]
        s_max = max(s_row) / T
        log_norm = s_max + math.log(sum(math.exp(v / T - s_max) for v in s_row))
        total += -sum(pj * (v / T - log_norm) for pj, v in zip(p, s_row))
    return T * T * total / len(student)


def transpose(rows: list[list[float]]) -> list[list[float]]:
    return [list(column) for column in zip(*rows)]


class Losses:
    """Records every training iteration's loss, per task (the run-event hook): a sensitive check
    where the toy's accuracy cells stay at chance."""

    def __init__(self) -> None:
        self.by_task: dict[int, list[float]] = {}

    @hookimpl
    def cl_bench_experience_end(self, task, losses):
        self.by_task[task] = list(losses)
