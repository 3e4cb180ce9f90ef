"""The episodic memory GEM and replay share: `memory` training examples per task, a seeded random
draw of each task's training set (`cl_bench.EpisodicMemory`, grouped by task; a language model's
examples padded on the left to a common width when stacked).

On images only the chosen examples are read (a task of a real stream is too large to hold whole);
a language model's task is read whole and drawn from, as before (its runs, hence results, unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from cl_bench import EpisodicMemory, pad_left

from .base import LM_PAD, ClassicBase

READ_BATCH = 256


class WithMemory(ClassicBase):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.per_task = hparams["memory"]
        if isinstance(self.per_task, bool) or not isinstance(self.per_task, int) or self.per_task < 0:
            raise ValueError(f"method.memory (examples kept per task) must be an integer >= 0, got {self.per_task!r}")
        self.memory = EpisodicMemory(0, rule="random", group_by="task", pad=LM_PAD)
        self.held: tuple[Tensor, Tensor, Tensor] | None = None  # the memory while a task trains, on the model's device
        self.spaces: dict[int, list[int] | None] = {}  # per earlier task: the classes its memory is scored over

    def setup(self, model, stream) -> None:
        super().setup(model, stream)
        if self.images:  # images have one shape: nothing to pad
            self.memory.pad = None

    def before_experience(self, model, experience) -> None:
        self.held = None
        self.spaces = {task: self.memory_space(task, experience.index) if self.images else None for task in self.memory.groups}

    def memory_tensors(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs, targets and tasks of every example held, on `device` (moved once a task)."""
        if self.held is None or self.held[1].device != device:
            self.held = tuple(t.to(device) for t in self.memory.tensors())  # type: ignore[assignment]
        assert self.held is not None
        return self.held

    def after_experience(self, model, experience) -> None:
        self.held = None
        if self.per_task == 0:  # nothing kept: no draw from any generator, the base run exactly
            return
        self.memory.budget = self.per_task * (len(self.memory.groups) + 1)  # `memory` examples for every task
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        if self.images:
            rows = torch.randperm(len(experience.dataset), generator=generator)[: self.per_task].sort().values
            batches = list(DataLoader(Subset(experience.dataset, rows.tolist()), batch_size=READ_BATCH))
            inputs = torch.cat([b[0] for b in batches])
            targets = torch.cat([b[1] for b in batches]).long()
        else:
            batches = list(experience.batches(READ_BATCH))
            inputs = pad_left([b[0] for b in batches], LM_PAD[0])
            targets = pad_left([b[1] for b in batches], LM_PAD[1])
        self.memory.add(inputs, targets, experience.index, generator=generator)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "budget": self.memory.budget}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory.budget = int(state["budget"])
        self.memory.load_state_dict(state["memory"])
