"""`EpisodicMemory`: a bounded store of training examples kept across tasks, with a selection rule.

Rehearsal methods (iCaRL, replay, GEM) keep a few examples of earlier tasks. The memory holds at
most `budget` examples in all, as tensors (inputs, targets, and the task each came from), split
into groups (one per class, or one per task) that share the budget equally:

- `rule="herding"` (iCaRL, Rebuffi et al. 2017, Algorithm 4): within a group, examples are chosen
  one at a time, each the one that brings the mean feature of those chosen so far closest to the
  group's mean feature. The order of choice is a priority: when the budget is shared among more
  groups, each keeps its first `quota` examples (iCaRL's ReduceExemplarSet).
- `rule="random"`: a seeded random order within each group, reduced the same way.
- `rule="reservoir"` (Vitter's algorithm R): no groups; every example offered has the same
  chance `budget / seen` of being in memory, whatever its task.

Quota: `budget // groups` each; the remainder goes to the earliest groups (one more each), so
the memory is full whenever it holds enough examples. A budget of 0 keeps nothing, and a method
whose memory is empty must then run exactly as its base method does (the built-ins test this).

Examples of different lengths (a language model's token ids and labels, whose width differs
from task to task) are kept as given and padded on the left to a common width when stacked
(`tensors`, `sample`), if the memory is made with `pad=(input_fill, target_fill)` (a causal
language model's: `(-1, -100)`, its padding id and the ignored label).

The memory is saved with the method's state (`state_dict`: tensors and plain values only), so a
resumed run holds, and later draws, exactly what an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

MEMORY_RULES = ("herding", "random", "reservoir")
MEMORY_GROUPS = ("class", "task")


def herding_order(features: Tensor, count: int) -> Tensor:
    """Indices of `count` rows of `features` chosen by herding, in the order chosen.

    Features are L2-normalised first (as iCaRL does). Step k picks, among the rows not yet
    chosen, the row x that minimises ‖μ − (s + x) / k‖, where μ is the mean of all normalised
    rows and s the sum of those chosen so far; ties go to the lowest index.

    Expanded, k²‖μ − (s + x)/k‖² = k²‖μ‖² − 2k μ·s + ‖s‖² + (2 s·x + ‖x‖² − 2k μ·x), and only the
    bracket depends on x; s·x grows by x_pick·x at each step, so a step costs one matrix-vector
    product instead of several passes over an N × D temporary (a 30,000-image pool herds in
    minutes, not hours).
    """
    x = torch.nn.functional.normalize(features.double(), dim=1)
    count = min(count, len(x))
    toward_mean = x @ x.mean(dim=0)  # μ·x for every row
    norms = (x * x).sum(dim=1)  # ‖x‖² (1, up to rounding)
    overlap = torch.zeros(len(x), dtype=x.dtype)  # s·x for every row
    chosen: list[int] = []
    taken = torch.zeros(len(x), dtype=torch.bool)
    for k in range(1, count + 1):
        score = 2 * overlap + norms - 2 * k * toward_mean
        score[taken] = float("inf")
        pick = int(torch.argmin(score))
        chosen.append(pick)
        taken[pick] = True
        overlap += x @ x[pick]
    return torch.tensor(chosen, dtype=torch.long)


def pad_left(parts: list[Tensor], fill: int) -> Tensor:
    """Tensors of shape (n_i, ..., w_i) stacked along the first dimension, each padded on the left
    of its last dimension with `fill` to the widest w_i (1-D tensors are concatenated as they are)."""
    if not parts or parts[0].dim() < 2:
        return torch.cat(parts)
    width = max(part.shape[-1] for part in parts)
    return torch.cat([torch.nn.functional.pad(part, (width - part.shape[-1], 0), value=fill) for part in parts])


class EpisodicMemory:
    """At most `budget` examples kept across tasks (see the module docstring for the rules)."""

    def __init__(self, budget: int, rule: str = "herding", group_by: str = "class", pad: tuple[int, int] | None = None) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(f"memory budget must be an integer >= 0, got {budget!r}")
        if rule not in MEMORY_RULES:
            raise ValueError(f"memory rule must be one of {', '.join(MEMORY_RULES)}, got {rule!r}")
        if group_by not in MEMORY_GROUPS:
            raise ValueError(f"memory group_by must be one of {', '.join(MEMORY_GROUPS)}, got {group_by!r}")
        self.budget, self.rule, self.group_by, self.pad = budget, rule, group_by, pad
        # Per group, in priority order: inputs, targets, tasks. Reservoir keeps one group, key -1.
        self._groups: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self.seen = 0  # examples offered so far (the reservoir's counter)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return sum(len(targets) for _, targets, _ in self._groups.values())

    @property
    def groups(self) -> list[int]:
        """The group keys held (class ids or task indices), in the order they were added."""
        return list(self._groups)

    def group(self, key: int) -> tuple[Tensor, Tensor]:
        """The inputs and targets of one group, in priority order."""
        inputs, targets, _ = self._groups[key]
        return inputs, targets

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every example held: inputs, targets and task indices, group after group."""
        if not self._groups:
            return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        parts = list(self._groups.values())
        if self.pad is not None:
            inputs = pad_left([part[0] for part in parts], self.pad[0])
            targets = pad_left([part[1] for part in parts], self.pad[1])
            return inputs, targets, torch.cat([part[2] for part in parts])
        return tuple(torch.cat([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`count` examples drawn uniformly with replacement (fewer when the memory is empty)."""
        inputs, targets, _ = self.tensors()
        if len(targets) == 0 or count <= 0:
            return inputs[:0], targets[:0]
        index = torch.randint(len(targets), (count,), generator=generator)
        return inputs[index], targets[index]

    # ------------------------------------------------------------------ writing

    def add(self, inputs: Tensor, targets: Tensor, task: int, *, features: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """Offer one task's examples (all of them, or a stream of batches for the reservoir).

        Herding needs `features` (one row per example); random and reservoir draw from
        `generator` (seed it from the run's seed and the task, for reproducible runs).
        """
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if self.budget == 0:
            self.seen += len(targets)
            return
        targets, tasks = targets.long().cpu(), torch.full((len(targets),), task, dtype=torch.long)
        inputs = inputs.cpu()
        if self.rule == "reservoir":
            self._reservoir(inputs, targets, tasks, self._generator(generator))
            return
        if self.rule == "herding" and (features is None or len(features) != len(targets)):
            raise ValueError("herding needs one feature row per example")
        keys = targets.unique().tolist() if self.group_by == "class" else [task]
        quota = self.quotas([*self._groups, *(k for k in keys if k not in self._groups)])
        for key in keys:
            rows = (targets == key).nonzero().squeeze(1) if self.group_by == "class" else torch.arange(len(targets))
            if self.rule == "herding":
                assert features is not None
                order = rows[herding_order(features[rows].cpu(), quota[key])]
            else:
                order = rows[torch.randperm(len(rows), generator=self._generator(generator))[: quota[key]]]
            self._groups[key] = (inputs[order], targets[order], tasks[order])
        self.seen += len(targets)
        self._reduce(quota)

    def quotas(self, keys: list[int]) -> dict[int, int]:
        """How many examples each group may keep: `budget // len(keys)`, one more for the first
        `budget % len(keys)` groups."""
        if not keys:
            return {}
        share, extra = divmod(self.budget, len(keys))
        return {key: share + (1 if i < extra else 0) for i, key in enumerate(keys)}

    def _reduce(self, quota: Mapping[int, int]) -> None:
        for key, (inputs, targets, tasks) in list(self._groups.items()):
            keep = quota[key]
            self._groups[key] = (inputs[:keep], targets[:keep], tasks[:keep])

    def _reservoir(self, inputs: Tensor, targets: Tensor, tasks: Tensor, generator: torch.Generator) -> None:
        held = self._groups.get(-1)
        kept = [held[i] for i in range(3)] if held is not None else [inputs[:0], targets[:0], tasks[:0]]
        if self.pad is not None:  # one width for the slots held and the examples offered
            kept[0], inputs = pad_left([kept[0], inputs], self.pad[0]).split([len(kept[0]), len(inputs)])
            kept[1], targets = pad_left([kept[1], targets], self.pad[1]).split([len(kept[1]), len(targets)])
        slots: list[int] = []  # memory slot each new example takes (-1: not kept), decided in order
        size = len(kept[1])
        for _ in range(len(targets)):
            self.seen += 1
            if size < self.budget:
                slots.append(size)
                size += 1
            else:
                j = int(torch.randint(self.seen, (1,), generator=generator))
                slots.append(j if j < self.budget else -1)
        grown = [torch.cat([part, new.new_empty((size - len(part), *new.shape[1:]))]) for part, new in zip(kept, (inputs, targets, tasks))]
        for row, slot in enumerate(slots):
            if slot >= 0:
                for part, new in zip(grown, (inputs, targets, tasks)):
                    part[slot] = new[row]
        self._groups[-1] = (grown[0], grown[1], grown[2])

    @staticmethod
    def _generator(generator: torch.Generator | None) -> torch.Generator:
        if generator is None:
            raise ValueError("random and reservoir selection need a seeded torch.Generator")
        return generator

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "keys": list(self._groups),
            "groups": [{"inputs": i, "targets": t, "tasks": k} for i, t, k in self._groups.values()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        keys, groups = list(state["keys"]), list(state["groups"])
        if len(keys) != len(groups):
            raise ValueError("memory state: keys and groups differ in length")
        self.seen = int(state["seen"])
        self._groups = {int(k): (g["inputs"], g["targets"].long(), g["tasks"].long()) for k, g in zip(keys, groups)}
        if len(self) > self.budget:
            raise ValueError(f"memory state holds {len(self)} examples, over its budget of {self.budget}")
