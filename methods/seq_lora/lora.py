"""A LoRA Linear and the sequential-LoRA method."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import LinearAdapter, Method


def check_rank(rank: int) -> None:
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")


class LoRALinear(LinearAdapter):
    """y = W x + b + (alpha / r) · B A x, with W, b frozen; A kaiming-uniform, B zero (so ΔW = 0 at start)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__(base)
        check_rank(rank)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> Tensor:
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


class SeqLoRA(Method):
    """One LoRA per adapted layer, kept and trained across every task."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        check_rank(hparams["rank"])
        self.rank = hparams["rank"]
        self.alpha = hparams["alpha"]
        self.layers = hparams["layers"]
        self.towers = hparams["towers"]
        self.adapters: list[LoRALinear] = []

    def setup(self, model, stream) -> None:
        for layer in model.adaptable_layers(self.towers, self.layers):
            adapter = LoRALinear(layer.module, self.rank, self.alpha)
            layer.replace(adapter)
            self.adapters.append(adapter)

    def trainable_parameters(self, model):
        return [p for adapter in self.adapters for p in (adapter.lora_A, adapter.lora_B)]
