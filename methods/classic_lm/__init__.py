"""The classic rows of TRACE's table on language models: `ewc`, `replay`, `gem`, `ogd` (and the
frozen, prompted `icl`), read against BeyonderXX/TRACE and MoRAM's `TRACE/` code (the
departures are in each module's docstring and in docs/language-models.md).

Each trains a base (`base=finetune`: every weight, as TRACE's EWC, GEM and replay; `base=seq-lora`:
one LoRA through all tasks, as TRACE's OGD) with its rule on top; with the rule off (`strength=0`,
`memory=0`) a run equals the base method's run bit for bit. The modules are imported at run time.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

# What every one of them shares: Adam (0.9, 0.95), constant, no decay (MoRAM TRACE/training/main.py:607-626)
# and seq-lora's LoRA where base=seq-lora (main.py:492-504).
LORA = {"rank": 8, "alpha": 32.0, "dropout": 0.1, "layers": ["q", "k", "v", "out"]}
COMMON: dict[str, Any] = {"betas": [0.9, 0.95], "weight_decay": 0.0, "warmup_iters": 0, **LORA}
# Full fine-tuning (TreeLoRA's scripts/full_grad_methods/{EWC,GEM}.sh, TRACE's train_replay.sh): lr 1e-5.
FULL = {**COMMON, "base": "finetune", "lr": 1e-5}
# tiny-lm: the base methods' profiles (finetune's, seq-lora's), so strength 0 / memory 0 repeat them.
TINY_FULL = {"lr": 1e-3, "iters": 150, "batch_size": 16}
TINY_LORA = {"lr": 3e-3, "iters": 150, "batch_size": 16}
LM_ONLY = Supports(protocols=("instruct",), backbone_kinds=("causal-lm",))


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="ewc",
            factory="cl_bench.methods.classic_lm.ewc:EWC",
            summary="EWC as TRACE runs it: full fine-tuning + strength/2·ΣF(θ−θ*)², empirical Fisher summed over tasks (language models)",
            paper="https://arxiv.org/abs/1612.00796",
            defaults={**FULL, "strength": 400.0, "fisher_samples": 500},
            profiles={"tiny-lm": {**TINY_FULL, "fisher_samples": 64}},
            supports=LM_ONLY,
        ),
        MethodSpec(
            name="replay",
            factory="cl_bench.methods.classic_lm.replay:Replay",
            summary="experience replay: each batch joined by memory examples of earlier tasks (50 per task), full fine-tuning (language models)",
            paper="https://arxiv.org/abs/1902.10486",
            defaults={**FULL, "memory": 50, "replay_ratio": 1.0},
            profiles={"tiny-lm": {**TINY_FULL, "memory": 16}},
            supports=LM_ONLY,
        ),
        MethodSpec(
            name="gem",
            factory="cl_bench.methods.classic_lm.gem:GEM",
            summary="GEM: each step's gradient projected by GEM's dual QP (quadprog) so no earlier task's memory loss rises (language models)",
            paper="https://arxiv.org/abs/1706.08840",
            defaults={**FULL, "memory": 32, "margin": 0.5},
            profiles={"tiny-lm": {**TINY_FULL, "memory": 16}},
            supports=LM_ONLY,
        ),
        MethodSpec(
            name="ogd",
            factory="cl_bench.methods.classic_lm.ogd:OGD",
            summary="OGD as TRACE runs it: LoRA steps kept orthogonal to earlier tasks' loss gradients (language models)",
            paper="https://arxiv.org/abs/1910.07104",
            defaults={**COMMON, "base": "seq-lora", "lr": 1e-4, "strength": 1.0, "directions": 125},
            profiles={"tiny-lm": {**TINY_LORA, "directions": 32}},
            supports=LM_ONLY,
        ),
        MethodSpec(
            name="icl",
            factory="cl_bench.methods.classic_lm.icl:ICL",
            summary="TRACE's FIX row: the frozen model prompted with k=6 demonstrations from each task's training set; trains nothing (language models)",
            paper="https://arxiv.org/abs/2310.06762",
            defaults={"k": 6, "max_prompt_tokens": 3584, "demo_max_tokens": 0, "skip_tasks": ["MeetingBank"], "balanced_tasks": ["C-STANCE", "FOMC", "stance"]},
            # tiny-lm has 256 positions: room for the demonstrations and the answer
            profiles={"tiny-lm": {"max_prompt_tokens": 200, "demo_max_tokens": 40}},
            supports=LM_ONLY,
        ),
    ]
