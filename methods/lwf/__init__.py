"""`lwf`: Learning without Forgetting for CLIP, as ZSCL's code runs it (Li & Hoiem 2016; ZSCL,
Zheng et al., ICCV 2023, code Thunderbeee/ZSCL, `mtil/scripts/lwf.sh`).

`finetune` (every weight of the chosen towers, the logit scale frozen, label smoothing) plus a
distillation of the current model towards the model as the previous task left it (zero-shot for
the first task), on the current task's images, in both directions (image -> text and text ->
image), at temperature 2. The method lives in `method.py` (imported when a run starts); the
computation and its departures from ZSCL's code are in its docstring and in docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from cl_bench import IMAGE_PROTOCOLS, MethodSpec, Supports, hookimpl

from ..finetune import TINY_CLIP_TRAINING, ZSCL_TRAINING

# ViT-B/16: ZSCL's lwf.sh (ls 0.2, 1000 iterations, lr 1e-5, batch 64, 100 warm-up iterations,
# both distillation directions with weight 1, T = 2 from its args.py).
CLIP_DEFAULTS: dict[str, Any] = {
    **ZSCL_TRAINING,
    "weight": 1.0,
    "temperature": 2.0,
    "distill_space": "protocol",
    "distill_texts": "teacher",
}
# tiny-clip: finetune's tiny-clip profile (lr 3e-4, 200 iterations, no smoothing, no warm-up).
TINY_CLIP_PROFILE: dict[str, Any] = dict(TINY_CLIP_TRAINING)


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="lwf",
            factory="cl_bench.methods.lwf.method:LwF",
            summary="LwF (ZSCL's CLIP version): finetune plus distillation towards the previous task's model on the current images, both directions",
            paper="https://arxiv.org/abs/1606.09282",
            defaults=CLIP_DEFAULTS,
            profiles={"tiny-clip": TINY_CLIP_PROFILE},
            supports=Supports(protocols=IMAGE_PROTOCOLS, backbone_kinds=("clip",)),
            version="1",
        )
    ]
