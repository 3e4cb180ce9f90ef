"""The EBLoRA Linear: y = W x + b + c · s · B A x, with B and Aᵀ on the Stiefel manifold."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cl_bench import LinearAdapter

from .stiefel import random_orthonormal


class EBLoRALinear(LinearAdapter):
    """A frozen Linear plus ΔW = c · s · B A.

    - B (d_out × r) has orthonormal columns, A (r × d_in) orthonormal rows orthogonal to the
      protected input-side subspace `protected` (F, d_in × p, orthonormal columns);
    - c = alpha / r, s (`lora_scale`, shape (1,)) a learnable scalar;
    - `protected` is a non-persistent buffer (its width changes from task to task): the method
      saves and restores it through its own state dict; at most d_in − r columns, so A keeps room.
    Until the first task starts s = 0, so the layer computes exactly the base Linear.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, scale_init: float) -> None:
        super().__init__(base)
        d_out, d_in = base.out_features, base.in_features
        if not 1 <= rank < d_in or rank > d_out:
            raise ValueError(f"EBLoRA rank must be in [1, min(d_out, d_in - 1)], got {rank} for a {d_in}->{d_out} layer")
        weight = base.weight
        self.rank = rank
        self.scaling = alpha / rank
        self.scale_init = scale_init
        self.lora_B = nn.Parameter(random_orthonormal(d_out, rank, dtype=weight.dtype, device=weight.device))
        self.lora_A = nn.Parameter(random_orthonormal(d_in, rank, dtype=weight.dtype, device=weight.device).T.contiguous())
        self.lora_scale = nn.Parameter(torch.zeros(1, dtype=weight.dtype, device=weight.device))
        self.register_buffer("protected", torch.zeros(d_in, 0, dtype=weight.dtype, device=weight.device), persistent=False)

    @property
    def max_protected(self) -> int:
        """The cap on F's width: d_in − r, so that r directions off F always remain for A."""
        return self.base.in_features - self.rank

    def delta_weight(self) -> Tensor:
        return (self.scaling * self.lora_scale) * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        low = x @ self.lora_A.t()
        low = low * (self.scaling * self.lora_scale).to(low.dtype)
        return self.base(x) + low @ self.lora_B.t().to(low.dtype)

    @torch.no_grad()
    def merge(self) -> Tensor:
        """W ← W + c·s·B·A, then s ← 0 (the outputs do not change). Returns the merged ΔW."""
        delta = self.delta_weight().to(self.base.weight.dtype)
        self.base.weight.add_(delta)
        self.lora_scale.zero_()
        return delta

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
        return f"rank={self.rank}, scaling={self.scaling}, protected={self.protected.shape[1]}"
