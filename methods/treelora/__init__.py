"""`treelora`: TreeLoRA (arXiv 2506.10355, ICML 2025, "TreeLoRA: Efficient Continual Learning via Layer-Wise
LoRAs Guided by a Hierarchical Gradient-Similarity Tree"), as ZinYY/TreeLoRA's code (and MoRAM's
TRACE copy of it) runs it on language models: one LoRA through all tasks (seq-lora's) whose A
matrices are pulled, module by module, towards an earlier task's chosen by a bandit search over a
tree of the tasks. The search is `tree.py`, the method `method.py` (imported when a run starts);
the departures from the official code are in `method.py`'s docstring and docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

# ZinYY/TreeLoRA scripts/lora_based_methods/Tree_LoRA.sh: reg 0.5, lr 1e-4, weight decay 0, epochs
# 2,1,3,2,1,2,2,3, batch 1 × 8 accumulation × 4 GPUs; LoRA r 8, alpha 32, dropout 0.1 on MoRAM's
# q, k, v, o (TRACE/training/main.py); Adam (0.9, 0.95) at a constant rate.
DEFAULTS: dict[str, Any] = {
    "rank": 8,
    "alpha": 32.0,
    "dropout": 0.1,
    "layers": ["q", "k", "v", "out"],
    "towers": ["decoder"],
    "betas": [0.9, 0.95],
    "weight_decay": 0.0,
    "warmup_iters": 0,
    "lr": 1e-4,
    "reg": 0.5,
}
# tiny-lm: seq-lora's profile (so reg 0 repeats seq-lora's tiny-lm run); reg chosen on embedded-instruct (docs/methods.md).
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-3, "reg": 0.5}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="treelora",
            factory="cl_bench.methods.treelora.method:TreeLoRA",
            summary="TreeLoRA: one LoRA through all tasks, each module's A pulled towards an earlier task's picked by a bandit search over a task tree (language models)",
            paper="https://arxiv.org/abs/2506.10355",
            defaults=DEFAULTS,
            profiles={"tiny-lm": TINY_LM_PROFILE},
            supports=Supports(protocols=("instruct",), backbone_kinds=("causal-lm",)),
            version="1",
        )
    ]
