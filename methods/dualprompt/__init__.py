"""`dualprompt`: DualPrompt (Wang et al., ECCV 2022, "DualPrompt: Complementary Prompting for
Rehearsal-free Continual Learning"; code google-research/l2p) on CLIP's image tower, and on a
causal language model as MoRAM's TRACE copy (TRACE/model/Dynamic_network/DualPrompt.py) runs it.

Images: a G-prompt (general, shared by every task) as prefixes of the attention keys and values
of blocks 0-1 (length 5), and a pool of 10 E-prompts (expert) of length 5 spanning blocks 2-4,
one key each. The query is the frozen model's normalised image feature (a prompt-free pass, as
L2P); in training task t's E-prompt t is used (task-specific), and at test the E-prompt whose key
is nearest by cosine (top-1). The pull constraint (weight 1) pulls key t towards task t's queries.
Language models: G (2 vectors) and E (3 vectors) put before the input embeddings as [E; G; text]
(MoRAM's order), E chosen the same way (task-specific in training, by key at test; see method.py).
Implementation: method.py, imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

# google-research/l2p configs/cifar100_dualprompt.py: G layers [0, 1] length 5, E layers [2, 3, 4]
# pool 10 length 5 top-1, prefix-tuning, task-specific E in training, pull 1.0, E-prompt t starts
# as a copy of t-1 (shared_prompt_pool). Prompts and keys U(-1, 1) (the PyTorch ports'); Adam at a
# constant 0.03 for batch 24 there; here, as l2p, lr 0.015 for batch 64, 500 iterations per task
# and the shared cosine schedule.
CLIP_DEFAULTS: dict[str, Any] = {
    "g_length": 5,
    "g_layers": [0, 1],
    "e_length": 5,
    "e_layers": [2, 3, 4],
    "pool_size": 10,
    "top_n": 1,
    "pull_weight": 1.0,
    "init": "uniform",
    "copy_previous": True,
    "lr": 0.015,
    "iters": 500,
}
# MoRAM's TRACE DualPrompt (training/main.py L628-676, DualPrompt.py L22-55): G 2 vectors, E 3,
# prompt-tuning at the input, vocabulary-embedding init, no copy between tasks; Adam (0.9, 0.95)
# constant; lr 5e-4 (MoRAM's runner; it ships no DualPrompt script). Key matching at test and its
# pull weight 1.0 are DualPrompt's (MoRAM uses the task identity: see method.py).
LM_DEFAULTS: dict[str, Any] = {"g_length": 2, "e_length": 3, "init": "vocab", "copy_previous": False, "betas": [0.9, 0.95], "lr": 5e-4}
# tiny-clip has 4 image blocks: G on 0-1, E on 2-3.
TINY_CLIP_PROFILE: dict[str, Any] = {"e_layers": [2, 3], "iters": 200, "lr": 0.03}
TINY_LM_PROFILE: dict[str, Any] = {"iters": 150, "batch_size": 16, "lr": 3e-2}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="dualprompt",
            factory="cl_bench.methods.dualprompt.method:DualPrompt",
            summary="DualPrompt: a shared G-prompt and a pool of task E-prompts (prefixes of the image tower's attention, or vectors before a text)",
            paper="https://arxiv.org/abs/2204.04799",
            defaults=CLIP_DEFAULTS,
            kind_defaults={"causal-lm": LM_DEFAULTS},
            profiles={"tiny-clip": TINY_CLIP_PROFILE, "tiny-lm": TINY_LM_PROFILE},
            supports=Supports(backbone_kinds=("clip", "causal-lm")),
            version="1",
        )
    ]
