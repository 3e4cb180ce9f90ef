"""`seq-lora`: one LoRA (rank 8 by default) on the attention q, k, v, out and MLP fc, proj Linears
of both towers, trained through all tasks without any protection: the lower bound for
parameter-efficient continual learning. The layer is the shared `cl_bench.LoRALinear` (on a
language model with dropout 0.1 on its input, as MoRAM's TRACE code); the method lives in
`lora.py` (imported at run time, so listing plugins stays fast)."""

from __future__ import annotations

from cl_bench import MethodSpec, Supports, hookimpl

# Language models: SeqLoRA as MoRAM's TRACE code runs it (`--CL_method lora`): LoRA r 8, alpha 32,
# dropout 0.1 on q, k, v, o of every decoder block (TRACE/training/main.py:492-504), Adam betas
# (0.9, 0.95) at a constant rate, no decay (:607-626), lr 1e-4 (TreeLoRA's
# scripts/lora_based_methods/lora.sh; MoRAM ships no SeqLoRA script). Only these runs get the
# keys `dropout` and `betas`, so CLIP runs (and their run ids) are as they were.
LM_DEFAULTS = {"alpha": 32.0, "dropout": 0.1, "betas": [0.9, 0.95], "lr": 1e-4}
# tiny-lm: our budget, as moram's.
TINY_LM_PROFILE = {"iters": 150, "batch_size": 16, "lr": 3e-3}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="seq-lora",
            factory="cl_bench.methods.seq_lora.lora:SeqLoRA",
            summary="baseline: one LoRA on q,k,v,out,fc,proj of both towers, trained sequentially (the lower bound)",
            paper="https://arxiv.org/abs/2106.09685",
            defaults={"rank": 8, "alpha": 16.0, "layers": ["q", "k", "v", "out", "fc", "proj"], "towers": ["image", "text"], "lr": 5e-4, "iters": 500},
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": {"lr": 2e-3, "iters": 200}, "tiny-lm": TINY_LM_PROFILE},
            supports=Supports(backbone_kinds=("clip", "causal-lm"), sharded=True),
            version="1",
        )
    ]
