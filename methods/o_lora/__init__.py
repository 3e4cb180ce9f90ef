"""`o-lora`: O-LoRA (arXiv 2310.14152, "Orthogonal Subspace Learning for Language Model Continual
Learning"), the anchor baseline of TRACE in MoRAM's code (TRACE/model/Regular/O_LoRA.py).

Each task trains a new LoRA (r 8, alpha 32) on every adapted Linear while the earlier tasks' LoRAs
stay frozen and keep adding their updates; the loss adds λ1 · Σ_layers Σ |A_old A_newᵀ| (the new
A kept orthogonal to the old ones' rows) and λ2 · Σ ‖new A, new B‖₂ (0 in TRACE). The layer is
the shared `cl_bench.LoRALinear` with `per_task=True` plus the penalty; it and the method live in
`layer.py`, imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

PAPER = "https://arxiv.org/abs/2310.14152"
# TRACE's O-LoRA (training/main.py, model/Regular/O_LoRA.py): r 8, alpha 32, λ1 0.5, λ2 0; q, k, v, o;
# Adam (0.9, 0.95) at a constant rate. The CLIP defaults apply the same layer to seq-lora's layers.
# Language models also get MoRAM's code's dropout 0.1 on the adapter's input (TRACE/training/main.py:355-360)
# and lr 1e-4 (TreeLoRA's scripts/lora_based_methods/O_LoRA.sh; MoRAM ships no O-LoRA script).
# (MoRAM's TRACE O-LoRA never merges a finished task's LoRA, so its orthogonality term is always 0
# there: docs/language-models.md. This one is the method of the paper.)
DEFAULTS: dict[str, Any] = {
    "rank": 8,
    "alpha": 32.0,
    "orth_weight": 0.5,
    "l2_weight": 0.0,
    "layers": ["q", "k", "v", "out", "fc", "proj"],
    "towers": ["image", "text"],
    "lr": 5e-4,
    "iters": 500,
}
LM_DEFAULTS: dict[str, Any] = {"dropout": 0.1, "lr": 1e-4}
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-3}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="o-lora",
            factory="cl_bench.methods.o_lora.layer:OLoRA",
            summary="O-LoRA: a new LoRA per task, earlier ones frozen; the new A kept orthogonal to the old ones (TRACE's anchor baseline)",
            paper=PAPER,
            defaults=DEFAULTS,
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": {"lr": 2e-3, "iters": 200}, "tiny-lm": TINY_LM_PROFILE},
            supports=Supports(backbone_kinds=("clip", "causal-lm")),
            version="1",
        )
    ]
