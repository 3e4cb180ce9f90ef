"""`l2p`: Learning to Prompt (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning";
code google-research/l2p) on the image tower of a CLIP model.

A pool of M learnable prompts (each `length` tokens) with one learnable key each. For every image the
frozen model (no prompts, no gradient) gives a query, its normalised CLS feature; the `top_n` prompts
whose keys have the highest cosine with the query are inserted into the image tower's token sequence
as [CLS, prompts, patches]; the class scores stay CLIP's image-text cosines (the text tower is
frozen). Training adds `pull_weight` · Σ_selected (1 − cos(key, query)), averaged over the batch,
which pulls the chosen keys towards the queries that chose them. Only prompts and keys train.
Implementation: pool.py, imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, hookimpl

# ViT-B/16 defaults follow the PyTorch port's CIFAR-100 settings (JH-LEE-KR/l2p-pytorch): M=10,
# length 5, N=5, λ=0.1, prompts and keys uniform(-1, 1), Adam at lr 0.03 for batch 128, 5 epochs.
# The official JAX config (google-research/l2p configs/cifar100_l2p.py) differs: length 10, top 4,
# pull coefficient 1.0, batch 16 per device; set those with --set method.length=10 and so on.
# Here batch 64, so lr 0.015 (linear scaling), 500 iterations per task, and the shared warm-up-free
# cosine schedule (L2P's is constant).
CLIP_DEFAULTS: dict[str, Any] = {
    "pool_size": 10,
    "length": 5,
    "top_n": 5,
    "pull_weight": 0.1,
    "diversify": False,
    "init": "uniform",
    "lr": 0.015,
    "iters": 500,
}
# tiny-clip: same pool, fewer iterations; a larger lr because 200 steps must move uniform prompts.
TINY_CLIP_PROFILE: dict[str, Any] = {"iters": 200, "lr": 0.03}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="l2p",
            factory="cl_bench.methods.l2p.pool:L2P",
            summary="L2P: a pool of 10 prompts chosen per image by key-query cosine, inserted into the image tower's tokens",
            paper="https://arxiv.org/abs/2112.08654",
            defaults=CLIP_DEFAULTS,
            profiles={"tiny-clip": TINY_CLIP_PROFILE},
            version="1",
        )
    ]
