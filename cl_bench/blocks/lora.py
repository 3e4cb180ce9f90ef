"""A low-rank adapter (LoRA, arXiv 2106.09685) for the Linear layers a backbone exposes.

`LoRALinear` wraps a frozen Linear and adds ΔW = (alpha / r) · B A:

    y = base(x) + (alpha / r) · B A x

with A (r × d_in) and B (d_out × r). The variants the built-in methods need are options of this
one class, not copies of it (docs/lora.md has the details and an example):

- `init`: "lora" (A kaiming-uniform, B zero, so ΔW = 0 at the start; seq-lora, o-lora) or
  "orthonormal" (B and Aᵀ with orthonormal columns; eblora);
- `per_task`: a block of A, B per task; `add_task()` freezes the current block into a stacked,
  frozen `old_A`, `old_B` and starts a new trainable `new_A`, `new_B` (o-lora);
- `learnable_scale`: a learnable scalar s (`lora_scale`), ΔW = (alpha / r) · s · B A (eblora);
- `rank_gates`: a learnable importance g_i per rank component (`lora_gate`, drawn N(0, 1)),
  ΔW = (alpha / r) · B diag(g) A, so a component with g_i = 0 is switched off (codyra);
- `dropout`: dropout on the adapter's input x only (the base sees x unchanged); 0 (the default)
  adds no dropout module and no randomness.

Every variant computes its update with the float operations the original methods used, so their
results did not move when they moved onto this class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cl_bench.contracts.model import LinearAdapter

LORA_INITS = ("lora", "orthonormal")


def check_lora_rank(rank: int, max_rank: int | None = None, where: str = "") -> None:
    """The one rank check: ValueError unless 1 ≤ rank (and rank ≤ max_rank when given).

    Methods call it when they read their hyperparameters, so a bad rank fails before any layer
    is wrapped; `LoRALinear` calls it again with the bound its layer and options impose."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    if max_rank is not None and rank > max_rank:
        raise ValueError(f"LoRA rank must be in [1, {max_rank}], got {rank}" + (f" for {where}" if where else ""))


def random_orthonormal(rows: int, rank: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """rows × rank with orthonormal columns: the sign-fixed QR factor of a float64 Gaussian draw
    from the global torch generator (one `randn` call, so the RNG advances by exactly that)."""
    Q, R = torch.linalg.qr(torch.randn(rows, rank, dtype=torch.float64, device=device))
    signs = torch.where(torch.diagonal(R) < 0, -1.0, 1.0).to(Q.dtype)  # a unique factor
    return (Q * signs).to(dtype)


class LoRALinear(LinearAdapter):
    """A frozen Linear (`self.base`) plus a trainable low-rank update ΔW = (alpha / r) · B A.

    Parameters (their names are the state-dict keys):
    - single block (the default): `lora_A` (r × d_in), `lora_B` (d_out × r);
    - `per_task=True`: `old_A`, `old_B` (every finished task's block, stacked along the rank and
      frozen) and `new_A`, `new_B` (the current task's); all four start with rank 0, so the layer
      computes the base until the first `add_task()`. They load from a checkpoint of any number
      of finished tasks (`grow_on_load`);
    - `learnable_scale=v`: also `lora_scale` (shape (1,), starting at v): ΔW = (alpha / r) · s · B A;
    - `rank_gates=True`: also `lora_gate` (shape (r,), drawn N(0, 1) after A):
      ΔW = (alpha / r) · B diag(g) A; `effective_rank()` counts the components with g_i ≠ 0.

    Options:
    - `init`: "lora" draws A kaiming-uniform (a = √5, as nn.Linear) and sets B = 0; "orthonormal"
      draws B (first) and then Aᵀ with orthonormal columns (ΔW ≠ 0 unless s starts at 0); it needs
      rank ≤ min(d_in, d_out);
    - `dropout`: probability of dropout on the adapter's input (not on the base's); 0 adds none;
    - `max_rank`: a tighter bound on the rank a variant needs (eblora: d_in − 1).
    A per-task adapter with a learnable scale is refused: one s would rescale the frozen blocks;
    rank gates go with neither (a single block, no scalar scale).
    """

    # Declared for type checkers: which of them exist depends on the options.
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    old_A: nn.Parameter
    old_B: nn.Parameter
    new_A: nn.Parameter
    new_B: nn.Parameter
    lora_scale: nn.Parameter | None
    lora_gate: nn.Parameter | None
    lora_dropout: nn.Dropout | None

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        *,
        init: str = "lora",
        per_task: bool = False,
        learnable_scale: float | None = None,
        rank_gates: bool = False,
        dropout: float = 0.0,
        max_rank: int | None = None,
    ) -> None:
        super().__init__(base)
        d_out, d_in = base.out_features, base.in_features
        if init not in LORA_INITS:
            raise ValueError(f"LoRA init must be one of {', '.join(LORA_INITS)}, got {init!r}")
        bounds = ([min(d_in, d_out)] if init == "orthonormal" else []) + ([max_rank] if max_rank is not None else [])
        check_lora_rank(rank, min(bounds) if bounds else None, f"a {d_in}->{d_out} layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        if per_task and learnable_scale is not None:
            raise ValueError("a per-task LoRA cannot have a learnable scale: it would rescale the frozen blocks too")
        if rank_gates and (per_task or learnable_scale is not None):
            raise ValueError("rank gates need a single block without a learnable scale (not per_task, not learnable_scale)")
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.init, self.per_task, self.rank_gates = init, per_task, rank_gates
        self.lora_gate = None
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else None
        like = base.weight
        if per_task:
            self.old_A = nn.Parameter(like.new_zeros(0, d_in), requires_grad=False)
            self.old_B = nn.Parameter(like.new_zeros(d_out, 0), requires_grad=False)
            self.new_A = nn.Parameter(like.new_zeros(0, d_in))
            self.new_B = nn.Parameter(like.new_zeros(d_out, 0))
            self.grow_on_load("old_A", "old_B", "new_A", "new_B")
        else:
            # registered in the order they are drawn, as the methods always had them
            for name, value in self.new_block():
                setattr(self, f"lora_{name}", nn.Parameter(value))
        self.lora_scale = None if learnable_scale is None else nn.Parameter(like.new_full((1,), float(learnable_scale)))

    # ------------------------------------------------------------------ blocks

    @torch.no_grad()
    def new_block(self) -> list[tuple[str, Tensor]]:
        """A fresh (A, B) pair drawn by `init` (and the gates g ~ N(0, 1) with `rank_gates`), as
        [(name, tensor)] in the order the RNG draws them."""
        d_out, d_in = self.base.out_features, self.base.in_features
        like = self.base.weight
        if self.init == "orthonormal":
            B = random_orthonormal(d_out, self.rank, dtype=like.dtype, device=like.device)
            A = random_orthonormal(d_in, self.rank, dtype=like.dtype, device=like.device).T.contiguous()
            return [("B", B), ("A", A)]
        A = like.new_empty(self.rank, d_in)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # as nn.Linear's weight
        block = [("A", A), ("B", like.new_zeros(d_out, self.rank))]
        if self.rank_gates:
            block.append(("gate", torch.randn(self.rank, dtype=like.dtype, device=like.device)))
        return block

    @torch.no_grad()
    def restart(self) -> None:
        """A single-block adapter starts over: a fresh block drawn by `new_block()` is copied into
        the existing parameters (the same objects, so a method's lists of them stay valid; their
        requires_grad flags are kept). codyra restarts every task's adapter after the merge."""
        if self.per_task:
            raise RuntimeError("restart() is for a single-block LoRALinear; a per-task adapter grows with add_task()")
        for name, value in self.new_block():
            getattr(self, f"lora_{name}").copy_(value)

    def blocks(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """The (A, B) pairs whose updates add up to ΔW: one, or (old, new) for a per-task adapter."""
        if self.per_task:
            return [(self.old_A, self.old_B), (self.new_A, self.new_B)]
        return [(self.lora_A, self.lora_B)]

    def add_task(self) -> None:
        """Per-task adapters: freeze the current block into the old stack and start a new one."""
        if not self.per_task:
            raise RuntimeError("add_task() needs a LoRALinear made with per_task=True")
        with torch.no_grad():
            self.old_A = nn.Parameter(torch.cat([self.old_A, self.new_A]), requires_grad=False)
            self.old_B = nn.Parameter(torch.cat([self.old_B, self.new_B], dim=1), requires_grad=False)
        for name, value in self.new_block():
            setattr(self, f"new_{name}", nn.Parameter(value))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: A and B (a per-task adapter's current block), then s if learnable."""
        A, B = self.blocks()[-1]
        return [A, B] + ([self.lora_scale] if self.lora_scale is not None else []) + ([self.lora_gate] if self.lora_gate is not None else [])

    def effective_rank(self) -> int:
        """The number of rank components that can contribute: those with g_i ≠ 0 with rank gates,
        else the rank (per task: of the current block)."""
        if self.lora_gate is not None:
            return int(torch.count_nonzero(self.lora_gate))
        return int(self.blocks()[-1][0].shape[0])

    # ------------------------------------------------------------------ the update

    def delta_weight(self) -> Tensor:
        """ΔW (d_out × d_in) = (alpha / r) · B A (times s if learnable; summed over blocks;
        B diag(g) A with rank gates), differentiable, so a method may also use it in a loss."""
        if self.lora_gate is not None:
            return self.scaling * ((self.lora_B * self.lora_gate) @ self.lora_A)  # (B · g) A, never forms diag(g)
        (A, B), *rest = self.blocks()
        product = B @ A
        for A, B in rest:
            product = product + B @ A
        if self.lora_scale is not None:
            return (self.scaling * self.lora_scale) * product
        return self.scaling * product

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.lora_dropout is None else self.lora_dropout(x)
        # Two formulas, each exactly (ops and their creation order) the one its methods always used:
        # autograd sums the gradients reaching a shared input (q, k, v read one x) in the order the
        # ops were created, so reordering them would move the trained weights in the last bits.
        if self.lora_scale is not None:
            # s scales the rank-r activations; the casts keep autocast's dtype (eblora)
            low = h @ self.lora_A.t()
            low = low * (self.scaling * self.lora_scale).to(low.dtype)
            return self.base(x) + low @ self.lora_B.t().to(low.dtype)
        if self.lora_gate is not None:
            # g weighs the rank-r activations: ((x Aᵀ) ⊙ g) Bᵀ, as CoDyRA's layer
            return self.base(x) + (h @ self.lora_A.t() * self.lora_gate) @ self.lora_B.t() * self.scaling
        out = self.base(x)
        for A, B in self.blocks():
            if A.shape[0]:  # per task, empty: the old block until the second task, the new until the first
                out = out + (h @ A.t() @ B.t()) * self.scaling  # never forms B A (r is small)
        return out

    @torch.no_grad()
    def merge(self, inplace: bool = False) -> nn.Linear:
        """Fold ΔW into a Linear.

        - `inplace=False` (the default): a new, plain nn.Linear with weight W + ΔW and the base's
          bias (same device, dtype and requires_grad flags, no RNG draw); the adapter and the
          model are unchanged. For exporting or evaluating without the adapter:
          `layer.replace(adapter.merge())`.
        - `inplace=True`: W ← W + ΔW in `self.base`, then the update is zeroed (s ← 0 with a
          learnable scale, else every B ← 0; the gates are kept), so the adapter's outputs stay the same (within
          rounding) and training can go on from ΔW = 0; returns `self.base`. eblora merges so
          after every task.
        """
        base = self.base
        delta = self.delta_weight().to(base.weight.dtype)
        if inplace:
            base.weight.add_(delta)
            if self.lora_scale is not None:
                self.lora_scale.zero_()
            else:
                for _, B in self.blocks():
                    B.zero_()
            return base
        merged = nn.utils.skip_init(nn.Linear, base.in_features, base.out_features, bias=base.bias is not None, device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(base.weight + delta)
        merged.weight.requires_grad_(base.weight.requires_grad)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
            merged.bias.requires_grad_(base.bias.requires_grad)
        return merged

    def extra_repr(self) -> str:
        extras = [f"rank={self.rank}", f"scaling={self.scaling}"]
        if self.init != "lora":
            extras.append(f"init={self.init}")
        if self.per_task:
            extras.append(f"frozen_rank={self.old_A.shape[0]}")
        if self.lora_gate is not None:
            extras.append(f"rank_gates=True, effective_rank={self.effective_rank()}")
        return ", ".join(extras)
