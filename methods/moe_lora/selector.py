"""The task selector: one small autoencoder per task on the frozen model's image features.

An image goes to the task whose autoencoder reconstructs its features best relative to that
task's threshold (a quantile of the reconstruction errors on the task's own training data), or,
if no autoencoder accepts it, to the frozen zero-shot path. MoE-Adapters4CL feeds ImageNet
AlexNet features (which would need a download) to sigmoid autoencoders and thresholds a batch's
mean error with one constant; here the features are the frozen CLIP's own normalised image
embeddings, the decoder is linear, and the decision is per image with a per-task threshold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TaskSelector(nn.Module):
    thresholds: Tensor  # buffers (register_buffer), declared for the type checker
    trained: Tensor

    def __init__(self, tasks: int, dim: int, code: int) -> None:
        super().__init__()
        self.dim = dim
        self.autoencoders = nn.ModuleList(nn.Sequential(nn.Linear(dim, code), nn.ReLU(), nn.Linear(code, dim)) for _ in range(tasks))
        self.register_buffer("thresholds", torch.full((tasks,), float("inf")))
        self.register_buffer("trained", torch.zeros((), dtype=torch.long))  # autoencoders fitted so far

    def _inputs(self, features: Tensor) -> Tensor:
        # Unit-norm features scaled to unit mean square per coordinate, whatever the width.
        return F.normalize(features.float(), dim=-1) * math.sqrt(self.dim)

    def errors(self, features: Tensor, task: int) -> Tensor:
        """Mean squared reconstruction error of each image under task `task`'s autoencoder."""
        x = self._inputs(features)
        return (self.autoencoders[task](x) - x).pow(2).mean(dim=1)

    @torch.no_grad()
    def assign(self, features: Tensor) -> Tensor:
        """Each image's task (index of the best-fitting autoencoder), or -1 where none accepts it."""
        count = int(self.trained)
        if count == 0:
            return torch.full((len(features),), -1, dtype=torch.long, device=features.device)
        ratio = torch.stack([self.errors(features, t) for t in range(count)], dim=1) / self.thresholds[:count]
        best_ratio, best = ratio.min(dim=1)
        return torch.where(best_ratio <= 1.0, best, torch.full_like(best, -1))

    def fit(self, task: int, features: Tensor, *, iters: int, lr: float, batch_size: int, quantile: float) -> float:
        """Train task `task`'s autoencoder on its training features; returns the threshold it sets."""
        if task != int(self.trained):
            raise RuntimeError(f"autoencoders are fitted in task order: expected task {int(self.trained)}, got {task}")
        autoencoder = self.autoencoders[task]
        for param in autoencoder.parameters():
            param.requires_grad_(True)
        optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(iters):
                rows = torch.randint(len(features), (min(batch_size, len(features)),), device=features.device)
                loss = self.errors(features[rows], task).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for param in autoencoder.parameters():
            param.requires_grad_(False)
            param.grad = None
        with torch.no_grad():
            threshold = torch.quantile(self.errors(features, task), quantile)
        self.thresholds[task] = threshold
        self.trained += 1
        return float(threshold)
