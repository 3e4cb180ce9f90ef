"""TreeLoRA's task tree and its bandit search over earlier tasks, as pure functions of tensors.

Restated from ZinYY/TreeLoRA `utils/kd_lora_tree.py` (c6a9b6d; byte-identical in MoRAM's
`TRACE/utils/kd_lora_tree.py`); "L" numbers below are that file's lines.

Notation: D adapted modules m (the LoRA A matrices in module order), N earlier tasks j, and
g_j ∈ R^{D × F} the stored epoch-mean A of task j (times D, see `method.py`).

- The tree (`build_tree`, L10-57) is built over the task differences Δ_0 = g_0, Δ_j = g_j − g_{j−1}.
  A node at level ℓ holding tasks S is a leaf when ℓ ≥ D or |S| ≤ 1; otherwise it scores each task
  by p_j = ⟨Δ_{j,ℓ}, mean_{i∈S} Δ_{i,ℓ}⟩ (level ℓ reads module ℓ), takes τ = the lower median of the
  p (torch.median), sends p_j ≥ τ left and p_j < τ right, and splits S by position (the first
  ⌊|S|/2⌋ left) when one side would be empty. τ is the node's `median`.
- The search (`arm_scores`, `module_probabilities`, L192-262, the L1-distance branch the code
  runs): from the per-(task, module) sums of negative L1 distances and visit counts, each arm
  scores v = mean distance + b(n), b(n) = sqrt(log(2·T·(k+1)·(k+2))) / sqrt(2n + 1e-5) (k the
  step's index in the epoch, T the steps per epoch), then v ← v + min v. One task f is drawn with
  probabilities softmax_j(Σ_m v[j, m]); the rows of the root child that holds f are multiplied by
  min(τ_child, 1.5) (τ = 1 for a leaf child); v is divided by its range (+1e-5) and each module
  draws its task from softmax_j(v[:, m]).
  As written, a larger distance raises the score, so the code leans towards the most distant
  earlier task (the paper describes a lower confidence bound that prefers the closest); this
  restates the code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TreeNode:
    """One node of the task tree: its tasks, its level, and (inner nodes) τ and two children."""

    tasks: list[int]
    level: int
    median: float | None = None
    left: TreeNode | None = None
    right: TreeNode | None = None


def task_differences(stored: Tensor) -> Tensor:
    """Δ_0 = g_0, Δ_j = g_j − g_{j−1} for stored (N, D, F)."""
    return torch.cat([stored[:1], stored[1:] - stored[:-1]])


def build_tree(differences: Tensor, tasks: list[int] | None = None, level: int = 0) -> TreeNode:
    """The task tree over `differences` (N, D, F), rows indexed by task."""
    tasks = list(range(differences.shape[0])) if tasks is None else tasks
    depth = differences.shape[1]
    if level >= depth or len(tasks) <= 1:
        return TreeNode(tasks, level)
    rows = differences[tasks, level]  # (|S|, F)
    scores = rows @ rows.mean(dim=0)
    median = torch.median(scores).item()  # the lower of the two middle values for an even count
    left = [t for t, s in zip(tasks, scores.tolist()) if s >= median]
    right = [t for t, s in zip(tasks, scores.tolist()) if s < median]
    if not left or not right:
        half = len(tasks) // 2
        left, right = tasks[:half], tasks[half:]
    return TreeNode(tasks, level, median, build_tree(differences, left, level + 1), build_tree(differences, right, level + 1))


def arm_scores(distance_sums: Tensor, counts: Tensor, steps_per_epoch: int, step: int) -> Tensor:
    """v (N, D) before the tree: mean L1 distance (0 where never chosen) + exploration bonus, shifted
    by its minimum. `distance_sums` holds the sums of the negative distances, as the code keeps them."""
    mean = torch.where(counts > 0, distance_sums / counts.clamp_min(1), distance_sums)
    bonus = math.sqrt(math.log(2 * steps_per_epoch * (step + 1) * (step + 2))) / torch.sqrt(2 * counts + 1e-5)
    scores = -(mean - bonus)
    return scores + scores.min()


def first_probabilities(scores: Tensor) -> Tensor:
    """The first-level draw's probabilities over tasks: softmax of each task's summed score."""
    return torch.softmax(scores.sum(dim=1), dim=0)


def module_probabilities(scores: Tensor, root: TreeNode | None, first: int) -> Tensor:
    """Each module's probabilities over tasks (N, D) once the first draw picked task `first`."""
    scores = scores.clone()
    if root is not None and root.left is not None and root.right is not None:
        child = root.left if first in root.left.tasks else root.right
        factor = child.median if child.median is not None else 1.0
        scores[child.tasks] *= min(factor, 1.5)
    scores = scores / (scores.max() - scores.min() + 1e-5)
    return torch.softmax(scores, dim=0)


def search(distance_sums: Tensor, counts: Tensor, steps_per_epoch: int, step: int, root: TreeNode | None, generator: torch.Generator) -> Tensor:
    """One step's choice: an earlier task per module (D,), drawn from `generator`."""
    scores = arm_scores(distance_sums, counts, steps_per_epoch, step)
    first = int(torch.multinomial(first_probabilities(scores), 1, generator=generator))
    chosen = torch.multinomial(module_probabilities(scores, root, first).T.contiguous(), 1, generator=generator)
    return chosen.reshape(-1)
