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

On CLIP (images) a memory example's loss is the cross-entropy over the classes the protocol
scores its task over, among those seen so far (`ClassicBase.memory_space`: every class seen on
class-il, domain-il and x-tail; the task's own on mtil), one forward per distinct label space. From the
second task on, the current examples are scored over the same space as their protocol's memory
examples (every class seen on class-il and x-tail, which takes one more forward of the batch; on
domain-il and mtil that is their training space already), so the joined batch is one batch over
one label space, as experience replay trains a single head (scoring the current examples over
their own task's classes only biased tiny-clip towards the old classes: on embedded-cil tasks 2
to 5 scored 0, 49, 16 and 5 % right after their training). The base's label smoothing, where set, is added for the
current examples as the base adds it. This is experience replay as Chaudhry et al. (2019) run it on images: every batch
joined by as many memory examples, drawn uniformly; their memory is filled by reservoir sampling
over the stream, here by a seeded random draw of each task (`memory` per task).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cl_bench import batch_share, process_count

from .memory import WithMemory


class Replay(WithMemory):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.ratio = float(hparams["replay_ratio"])
        if self.ratio < 0:
            raise ValueError(f"method.replay_ratio must be >= 0, got {self.ratio}")
        self.generator: torch.Generator | None = None
        self.current_space: list[int] | None = None  # the current examples' label space, where it is not the training one

    def before_experience(self, model, experience) -> None:
        super().before_experience(model, experience)
        self.generator = None
        # class-il, x-tail: the current examples too are scored over every class seen, as the
        # memory examples are (None where that is the training label space: domain-il, mtil)
        self.current_space = None
        if self.images and len(self.memory):
            space = self.memory_space(experience.index, experience.index)
            self.current_space = space if space != sorted(experience.classes) else None
        if len(self.memory) and self.ratio > 0:  # its own generator: the base's draws stay where they were
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))

    def replay_count(self, n: int) -> int:
        return round(n * self.ratio)

    def extra_loss(self, model, batch, outputs):
        base = super().extra_loss(model, batch, outputs)  # finetune's label smoothing, where set
        if self.generator is None:
            return base
        inputs, targets = batch
        processes = process_count()  # in a multi-process run this batch is one process's share
        n = len(targets)
        m_all = self.replay_count(n * processes)  # drawn for the whole batch, as in one process
        if m_all == 0:
            return base
        held_inputs, held_targets, held_tasks = self.memory_tensors(targets.device)
        drawn = torch.randint(len(held_targets), (m_all,), generator=self.generator).to(targets.device)
        index = drawn[batch_share(m_all)]  # every process draws the same examples and replays its share
        m = len(index)
        plain = model.loss(outputs, targets)
        current = plain
        if self.images and self.current_space is not None:  # one label space for the joined batch
            current = self.task_loss(model, inputs, targets, self.current_space)
        current = current if base is None else current + base
        replayed = self.memory_loss(model, held_inputs[index], held_targets[index], held_tasks[index]) if m else current * 0.0
        # the strategy adds this to `plain`: the sum is the joined batch's mean (over the
        # processes, once their gradients are averaged)
        return processes * (n * current + m * replayed) / (n * processes + m_all) - plain

    def memory_loss(self, model, inputs: Tensor, targets: Tensor, tasks: Tensor) -> Tensor:
        """The mean loss of memory examples: the model's own (a language model), or on images the
        cross-entropy of each example over its task's memory space, one forward per space."""
        if not self.images:
            return model.loss(model(inputs), targets)
        groups: dict[tuple[int, ...], list[int]] = {}
        for task in tasks.unique().tolist():
            groups.setdefault(tuple(self.spaces[task] or ()), []).append(task)
        total = torch.zeros((), device=targets.device)
        for space, members in groups.items():
            rows = torch.isin(tasks, torch.tensor(members, device=tasks.device))
            count = int(rows.sum())
            total = total + self.task_loss(model, inputs[rows], targets[rows], space) * count
        return total / len(targets)
