"""The EBLoRA Linear: y = W x + b + c · s · B A x, with B and Aᵀ on the Stiefel manifold."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cl_bench import LoRALinear


class EBLoRALinear(LoRALinear):
    """A frozen Linear plus ΔW = c · s · B A: the shared adapter with an orthonormal init and a
    learnable scale, plus the protected subspace.

    - B (d_out × r) has orthonormal columns, A (r × d_in) orthonormal rows orthogonal to the
      protected input-side subspace `protected` (F, d_in × p, orthonormal columns);
    - c = alpha / r, s (`lora_scale`, shape (1,)) a learnable scalar;
    - `protected` is a non-persistent buffer (its width changes from task to task): the method
      saves and restores it through its own state dict; at most d_in − r columns, so A keeps room
      (hence rank ≤ d_in − 1).
    Until the first task starts s = 0, so the layer computes exactly the base Linear. `merge(inplace=True)`
    folds ΔW into W and sets s ← 0 (the method does so after every task).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, scale_init: float) -> None:
        super().__init__(base, rank, alpha, init="orthonormal", learnable_scale=0.0, max_rank=base.in_features - 1)
        weight = base.weight
        self.scale_init = scale_init
        self.register_buffer("protected", torch.zeros(base.in_features, 0, dtype=weight.dtype, device=weight.device), persistent=False)

    @property
    def max_protected(self) -> int:
        """The cap on F's width: d_in − r, so that r directions off F always remain for A."""
        return self.base.in_features - self.rank

    @torch.no_grad()
    def start_task(self, B: Tensor, A: Tensor) -> None:
        """Fresh factors for a new task, and s back at its initial value."""
        self.lora_B.copy_(B)
        self.lora_A.copy_(A)
        self.lora_scale.fill_(self.scale_init)

    def set_protected(self, basis: Tensor) -> None:
        if basis.shape[0] != self.base.in_features or basis.shape[1] > self.max_protected:
            raise ValueError(f"protected basis of shape {tuple(basis.shape)} does not fit a layer with d_in={self.base.in_features}, rank {self.rank}")
        self.protected = basis.detach().to(self.base.weight.device, self.base.weight.dtype).contiguous()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, protected={self.protected.shape[1]}"
