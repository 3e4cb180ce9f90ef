"""Riemannian AdamW: AdamW for ordinary parameters, a Stiefel-manifold variant for tagged groups.

A param group with `stiefel="columns"` holds matrices X with orthonormal columns (EBLoRA's B);
`stiefel="rows"` holds matrices with orthonormal rows, handled as X = pᵀ (EBLoRA's A). For them one
step is:

1. ξ = G − X sym(XᵀG), with G first projected off the parameter's protected basis F (if any):
   the Riemannian gradient, written into `.grad`;
2. AdamW's moment update and step on ξ (no weight decay on these groups: along X it is normal to
   the manifold and the tangent projection would remove it anyway);
3. the step Δ taken by AdamW is projected onto the tangent space at X (off F first) and X is
   retracted: X ← polar((I − F Fᵀ)(X + Δ)).

Matrices of equal shape are stacked and handled in one batched call (no loop over layers in the
arithmetic); F bases of different widths are zero-padded to the widest in the stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .stiefel import retract, riemannian_gradient


def _view(t: Tensor, kind: str) -> Tensor:
    return t if kind == "columns" else t.mT


@dataclass
class _Bucket:
    kind: str
    params: list[torch.nn.Parameter]
    protected: Tensor | None  # (k, n, p_max), zero-padded, or None


class RiemannianAdamW(torch.optim.AdamW):
    def __init__(self, params: Iterable, *, protected: Mapping[Tensor, Tensor] | None = None, **adamw) -> None:
        super().__init__(params, **adamw)
        for group in self.param_groups:
            kind = group.setdefault("stiefel", None)
            if kind not in (None, "columns", "rows"):
                raise ValueError(f"stiefel must be None, 'columns' or 'rows', not {kind!r}")
            if kind is not None and group["weight_decay"] != 0:
                raise ValueError("manifold parameter groups take no weight decay")
        self.protected = dict(protected or {})
        self.refresh()

    def refresh(self) -> None:
        """Regroup the manifold parameters by shape and stack their protected bases."""
        buckets: dict[tuple, list] = {}
        for group in self.param_groups:
            kind = group["stiefel"]
            if kind is None:
                continue
            for p in group["params"]:
                buckets.setdefault((kind, tuple(p.shape), p.dtype, p.device), []).append(p)
        self._buckets = []
        for (kind, _, dtype, device), params in buckets.items():
            bases = [self.protected.get(p) for p in params]
            widest = max((0 if b is None else b.shape[1]) for b in bases)
            stacked = None
            if widest > 0:
                n = _view(params[0], kind).shape[0]
                stacked = torch.zeros(len(params), n, widest, dtype=dtype, device=device)
                for i, basis in enumerate(bases):
                    if basis is not None:
                        stacked[i, :, : basis.shape[1]] = basis
            self._buckets.append(_Bucket(kind, params, stacked))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        before = []
        for bucket in self._buckets:
            X = torch.stack([_view(p, bucket.kind) for p in bucket.params])
            if any(p.grad is not None for p in bucket.params):
                G = torch.stack([_view(p.grad, bucket.kind) if p.grad is not None else torch.zeros_like(_view(p, bucket.kind)) for p in bucket.params])
                xi = riemannian_gradient(X, G, bucket.protected)
                for i, p in enumerate(bucket.params):
                    if p.grad is not None:
                        _view(p.grad, bucket.kind).copy_(xi[i])
            before.append(X)
        super().step()
        for bucket, X in zip(self._buckets, before):
            now = torch.stack([_view(p, bucket.kind) for p in bucket.params])
            new = retract(X, now - X, bucket.protected)
            for i, p in enumerate(bucket.params):
                _view(p, bucket.kind).copy_(new[i])
        return loss
