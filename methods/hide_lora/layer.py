"""HiDe-LoRA's adapter: the shared `cl_bench.LoRALinear` (one trainable block, the current task's)
plus a frozen pool of every finished task's block, and a per-row route that picks which one a
row uses. With no route, the layer is exactly the single-block `LoRALinear` (seq-lora's)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cl_bench import LoRALinear


class PooledLoRALinear(LoRALinear):
    """y = W x + b + (alpha / r) · B_t A_t x, with t the row's task in `route` (None: the current
    block `lora_A`, `lora_B`, for every row). `pool_A` (T × r × d_in) and `pool_B` (T × d_out × r)
    hold the finished tasks' blocks, frozen; they are model state, so checkpoints carry them."""

    pool_A: nn.Parameter
    pool_B: nn.Parameter

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base, rank, alpha, dropout=dropout)
        like = base.weight
        self.pool_A = nn.Parameter(like.new_zeros(0, rank, base.in_features), requires_grad=False)
        self.pool_B = nn.Parameter(like.new_zeros(0, base.out_features, rank), requires_grad=False)
        self.grow_on_load("pool_A", "pool_B")
        self.route: Tensor | None = None

    @torch.no_grad()
    def store_task(self) -> None:
        """Append the current block to the pool (it goes on training from there: HiDe starts each
        task's LoRA as a copy of the previous task's)."""
        self.pool_A = nn.Parameter(torch.cat([self.pool_A, self.lora_A.detach()[None]]), requires_grad=False)
        self.pool_B = nn.Parameter(torch.cat([self.pool_B, self.lora_B.detach()[None]]), requires_grad=False)

    def block(self, task: int) -> tuple[Tensor, Tensor]:
        return self.pool_A[task], self.pool_B[task]

    def forward(self, x: Tensor) -> Tensor:
        route = self.route
        if route is None:
            return super().forward(x)
        h = x if self.lora_dropout is None else self.lora_dropout(x)
        out = self.base(x)
        tasks = route.unique().tolist()
        if len(tasks) == 1:  # one task for the whole batch: the single-block expression, bit for bit
            A, B = self.block(tasks[0])
            return out + (h @ A.t() @ B.t()) * self.scaling
        delta: Tensor | None = None
        for task in tasks:  # each task's update for every row, kept where the row routes to it
            A, B = self.block(task)
            update = (h @ A.t() @ B.t()) * self.scaling
            rows = (route == task).view(-1, *([1] * (update.dim() - 1)))
            delta = torch.where(rows, update, torch.zeros_like(update) if delta is None else delta)
        assert delta is not None
        return out + delta
