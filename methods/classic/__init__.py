"""The classic continual-learning methods `ewc`, `replay`, `gem`, `ogd` on both tracks, and the
frozen, prompted `icl` (language models only): on language models the classic rows of TRACE's
table, read against BeyonderXX/TRACE and MoRAM's `TRACE/` code; on CLIP the same method objects
with the image settings of their original code (GEM's and its EWC: facebookresearch/
GradientEpisodicMemory; OGD's: MehdiAbbanaBennani/continual-learning-ogdplus). The departures
are in each module's docstring, docs/language-models.md and docs/methods.md.

Each trains a base (`base=finetune`: every weight, as TRACE's EWC, GEM and replay; `base=seq-lora`:
one LoRA through all tasks, as TRACE's OGD) with its rule on top; with the rule off (`strength=0`,
`memory=0`) a run equals the base method's run bit for bit. The modules are imported at run time.

The `defaults` are the language-model settings, as before this track was added; CLIP's are
`kind_defaults["clip"]` (which add `towers`, `label_smoothing` and, for ogd, `gradient`), so
the language-model runs' hyper-parameters, hence run ids, are unchanged.
"""

from __future__ import annotations

from typing import Any

from cl_bench import IMAGE_PROTOCOLS, TEXT_PROTOCOLS, MethodSpec, Supports, hookimpl

from ..finetune import TINY_CLIP_TRAINING, ZSCL_TRAINING

# What every one of them shares: Adam (0.9, 0.95), constant, no decay (MoRAM TRACE/training/main.py:607-626)
# and seq-lora's LoRA where base=seq-lora (main.py:492-504).
LORA = {"rank": 8, "alpha": 32.0, "dropout": 0.1, "layers": ["q", "k", "v", "out"]}
COMMON: dict[str, Any] = {"betas": [0.9, 0.95], "weight_decay": 0.0, "warmup_iters": 0, **LORA}
# Full fine-tuning (TreeLoRA's scripts/full_grad_methods/{EWC,GEM}.sh, TRACE's train_replay.sh): lr 1e-5.
FULL = {**COMMON, "base": "finetune", "lr": 1e-5}
# tiny-lm: the base methods' profiles (finetune's, seq-lora's), so strength 0 / memory 0 repeat them.
TINY_FULL = {"lr": 1e-3, "iters": 150, "batch_size": 16}
TINY_LORA = {"lr": 3e-3, "iters": 150, "batch_size": 16}
BOTH_TRACKS = Supports(protocols=(*IMAGE_PROTOCOLS, *TEXT_PROTOCOLS), backbone_kinds=("clip", "causal-lm"))
# Replay's memory batches run through the model inside the training step: sharded training takes
# them as it takes the batch (docs/multi-process.md, Sharded training); EWC, GEM and OGD read or
# project whole weights or gradients there and are not declared.
REPLAY_TRACKS = Supports(protocols=(*IMAGE_PROTOCOLS, *TEXT_PROTOCOLS), backbone_kinds=("clip", "causal-lm"), sharded=True)

# CLIP: the bases exactly as `finetune` and `seq-lora` run on CLIP. `betas` (a key the language-model
# defaults have) is AdamW's own (0.9, 0.999), the strategy's optimizer; no dropout; seq-lora's
# LoRA (r 8, alpha 16 on q, k, v, out, fc, proj of both towers).
CLIP_LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "layers": ["q", "k", "v", "out", "fc", "proj"]}
CLIP_COMMON: dict[str, Any] = {"betas": [0.9, 0.999], **CLIP_LORA}
# base finetune: ZSCL's MTIL fine-tuning (finetune's defaults: AdamW lr 1e-5, 1000 iterations,
# batch 64, label smoothing 0.2, 100 warm-up iterations), both towers.
CLIP_FULL: dict[str, Any] = {**CLIP_COMMON, **ZSCL_TRAINING, "base": "finetune"}
# base seq-lora: seq-lora's CLIP defaults (lr 5e-4, 500 iterations, no smoothing, no warm-up).
CLIP_SEQ_LORA: dict[str, Any] = {**CLIP_COMMON, "base": "seq-lora", "towers": "both", "label_smoothing": 0.0, "lr": 5e-4, "iters": 500, "warmup_iters": 0}
# tiny-clip: the bases' profiles (finetune's: lr 3e-4, 200 iterations, no smoothing, no warm-up;
# seq-lora's: lr 2e-3, 200 iterations), so strength 0 / memory 0 repeat them; EWC at strength 1e5
# (400 barely moves finetune there), memories of 40 per task (iCaRL's 200 in all on embedded-cil),
# OGD's 100 directions (docs/methods.md has the runs tried).
TINY_CLIP_LORA = {"lr": 2e-3, "iters": 200}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="ewc",
            factory="cl_bench.methods.classic.ewc:EWC",
            summary="EWC: full fine-tuning + strength/2·ΣF(θ−θ*)², empirical Fisher summed over tasks (TRACE's on language models; CLIP too)",
            paper="https://arxiv.org/abs/1612.00796",
            defaults={**FULL, "strength": 400.0, "fisher_samples": 500},
            kind_defaults={"clip": CLIP_FULL},
            profiles={"tiny-lm": {**TINY_FULL, "fisher_samples": 64}, "tiny-clip": {**TINY_CLIP_TRAINING, "strength": 1e5, "fisher_samples": 200}},
            supports=BOTH_TRACKS,
        ),
        MethodSpec(
            name="replay",
            factory="cl_bench.methods.classic.replay:Replay",
            summary="experience replay: each batch joined by memory examples of earlier tasks, full fine-tuning (language models and CLIP)",
            paper="https://arxiv.org/abs/1902.10486",
            defaults={**FULL, "memory": 50, "replay_ratio": 1.0},
            # CLIP: GEM's memory (256 per task), for a comparison with gem at equal memory
            kind_defaults={"clip": {**CLIP_FULL, "memory": 256}},
            profiles={"tiny-lm": {**TINY_FULL, "memory": 16}, "tiny-clip": {**TINY_CLIP_TRAINING, "memory": 40}},
            supports=REPLAY_TRACKS,
        ),
        MethodSpec(
            name="gem",
            factory="cl_bench.methods.classic.gem:GEM",
            summary="GEM: each step's gradient projected by GEM's dual QP (quadprog) so no earlier task's memory loss rises (language models and CLIP)",
            paper="https://arxiv.org/abs/1706.08840",
            defaults={**FULL, "memory": 32, "margin": 0.5},
            # CLIP: GEM's image settings (run_experiments.sh: 256 memories per task, margin 0.5)
            kind_defaults={"clip": {**CLIP_FULL, "memory": 256}},
            profiles={"tiny-lm": {**TINY_FULL, "memory": 16}, "tiny-clip": {**TINY_CLIP_TRAINING, "memory": 40}},
            supports=BOTH_TRACKS,
        ),
        MethodSpec(
            name="ogd",
            factory="cl_bench.methods.classic.ogd:OGD",
            summary="OGD: LoRA steps kept orthogonal to earlier tasks' gradients (loss gradients as TRACE on language models; ground-truth logits on CLIP)",
            paper="https://arxiv.org/abs/1910.07104",
            defaults={**COMMON, "base": "seq-lora", "lr": 1e-4, "strength": 1.0, "directions": 125},
            # CLIP: OGD's image code (ground-truth-logit gradients of 100 random examples per task,
            # its split-CIFAR setting) on seq-lora's LoRA (every weight of ViT-B/16 would need
            # 0.6 GB per direction)
            kind_defaults={"clip": {**CLIP_SEQ_LORA, "gradient": "logit", "directions": 100}},
            profiles={"tiny-lm": {**TINY_LORA, "directions": 32}, "tiny-clip": {**TINY_CLIP_LORA, "directions": 100}},
            supports=BOTH_TRACKS,
        ),
        MethodSpec(
            name="icl",
            factory="cl_bench.methods.classic.icl:ICL",
            summary="TRACE's FIX row: the frozen model prompted with k=6 demonstrations from each task's training set; trains nothing (language models)",
            paper="https://arxiv.org/abs/2310.06762",
            defaults={"k": 6, "max_prompt_tokens": 3584, "demo_max_tokens": 0, "skip_tasks": ["MeetingBank"], "balanced_tasks": ["C-STANCE", "FOMC", "stance"]},
            # tiny-lm has 256 positions: room for the demonstrations and the answer
            profiles={"tiny-lm": {"max_prompt_tokens": 200, "demo_max_tokens": 40}},
            supports=Supports(protocols=TEXT_PROTOCOLS, backbone_kinds=("causal-lm",), sharded=True),  # trains nothing: shard_weights shards nothing
        ),
    ]
