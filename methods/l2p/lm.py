"""L2P on a causal language model (TRACE's `model/Dynamic_network/L2P.py`, BeyonderXX/TRACE), and
the factory that picks the image or the language-model L2P from the run's hyper-parameters.

A `cl_bench.PromptPool` of M prompts of `length` vectors of the embedding width. Each prompt vector
starts as the input embedding of a vocabulary id drawn uniformly (TRACE L22-44, its "uniform"
init). The query of a row is the mean of its frozen input embeddings over its tokens (TRACE
L80-98; padding left out here, TRACE's mean includes the pad tokens); the `top_n` prompts whose
keys are nearest by cosine are put, in that order, before the row's embeddings through
`CausalLM.set_prefix` (attention mask 1, no label: TRACE L119-127). Keys: with `keys =
"prompt-mean"` (TRACE) each key is the mean of its prompt as first drawn, kept for the whole
stream while the pull term's gradient reaches the prompts through the mean (TRACE L65-68); with
`keys = "learned"`, a learned key per prompt (the image L2P's). Training adds `pull_weight` ·
Σ_chosen (1 − cos), averaged over the rows: TRACE subtracts 0.5 · Σ cos / B, the same gradient.
Only the prompts (and learned keys) train.

Departure from TRACE's pipeline: its numbers come from inference scripts that generate without the
prompts (the frozen base model); here generation sees them, as L2P.py's own `evaluate_one_task`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cl_bench import PromptPool, UserError, check_prompt_pool

from .pool import L2P

LM_KEYS = ("prompt-mean", "learned")
LM_INITS = ("vocab", "uniform")


def make(hparams):  # untyped: the Method protocol's optional hooks read as abstract to mypy
    """The language-model L2P where the backbone kind's defaults name its `keys`; the image one otherwise."""
    if "keys" in hparams:
        return LanguageL2P(hparams)
    return L2P(hparams)


def vocab_prompts(embedding: Tensor, size: int, length: int) -> Tensor:
    """(size, length, width): input embeddings of ids drawn uniformly from the vocabulary (the global generator)."""
    ids = torch.randint(embedding.shape[0], (size, length))
    return embedding.detach()[ids.to(embedding.device)].float().clone()


def embedding_mean(ids: Tensor, embeds: Tensor) -> Tensor:
    """(batch, width): each row's mean input embedding over its tokens (padding, PAD = -1, left out)."""
    mask = (ids >= 0).to(embeds.dtype).unsqueeze(-1)
    return ((embeds.detach() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)).float()


def adam_betas(hparams: Mapping[str, Any]) -> tuple[float, float] | None:
    betas = hparams.get("betas")
    if betas is None:
        return None
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"method.betas must be two numbers in [0, 1), got {betas}")
    return float(betas[0]), float(betas[1])


class LanguageL2P(L2P):
    """L2P on a causal language model: the pool's prompts go before the input embeddings. The pull
    term and the checkpointed state are the image L2P's."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        hp = dict(hparams)
        if hp["keys"] not in LM_KEYS:
            raise ValueError(f"method.keys must be prompt-mean or learned, not {hp['keys']!r}")
        if hp["init"] not in LM_INITS:
            raise ValueError(f"method.init must be vocab or uniform on a language model, not {hp['init']!r}")
        check_prompt_pool(hp["pool_size"], hp["length"], hp["top_n"])
        self.betas = adam_betas(hp)
        self.hparams = hp
        self.pool: PromptPool | None = None

    def setup(self, model, stream) -> None:
        if getattr(model, "kind", None) != "causal-lm":
            raise UserError("this l2p configuration (method.keys) is for language models")
        hp = self.hparams
        embedding = model.lm.get_input_embeddings().weight
        width = embedding.shape[1]
        init: Any = vocab_prompts(embedding, hp["pool_size"], hp["length"]) if hp["init"] == "vocab" else "uniform"
        key_dim = width if hp["keys"] == "learned" else None
        pool = PromptPool(hp["pool_size"], hp["length"], width, key_dim, hp["top_n"], init)
        self.pool = pool.to(device=embedding.device)
        model.add_module("prompt_pool", self.pool)
        model.set_prefix(self.prefix)

    def prefix(self, ids: Tensor, embeds: Tensor) -> Tensor:
        pool = self.pool
        assert pool is not None  # made by setup(), which runs first
        if not pool.active:  # before the first task: the pre-trained model
            pool.selection = pool.similarity = None
            return embeds[:, :0]
        pool.selection, pool.similarity = pool.select(embedding_mean(ids, embeds))
        if pool.training:
            pool.record(pool.selection)
        return pool.tokens(pool.selection)

    def before_experience(self, model, experience) -> None:
        assert self.pool is not None  # made by setup(), which runs first
        self.pool.active = True

    def after_experience(self, model, experience) -> None:
        assert self.pool is not None  # made by setup(), which runs first
        self.pool.end_task()

    def trainable_parameters(self, model):
        assert self.pool is not None  # made by setup(), which runs first
        return [p for p in (self.pool.prompts, self.pool.keys) if p is not None]

    def make_optimizer(self, params, hparams):
        if self.betas is None:
            return None
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=self.betas)
