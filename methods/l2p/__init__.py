"""`l2p`: Learning to Prompt (Wang et al., CVPR 2022, "Learning to Prompt for Continual Learning";
code google-research/l2p) on the image tower of a CLIP model, and on a causal language model as
TRACE runs it (lm.py; see there).

A pool of M learnable prompts (each `length` tokens) with one learnable key each. For every image the
frozen model (no prompts, no gradient) gives a query, its normalised CLS feature; the `top_n` prompts
whose keys have the highest cosine with the query are inserted into the image tower's token sequence
as [CLS, prompts, patches]; the class scores stay CLIP's image-text cosines (the text tower is
frozen). Training adds `pull_weight` · Σ_selected (1 − cos(key, query)), averaged over the batch,
which pulls the chosen keys towards the queries that chose them. Only prompts and keys train.
Implementation: the shared `cl_bench.PromptPool`, put in the tower by pool.py (images) or before
the input embeddings by lm.py (language models), imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

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
# Language models: TRACE's L2P (BeyonderXX/TRACE training/main.py L407-436, model/Dynamic_network/
# L2P.py L50-55): pool 10, length 5, top-3, pull 0.5, prompts from random vocabulary embeddings,
# keys = the prompts' initial means; Adam (0.9, 0.95), no decay, constant rate (the backbone's
# schedule); lr 1e-5 from TRACE's generic scripts/train_seq_cl.sh (the paper's own is not published).
LM_DEFAULTS: dict[str, Any] = {"top_n": 3, "pull_weight": 0.5, "init": "vocab", "keys": "prompt-mean", "betas": [0.9, 0.95], "lr": 1e-5}
# tiny-lm: the budget of the other tiny-lm methods; prompts need a far larger rate to move in 150 steps.
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-2}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="l2p",
            factory="cl_bench.methods.l2p.lm:make",
            summary="L2P: a pool of 10 prompts chosen per input by key-query cosine, inserted into the image tower's tokens or before a text's embeddings",
            paper="https://arxiv.org/abs/2112.08654",
            defaults=CLIP_DEFAULTS,
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": TINY_CLIP_PROFILE, "tiny-lm": TINY_LM_PROFILE},
            supports=Supports(backbone_kinds=("clip", "causal-lm")),
            version="1",
        )
    ]
