"""The O-LoRA layer and method: per-task LoRAs, frozen once their task ends, with an orthogonality loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import LinearAdapter, Method


class OrthogonalLoRALinear(LinearAdapter):
    """y = W x + b + (alpha / r) · (B_old A_old + B_new A_new) x; the old blocks (every finished
    task's LoRA, stacked) are frozen. A new block: A kaiming-uniform, B zero (the output is unchanged)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__(base)
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.rank, self.scaling = rank, alpha / rank
        like = base.weight
        self.old_A = nn.Parameter(like.new_zeros(0, base.in_features), requires_grad=False)
        self.old_B = nn.Parameter(like.new_zeros(base.out_features, 0), requires_grad=False)
        self.new_A = nn.Parameter(like.new_zeros(0, base.in_features))
        self.new_B = nn.Parameter(like.new_zeros(base.out_features, 0))
        self.grow_on_load("old_A", "old_B", "new_A", "new_B")  # a checkpoint of any number of finished tasks

    def add_task(self) -> None:
        """Freeze the current task's block into the old stack and start a new one."""
        with torch.no_grad():
            self.old_A = nn.Parameter(torch.cat([self.old_A, self.new_A]), requires_grad=False)
            self.old_B = nn.Parameter(torch.cat([self.old_B, self.new_B], dim=1), requires_grad=False)
        new_A = self.old_A.new_empty(self.rank, self.base.in_features)
        nn.init.kaiming_uniform_(new_A, a=math.sqrt(5))
        self.new_A = nn.Parameter(new_A)
        self.new_B = nn.Parameter(self.old_B.new_zeros(self.base.out_features, self.rank))

    def orthogonality(self) -> Tensor:
        """Σ |A_old A_newᵀ|: zero when the new A's rows are orthogonal to every old one."""
        return (self.old_A @ self.new_A.t()).abs().sum()

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        for A, B in ((self.old_A, self.old_B), (self.new_A, self.new_B)):
            if A.shape[0]:
                out = out + (x @ A.t() @ B.t()) * self.scaling
        return out


class OLoRA(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        if hparams["rank"] < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {hparams['rank']}")
        if hparams["orth_weight"] < 0 or hparams["l2_weight"] < 0:
            raise ValueError("orth_weight and l2_weight must be 0 or more")
        self.hparams = dict(hparams)
        self.layers: list[OrthogonalLoRALinear] = []

    def setup(self, model, stream) -> None:
        hp = self.hparams
        for layer in model.adaptable_layers(hp["towers"], hp["layers"]):
            adapter = OrthogonalLoRALinear(layer.module, hp["rank"], hp["alpha"])
            layer.replace(adapter)
            self.layers.append(adapter)

    def before_experience(self, model, experience) -> None:
        for layer in self.layers:
            layer.add_task()

    def trainable_parameters(self, model):
        return [p for layer in self.layers for p in (layer.new_A, layer.new_B)]

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
