"""`zscl`: Zero-Shot Continual Learning (Zheng et al., ICCV 2023, "Preventing Zero-Shot Transfer
Degradation in Continual Learning of Vision-Language Models"; code Thunderbeee/ZSCL,
`mtil/scripts/ZSCL.sh`).

`finetune` (every weight of the chosen towers, the logit scale frozen, label smoothing) plus a
two-way distillation towards the pre-trained model on reference data (the stream's
`reference()`: images and texts from the pre-training distribution), an L2 pull towards the
weights the task started from, and a weight ensemble of snapshots taken every `we_interval`
iterations. The method lives in `method.py` (imported when a run starts); the computation and
its departures from ZSCL's code are in its docstring and in docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from cl_bench import IMAGE_PROTOCOLS, MethodSpec, Supports, hookimpl

from ..finetune import TINY_CLIP_TRAINING, ZSCL_TRAINING

# ViT-B/16: ZSCL.sh (ls 0.2, 1000 iterations, lr 1e-5, batch 64 (also the reference batch),
# 100 warm-up iterations, both distillation directions with weight 1, T = 2, --l2 1,
# --we --avg_freq 100).
CLIP_DEFAULTS: dict[str, Any] = {
    **ZSCL_TRAINING,
    "weight": 1.0,
    "temperature": 2.0,
    "l2_weight": 1.0,
    "we_interval": 100,
}
# tiny-clip: finetune's tiny-clip profile (lr 3e-4, 200 iterations, no smoothing, no warm-up), with
# the weight ensemble every 20 of the 200 iterations (ZSCL: every 100 of 1000).
TINY_CLIP_PROFILE: dict[str, Any] = {**TINY_CLIP_TRAINING, "we_interval": 20}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="zscl",
            factory="cl_bench.methods.zscl.method:ZSCL",
            summary="ZSCL: finetune plus two-way distillation towards the pre-trained model on reference data, an L2 pull and a weight ensemble",
            paper="https://arxiv.org/abs/2303.06628",
            defaults=CLIP_DEFAULTS,
            profiles={"tiny-clip": TINY_CLIP_PROFILE},
            supports=Supports(protocols=IMAGE_PROTOCOLS, backbone_kinds=("clip",)),
            version="1",
        )
    ]
