"""The episodic memory GEM and replay share: `memory` training examples per task, a seeded random
draw of each task's training set (`cl_bench.EpisodicMemory`, grouped by task, padded on the left
to a common width when stacked)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cl_bench import EpisodicMemory, pad_left

from .base import LM_PAD, ClassicBase


class WithMemory(ClassicBase):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.per_task = hparams["memory"]
        if isinstance(self.per_task, bool) or not isinstance(self.per_task, int) or self.per_task < 0:
            raise ValueError(f"method.memory (examples kept per task) must be an integer >= 0, got {self.per_task!r}")
        self.memory = EpisodicMemory(0, rule="random", group_by="task", pad=LM_PAD)

    def after_experience(self, model, experience) -> None:
        if self.per_task == 0:  # nothing kept: no draw from any generator, the base run exactly
            return
        batches = list(experience.batches(256))
        inputs = pad_left([b[0] for b in batches], LM_PAD[0])
        targets = pad_left([b[1] for b in batches], LM_PAD[1])
        self.memory.budget = self.per_task * (len(self.memory.groups) + 1)  # `memory` examples for every task
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        self.memory.add(inputs, targets, experience.index, generator=generator)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "budget": self.memory.budget}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory.budget = int(state["budget"])
        self.memory.load_state_dict(state["memory"])
