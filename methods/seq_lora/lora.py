"""The sequential-LoRA method on the shared adapter (`cl_bench.LoRALinear`; dropout where the
hyper-parameters have it: language models)."""

from __future__ import annotations

from typing import Any

import torch

from cl_bench import LoRALinear, Method, check_lora_rank


class SeqLoRA(Method):
    """One LoRA per adapted layer (A kaiming-uniform, B zero), kept and trained across every task."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        check_lora_rank(hparams["rank"])
        self.rank = hparams["rank"]
        self.alpha = hparams["alpha"]
        self.layers = hparams["layers"]
        self.towers = hparams["towers"]
        self.dropout = float(hparams.get("dropout", 0.0))
        self.betas = adam_betas(hparams)
        self.adapters: list[LoRALinear] = []

    def setup(self, model, stream) -> None:
        for layer in model.adaptable_layers(self.towers, self.layers):
            adapter = LoRALinear(layer.module, self.rank, self.alpha, dropout=self.dropout)
            layer.replace(adapter)
            self.adapters.append(adapter)

    def trainable_parameters(self, model):
        return [p for adapter in self.adapters for p in adapter.trainable_parameters()]  # lora_A, lora_B per layer

    def make_optimizer(self, params, hparams):
        if self.betas is None:
            return None  # the strategy's AdamW
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=self.betas)


def adam_betas(hparams) -> tuple[float, float] | None:
    """The `betas` hyper-parameter (language models: TRACE's (0.9, 0.95)) checked, or None where there is none."""
    betas = hparams.get("betas")
    if betas is None:
        return None
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"method.betas must be two numbers in [0, 1), got {betas}")
    return float(betas[0]), float(betas[1])
