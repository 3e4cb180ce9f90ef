"""DualPrompt's prompts and how they enter CLIP's image tower or a language model's input.

Images (google-research/l2p `models/prefix_attention.py` L127-136, `models/vit.py` L205-252): in a
prompted block the attention's projected keys and values get prefixes, K <- [P_k; K] and V <-
[P_v; V] (queries unchanged, so the token count and the class token stay as they are); in a block
with both prompts G comes before E. Forward hooks on the blocks' `k_proj` and `v_proj` (cl_bench's
CLIP attention has separate projections) append the prefixes after the frozen projection, as
the official code does (the prefix lives in the projected space, no bias added). The query is
the frozen model's normalised image feature from a prompt-free pass without gradient (`enabled`
off), as `l2p`. One E-prompt index picks its prefixes in every E block (the E pool's vectors have
width len(e_layers) · 2 · width: per E block, key then value).

Language models (MoRAM TRACE/model/Dynamic_network/DualPrompt.py L65-100): the chosen E-prompt and
then G are put before the input embeddings, [E; G; text], attention mask 1, no label
(`CausalLM.set_prefix`). Both start as input embeddings of random vocabulary ids (L22-31).

E-prompt choice, both tracks: in training task t uses E-prompts [t·top_n, (t+1)·top_n) (the
official `use_prompt_mask`, train_continual.py L237-247) and the pull term pulls their keys
towards the queries; at test (and in the control set) the top_n keys nearest the query by cosine
choose. Departures on language models: MoRAM's copy uses the task identity at test (its
`evaluate_one_task`, L170) and has no keys, so no pull; here DualPrompt's key matching (query: the
mean frozen input embedding, as TRACE's L2P), which needs no task identity at test. TRACE's
official inference applies no prompt at all (the frozen base model); here they apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import Method, PromptPool, UserError, check_prompt_pool

from ..l2p.lm import adam_betas, embedding_mean, vocab_prompts

INITS = ("uniform", "vocab")


class DualPromptParameters(nn.Module):
    """The G-prompt and the E-prompt pool, kept in the model (its checkpoint holds them)."""

    def __init__(self, general: Tensor, pool: PromptPool) -> None:
        super().__init__()
        self.general = nn.Parameter(general)
        self.pool = pool


class DualPrompt(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        hp = dict(hparams)
        for key in ("g_length", "e_length"):
            if isinstance(hp[key], bool) or not isinstance(hp[key], int) or hp[key] < 0:
                raise ValueError(f"method.{key} must be a whole number of at least 0, not {hp[key]!r}")
        for key in ("g_layers", "e_layers"):
            layers = hp[key]
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"method.{key} must be distinct block indices (0, 1, ...), not {layers!r}")
        if hp["init"] not in INITS:
            raise ValueError(f"method.init must be uniform or vocab, not {hp['init']!r}")
        check_prompt_pool(hp["pool_size"], hp["e_length"], hp["top_n"], min_length=0)
        self.betas = adam_betas(hp)
        self.hparams = hp
        self.prompts: DualPromptParameters | None = None
        self.task = 0
        self.language = False

    # ------------------------------------------------------------------ set-up

    def setup(self, model, stream) -> None:
        self.language = getattr(model, "kind", None) == "causal-lm"
        if self.language:
            self._setup_language(model)
        else:
            self._setup_image(model)

    def _setup_language(self, model) -> None:
        hp = self.hparams
        embedding = model.lm.get_input_embeddings().weight
        width = embedding.shape[1]
        if hp["init"] == "vocab":
            general = vocab_prompts(embedding, 1, hp["g_length"])[0]
            init: Any = vocab_prompts(embedding, hp["pool_size"], hp["e_length"])
        else:
            general = torch.empty(hp["g_length"], width).uniform_(-1.0, 1.0)
            init = "uniform"
        pool = PromptPool(hp["pool_size"], hp["e_length"], width, width, hp["top_n"], init)
        self.prompts = DualPromptParameters(general, pool).to(device=embedding.device)
        model.add_module("dual_prompt", self.prompts)
        model.set_prefix(self._language_prefix)

    def _language_prefix(self, ids: Tensor, embeds: Tensor) -> Tensor:
        prompts = self.prompts
        assert prompts is not None  # made by setup(), which runs first
        pool = prompts.pool
        if not pool.active:  # before the first task: the pre-trained model
            pool.selection = pool.similarity = None
            return embeds[:, :0]
        self._choose(embedding_mean(ids, embeds), prompts.training)
        assert pool.selection is not None
        general = prompts.general.unsqueeze(0).expand(ids.shape[0], -1, -1)
        return torch.cat([pool.tokens(pool.selection), general], dim=1)

    def _setup_image(self, model) -> None:
        hp = self.hparams
        visual = model.clip.visual
        blocks = list(visual.transformer.resblocks)
        highest = max([*hp["g_layers"], *hp["e_layers"]], default=-1)
        if highest >= len(blocks):
            raise UserError(f"dualprompt: block {highest} named in method.g_layers or method.e_layers, but the image tower has {len(blocks)} blocks (0 to {len(blocks) - 1})")
        if not all(hasattr(block.attn, "k_proj") and hasattr(block.attn, "v_proj") for block in blocks):
            raise UserError("dualprompt needs an image tower whose attention has separate k and v projections (cl_bench's CLIP backbones)")
        width = visual.class_embedding.shape[-1]
        general = torch.empty(len(hp["g_layers"]), 2, hp["g_length"], width)
        init = hp["init"] if hp["init"] == "uniform" else "uniform"  # no vocabulary on images
        nn.init.uniform_(general, -1.0, 1.0)
        pool = PromptPool(hp["pool_size"], hp["e_length"], len(hp["e_layers"]) * 2 * width, visual.output_dim, hp["top_n"], init)
        self.prompts = DualPromptParameters(general, pool).to(device=visual.class_embedding.device)
        visual.add_module("dual_prompt", self.prompts)
        prompts = self.prompts

        def query(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            features = pool.frozen_features(module, args[0])
            if features is not None:
                self._choose(features, module.training)

        visual.register_forward_pre_hook(query)
        for index, block in enumerate(blocks):
            g = hp["g_layers"].index(index) if index in hp["g_layers"] else None
            e = hp["e_layers"].index(index) if index in hp["e_layers"] else None
            if g is None and e is None:
                continue
            for part, projection in enumerate((block.attn.k_proj, block.attn.v_proj)):
                projection.register_forward_hook(self._prefix_hook(prompts, g, e, part, width))

    def _prefix_hook(self, prompts: DualPromptParameters, g: int | None, e: int | None, part: int, width: int):
        pool = prompts.pool
        e_count = len(self.hparams["e_layers"])

        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
            if not (pool.enabled and pool.active):
                return None
            pieces = []
            if g is not None and prompts.general.shape[2]:
                pieces.append(prompts.general[g, part].unsqueeze(0).expand(output.shape[0], -1, -1))
            if e is not None and pool.length:
                if pool.selection is None or pool.selection.shape[0] != output.shape[0]:
                    raise RuntimeError("prompts were not chosen for this batch: the query pre-hook did not run")
                chosen = pool.prompts[pool.selection]  # (batch, top_n, length, e_count · 2 · width)
                chosen = chosen.reshape(output.shape[0], -1, e_count, 2, width)[:, :, e, part]
                pieces.append(chosen)
            if not pieces:
                return None
            return torch.cat([*(p.to(output.dtype) for p in pieces), output], dim=1)

        return hook

    # ------------------------------------------------------------------ choice and training

    def _forced(self) -> Tensor:
        top = self.hparams["top_n"]
        return torch.arange(self.task * top, (self.task + 1) * top)

    def _choose(self, query: Tensor, training: bool) -> None:
        assert self.prompts is not None
        pool = self.prompts.pool
        pool.selection, pool.similarity = pool.select(query, force=self._forced() if training else None)

    def before_experience(self, model, experience) -> None:
        assert self.prompts is not None  # made by setup(), which runs first
        hp = self.hparams
        pool = self.prompts.pool
        if (experience.index + 1) * hp["top_n"] > hp["pool_size"]:
            needed = (experience.index + 1) * hp["top_n"]
            raise UserError(f"dualprompt: task {experience.index} needs {needed} E-prompts, but method.pool_size is {hp['pool_size']}; raise it to the number of tasks times top_n")
        self.task = experience.index
        pool.active = True
        if hp["copy_previous"] and self.task > 0:  # shared_prompt_pool (train_continual.py L552-569)
            with torch.no_grad():
                top = hp["top_n"]
                pool.prompts[self.task * top : (self.task + 1) * top] = pool.prompts[(self.task - 1) * top : self.task * top]

    def trainable_parameters(self, model):
        assert self.prompts is not None  # made by setup(), which runs first
        keys = self.prompts.pool.keys
        assert keys is not None  # learned keys
        return [self.prompts.general, self.prompts.pool.prompts, keys]

    def make_optimizer(self, params, hparams):
        if self.betas is None:
            return None
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=self.betas)

    def extra_loss(self, model, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        assert self.prompts is not None  # made by setup(), which runs first
        similarity = self.prompts.pool.similarity
        if self.hparams["pull_weight"] == 0 or similarity is None:
            return None
        return self.hparams["pull_weight"] * PromptPool.pull(similarity)

    def state_dict(self) -> dict[str, Any]:
        assert self.prompts is not None  # made by setup(), which runs first
        return {"active": self.prompts.pool.active, "task": self.task}  # prompts and keys are in the model's state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert self.prompts is not None  # made by setup(), which runs first
        self.prompts.pool.active = bool(state["active"])
        self.task = int(state["task"])
