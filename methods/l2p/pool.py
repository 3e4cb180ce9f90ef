"""How the L2P prompt pool (`cl_bench.PromptPool`) enters open_clip's visual transformer.

open_clip's `VisionTransformer.forward` embeds the patches, prepends the class token, adds the
position embedding, applies `ln_pre`, runs the blocks and pools the class token (`pool_type
"tok"`). Two hooks, both on modules every open_clip ViT has, put the prompts in without touching
that code:

1. a forward pre-hook on the visual tower computes the query: the same tower run once more with the
   prompts switched off and gradients disabled (the frozen pre-trained model, as in L2P), its
   normalised output feature; the `top_n` keys of highest cosine pick the prompts per image;
2. a forward pre-hook on `ln_pre` inserts the chosen prompts after the class token, so the blocks
   see [CLS, prompt tokens, patch tokens]. Prompts enter after the position embedding (they carry
   no position, as in L2P) and before `ln_pre`, which normalises them like every other token
   embedding (inserted raw after it, on tiny-clip, seed 0, embedded-mtil, they kept less: transfer
   53.3 against 58.4, zero-shot retention 0.37 against 0.41, last 48.4 against 47.8). CLIP pools
   the class token, which now attends to the prompts.

The pool lives inside the visual tower (`clip.visual.prompt_pool`): its parameters count as image
tower parameters, so the text features (frozen tower) stay cached during training, and the model's
checkpoint holds prompts and keys. Before the first task the pool is inactive, so row 0 of the
accuracy matrices (and the zero-shot retention baseline) is the pre-trained model, as for every
other method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import Method, PromptPool, UserError, check_prompt_pool


def check_pool(size: int, length: int, top_n: int, init: str) -> None:
    """The pool's own limits, checked by the method's factory too (before any work)."""
    check_prompt_pool(size, length, top_n, init)


def attach(visual: Any, pool: PromptPool) -> None:  # visual: an open_clip VisionTransformer (untyped attributes)
    """Add `pool` to an open_clip visual tower, with its two hooks."""
    visual.add_module("prompt_pool", pool)

    def query(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        features = pool.frozen_features(module, args[0])
        if features is None:
            return
        pool.selection, pool.similarity = pool.select(features)
        if module.training:
            pool.record(pool.selection)

    def insert(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor] | None:
        if not (pool.enabled and pool.active):
            return None
        output = args[0]
        if pool.selection is None or pool.selection.shape[0] != output.shape[0]:
            raise RuntimeError("prompts were not chosen for this batch: the query pre-hook did not run")
        prompts = pool.tokens(pool.selection).to(output.dtype)
        return (torch.cat([output[:, :1], prompts, output[:, 1:]], dim=1),)

    visual.register_forward_pre_hook(query)
    visual.ln_pre.register_forward_pre_hook(insert)


class L2P(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        check_pool(hparams["pool_size"], hparams["length"], hparams["top_n"], hparams["init"])
        self.hparams = dict(hparams)
        self.pool: PromptPool | None = None

    def setup(self, model, stream) -> None:
        hp = self.hparams
        visual = model.clip.visual
        if getattr(visual, "pool_type", "tok") != "tok" or getattr(visual, "attn_pool", None) is not None:
            raise UserError("l2p needs a visual tower that pools its class token (open_clip pool_type 'tok'); pick another backbone")
        width = visual.class_embedding.shape[-1]
        pool = PromptPool(hp["pool_size"], hp["length"], width, visual.output_dim, hp["top_n"], hp["init"])
        self.pool = pool.to(device=visual.class_embedding.device)
        attach(visual, self.pool)

    def before_experience(self, model, experience) -> None:
        assert self.pool is not None  # made by setup(), which runs first
        self.pool.active = True
        self.pool.diversify = self.hparams["diversify"] and experience.index > 0

    def after_experience(self, model, experience) -> None:
        assert self.pool is not None  # made by setup(), which runs first
        self.pool.end_task()
        self.pool.diversify = False  # evaluation picks by cosine alone

    def trainable_parameters(self, model):
        assert self.pool is not None  # made by setup(), which runs first
        assert self.pool.keys is not None  # learned keys
        return [self.pool.prompts, self.pool.keys]

    def extra_loss(self, model, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        assert self.pool is not None  # made by setup(), which runs first
        if self.hparams["pull_weight"] == 0 or self.pool.similarity is None:
            return None
        return self.hparams["pull_weight"] * PromptPool.pull(self.pool.similarity)

    def state_dict(self) -> dict[str, Any]:
        assert self.pool is not None  # made by setup(), which runs first
        return {"active": self.pool.active}  # prompts and keys are in the model's state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.pool is not None  # made by setup(), which runs first
        self.pool.active = bool(state["active"])
