"""The sequential-LoRA method on the shared adapter (`cl_bench.LoRALinear`, its default options)."""

from __future__ import annotations

from typing import Any

from cl_bench import LoRALinear, Method, check_lora_rank


class SeqLoRA(Method):
    """One LoRA per adapted layer (A kaiming-uniform, B zero), kept and trained across every task."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        check_lora_rank(hparams["rank"])
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
        return [p for adapter in self.adapters for p in adapter.trainable_parameters()]  # lora_A, lora_B per layer
