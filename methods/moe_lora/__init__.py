"""`moe-lora`: the MoE-Adapters4CL recipe (Yu et al., CVPR 2024, "Boosting Continual Learning of
Vision-Language Models via Mixture-of-Experts Adapters"; code JiazuoYu/MoE-Adapters4CL) with LoRA
experts, or the original bottleneck adapters with `expert=adapter`.

Beside the MLP of every block of both towers sits a pool of experts; each task has its own noisy
top-2 router over the first token; after each task the two experts its router used most in each
pool are frozen; at test time a task selector (one autoencoder per task) picks the router, or the
frozen zero-shot path for inputs that match no task. Implementation: experts.py, selector.py,
method.py, imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, hookimpl

# ViT-B/16, after the official MTIL scripts (mtil/scripts/train/*experts22*.sh and src/args.py):
# 22 experts, top-2, bottleneck 64, scale 0.1, dropout 0.1, both encoders, AdamW betas (0.9, 0.999),
# 1000 iterations, batch 64, 100 warm-up iterations, lr 1e-3 (the full-shot script's value for
# most data sets; it tunes lr per data set, one lr is used here). Selector: ours (see selector.py).
CLIP_DEFAULTS: dict[str, Any] = {
    "expert": "lora",
    "experts": 22,
    "top_k": 2,
    "rank": 64,
    "scale": 0.1,
    "dropout": 0.1,
    "noise_epsilon": 1e-2,
    "balance_weight": 1e-2,
    "freeze_per_task": 2,
    "towers": ["image", "text"],
    "selector_code": 100,
    "selector_iters": 500,
    "selector_lr": 1e-3,
    "selector_batch_size": 256,
    "selector_quantile": 0.99,
    "lr": 1e-3,
    "iters": 1000,
    "batch_size": 64,
    "warmup_iters": 100,
    "weight_decay": 0.0,
}
# tiny-clip: 64-wide blocks and at most 5 tasks in the embedded streams, so 10 experts of rank 8.
TINY_CLIP_PROFILE: dict[str, Any] = {"experts": 10, "rank": 8, "selector_code": 16, "iters": 200, "warmup_iters": 20, "lr": 1e-2}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="moe-lora",
            factory="cl_bench.methods.moe_lora.method:MoELoRA",
            summary="MoE-Adapters4CL with LoRA experts: expert pools beside every MLP, a router per task, an autoencoder task selector",
            paper="https://arxiv.org/abs/2403.11549",
            defaults=CLIP_DEFAULTS,
            profiles={"tiny-clip": TINY_CLIP_PROFILE},
            version="1",
        )
    ]
