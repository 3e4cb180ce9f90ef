"""Stiefel-manifold and protected-subspace arithmetic for EBLoRA (pure tensor functions).

Conventions: X is n × r with orthonormal columns (XᵀX = I); for the input-side factor A (r × d_in)
the functions work on X = Aᵀ. F is n × p with orthonormal columns (the protected subspace), or
None / zero columns for none. Every function also accepts a leading batch dimension, so the
optimiser can treat all layers of one shape at once.
"""

from __future__ import annotations

import torch
from torch import Tensor


def project_off(F: Tensor | None, Y: Tensor) -> Tensor:
    """(I − F Fᵀ) Y: remove the components of Y's columns that lie in span(F)."""
    if F is None or F.shape[-1] == 0:
        return Y
    return Y - F @ (F.transpose(-2, -1) @ Y)


def sym(M: Tensor) -> Tensor:
    return 0.5 * (M + M.transpose(-2, -1))


def tangent(X: Tensor, Z: Tensor) -> Tensor:
    """Orthogonal projection of Z onto the tangent space of the Stiefel manifold at X: Z − X sym(XᵀZ).

    The result ξ satisfies Xᵀξ + ξᵀX = 0 (Xᵀξ is skew-symmetric)."""
    return Z - X @ sym(X.transpose(-2, -1) @ Z)


def riemannian_gradient(X: Tensor, G: Tensor, F: Tensor | None = None) -> Tensor:
    """The Euclidean gradient G moved off span(F) (if given), then onto the tangent space at X."""
    return tangent(X, project_off(F, G))


def polar(M: Tensor) -> Tensor:
    """The polar factor of a full-column-rank M (n × r): U Vᵀ of its thin SVD M = U Σ Vᵀ.

    Computed as M (MᵀM)^(-1/2) from the r × r Gram matrix (eigh in float64), which is the same
    matrix and far cheaper than a tall SVD; for a retraction M = X + ξ with ξ tangent,
    MᵀM = I + ξᵀξ has every eigenvalue ≥ 1, so this is well conditioned.
    """
    M64 = M.double()
    values, vectors = torch.linalg.eigh(M64.transpose(-2, -1) @ M64)
    inv_sqrt = vectors @ torch.diag_embed(values.clamp_min(1e-30).rsqrt()) @ vectors.transpose(-2, -1)
    return (M64 @ inv_sqrt).to(M.dtype)


def retract(X: Tensor, step: Tensor, F: Tensor | None = None) -> Tensor:
    """Move X along `step`: project the step onto the tangent space (off span(F) first, if given),
    add it, keep the sum off span(F), and map it back onto the manifold with the polar factor."""
    xi = tangent(X, project_off(F, step))
    return polar(project_off(F, X + xi))


def random_orthonormal(n: int, r: int, F: Tensor | None = None, keep: Tensor | None = None, *, dtype=torch.float32, device=None) -> Tensor:
    """n × r with orthonormal columns orthogonal to span(F) and to span(keep) (QR of a Gaussian
    draw from the global torch generator, projected off both twice for numerical safety)."""
    Z = torch.randn(n, r, dtype=torch.float64, device=device)
    F64 = None if F is None else F.double()
    K64 = None if keep is None or keep.shape[-1] == 0 else keep.double()
    for _ in range(2):
        Z = project_off(K64, project_off(F64, Z))
    Q, R = torch.linalg.qr(Z)
    signs = torch.where(torch.diagonal(R) < 0, -1.0, 1.0).to(Q.dtype)  # a unique, sign-fixed factor
    return (Q * signs).to(dtype)


def init_from_gradient(G: Tensor, F: Tensor | None, rank: int, rel_tol: float = 1e-6) -> tuple[Tensor, Tensor, int]:
    """The pre-task initialisation (B, A, k) from a layer's mean gradient G (d_out × d_in).

    With G_F = G (I − F Fᵀ) = U Σ Vᵀ: B = U[:, :r], A = Vᵀ[:r]. Directions whose singular value is
    zero (σ ≤ rel_tol · σ_max, or G_F = 0) carry no information and could lie in span(F), so they
    are replaced by random orthonormal directions off F (and off the kept ones); k is the number of
    singular directions actually kept (0: the fallback random init).
    """
    d_out, d_in = G.shape
    G64 = G.double()
    F64 = None if F is None or F.shape[-1] == 0 else F.double()
    projected = G64 if F64 is None else G64 - (G64 @ F64) @ F64.T
    U, S, Vh = torch.linalg.svd(projected, full_matrices=False)
    top = float(S[0]) if S.numel() else 0.0
    k = int(((S > rel_tol * top) & (S > 1e-30)).sum()) if top > 0 else 0
    k = min(k, rank)
    B, A = U[:, :k], Vh[:k]
    if k < rank:
        B = torch.cat([B, random_orthonormal(d_out, rank - k, None, B, dtype=torch.float64, device=G.device)], dim=1)
        A_cols = torch.cat([A.T, random_orthonormal(d_in, rank - k, F64, A.T, dtype=torch.float64, device=G.device)], dim=1)
        A = A_cols.T
    return B.to(G.dtype), A.contiguous().to(G.dtype), k


def extend_basis(F: Tensor | None, G: Tensor, threshold: float, max_dim: int, rel_tol: float = 1e-6) -> tuple[Tensor, int]:
    """GPM growth of the protected input-side basis F (d_in × p) by a gradient G (d_out × d_in).

    Work in d_in space with M = Gᵀ. Let E = ‖M‖²_F (total energy) and R = (I − F Fᵀ) M = U Σ Vᵀ;
    the energy already in F is E − ‖R‖². Add the smallest number k of R's leading left singular
    vectors with (E − ‖R‖²) + Σ_{i<k} σ_i² ≥ threshold · E (none if F already holds that much),
    at most max_dim − p of them. The new columns are re-orthogonalised against F. Returns (F', k).
    """
    d_in = G.shape[1]
    F64 = torch.zeros(d_in, 0, dtype=torch.float64, device=G.device) if F is None else F.double()
    M = G.double().T
    total = float((M * M).sum())
    room = max(0, max_dim - F64.shape[1])
    if total <= 0.0 or room == 0:
        return F64.to(G.dtype), 0
    R = project_off(F64, M)
    U, S, _ = torch.linalg.svd(R, full_matrices=False)
    energy = S.square()
    inside = total - float(energy.sum())
    needed = threshold * total - inside
    if needed <= 0:
        return F64.to(G.dtype), 0
    reached = torch.nonzero(torch.cumsum(energy, 0) >= needed * (1 - 1e-12))
    k = int(reached[0]) + 1 if len(reached) else int(energy.numel())
    usable = int(((S > rel_tol * S[0]) & (S > 1e-30)).sum())  # never add numerically null directions
    k = min(k, usable, room)
    if k == 0:
        return F64.to(G.dtype), 0
    new = U[:, :k]
    for _ in range(2):
        new = project_off(F64, new)
    new, _ = torch.linalg.qr(new)
    return torch.cat([F64, new], dim=1).to(G.dtype), k
