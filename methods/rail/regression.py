"""The two closed-form regressions of RAIL, on feature tensors alone (no model, no stream).

Targets are one-hot rows over the classes learned so far (one column per class, in the order the
classes were first learned); a class learned later adds a zero column to every earlier target, so
both solutions below always equal the ridge regression on all data seen so far with the padded
targets. Everything is float64 (the official code accumulates and updates in float32 and inverts
in float64): the recursion then stays within rounding of the joint solution (tests check it).

Primal (`PrimalRidge`), with φ(x) = ReLU(P x) (P: `expansion` × d, fixed, bias-free; or φ(x) = x
when `expansion` is 0) and Φ, Y the rows of a batch:

    first task    R = (Σ ΦᵀΦ + λI)⁻¹,   W = R Σ ΦᵀY                      (sums over the task's batches)
    later tasks   W ← [W, 0] (new classes), then for each batch:
                  K = I + Φ R Φᵀ,   G = R Φᵀ K⁻¹
                  R ← R − G (R Φᵀ)ᵀ                                     (Woodbury: (R⁻¹ + ΦᵀΦ)⁻¹)
                  W ← W + G (Y − Φ W)
    scores        φ(x) W

G equals R_new Φᵀ (R_new Φᵀ = R Φᵀ − R Φᵀ K⁻¹ (K − I) = R Φᵀ K⁻¹), so the official update
W ← W + R_new Φᵀ (Y − Φ W) is this one; and Φ R = (R Φᵀ)ᵀ because R is symmetric. The official code
forms R Φᵀ, Φ R and R_new Φᵀ by three separate products and inverts K with a pseudo-inverse; here
two products of R and a solve (K is symmetric positive definite). R = (Σ_all ΦᵀΦ + λI)⁻¹ and
W = R Σ_all ΦᵀY after every batch (the paper's Theorem 1).

Dual (`KernelRidge`), k(x, x') = exp(−γ‖x − x'‖²), M the stored features of every task so far:

    α = (k(M, M) + λI)⁻¹ Y     solved from scratch after every task (Cholesky), as the official code does
    scores   k(x, M) α
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

DTYPE = torch.float64


def one_hot(columns: Tensor, width: int) -> Tensor:
    """Rows of a float64 identity: `columns` (long) picks each row's 1."""
    return torch.nn.functional.one_hot(columns, width).to(DTYPE)


def random_projection(seed: int, expansion: int, dim: int) -> Tensor:
    """The fixed expansion matrix (expansion × dim, float32, on the CPU): PyTorch's default
    `nn.Linear` weight init, kaiming-uniform with a = √5, i.e. U(−1/√dim, 1/√dim), drawn from a
    generator seeded with `seed` (the official layer draws from the global generator after CLIP's
    own init)."""
    bound = 1.0 / dim**0.5
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(expansion, dim).uniform_(-bound, bound, generator=generator)


class PrimalRidge:
    """Recursive ridge regression on φ(x) = ReLU(P x); R, W float64 on the device they were last used on."""

    def __init__(self, regularization: float, projection: Tensor | None) -> None:
        self.regularization = regularization
        self.projection = projection  # None: φ(x) = x
        self.R: Tensor | None = None
        self.W: Tensor | None = None

    def expand(self, features: Tensor) -> Tensor:
        x = features.to(DTYPE)
        if self.projection is None:
            return x
        if self.projection.device != x.device or self.projection.dtype != DTYPE:
            self.projection = self.projection.to(x.device, DTYPE)  # float32 values, exactly
        return torch.relu(x @ self.projection.t())

    def _on(self, device: torch.device) -> None:
        if self.R is not None and self.R.device != device:
            self.R = self.R.to(device)
        if self.W is not None and self.W.device != device:
            self.W = self.W.to(device)

    def grow(self, width: int) -> None:
        """Give W zero columns up to `width` classes."""
        if self.W is not None and self.W.shape[1] < width:
            self.W = torch.cat([self.W, self.W.new_zeros(self.W.shape[0], width - self.W.shape[1])], dim=1)

    def fit(self, batches: Iterable[tuple[Tensor, Tensor]], width: int) -> None:
        """Learn one task from (features, target column) batches, `width` classes learned so far
        (the batches are read once, as they come)."""
        if self.R is None:
            gram = cross = None
            for features, columns in batches:
                phi = self.expand(features)
                target = one_hot(columns, width)
                gram = phi.t() @ phi if gram is None else gram + phi.t() @ phi
                cross = phi.t() @ target if cross is None else cross + phi.t() @ target
            if gram is None or cross is None:
                return
            gram.diagonal().add_(self.regularization)
            self.R = torch.cholesky_inverse(torch.linalg.cholesky(gram))
            self.W = self.R @ cross
            return
        self.grow(width)
        for features, columns in batches:
            phi = self.expand(features)
            self._on(phi.device)
            R, W = self.R, self.W
            assert R is not None and W is not None
            r_phi = R @ phi.t()  # R Φᵀ
            k = phi @ r_phi
            k.diagonal().add_(1.0)  # K = I + Φ R Φᵀ
            gain = torch.linalg.solve(k, r_phi.t()).t()  # R Φᵀ K⁻¹ (K symmetric)
            self.R = R - gain @ r_phi.t()
            self.W = W + gain @ (one_hot(columns, width) - phi @ W)

    def scores(self, features: Tensor) -> Tensor:
        """Regression outputs (rows × classes learned), float64."""
        assert self.W is not None
        self._on(features.device)
        return self.expand(features) @ self.W


def rbf_kernel(x: Tensor, y: Tensor, gamma: float) -> Tensor:
    """exp(−γ‖x_i − y_j‖²) in float64 (squared distances from the Gram matrix, clamped at 0)."""
    x, y = x.to(DTYPE), y.to(DTYPE)
    squared = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return torch.exp(-gamma * squared.clamp_min(0.0))


class KernelRidge:
    """Kernel ridge regression over a growing memory of features (float32 as the model gives them)."""

    def __init__(self, regularization: float, gamma: float) -> None:
        self.regularization = regularization
        self.gamma = gamma
        self.memory: Tensor | None = None  # (N, d)
        self.columns: Tensor | None = None  # (N,) target column of each stored feature
        self.alpha: Tensor | None = None  # (N, classes learned), float64

    def _on(self, device: torch.device) -> None:
        for name in ("memory", "columns", "alpha"):
            value = getattr(self, name)
            if value is not None and value.device != device:
                setattr(self, name, value.to(device))

    def fit(self, batches: Iterable[tuple[Tensor, Tensor]], width: int) -> None:
        """Add one task's (features, target column) batches to the memory and solve again."""
        pairs = list(batches)
        if not pairs:
            return
        features = torch.cat([f for f, _ in pairs])
        columns = torch.cat([c for _, c in pairs])
        self._on(features.device)
        self.memory = features if self.memory is None else torch.cat([self.memory, features])
        self.columns = columns if self.columns is None else torch.cat([self.columns, columns])
        gram = rbf_kernel(self.memory, self.memory, self.gamma)
        gram.diagonal().add_(self.regularization)
        self.alpha = torch.cholesky_solve(one_hot(self.columns, width), torch.linalg.cholesky(gram))

    def scores(self, features: Tensor) -> Tensor:
        assert self.memory is not None and self.alpha is not None
        self._on(features.device)
        return rbf_kernel(features, self.memory, self.gamma) @ self.alpha
