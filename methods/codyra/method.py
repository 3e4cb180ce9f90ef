"""The CoDyRA method: rank-gated LoRA, a proximal sparsity step on the gates, a merge per task.

Per task t, on every adapted Linear (a `cl_bench.LoRALinear` with `rank_gates=True` and
alpha = r, so ΔW = B diag(g) A with scale 1, as the official layer):

- before_experience (t > 0): `restart()`: A kaiming-uniform, B = 0, g ~ N(0, 1) at full rank r
  (the official `increment_task`, which also runs at the start of the next task), drawn from the
  strategy's per-task seed, so a resumed run draws the same;
- training: the CLIP cross-entropy over the task's classes plus `text_to_image_weight` times the
  text-to-image term (below); `ProximalAdamW` = AdamW (betas (0.9, 0.9999)) whose `step()` then
  applies the proximal step to every g with the κ of `threshold_at` (below);
- after_experience: each layer's effective rank ‖g‖₀ is recorded (`effective_ranks`, in the
  method's state and logged), then W ← W + B diag(g) A (`merge(inplace=True)`, which sets B = 0):
  components with g_i = 0 add nothing, so this merges exactly the surviving ranks.

The κ schedule, restated from the official training loop for T = `iters` iterations (k = 0 .. T−1),
L = `sparsity_steps`, d = `dense_fraction` · T (a real number), m = max(1, ⌊(T − d) / L⌋):
the κ values are linspace(0, `sparsity`, L); the index starts at 0 and goes up by one at every
iteration j ≥ d with j mod m = 0 (capped at L − 1); the step applies after optimizer step k iff k > d.
With the official T = 500: d = 250, m = 5, κ = i·0.005/49 from k = 251 (i = 1) to κ_max = 0.005 at
k = 490, 249 thresholded steps whose κ add up to 0.650. The one departure: where T − d < L the
code's m is 0 and κ never leaves 0 (no pruning at all); here m = 1.

The proximal operator (`soft_threshold`): `threshold="paper"` (the default) is the paper's
T_κ(g) = sign(g) · max(|g| − κ, 0); `"code"` is what the official loop computes (three in-place
masked updates): g − κ·sign(g) where |g| ≥ 2κ, g unchanged where |g| = κ exactly, 0 elsewhere: a
dead zone of 2κ. Both are the identity at κ = 0, so `sparsity=0` is the same dense, gated LoRA
(merged and restarted per task) as with the proximal step removed; the tests check that bit for bit.

The text-to-image term (official `loss_ce_t`): with v̂_b the batch's normalised image features,
ê_c the current classes' text features and s the frozen logit scale (exactly the current-class
columns of the model's logits), F.cross_entropy(s·E v̂ᵀ, mask) over the rows of *every class seen
so far*, where only the current classes' rows have targets: (1/C_seen) Σ_c Σ_{b: y_b = c}
−log softmax_b(s⟨ê_c, v̂_b⟩), C_seen counting the classes of tasks 0..t (with repeats, as the
official list of prompts; in domain-IL each task counts the shared classes again). Its weight thus
falls as tasks accumulate, as in the official code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cl_bench import LoRALinear, Method, UserError, check_lora_rank, gather_batch

log = logging.getLogger(__name__)

THRESHOLDS = ("paper", "code")
BETAS = (0.9, 0.9999)  # fixed in the official code (models/codyra.py, the AdamW of train_model)


# ---------------------------------------------------------------------- the proximal step


def soft_threshold(g: Tensor, kappa: float, rule: str = "paper") -> Tensor:
    """The proximal step on one gate vector (a new tensor; `g` is not changed).

    "paper": T_κ(g) = 1(|g| > κ) · (g − κ·sign(g)).
    "code": the official loop's three masked updates, in their order: g > κ → g − κ; g < −κ → g + κ;
    then |g| < κ → 0 (so |g| in (κ, 2κ) also ends at 0, and |g| = κ exactly is left as it is)."""
    if rule == "paper":
        return torch.where(g.abs() > kappa, g - kappa * torch.sign(g), torch.zeros_like(g))
    if rule == "code":
        out = torch.where(g > kappa, g - kappa, g)
        out = torch.where(out < -kappa, out + kappa, out)
        return torch.where(out.abs() < kappa, torch.zeros_like(out), out)
    raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}, not {rule!r}")


def threshold_at(k: int, iters: int, sparsity: float, steps: int = 50, dense_fraction: float = 0.5) -> float | None:
    """κ applied after optimizer step k (0-based) of a task of `iters` steps, or None when no
    proximal step runs then (the dense phase): see the module docstring."""
    dense = dense_fraction * iters
    if not k > dense:
        return None
    stride = max(1, int((iters - dense) // steps))
    first = math.ceil(dense)
    index = min(k // stride - (first - 1) // stride, steps - 1)  # multiples of stride in [first, k]
    return float(np.linspace(0.0, sparsity, steps)[index])


class ProximalAdamW(torch.optim.AdamW):
    """AdamW whose `step()` then applies CoDyRA's proximal step to the gates (in place).

    `self.iteration` counts the calls to `step()` (one per training iteration; a step a fp16 grad
    scaler skips for an overflow neither steps nor thresholds, and does not advance κ's schedule).
    The strategy builds a new one per task, so the schedule restarts with every task, as the official
    loop's does."""

    def __init__(self, params: Iterable, gates: Sequence[Tensor], *, iters: int, sparsity: float, steps: int, dense_fraction: float, rule: str, **adamw) -> None:
        super().__init__(params, **adamw)
        self.gates = list(gates)
        self.iters, self.sparsity, self.steps, self.dense_fraction, self.rule = iters, sparsity, steps, dense_fraction, rule
        self.iteration = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        kappa = threshold_at(self.iteration, self.iters, self.sparsity, self.steps, self.dense_fraction)
        if kappa is not None:
            self.proximal_step(kappa)
        self.iteration += 1
        return loss

    @torch.no_grad()
    def proximal_step(self, kappa: float) -> None:
        for gate in self.gates:
            gate.copy_(soft_threshold(gate, kappa, self.rule))


# ---------------------------------------------------------------------- the method


class CoDyRA(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        hp = dict(hparams)
        check_lora_rank(hp["rank"])
        if not hp["sparsity"] >= 0.0:
            raise UserError(f"method.sparsity must be at least 0, got {hp['sparsity']}")
        if hp["sparsity_steps"] < 2:
            raise UserError(f"method.sparsity_steps must be at least 2 (the κ values are linspace(0, sparsity, steps)), got {hp['sparsity_steps']}")
        if not 0.0 <= hp["dense_fraction"] <= 1.0:
            raise UserError(f"method.dense_fraction must be in [0, 1], got {hp['dense_fraction']}")
        if hp["threshold"] not in THRESHOLDS:
            raise UserError(f"method.threshold must be one of {', '.join(THRESHOLDS)}, not {hp['threshold']!r}")
        if not hp["text_to_image_weight"] >= 0.0:
            raise UserError(f"method.text_to_image_weight must be at least 0, got {hp['text_to_image_weight']}")
        self.hparams = hp
        self.layers: list[LoRALinear] = []
        self.names: list[str] = []
        self.task_sizes: list[int] = []
        self.task = 0
        self.effective_ranks: list[list[int]] = []  # per finished task, ‖g‖₀ of each layer (order of `names`)

    def setup(self, model, stream) -> None:
        rank = self.hparams["rank"]
        for layer in model.adaptable_layers(self.hparams["towers"], self.hparams["layers"]):
            adapter = LoRALinear(layer.module, rank, float(rank), rank_gates=True)  # alpha = r: scale 1
            layer.replace(adapter)
            self.layers.append(adapter)
            self.names.append(layer.name)
        self.task_sizes = [len(classes) for classes in stream.task_classes]

    def before_experience(self, model, experience) -> None:
        self.task = experience.index
        if experience.index > 0:  # the previous task's adapter is merged: start a full-rank one
            for layer in self.layers:
                layer.restart()

    def trainable_parameters(self, model):
        return [p for layer in self.layers for p in layer.trainable_parameters()]  # A, B, g per layer

    def make_optimizer(self, params, hparams):
        hp = self.hparams
        return ProximalAdamW(
            params,
            [layer.lora_gate for layer in self.layers],
            iters=int(hparams["iters"]),
            sparsity=float(hp["sparsity"]),
            steps=int(hp["sparsity_steps"]),
            dense_fraction=float(hp["dense_fraction"]),
            rule=hp["threshold"],
            lr=hparams["lr"],
            weight_decay=hparams["weight_decay"],
            betas=BETAS,
        )

    def extra_loss(self, model, batch, outputs):
        weight = self.hparams["text_to_image_weight"]
        if not weight:
            return None
        space = model.label_space
        # s·E v̂ᵀ over the current classes: (classes, batch); a softmax across the batch, so a
        # multi-process run's share of it is gathered into the whole batch (the term counts once)
        logits = gather_batch(outputs[:, space].float()).t()
        targets = (space.unsqueeze(1) == gather_batch(batch[1]).unsqueeze(0)).float()
        seen = sum(self.task_sizes[: self.task + 1])
        return weight * F.cross_entropy(logits, targets, reduction="sum") / seen

    def after_experience(self, model, experience) -> None:
        ranks = [layer.effective_rank() for layer in self.layers]
        self.effective_ranks.append(ranks)
        kept = sum(ranks)
        log.info(
            "codyra: task %s kept %d of %d rank components (mean effective rank %.2f of %d over %d layers)",
            experience.name,
            kept,
            self.hparams["rank"] * len(ranks),
            kept / max(1, len(ranks)),
            self.hparams["rank"],
            len(ranks),
        )
        for layer in self.layers:
            layer.merge(inplace=True)  # W ← W + B diag(g) A, then B ← 0

    def state_dict(self) -> dict[str, Any]:
        return {"layers": list(self.names), "effective_ranks": [list(r) for r in self.effective_ranks]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["layers"]) != self.names:
            raise ValueError("codyra state was saved for other adapted layers")
        self.effective_ranks = [list(map(int, r)) for r in state["effective_ranks"]]
