"""`RankOneMemoryLinear`: a frozen Linear plus a growing memory of rank-1 atoms (MoRAM / MoRA).

For input x, with atoms (a_i, b_i) accumulated over tasks:

    p = x Aᵀ                       one projection per atom (A: atoms x d_in)
    s = p / ‖p‖₂                    normalised over the atoms
    w = softmax(top_k(s) / τ)       k = min(max(topk, 2), atoms); atoms outside the top k get 0
    w ← w · 1[s ≥ δ]                the rank-pruning mask, at evaluation only (unless mask_in_training),
                                    without renormalising
    y = W₀ x + b + (p ⊙ w) Bᵀ       (B: d_out x atoms)

This is the forward of the official code (Artificer-AI-Lab/MoRAM, XTAIL/loralib/moram.py), computed
differently where it is faster and equal in value:
- frozen atoms stay stacked in two non-trainable tensors, grown once per task by `add_task`, and the
  new block is separate; when training at sizes where it pays (ViT-B/16 layers), the A side and the
  B side each take one matmul for the frozen stack and one for the new block, so autograd never
  forms gradients for frozen atoms (the official code concatenates every call and computes the
  gradient of the whole stack); small layers and evaluation concatenate, which takes fewer ops;
- the top k are chosen on p (the same atoms as on s), only the k chosen scores are normalised, the
  softmax runs over them, and p ⊙ w is scattered back from the k products: equal to a softmax over
  a vector with -inf outside the top k, with fewer full-size operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import LinearAdapter


# Wasted weight-gradient multiply-adds above which the frozen stack gets its own matmuls (see _split).
SPLIT_WORK = 1 << 26


def check_settings(rank: int, topk: int, temperature: float) -> None:
    """The layer's own limits, checked by the method's factory too (before any work)."""
    if rank < 1 or topk < 1 or temperature <= 0:
        raise ValueError(f"rank and topk must be at least 1 and the temperature positive (got rank {rank}, topk {topk}, temperature {temperature})")


class RankOneMemoryLinear(LinearAdapter):
    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        topk: int,
        temperature: float,
        threshold: float,
        mask_in_training: bool = False,
    ) -> None:
        super().__init__(base)  # kept, never copied; frozen by the strategy (and here)
        check_settings(rank, topk, temperature)
        for param in base.parameters():
            param.requires_grad_(False)
        self.rank, self.topk, self.temperature, self.threshold = rank, topk, float(temperature), float(threshold)
        self.mask_in_training = mask_in_training
        self.balance: Tensor | None = None  # n·Σ P_i², recorded by the last forward when `track_balance`
        self.track_balance = False
        like = base.weight
        self.frozen_A = nn.Parameter(like.new_zeros(0, base.in_features), requires_grad=False)
        self.frozen_B = nn.Parameter(like.new_zeros(base.out_features, 0), requires_grad=False)
        self.new_A = nn.Parameter(like.new_zeros(0, base.in_features))
        self.new_B = nn.Parameter(like.new_zeros(base.out_features, 0))
        self._register_load_state_dict_pre_hook(self._resize_to_incoming)

    # ------------------------------------------------------------------ growth

    @property
    def num_atoms(self) -> int:
        return self.frozen_A.shape[0] + self.new_A.shape[0]

    def add_task(self) -> None:
        """Freeze every atom so far and append `rank` new ones (A kaiming-uniform, B zero)."""
        with torch.no_grad():
            frozen_A = torch.cat([self.frozen_A, self.new_A])
            frozen_B = torch.cat([self.frozen_B, self.new_B], dim=1)
        self.frozen_A = nn.Parameter(frozen_A, requires_grad=False)
        self.frozen_B = nn.Parameter(frozen_B, requires_grad=False)
        new_A = self.frozen_A.new_empty(self.rank, self.base.in_features)
        nn.init.kaiming_uniform_(new_A, a=math.sqrt(5))
        self.new_A = nn.Parameter(new_A)
        self.new_B = nn.Parameter(self.frozen_B.new_zeros(self.base.out_features, self.rank))

    def atoms_A(self) -> Tensor:
        """All atoms' input vectors, stacked: (atoms, d_in)."""
        if not (self.frozen_A.shape[0] and self.new_A.shape[0]):
            return self.new_A if self.new_A.shape[0] else self.frozen_A
        return torch.cat([self.frozen_A, self.new_A])

    def atoms_B(self) -> Tensor:
        """All atoms' output vectors, stacked: (d_out, atoms)."""
        if not (self.frozen_B.shape[1] and self.new_B.shape[1]):
            return self.new_B if self.new_B.shape[1] else self.frozen_B
        return torch.cat([self.frozen_B, self.new_B], dim=1)

    def _resize_to_incoming(self, state, prefix, *args) -> None:
        """Let a fresh layer load a state with any number of atoms (checkpoints of grown memories)."""
        for name in ("frozen_A", "frozen_B", "new_A", "new_B"):
            incoming = state.get(prefix + name)
            current = getattr(self, name)
            if incoming is not None and incoming.shape != current.shape:
                setattr(self, name, nn.Parameter(current.new_empty(incoming.shape), requires_grad=current.requires_grad))

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        frozen, new = self.frozen_A.shape[0], self.new_A.shape[0]
        if frozen + new == 0:
            return out
        if frozen and new and self._split(x, frozen):
            projection = torch.cat([F.linear(x, self.frozen_A), F.linear(x, self.new_A)], dim=-1)
            weighted = self.weighted_projection(projection)
            return out + F.linear(weighted[..., :frozen], self.frozen_B) + F.linear(weighted[..., frozen:], self.new_B)
        projection = F.linear(x, self.atoms_A())
        return out + F.linear(self.weighted_projection(projection), self.atoms_B())

    def _split(self, x: Tensor, frozen: int) -> bool:
        """Use separate matmuls for the frozen stack when that saves real work.

        With the atoms concatenated, autograd forms the weight gradient of the whole stack
        (tokens x frozen x (d_in + d_out) wasted multiply-adds); split, it costs a few more ops.
        In evaluation there is no weight gradient, so concatenating is always cheaper.
        """
        if not (torch.is_grad_enabled() and self.new_A.requires_grad):
            return False
        tokens = x.numel() // x.shape[-1]
        return tokens * frozen * (self.base.in_features + self.base.out_features) >= SPLIT_WORK

    def _select(self, projection: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """(indices of the active atoms or None for all, their projections, their weights w).

        Top-k of s = p / ‖p‖ picks the same atoms as top-k of p (each row is scaled by a positive
        number), so only the k selected scores are normalised.
        """
        norm = projection.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # as F.normalize
        atoms = projection.shape[-1]
        k = min(max(self.topk, 2), atoms)
        if k == atoms:
            index, top = None, projection
        else:
            top, index = projection.topk(k, dim=-1)
        scores = top / norm
        weights = torch.softmax(scores / self.temperature, dim=-1)
        if self.track_balance and self.training:
            full = weights if index is None else torch.zeros_like(projection).scatter(-1, index, weights)
            self.balance = atoms * full.reshape(-1, atoms).mean(dim=0).square().sum()
        if self.threshold > 0 and (self.mask_in_training or not self.training):
            weights = weights * (scores >= self.threshold).to(weights.dtype)
        return index, top, weights

    def mixture_weights(self, projection: Tensor) -> Tensor:
        """w for every atom, from the projections p = x Aᵀ (last dimension: atoms)."""
        index, _, weights = self._select(projection)
        return weights if index is None else torch.zeros_like(projection).scatter(-1, index, weights)

    def weighted_projection(self, projection: Tensor) -> Tensor:
        """p ⊙ w, built from the k active atoms only."""
        index, top, weights = self._select(projection)
        return top * weights if index is None else torch.zeros_like(projection).scatter(-1, index, top * weights)

    def extra_repr(self) -> str:
        return f"atoms={self.num_atoms}, rank={self.rank}, topk={self.topk}, temperature={self.temperature}, threshold={self.threshold}, mask_in_training={self.mask_in_training}"
