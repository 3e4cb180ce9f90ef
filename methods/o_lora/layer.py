"""The O-LoRA layer and method: per-task LoRAs, frozen once their task ends, with an orthogonality loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import LoRALinear, Method, check_lora_rank


class OrthogonalLoRALinear(LoRALinear):
    """The shared adapter with per-task blocks: y = W x + b + (alpha / r) · (B_old A_old + B_new A_new) x;
    the old blocks (every finished task's LoRA, stacked) are frozen. `add_task()` starts a new
    block (A kaiming-uniform, B zero: the output is unchanged); this class adds O-LoRA's penalty."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base, rank, alpha, per_task=True, dropout=dropout)

    def orthogonality(self) -> Tensor:
        """Σ |A_old A_newᵀ|: zero when the new A's rows are orthogonal to every old one."""
        return (self.old_A @ self.new_A.t()).abs().sum()


class OLoRA(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        check_lora_rank(hparams["rank"])
        if hparams["orth_weight"] < 0 or hparams["l2_weight"] < 0:
            raise ValueError("orth_weight and l2_weight must be 0 or more")
        self.hparams = dict(hparams)
        self.layers: list[OrthogonalLoRALinear] = []

    def setup(self, model, stream) -> None:
        hp = self.hparams
        for layer in model.adaptable_layers(hp["towers"], hp["layers"]):
            adapter = OrthogonalLoRALinear(layer.module, hp["rank"], hp["alpha"], hp.get("dropout", 0.0))
            layer.replace(adapter)
            self.layers.append(adapter)

    def before_experience(self, model, experience) -> None:
        for layer in self.layers:
            layer.add_task()

    def trainable_parameters(self, model):
        return [p for layer in self.layers for p in layer.trainable_parameters()]  # new_A, new_B per layer

    def extra_loss(self, model, batch, outputs) -> Tensor | None:
        hp = self.hparams
        loss = None
        if hp["orth_weight"] > 0 and self.layers and self.layers[0].old_A.shape[0]:
            loss = hp["orth_weight"] * torch.stack([layer.orthogonality() for layer in self.layers]).sum()
        if hp["l2_weight"] > 0:
            l2 = hp["l2_weight"] * torch.stack([p.norm() for layer in self.layers for p in (layer.new_A, layer.new_B)]).sum()
            loss = l2 if loss is None else loss + l2
        return loss

    def make_optimizer(self, params, hparams):
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=(0.9, 0.95))
