"""`Teacher`: a frozen copy of the model, taken at a task boundary, for distillation.

LwF distils from the model as it was when the previous task ended; ZSCL and WiSE-FT need the
pre-trained (zero-shot) model. Both are a deep copy of the model at one moment, with every
parameter frozen, in evaluation mode, called without autograd.

Where to take it so that a resumed run equals an uninterrupted one: the model a checkpoint
restores is the model at a task boundary, so a teacher taken in `setup` (the pre-trained model:
`setup` runs before a checkpoint is loaded, so take it before wrapping anything you train) or in
`before_experience` (the model as the previous task left it) is taken again, identical, after a
resume, and need not be saved. A teacher is kept by the method, never registered inside the model:
it is not in the model's parameters, state dict or checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class Teacher:
    """A frozen deep copy of `model` (its method's modules included, as they are now).

    `scores(inputs, classes)` and `features(inputs)` call the copy's model contract without
    autograd; `module` is the copy itself, for anything else (its parameters, for weight
    interpolation). It follows its inputs to their device.
    """

    def __init__(self, model: nn.Module) -> None:
        self.module: Any = copy.deepcopy(model)  # the copy keeps the backbone's own type
        self.module.requires_grad_(False)
        self.module.eval()

    def _on(self, inputs: Tensor) -> None:
        first = next(self.module.parameters(), None)
        if first is not None and first.device != inputs.device:
            self.module.to(inputs.device)

    @torch.no_grad()
    def scores(self, inputs: Tensor, classes: Sequence[int]) -> Tensor:
        """The teacher's logits over the label space `classes` (see `Backbone.scores`)."""
        self._on(inputs)
        return self.module.scores(inputs, classes)

    @torch.no_grad()
    def features(self, inputs: Tensor) -> Tensor:
        """The teacher's features (see `Backbone.features`)."""
        self._on(inputs)
        return self.module.features(inputs)

    def state_dict(self) -> dict[str, Tensor]:
        """The copy's tensors (for a method that must checkpoint a teacher it cannot re-take)."""
        return self.module.state_dict()
