"""`hide-lora`: HiDe-LoRA (Wang et al., "Towards a General Framework for Continual Learning with
Pre-training", arXiv 2310.13888, and HiDe-PET, arXiv 2407.05229, the paper MoRAM's table cites;
code: thu-ml/HiDe-Prompt) on language models: a LoRA per task, the
task of each prompt inferred from its mean input embedding (nearest task centroid), and the
contrastive term on the LoRA A rows of MoRAM's TRACE code. The adapter is `layer.py` (the shared
`cl_bench.LoRALinear` with a frozen pool), the method `method.py` (imported when a run starts),
whose docstring lists the departures from the official code.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

# MoRAM's TRACE HiDe-LoRA (training/main.py, model/Regular/HideLoRA.py): LoRA r 8, alpha 32, dropout
# 0.1 on q, k, v, o; λ1 (orth_lambda1) 0.5, λ2 0; Adam (0.9, 0.95) at a constant rate; lr 1e-4,
# weight decay 0, epochs 5,3,7,5,3,5,5,7, batch 1 × 8 accumulation × 4 GPUs (ZinYY/TreeLoRA
# scripts/lora_based_methods/hidelora.sh; MoRAM ships no HiDe-LoRA script).
DEFAULTS: dict[str, Any] = {
    "rank": 8,
    "alpha": 32.0,
    "dropout": 0.1,
    "layers": ["q", "k", "v", "out"],
    "betas": [0.9, 0.95],
    "weight_decay": 0.0,
    "warmup_iters": 0,
    "lr": 1e-4,
    "contrast_weight": 0.5,
    "l2_weight": 0.0,
    "contrast": "earlier",
    "task_inference": "nearest-mean",
}
# tiny-lm: seq-lora's profile; the weight chosen on embedded-instruct (docs/methods.md).
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-3}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="hide-lora",
            factory="cl_bench.methods.hide_lora.method:HiDeLoRA",
            summary="HiDe-LoRA: a LoRA per task, each prompt answered with the LoRA of its inferred task (nearest task centroid); LoRA A rows kept apart (language models)",
            paper="https://arxiv.org/abs/2407.05229",
            defaults=DEFAULTS,
            profiles={"tiny-lm": TINY_LM_PROFILE},
            supports=Supports(protocols=("instruct",), backbone_kinds=("causal-lm",)),
            version="1",
        )
    ]
