"""`ogd`: orthogonal gradient descent (Farajtabar et al., 2020) as TRACE runs it (language
models, on LoRA by default) and as OGD's image code does (CLIP).

After each task, the gradients of the loss of `directions` training examples (one example each,
at the task's final parameters, over every trainable parameter flattened) are made orthonormal
against the stored basis and each other (Gram-Schmidt, float32; a direction whose remainder has
norm under 1e-6 of its own is dropped) and added to the basis. From the second task on, each
step's gradient g becomes g − strength · B Bᵀ g (B the basis as columns; strength 1 is OGD: the
step is orthogonal to every stored direction) before the optimizer step (`before_update`).

As in TRACE (BeyonderXX/TRACE and MoRAM `TRACE/model/Regular/OGD.py`): LoRA r 8, alpha 32,
dropout 0.1 on q, k, v, o (`base=seq-lora`); the directions are gradients of the ground-truth LM
loss (not OGD's per-logit gradients); they are kept for every task, never pruned.

Departures from TRACE's code:
- TRACE collects the gradient of every micro-step of the task's last epoch (125 per rank), but
  appends the same buffer each time, so its stack holds copies of the last step's gradient, which
  its bf16 Gram-Schmidt turns into noise or NaN; here `directions` distinct examples (default 125,
  TRACE's intent), in float32.
- TRACE projects each LoRA tensor with its own rows of the basis through tensor hooks located by
  a countdown over the backward order; here the whole flattened gradient at once (the same
  projection when the slices line up, since B Bᵀ g is taken over the full vector: TRACE's per-slice
  projection is not a projection onto the full basis; ours is).
- `strength` (1 in OGD and TRACE) scales the projection; 0 turns it off (the base run, bit for bit).
- Note (not a departure): the optimizer is Adam, as in TRACE, so the step is the projected
  gradient rescaled per coordinate and with momentum, not exactly orthogonal (OGD is an SGD method).

On CLIP (images) the directions are by default those of OGD's paper and its image code
(MehdiAbbanaBennani/continual-learning-ogdplus, `ogd/ogd_core_new.py`: the gradient of the
ground-truth logit of one example, `gradient=logit`; TRACE's loss gradients: `gradient=loss`),
taken over the task's own classes, from `directions` training examples drawn at random (as that
code draws `memory_size` of them). Departures from that code: it steps with plain SGD and
projects only the shared layers (each task's head steps unprojected); here the base's AdamW on
every trainable parameter of the base (CLIP has no task heads: its classifier is the text tower,
which the base trains or not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .base import ClassicBase, flat_grad, set_flat_grad

GRADIENTS = ("loss", "logit")  # what a direction is the gradient of: the example's loss, its ground-truth logit
DROP = 1e-6  # a direction whose remainder after projection is under this share of its norm adds nothing


def orthonormal_extend(basis: torch.Tensor | None, directions: torch.Tensor) -> torch.Tensor:
    """`basis` (k × p, orthonormal rows, or None) extended by Gram-Schmidt (twice, for float32
    accuracy) with the rows of `directions`; near-dependent directions are dropped."""
    rows = [] if basis is None else list(basis)
    for d in directions:
        v = d.float().clone()
        norm = float(v.norm())
        if norm == 0.0:
            continue
        for _ in range(2):
            for b in rows:
                v -= (b @ v) * b
        if float(v.norm()) <= DROP * norm:
            continue
        rows.append(v / v.norm())
    return torch.stack(rows) if rows else directions.new_zeros((0, directions.shape[1]), dtype=torch.float32)


def project_out(g: torch.Tensor, basis: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """g − strength · B Bᵀ g, with B's columns the basis rows."""
    return g - strength * (basis.T @ (basis @ g))


class OGD(ClassicBase):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.strength = float(hparams["strength"])
        if self.strength < 0:
            raise ValueError(f"method.strength must be >= 0, got {self.strength}")
        self.count = int(hparams["directions"])
        if self.count < 1:
            raise ValueError(f"method.directions must be at least 1, got {self.count}")
        self.of = hparams.get("gradient", "loss")  # language models: TRACE's loss gradients
        if self.of not in GRADIENTS:
            raise ValueError(f"method.gradient must be one of {', '.join(GRADIENTS)}, not {self.of!r}")
        self.basis: torch.Tensor | None = None

    def before_update(self, model, params) -> None:
        if self.basis is None or len(self.basis) == 0 or self.strength == 0:
            return
        params = self.params(model)
        g = flat_grad(params)
        set_flat_grad(params, project_out(g, self.basis.to(g.device), self.strength))

    def after_experience(self, model, experience) -> None:
        params = self.params(model)
        classes = experience.classes if self.images else None
        if self.of == "logit" and classes is None:
            raise ValueError("method.gradient=logit needs a classifier's label space (an image stream); a language model's directions are loss gradients")
        grads = [self.flat(self.gradient(model, params, x, y, classes, self.of)) for x, y in self.examples(experience, self.count)]
        if grads:
            self.basis = orthonormal_extend(self.basis, torch.stack(grads))

    def state_dict(self) -> dict[str, Any]:
        return {"basis": self.basis}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.basis = state["basis"]
