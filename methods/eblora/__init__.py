"""`eblora`: EBLoRA (arXiv 2602.00722, "Spectral Imbalance Causes Forgetting in Low-Rank Continual
Adaptation"; official code haodotgu/EBLoRA, for LLaVA).

Every adapted Linear gets ΔW = c · s · B A with B (d_out × r) orthonormal, Aᵀ (d_in × r)
orthonormal and orthogonal to a protected input-side subspace F, c = alpha / r and s a learnable
scalar per layer. Before each task B and A start from the top-r singular vectors of the task's
mean weight gradient projected off F; a Riemannian AdamW keeps them on the Stiefel manifold (A
off F); after the task ΔW is merged into W and F grows GPM-style from a second gradient pass, up
to `energy_threshold` of its energy and at most d_in − r directions. Heavy imports live in
stiefel.py, layer.py, optim.py and method.py, loaded when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

PAPER = "https://arxiv.org/abs/2602.00722"

# ViT-B/16 defaults (ours; the official code trains LLaVA-1.5-7B only). From the official code and
# scripts: alpha = 2r; s starts at -0.005 (the layer's default, llava/train/EBLoRA.py; the UCIT
# configs then set it to 0 and the MLLM-DCL ones to -0.002 ... -0.008 by depth); GPM energy threshold
# 0.99; AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0.1 (it only reaches s: along B and A it is
# normal to the manifold); cosine schedule with 3% warm-up; the Stiefel step scaled by sqrt(4096 / r)
# (the official grad_scaling = 4096, `manifold_step_ref`). Ours: every Linear of the transformer
# blocks of both towers (q, k, v, out, fc, proj; the official code adapts every Linear of the
# language model), rank 8 and lr 5e-4, 500 iterations of batch 64 as `seq-lora`, and gradient
# passes of 16 batches of 64 images (the official passes use 20% of each task's data, one sample
# at a time: too much for ImageNet-sized tasks).
CLIP_DEFAULTS: dict[str, Any] = {
    "rank": 8,
    "alpha": 16.0,
    "scale_init": -0.005,
    "energy_threshold": 0.99,
    "grad_batches": 16,
    "grad_batch_size": 64,
    "manifold_step_ref": 4096.0,
    "layers": ["q", "k", "v", "out", "fc", "proj"],
    "towers": ["image", "text"],
    "lr": 5e-4,
    "iters": 500,
    "batch_size": 64,
    "weight_decay": 0.1,
    "warmup_iters": 15,
}
# tiny-clip: lr 1e-3 (best of 2.5e-4, 5e-4, 1e-3, 2e-3 on embedded-mtil seed 0, by a small margin), 200
# iterations as the other methods, 6 warm-up iterations (3%), gradient passes of
# 4 batches of 128 images (17-64% of an embedded task's training data).
TINY_CLIP_PROFILE: dict[str, Any] = {"lr": 1e-3, "iters": 200, "warmup_iters": 6, "grad_batches": 4, "grad_batch_size": 128}
# Language models (the official code's home: it adapts LLaVA's language model): q, k, v, o here as
# for the other LLM-track methods, alpha 2r, cosine with 3% warm-up as the official scripts;
# gradient passes of 4 batches of 32 examples. tiny-lm: our budget, as the other methods'.
LM_DEFAULTS: dict[str, Any] = {
    "schedule": "cosine",
    "warmup_iters": 1,
    "grad_batches": 4,
    "grad_batch_size": 32,
}
TINY_LM_PROFILE: dict[str, Any] = {"lr": 3e-3, "iters": 150, "batch_size": 16, "warmup_iters": 5}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="eblora",
            factory="cl_bench.methods.eblora.method:EBLoRA",
            summary="EBLoRA: orthonormal B, A (Riemannian AdamW) scaled by a learnable s, gradient-SVD init, merged per task; A kept off a GPM subspace of earlier tasks",
            paper=PAPER,
            defaults=CLIP_DEFAULTS,
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": TINY_CLIP_PROFILE, "tiny-lm": TINY_LM_PROFILE},
            supports=Supports(backbone_kinds=("clip", "causal-lm")),
            version="1",
        )
    ]
