"""`replay`: experience replay, each training batch joined by examples of earlier tasks.

A memory of `memory` training examples per task (a seeded random draw, `cl_bench.EpisodicMemory`)
is filled after each task. From the second task on, every (micro-)batch of n current examples is
joined by round(n · `replay_ratio`) examples drawn uniformly (with replacement) from the memory,
and the step's loss is the mean over the joined batch of each example's loss (the per-example
weighting of the backbone's loss): (n · L_current + m · L_memory) / (n + m). The memory examples
run in a forward of their own (their width differs from the current batch's), which gives the
same gradient as one joined batch (tested). In a multi-process run the memory examples are drawn
for the whole batch and each process replays its share (`cl_bench.batch_share`), so the step is
one process's.

Departure from TRACE (BeyonderXX/TRACE `training/replay.py`, copied in MoRAM's `TRACE/`): there,
after each task's epochs, one extra epoch runs over the first 10 % (file order) of every earlier
task's training set together with the whole of LIMA (an instruction data set not in TRACE); the
training batches themselves are never mixed. cl_bench has no LIMA and keeps the iteration budget
per task, so it mixes memory examples into every batch (experience replay as in Chaudhry et al.,
2019, "On tiny episodic memories"), with TRACE's share as the default memory: 50 examples per
task (10 % of 500).
"""

from __future__ import annotations

from typing import Any

import torch

from cl_bench import batch_share, process_count

from .memory import WithMemory


class Replay(WithMemory):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.ratio = float(hparams["replay_ratio"])
        if self.ratio < 0:
            raise ValueError(f"method.replay_ratio must be >= 0, got {self.ratio}")
        self.generator: torch.Generator | None = None

    def before_experience(self, model, experience) -> None:
        self.generator = None
        if len(self.memory) and self.ratio > 0:  # its own generator: the base's draws stay where they were
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))

    def replay_count(self, n: int) -> int:
        return round(n * self.ratio)

    def extra_loss(self, model, batch, outputs):
        if self.generator is None:
            return None
        inputs, targets = batch
        processes = process_count()  # in a multi-process run this batch is one process's share
        n = len(targets)
        m_all = self.replay_count(n * processes)  # drawn for the whole batch, as in one process
        if m_all == 0:
            return None
        old_inputs, old_targets = self.memory.sample(m_all, self.generator)
        share = batch_share(m_all)  # every process draws the same examples and replays its share
        old_inputs, old_targets = old_inputs[share], old_targets[share]
        m = len(old_targets)
        device = targets.device
        current = model.loss(outputs, targets)
        replayed = model.loss(model(old_inputs.to(device)), old_targets.to(device)) if m else current * 0.0
        # the strategy adds this to `current`: the sum is the joined batch's mean (over the
        # processes, once their gradients are averaged)
        return processes * (n * current + m * replayed) / (n * processes + m_all) - current
