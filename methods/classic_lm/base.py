"""What the classic methods (`ewc`, `replay`, `gem`, `ogd`) train, and the passes over data they share.

`base` picks what trains, the rest of the method being a regulariser or a gradient rule on top:

- `"finetune"`: every weight of the language model (TRACE's EWC, GEM and replay rows are full
  fine-tuning), exactly as the `finetune` method trains it (same parameters, same Adam).
- `"seq-lora"`: one LoRA (rank, alpha, dropout, layers) trained through all tasks (TRACE's OGD row
  runs on LoRA), exactly as the `seq-lora` method trains it (same adapters, same draws, same Adam).

With the method's own part switched off (`strength=0`, `memory=0`) a run equals the base
method's run bit for bit (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import LoRALinear, Method, check_lora_rank

BASES = ("finetune", "seq-lora")
# The keys of a causal LM's padded batches (cl_bench's CausalLM: ids padded with -1, labels -100).
LM_PAD = (-1, -100)


class ClassicBase(Method):
    """Trains the base's parameters with the base's optimizer; subclasses add their rule."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        self.hparams = hparams
        self.base = hparams["base"]
        if self.base not in BASES:
            raise ValueError(f"method.base must be one of {', '.join(BASES)}, not {self.base!r}")
        betas = hparams.get("betas")
        if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"method.betas must be two numbers in [0, 1), got {betas}")
        self.betas = None if betas is None else (float(betas[0]), float(betas[1]))
        if self.base == "seq-lora":
            check_lora_rank(hparams["rank"])
        self.adapters: list[LoRALinear] = []

    # ------------------------------------------------------------------ the base

    def setup(self, model, stream) -> None:
        if self.base != "seq-lora":
            return
        for layer in model.adaptable_layers(("decoder",), self.hparams["layers"]):
            adapter = LoRALinear(layer.module, self.hparams["rank"], self.hparams["alpha"], dropout=float(self.hparams.get("dropout", 0.0)))
            layer.replace(adapter)
            self.adapters.append(adapter)

    def trainable_parameters(self, model) -> list[nn.Parameter]:
        if self.base == "seq-lora":
            return [p for adapter in self.adapters for p in adapter.trainable_parameters()]
        return list(model.tower_parameters("decoder"))

    def make_optimizer(self, params, hparams):
        if self.betas is None:
            return None
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=self.betas)

    # ------------------------------------------------------------------ shared passes

    def params(self, model) -> list[nn.Parameter]:
        """The trainable parameters, each once, in the strategy's order."""
        return list({id(p): p for p in self.trainable_parameters(model)}.values())

    @staticmethod
    def examples(experience, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Up to `count` of the task's training examples one at a time (a shuffled draw seeded from
        the global generator, which the strategy seeds per experience)."""
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        yield from experience.batches(1, limit=count, shuffle=True, seed=seed)

    @staticmethod
    def gradient(model, params: list[nn.Parameter], inputs: Tensor, targets: Tensor) -> list[Tensor]:
        """The gradient of the model's training loss on one batch (float32; `p.grad` untouched).
        The model is in training mode (a language model's forward returns logits only then)."""
        device = params[0].device
        inputs, targets = inputs.to(device), targets.to(device)
        was_training = model.training
        model.train()
        with torch.enable_grad():
            loss = model.loss(model(inputs), targets)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        model.train(was_training)
        return [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() for g, p in zip(grads, params)]

    @staticmethod
    def flat(tensors: list[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1).float() for t in tensors])


def memory_gradient(model, params: list[nn.Parameter], inputs: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """The flat gradient of the mean per-example loss over a set of examples, `chunk` at a time
    (each chunk's loss weighted by its share of the examples: the whole set's mean, exactly under
    the per-example loss weighting)."""
    total: Tensor | None = None
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        grad = ClassicBase.flat(ClassicBase.gradient(model, params, inputs[part], targets[part]))
        grad = grad * (len(targets[part]) / len(targets))
        total = grad if total is None else total + grad
    assert total is not None
    return total


def set_flat_grad(params: list[nn.Parameter], flat: Tensor) -> None:
    """Write a flat vector back into the parameters' `.grad`, in their order and dtype."""
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad).to(p.grad.dtype))
        offset += n


def flat_grad(params: list[nn.Parameter]) -> Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
