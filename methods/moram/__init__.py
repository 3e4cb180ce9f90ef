"""`moram` and `mora`: continual learning with an incremental mixture of rank-1 associative memories.

MoRAM (arXiv 2506.21035, "Little by Little: Continual Learning via Incremental Mixture of Rank-1
Associative Memory Experts"; official code Artificer-AI-Lab/MoRAM, Apache-2.0) and MoRA, the
same paper's v1-v2 formulation ("... Self-Activated Sparse Mixture-of-Rank Adaptive Learning").
Both use one layer, `RankOneMemoryLinear` (layer.py), so their leaderboard rows are a controlled
comparison; they differ in whether the rank-pruning mask also applies while training.
Heavy imports live in layer.py and method.py, loaded when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

__all__ = ["RankOneMemoryLinear", "cl_bench_methods"]

PAPER = "https://arxiv.org/abs/2506.21035"
# The official CLIP settings (XTAIL/runner_moram.sh and XTAIL/main.py): ViT-B/16, both encoders,
# q, k, v, out and MLP fc, proj; 16 atoms per task, top-16, τ 0.01, δ 0.2; AdamW lr 5e-4,
# betas (0.9, 0.9999), no weight decay, cosine, 500 iterations, batch 64.
CLIP_DEFAULTS: dict[str, Any] = {
    "rank": 16,
    "topk": 16,
    "temperature": 0.01,
    "threshold": 0.2,
    "mask_in_training": False,
    "balance_weight": 0.0,
    "layers": ["q", "k", "v", "out", "fc", "proj"],
    "towers": ["image", "text"],
    "lr": 5e-4,
    "iters": 500,
    "batch_size": 64,
    "weight_decay": 0.0,
    "warmup_iters": 0,
}
# tiny-clip: the official settings with 8 atoms per task (its layers are 64 wide) and 200 iterations.
TINY_CLIP_PROFILE: dict[str, Any] = {"rank": 8, "topk": 8, "iters": 200}
# Language models, the official TRACE settings (TRACE/runner_moram.sh, training/main.py): q, k, v, o;
# 8 atoms per task, top-8, τ 0.03, δ 0.2; alpha 2r; dropout 0.1 on the memory's input (main.py:410);
# Adam (0.9, 0.95), lr 5e-4, constant, no decay; effective batch 32. TRACE trains 1-3 epochs of
# 500 examples per task: 32 steps is 2 epochs.
# The placement (q, k, v, o of the decoder), batch, schedule and budget are the language-model
# backbones' method_defaults; what is MoRAM's own is here.
LM_DEFAULTS: dict[str, Any] = {
    "rank": 8,
    "topk": 8,
    "temperature": 0.03,
    "threshold": 0.2,
    "alpha": 16.0,
    "freeze_scaled": True,
    "dropout": 0.1,
    "lr": 5e-4,
}
# tiny-lm: more steps of a smaller batch, a larger learning rate (ours; see docs/language-models.md).
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-3}
LM_SUPPORT = Supports(backbone_kinds=("clip", "causal-lm"))


def __getattr__(name: str):
    if name == "RankOneMemoryLinear":  # the public layer, imported lazily (it needs torch)
        from .layer import RankOneMemoryLinear

        return RankOneMemoryLinear
    raise AttributeError(name)


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    factory = "cl_bench.methods.moram.method:RankOneMemories"
    return [
        MethodSpec(
            name="moram",
            factory=factory,
            summary="MoRAM: a growing memory of rank-1 atoms per layer, self-activated top-k mixture; old atoms frozen",
            paper=PAPER,
            defaults=CLIP_DEFAULTS,
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": TINY_CLIP_PROFILE, "tiny-lm": TINY_LM_PROFILE},
            supports=LM_SUPPORT,
            version="1",
        ),
        MethodSpec(
            name="mora",
            factory=factory,
            summary="MoRA (2506.21035 v1-v2; not 'MoRA: High-Rank Updating', 2405.12130): MoRAM's layer with rank pruning also in training",
            paper="https://arxiv.org/abs/2506.21035v1",
            defaults={**CLIP_DEFAULTS, "mask_in_training": True},
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": TINY_CLIP_PROFILE, "tiny-lm": TINY_LM_PROFILE},
            supports=LM_SUPPORT,
            version="1",
        ),
    ]
