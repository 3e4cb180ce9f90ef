"""A pool of low-rank experts beside a transformer block's MLP, with one noisy top-k router per task.

For the block's residual stream h (the input of `ln_2`, as in MoE-Adapters4CL, where the experts
read the un-normalised stream), the block computes

    h + MLP(LN(h)) + Σ_{e ∈ top-k} g_e · expert_e(h)

with g the softmax of the router's top-k logits over the first token (CLS for images, the
start token for text): logits = h₀ W_t, plus N(0, 1)·(softplus(h₀ W_noise,t) + ε) in training
(Shazeer et al. 2017). An expert is `scale · B (A h)` (LoRA) or `scale · (B relu(A h + a) + b)`
(the original bottleneck adapter). Every sample's k experts run in two batched matmuls over
gathered weights, never a loop over samples or experts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import gather_batch, process_count

EXPERT_KINDS = ("lora", "adapter")


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation, var / mean² (unbiased variance; 0 for a single value)."""
    x = x.float()
    if x.numel() < 2:
        return x.new_zeros(())
    return x.var() / (x.mean() ** 2 + 1e-10)


def prob_in_top_k(clean: Tensor, noisy: Tensor, noise_std: Tensor, top_values: Tensor, k: int) -> Tensor:
    """P(expert stays in the top k under fresh noise), per sample and expert: a differentiable load.

    `top_values` holds each row's k + 1 largest noisy logits. An expert now in the top k stays there
    if its noisy logit beats the (k+1)-th value; one outside must beat the k-th.
    """
    threshold_in = top_values[:, k : k + 1]
    threshold_out = top_values[:, k - 1 : k]
    inside = noisy > threshold_in
    prob_in = torch.special.ndtr((clean - threshold_in) / noise_std)
    prob_out = torch.special.ndtr((clean - threshold_out) / noise_std)
    return torch.where(inside, prob_in, prob_out)


def check_pool(experts: int, rank: int, top_k: int, kind: str) -> None:
    """The pool's own limits, checked by the method's factory too (before any work)."""
    if kind not in EXPERT_KINDS:
        raise ValueError(f"expert must be one of {EXPERT_KINDS}, not {kind!r}")
    if rank < 1:
        raise ValueError(f"rank must be at least 1, not {rank}")
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k must be between 1 and the number of experts ({experts}), not {top_k}")


class ExpertPool(nn.Module):
    """`experts` low-rank experts of one block and tower, and `tasks` routers (all starting at zero)."""

    selected: Tensor  # buffers (register_buffer), declared for the type checker
    frozen: Tensor

    def __init__(
        self,
        width: int,
        *,
        experts: int,
        rank: int,
        tasks: int,
        top_k: int = 2,
        kind: str = "lora",
        scale: float = 0.1,
        dropout: float = 0.0,
        noise_epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        check_pool(experts, rank, top_k, kind)
        self.width, self.num_experts, self.rank, self.top_k = width, experts, rank, top_k
        self.kind, self.scale, self.dropout, self.noise_epsilon = kind, scale, dropout, noise_epsilon
        # One Parameter per expert, so a frozen expert is simply left out of the optimiser.
        self.down = nn.ParameterList(nn.Parameter(torch.empty(rank, width)) for _ in range(experts))
        self.up = nn.ParameterList(nn.Parameter(torch.zeros(width, rank)) for _ in range(experts))
        for weight in self.down:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # as nn.Linear(width, rank); up = 0: no change at start
        if kind == "adapter":
            self.down_bias = nn.ParameterList(nn.Parameter(torch.zeros(rank)) for _ in range(experts))
            self.up_bias = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(experts))
        self.routers = nn.ParameterList(nn.Parameter(torch.zeros(width, experts)) for _ in range(tasks))
        self.noise = nn.ParameterList(nn.Parameter(torch.zeros(width, experts)) for _ in range(tasks))
        self.register_buffer("selected", torch.zeros(experts))  # how often each expert was picked this task
        self.register_buffer("frozen", torch.zeros(experts, dtype=torch.bool))
        self.task = -1  # the active router; -1 switches the experts off (the zero-shot path)
        self.balance: Tensor | None = None  # the last training forward's cv²(importance) + cv²(load)

    def expert_parameters(self, index: int) -> list[nn.Parameter]:
        params = [self.down[index], self.up[index]]
        if self.kind == "adapter":
            params += [self.down_bias[index], self.up_bias[index]]
        return params

    def trainable_parameters(self, task: int) -> list[nn.Parameter]:
        """Task `task`'s router and noise weights and every expert not yet frozen."""
        params = [self.routers[task], self.noise[task]]
        for index in range(self.num_experts):
            if not bool(self.frozen[index]):
                params += self.expert_parameters(index)
        return params

    def freeze_most_selected(self, count: int = 2) -> list[int]:
        """Freeze the `count` experts picked most often during this task (ties: lower index)."""
        order = torch.argsort(self.selected, descending=True, stable=True)[:count].tolist()
        self.frozen[order] = True
        return order

    def gate(self, first_token: Tensor) -> tuple[Tensor, Tensor]:
        """(indices, weights) of each sample's top-k experts under the active router, weights summing to 1."""
        router, noise = self.routers[self.task], self.noise[self.task]
        clean = first_token @ router.to(first_token.dtype)
        noisy_training = self.training and torch.is_grad_enabled()
        logits, noise_std = clean, None
        if noisy_training:
            noise_std = F.softplus(first_token @ noise.to(first_token.dtype)) + self.noise_epsilon
            logits = clean + torch.randn_like(clean) * noise_std
        top_values, top_index = logits.topk(min(self.top_k + 1, self.num_experts), dim=1)
        index = top_index[:, : self.top_k]
        weights = torch.softmax(top_values[:, : self.top_k].float(), dim=1)
        if noisy_training:
            importance = weights.new_zeros(len(index), self.num_experts).scatter(1, index, weights).sum(0)
            if self.top_k < self.num_experts:
                assert noise_std is not None  # set above: noisy_training
                load = prob_in_top_k(clean.float(), logits.float(), noise_std.float(), top_values.float(), self.top_k).sum(0)
            else:
                load = torch.full_like(importance, float(len(index)))
            if process_count() > 1:  # sums over the batch: a multi-process run adds up its processes' shares
                importance, load = (gather_batch(x.unsqueeze(0)).sum(0) for x in (importance, load))
            self.balance = cv_squared(importance) + cv_squared(load)
            self.selected += torch.bincount(gather_batch(index).flatten(), minlength=self.num_experts).to(self.selected.dtype)
        return index, weights

    def forward(self, residual: Tensor) -> Tensor:
        """The experts' contribution for a batch-first residual stream (batch, tokens, width)."""
        index, weights = self.gate(residual[:, 0])
        batch, k, rank = len(index), self.top_k, self.rank
        down = torch.stack(list(self.down)).to(residual.dtype)[index]  # (batch, k, rank, width)
        up = torch.stack(list(self.up)).to(residual.dtype)[index]  # (batch, k, width, rank)
        hidden = torch.bmm(residual, down.reshape(batch, k * rank, self.width).transpose(1, 2))  # (batch, tokens, k·rank)
        if self.kind == "adapter":
            hidden = F.relu(hidden + torch.stack(list(self.down_bias)).to(hidden.dtype)[index].reshape(batch, 1, k * rank))
        hidden = F.dropout(hidden, self.dropout, self.training)
        gated = (hidden.view(batch, -1, k, rank) * weights.to(hidden.dtype)[:, None, :, None]).view(batch, -1, k * rank)
        out = torch.bmm(gated, up.transpose(2, 3).reshape(batch, k * rank, self.width))
        if self.kind == "adapter":
            bias = torch.stack(list(self.up_bias)).to(out.dtype)[index]  # (batch, k, width)
            out = out + (weights.to(out.dtype).unsqueeze(2) * bias).sum(1, keepdim=True)
        return self.scale * out


class ExpertMLP(nn.Module):
    """Replaces a block's `mlp`: the MLP of the normalised stream plus the experts of the raw stream.

    A forward pre-hook on the block's `ln_2` hands over the raw residual stream, which the MLP
    itself never sees.
    """

    def __init__(self, block: Any, pool: ExpertPool) -> None:  # block: an open_clip ResidualAttentionBlock (untyped attributes)
        super().__init__()
        self.mlp = block.mlp
        self.pool = pool
        self._residual: Tensor | None = None
        block.ln_2.register_forward_pre_hook(self._keep_residual)
        block.mlp = self

    @property
    def c_fc(self) -> nn.Module:  # open_clip reads the MLP's first Linear for the weight dtype
        return self.mlp.c_fc

    def _keep_residual(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self._residual = args[0]

    def forward(self, x: Tensor) -> Tensor:
        residual, self._residual = self._residual, None
        out = self.mlp(x)
        if self.pool.task < 0:
            return out
        return out + self.pool(residual).to(out.dtype)
