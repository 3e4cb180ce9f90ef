"""Attention with separate q/k/v/out Linears, replacing open_clip's `nn.MultiheadAttention`.

open_clip 3.x keeps q, k and v fused in `in_proj_weight`, and MultiheadAttention's eval fast path
reads that tensor directly, so wrapping `q` alone cannot work. `SplitAttention` computes the same
function from four `nn.Linear`s that methods can wrap one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitAttention(nn.Module):
    """Multi-head self/cross attention as open_clip calls it (batch first, no dropout)."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> SplitAttention:
        """An equivalent module holding copies of `mha`'s projections."""
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn or mha.dropout:
            raise ValueError("only batch-first MultiheadAttention without dropout, bias_k or zero-attn is supported")
        has_bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, bias=has_bias).to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            for index, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                rows = slice(index * mha.embed_dim, (index + 1) * mha.embed_dim)
                proj.weight.copy_(mha.in_proj_weight[rows])
                if has_bias:
                    proj.bias.copy_(mha.in_proj_bias[rows])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, None]:
        if need_weights:
            raise NotImplementedError("SplitAttention does not return attention weights")
        batch, length, _ = query.shape
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        mask = _additive_mask(attn_mask, key_padding_mask, batch, self.num_heads, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim)), None


def _additive_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None, batch: int, heads: int, dtype: torch.dtype) -> Tensor | None:
    """MultiheadAttention's mask conventions (bool True = blocked, or additive floats) as one float mask."""
    mask = None
    if attn_mask is not None:
        mask = _as_additive(attn_mask, dtype)
        if mask.dim() == 3:  # (batch * heads, L, S)
            mask = mask.view(batch, heads, mask.shape[-2], mask.shape[-1])
    if key_padding_mask is not None:
        padding = _as_additive(key_padding_mask, dtype)[:, None, None, :]
        mask = padding if mask is None else mask + padding
    return mask


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def split_attention_(model: nn.Module) -> int:
    """Replace every `nn.MultiheadAttention` inside `model` in place; returns how many were replaced."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children() if isinstance(child, nn.MultiheadAttention)]
    for parent, name, child in targets:
        setattr(parent, name, SplitAttention.from_multihead(child))
    return len(targets)
