"""`PromptPool`: the prompt pool that prompt methods of both tracks share (L2P on images and on
language models, DualPrompt's E-prompts).

A pool holds M prompts of `length` vectors of width `width`, and one key per prompt. A query per
input picks the `top_n` prompts whose keys have the highest cosine with it (L2P, DualPrompt); in
training a method may force the choice instead (DualPrompt's task-specific E-prompt). The pull
constraint Σ_selected (1 − cos(key, query)), averaged over the batch, pulls the chosen keys
towards the queries that chose them. Where the prompts go (tokens after an image's class token,
prefixes of attention layers, vectors before a text's token embeddings) is the method's business:
`tokens(selection)` returns the chosen prompts as one sequence per input.

Keys are either learned (`key_dim` given: a parameter of size (M, key_dim), L2P and DualPrompt)
or, with `key_dim=None`, the mean of each prompt's initial vectors (TRACE's L2P on language models,
`model/Dynamic_network/L2P.py` L65-68, which computes the key once at construction): its value
stays that of the initial prompts, so the choice is a fixed function of the query, while the pull
term still sends its gradient into the prompts through the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench.blocks.data_parallel import gather_batch

PROMPT_INITS = ("uniform", "zero")


def check_prompt_pool(size: int, length: int, top_n: int, init: str = "uniform", *, min_length: int = 1) -> None:
    """The pool's limits, for a method's factory to check before any work (ValueError)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"the pool size must be a positive integer, not {size!r}")
    if length < min_length:
        raise ValueError(f"prompt length must be at least {min_length}, not {length}")
    if not 1 <= top_n <= size:
        raise ValueError(f"top_n must be between 1 and the pool size {size}, not {top_n}")
    if init not in PROMPT_INITS:
        raise ValueError(f"unknown prompt init {init!r}; use uniform or zero")


class PromptPool(nn.Module):
    """M prompts of `length` vectors of width `width`, with a key each.

    - `key_dim`: the keys' size (learned keys), or None: each key is its prompt's initial mean
      (width `width`, value fixed, gradient through the live mean).
    - `init`: "uniform" (prompts and keys from U(-1, 1), L2P's), "zero" (zero prompts, uniform
      keys), or a tensor (M, length, width) copied into the prompts (learned keys then uniform).
      "uniform" and "zero" draw from the global generator, prompts first.
    - `batchwise`: every input of a batch gets the batch's `top_n` most often chosen prompts
      (google-research/l2p `batchwise_prompt`); otherwise each input its own.
    - `diversify` (attribute, training only): L2P's frequency penalty, see `select`.

    `used` counts how often each prompt was chosen in training during the current task
    (`record`), `history` in the tasks before (`end_task`).
    """

    used: Tensor  # buffers (register_buffer), declared for the type checker
    history: Tensor
    key_init: Tensor

    def __init__(
        self,
        size: int,
        length: int,
        width: int,
        key_dim: int | None,
        top_n: int = 1,
        init: str | Tensor = "uniform",
        *,
        batchwise: bool = False,
    ) -> None:
        super().__init__()
        check_prompt_pool(size, length, top_n, init if isinstance(init, str) else "uniform", min_length=0)
        self.top_n = top_n
        self.batchwise = batchwise
        self.prompts = nn.Parameter(torch.empty(size, length, width))
        self.keys: Tensor | None = nn.Parameter(torch.empty(size, key_dim)) if key_dim is not None else None
        if isinstance(init, Tensor):
            if tuple(init.shape) != (size, length, width):
                raise ValueError(f"prompt init of shape {tuple(init.shape)}, the pool's is {(size, length, width)}")
            with torch.no_grad():
                self.prompts.copy_(init)
        elif init == "uniform":  # L2P's initialisation for both
            nn.init.uniform_(self.prompts, -1.0, 1.0)
        else:
            nn.init.zeros_(self.prompts)
        if self.keys is not None:
            nn.init.uniform_(self.keys, -1.0, 1.0)
        else:  # TRACE: the key is the mean of the prompt as first made, kept (not trained)
            self.register_buffer("key_init", self.prompts.detach().mean(dim=1).clone())
        self.register_buffer("used", torch.zeros(size))
        self.register_buffer("history", torch.zeros(size))
        self.diversify = False
        # State of the current forward, for methods that split choosing and inserting across hooks.
        self.enabled = True
        self.active = False
        self.selection: Tensor | None = None  # (batch, top_n) indices
        self.similarity: Tensor | None = None  # (batch, top_n) cosines, differentiable in the keys

    @property
    def size(self) -> int:
        return self.prompts.shape[0]

    @property
    def length(self) -> int:
        return self.prompts.shape[1]

    def key_matrix(self) -> Tensor:
        """(M, key size): the learned keys, or the fixed initial means with the live means' gradient."""
        if self.keys is not None:
            return self.keys
        mean = self.prompts.mean(dim=1)
        return self.key_init + (mean - mean.detach())

    def frozen_features(self, tower: nn.Module, inputs: Tensor) -> Tensor | None:
        """`tower`'s output for `inputs` with this pool's prompts switched off and no autograd: the
        query the frozen pre-trained model gives (L2P, DualPrompt). None during that pass itself
        (the tower's own hook calls back here) and before the first task, when no prompt is chosen
        (`selection` and `similarity` are then cleared)."""
        if not self.enabled:  # the query pass itself
            return None
        if not self.active:  # before the first task: the pre-trained model, no prompts
            self.selection = self.similarity = None
            return None
        self.enabled = False
        try:
            with torch.no_grad():
                return tower(inputs)
        finally:
            self.enabled = True

    def select(self, query: Tensor, force: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Indices and cosines of the `top_n` keys nearest each query (best first).

        `force` (batch, k) or (k,): these indices instead (DualPrompt's task-specific prompt in
        training); their cosines are still returned for the pull constraint. With `diversify`,
        L2P's section 3.3: the distance 1 - cos is weighted by each prompt's share of the
        selections in earlier tasks, so prompts no earlier task used come first (ordered by
        cosine among themselves: the small constant breaks their tie).
        """
        cosine = F.normalize(query.float(), dim=-1) @ F.normalize(self.key_matrix().float(), dim=-1).t()
        if force is not None:
            best = force.to(device=cosine.device, dtype=torch.long)
            best = best.expand(cosine.shape[0], -1) if best.dim() == 1 else best
            return best, cosine.gather(1, best)
        score = cosine.detach()
        if self.diversify:
            share = self.history / self.history.sum().clamp_min(1.0)
            score = -(1.0 - score) * (share + 1e-6)
        best = score.topk(self.top_n, dim=1).indices
        if self.batchwise:  # the batch's most frequent choices, for every input (ties: lower index; a multi-process run's whole batch)
            counts = torch.bincount(gather_batch(best).flatten(), minlength=self.size).double() - torch.arange(self.size, device=best.device) * 1e-6
            best = counts.topk(self.top_n).indices.unsqueeze(0).expand(cosine.shape[0], -1)
        return best, cosine.gather(1, best)

    def tokens(self, selection: Tensor) -> Tensor:
        """(batch, top_n · length, width): the chosen prompts, in the order chosen."""
        chosen = self.prompts[selection]
        return chosen.reshape(selection.shape[0], -1, self.prompts.shape[-1])

    @staticmethod
    def pull(similarity: Tensor) -> Tensor:
        """The pull constraint: Σ over the chosen prompts of (1 − cos(key, query)), batch mean."""
        return (1.0 - similarity).sum(dim=1).mean()

    def record(self, selection: Tensor) -> None:
        """Count a training batch's choices (for `diversify` in later tasks)."""
        selection = gather_batch(selection)  # a multi-process run counts every process's share
        self.used += torch.bincount(selection.flatten(), minlength=self.used.numel()).to(self.used.dtype)

    def end_task(self) -> None:
        """Move this task's counts into the history."""
        self.history += self.used
        self.used.zero_()
