"""The EBLoRA method: orthonormal low-rank updates kept off the subspace earlier tasks needed.

Per task t, for every adapted Linear (all inside the strategy's timed training phase):
- before_experience: a gradient pass over `grad_batches` batches of task t's training data
  averages ∂CE/∂W (cross-entropy over the task's classes, base weights temporarily requiring
  grad); with G_F = G (I − F Fᵀ) = U Σ Vᵀ the factors start as B = U[:, :r], A = Vᵀ[:r] and
  s = `scale_init` (negative, so the first ΔW = c·s·B·A points down the gradient);
- training: Riemannian AdamW (optim.py) on B and A, their learning rate multiplied by
  sqrt(manifold_step_ref / r) as the official step scaling, no weight decay; plain AdamW on s;
- after_experience: W ← W + c·s·B·A and s ← 0; a second gradient pass on task t's data gives G_t,
  and F grows GPM-style by the leading input-side directions of (I − F Fᵀ) G_tᵀ until F holds
  `energy_threshold` of G_t's energy, at most d_in − r columns (stiefel.extend_basis).
s restarts at `scale_init` with every task: after the merge it must be 0 (the outputs may not move),
and the next task's B and A are new directions, so the previous task's magnitude means nothing for
them; the official code, too, trains a fresh adapter (s at its initial value) per task.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from cl_bench import Method, TaskContext, UserError

from .layer import EBLoRALinear
from .optim import RiemannianAdamW
from .stiefel import extend_basis, init_from_gradient

log = logging.getLogger(__name__)


class EBLoRA(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        self.hparams = dict(hparams)
        if not 0.0 < self.hparams["energy_threshold"] <= 1.0:
            raise UserError(f"energy_threshold must be in (0, 1], got {self.hparams['energy_threshold']}")
        self.layers: list[EBLoRALinear] = []
        self.names: list[str] = []
        self.last_init_ranks: list[int] = []  # singular directions kept per layer at the last init (r = all)

    # ------------------------------------------------------------------ set-up and per task

    def setup(self, model, stream) -> None:
        hp = self.hparams
        for layer in model.adaptable_layers(hp["towers"], hp["layers"]):
            try:
                adapter = EBLoRALinear(layer.module, hp["rank"], hp["alpha"], hp["scale_init"])
            except ValueError as exc:
                raise UserError(f"method.rank: {exc} ({layer.name})") from None
            layer.replace(adapter)
            self.layers.append(adapter)
            self.names.append(layer.name)

    def before_experience(self, model, experience) -> None:
        gradients = self.mean_gradients(model, experience)
        self.last_init_ranks = []
        for layer, G in zip(self.layers, gradients):
            B, A, kept = init_from_gradient(G, layer.protected, layer.rank)
            layer.start_task(B, A)
            self.last_init_ranks.append(kept)

    def trainable_parameters(self, model):
        # B, A, s (not the adapter's A, B, s): the optimizer's state, in checkpoints too, follows this order
        return [p for layer in self.layers for p in (layer.lora_B, layer.lora_A, layer.lora_scale)]

    def make_optimizer(self, params, hparams):
        roles = {}
        for layer in self.layers:
            roles[id(layer.lora_B)], roles[id(layer.lora_A)] = "columns", "rows"
        ref = float(self.hparams["manifold_step_ref"])
        factor = math.sqrt(ref / self.hparams["rank"]) if ref > 0 else 1.0
        lr = hparams["lr"]
        groups = [
            {"params": [p for p in params if roles.get(id(p)) == "columns"], "stiefel": "columns", "lr": lr * factor, "weight_decay": 0.0},
            {"params": [p for p in params if roles.get(id(p)) == "rows"], "stiefel": "rows", "lr": lr * factor, "weight_decay": 0.0},
            {"params": [p for p in params if id(p) not in roles], "lr": lr, "weight_decay": hparams["weight_decay"]},
        ]
        protected = {layer.lora_A: layer.protected for layer in self.layers if layer.protected.shape[1] > 0}
        return RiemannianAdamW(
            [g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=hparams["weight_decay"], protected=protected
        )

    def after_experience(self, model, experience) -> None:
        for layer in self.layers:
            layer.merge(inplace=True)  # W ← W + ΔW, s ← 0
        gradients = self.mean_gradients(model, experience)
        capped = []
        for name, layer, G in zip(self.names, self.layers, gradients):
            was_full = layer.protected.shape[1] >= layer.max_protected
            basis, _ = extend_basis(layer.protected, G, self.hparams["energy_threshold"], layer.max_protected)
            layer.set_protected(basis)
            if not was_full and basis.shape[1] >= layer.max_protected:
                capped.append(name)
        if capped:
            log.info(
                "eblora: the protected subspace reached its cap d_in - r in %d layer(s) after task %s and stops growing there: %s",
                len(capped),
                experience.name,
                ", ".join(capped),
            )

    # ------------------------------------------------------------------ gradient passes

    def mean_gradients(self, model, experience) -> list[torch.Tensor]:
        """Mean over `grad_batches` batches of each adapted base weight's gradient of the model's
        training loss (CLIP: the cross-entropy over the experience's classes) (the batches are a shuffled draw, seeded
        from the global generator, which the strategy seeds per experience)."""
        hp = self.hparams
        weights = [layer.base.weight for layer in self.layers]
        flags = {id(p): p.requires_grad for p in model.parameters()}
        device = weights[0].device
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for w in weights:
            w.requires_grad_(True)
        model.trainable_changed(weights)  # CLIP: text features are recomputed (with gradients) if text weights are among them
        model.set_task_context(TaskContext("train", experience.index, experience.name, tuple(experience.classes)))
        count = 0
        try:
            with torch.enable_grad():
                for inputs, targets in experience.batches(hp["grad_batch_size"], limit=hp["grad_batches"], shuffle=True, seed=seed):
                    model.loss(model(inputs.to(device)), targets.to(device)).backward()
                    count += 1
            gradients = [w.grad.detach() / count if (count and w.grad is not None) else torch.zeros_like(w) for w in weights]
        finally:
            for p in model.parameters():
                p.grad = None
                p.requires_grad_(flags[id(p)])
        return gradients

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The protected bases F (their widths vary per layer and task), one tensor per layer."""
        return {"layers": list(self.names), "protected": [layer.protected.detach().cpu() for layer in self.layers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        names, bases = list(state["layers"]), list(state["protected"])
        if names != self.names or len(bases) != len(self.layers):
            raise ValueError("eblora state was saved for other adapted layers")
        for layer, basis in zip(self.layers, bases):
            layer.set_protected(basis)
