"""What the classic methods (`ewc`, `replay`, `gem`, `ogd`) train, and the passes over data they share.

`base` picks what trains, the rest of the method being a regulariser or a gradient rule on top.
The base is the base method's own object, so what trains, with which optimizer and which loss,
is that method's on either track:

- `"finetune"`: a `FineTune` (every weight of the towers: CLIP's `towers`, both by default, the
  logit scale frozen, label smoothing where set; a language model's decoder). TRACE's EWC, GEM
  and replay rows are full fine-tuning.
- `"seq-lora"`: a `SeqLoRA` (one LoRA through all tasks on the `layers` of the same towers).
  TRACE's OGD row runs on LoRA.

With the method's own part switched off (`strength=0`, `memory=0`) a run equals the base
method's run bit for bit (tested on both tracks).

The losses the rules differentiate (EWC's Fisher, OGD's directions, GEM's and replay's memory
losses) are the training loss of examples of one task. On a language model that is the model's
own loss. On CLIP it is the cross-entropy over a label space given explicitly (`model.scores`),
so it does not depend on which task the model is set to: a task's own classes for the task just
trained (EWC, OGD: the loss it was trained on), and for a memory example of an earlier task the
classes the protocol scores that task over, among those seen so far (`memory_space`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import Method, check_lora_rank
from cl_bench.methods.finetune import TOWER_CHOICES, FineTune
from cl_bench.methods.seq_lora.lora import SeqLoRA

BASES = ("finetune", "seq-lora")
# The keys of a causal LM's padded batches (cl_bench's CausalLM: ids padded with -1, labels -100).
LM_PAD = (-1, -100)
TEXT_PROTOCOL = "instruct"  # the language-model track: the model's own loss, no label spaces


class ClassicBase(Method):
    """Trains what the base method trains, as it trains it; subclasses add their rule."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        self.hparams = hparams
        self.base = hparams["base"]
        if self.base not in BASES:
            raise ValueError(f"method.base must be one of {', '.join(BASES)}, not {self.base!r}")
        betas = hparams.get("betas")
        if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"method.betas must be two numbers in [0, 1), got {betas}")
        # CLIP runs have `towers` (finetune's choice: both, image, text); language-model runs have
        # none (their one tower, the decoder), which keeps their hyper-parameters, hence run ids, as they were.
        towers = hparams.get("towers", "decoder")
        if towers not in TOWER_CHOICES:
            raise ValueError(f"method.towers must be one of {', '.join(k for k in TOWER_CHOICES if k != 'decoder')}, not {towers!r}")
        trainer: Method
        if self.base == "seq-lora":
            check_lora_rank(hparams["rank"])
            trainer = SeqLoRA({**hparams, "towers": list(TOWER_CHOICES[towers])})
        else:
            trainer = FineTune({**hparams, "towers": towers, "label_smoothing": hparams.get("label_smoothing", 0.0)})
        self.trainer = trainer
        self.stream: Any = None

    # ------------------------------------------------------------------ the base

    def setup(self, model, stream) -> None:
        self.stream = stream
        self.trainer.setup(model, stream)

    def trainable_parameters(self, model) -> list[nn.Parameter]:
        return list(self.trainer.trainable_parameters(model))

    def make_optimizer(self, params, hparams):
        return self.trainer.make_optimizer(params, hparams)

    def extra_loss(self, model, batch, outputs):
        """The base's own term (finetune's label smoothing, where set), None otherwise."""
        return self.trainer.extra_loss(model, batch, outputs)

    # ------------------------------------------------------------------ shared passes

    @property
    def images(self) -> bool:
        """Whether this run classifies images (label spaces) rather than generating text."""
        return self.stream is not None and self.stream.protocol != TEXT_PROTOCOL

    def memory_space(self, task: int, current: int) -> list[int]:
        """The classes an example of `task` is scored over while task `current` trains: those the
        protocol scores `task`'s test set over once `current` is learnt, among the classes seen so
        far (class-il, domain-il, x-tail: every class seen; mtil: the task's own; never a class
        of a task not reached yet)."""
        seen = set(self.stream.seen_classes(current))
        return sorted(c for c in self.stream.label_space(current + 1, task) if c in seen)

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
    def task_loss(model, inputs: Tensor, targets: Tensor, classes: Sequence[int] | None = None, of: str = "loss") -> Tensor:
        """The mean training loss of a batch: the model's own loss (`classes` None), or the
        cross-entropy over `classes` (global ids) of the model's scores. `of="logit"`: the sum of
        the ground-truth logits instead (OGD's GTL directions; `classes` needed)."""
        if classes is None:
            return model.loss(model(inputs), targets)
        logits = model.scores(inputs, classes).float()
        space = torch.as_tensor(list(classes), device=targets.device)
        columns = (targets.unsqueeze(1) == space.unsqueeze(0)).float().argmax(dim=1)
        if of == "logit":
            return logits.gather(1, columns.unsqueeze(1)).sum()
        return F.cross_entropy(logits, columns)

    @staticmethod
    def gradient(model, params: list[nn.Parameter], inputs: Tensor, targets: Tensor, classes: Sequence[int] | None = None, of: str = "loss") -> list[Tensor]:
        """The gradient of `task_loss` on one batch (float32; `p.grad` untouched). The model is
        in training mode (a language model's forward returns logits only then)."""
        device = params[0].device
        inputs, targets = inputs.to(device), targets.to(device)
        was_training = model.training
        model.train()
        with torch.enable_grad():
            loss = ClassicBase.task_loss(model, inputs, targets, classes, of)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        model.train(was_training)
        return [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() for g, p in zip(grads, params)]

    @staticmethod
    def flat(tensors: list[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1).float() for t in tensors])


def plus(first: Tensor | None, second: Tensor | None) -> Tensor | None:
    """The sum of two optional loss terms (None when both are)."""
    if first is None:
        return second
    return first if second is None else first + second


def memory_gradient(model, params: list[nn.Parameter], inputs: Tensor, targets: Tensor, chunk: int, classes: Sequence[int] | None = None) -> Tensor:
    """The flat gradient of the mean per-example loss over a set of examples, `chunk` at a time
    (each chunk's loss weighted by its share of the examples: the whole set's mean, exactly under
    the per-example loss weighting)."""
    total: Tensor | None = None
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        grad = ClassicBase.flat(ClassicBase.gradient(model, params, inputs[part], targets[part], classes))
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
