"""`ewc`: elastic weight consolidation (Kirkpatrick et al., 2017) as TRACE runs it, on both tracks.

From the second task on the loss gains `strength / 2 · Σ F · (θ − θ*)²` over the trainable
parameters (TRACE: `0.5 · λ · Σ F (θ − θ*)²`, λ = 400; BeyonderXX/TRACE and MoRAM
`TRACE/model/Regular/EWC.py`), where θ* is the parameters at the end of the previous task and F
the empirical Fisher: squared gradients of the ground-truth loss of one example at a time. As in
TRACE, F is never reset nor decayed: each task's Fisher is added to the sum of the earlier ones,
and θ* is replaced after every task.

Departures from TRACE's code (also in docs/language-models.md):
- TRACE squares, at every training micro-step, the gradient of that step's loss (one example,
  divided by the 8 accumulation steps, with the penalty's own gradient from task 2 on), adds it
  over all epochs of the task and divides by the micro-steps of one epoch: F_TRACE ≈ epochs / 64 ·
  mean_i g_i² at moving parameters. Here, after the task, one pass over `fisher_samples` training
  examples at the final parameters adds mean_i g_i² of the loss alone (the Fisher of EWC's paper,
  empirical as TRACE's). The scale differs by epochs / 64: `strength` 400 here weighs F about
  64 / epochs times as much as TRACE's λ 400 does.

On CLIP (images; docs/methods.md, section EWC, GEM, OGD and replay on CLIP) the same rule, with
the loss of an example the cross-entropy over its task's own classes (the loss it was trained
on). Departures from GEM's EWC on images (facebookresearch/GradientEpisodicMemory
`model/ewc.py`), which squares the gradient of one batch's mean loss over the task's first
`n_memories` examples and keeps one penalty per task (Σ_t λ Σ F_t (θ − θ*_t)², no ½): here the
per-example empirical Fisher of EWC's paper, summed over tasks, and one anchor, as TRACE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import ClassicBase, plus


class EWC(ClassicBase):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.strength = float(hparams["strength"])
        if self.strength < 0:
            raise ValueError(f"method.strength must be >= 0, got {self.strength}")
        self.fisher_samples = int(hparams["fisher_samples"])
        if self.fisher_samples < 1:
            raise ValueError(f"method.fisher_samples must be at least 1, got {self.fisher_samples}")
        self.fisher: list[torch.Tensor] = []  # Σ over tasks of each task's mean squared gradient
        self.anchor: list[torch.Tensor] = []  # θ*: the parameters at the end of the last task

    def extra_loss(self, model, batch, outputs):
        base = super().extra_loss(model, batch, outputs)
        if not self.fisher or self.strength == 0:
            return base
        params = self.params(model)
        total = sum((f * (p.float() - a) ** 2).sum() for p, f, a in zip(params, self.fisher, self.anchor))
        return plus(base, 0.5 * self.strength * total)

    def after_experience(self, model, experience) -> None:
        params = self.params(model)
        task = fisher_of(self, model, params, experience, self.fisher_samples)
        self.fisher = task if not self.fisher else [f + t for f, t in zip(self.fisher, task)]
        self.anchor = [p.detach().float().clone() for p in params]

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fisher, self.anchor = list(state["fisher"]), list(state["anchor"])


def fisher_of(method: ClassicBase, model, params, experience, count: int) -> list[torch.Tensor]:
    """The empirical Fisher diagonal of one task: mean over up to `count` training examples of the
    squared gradient of each example's loss (on images over the task's own classes)."""
    classes = experience.classes if method.images else None
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    seen = 0
    for inputs, targets in method.examples(experience, count):
        for t, g in zip(total, method.gradient(model, params, inputs, targets, classes)):
            t.add_(g * g)
        seen += 1
    return [t / max(1, seen) for t in total]
