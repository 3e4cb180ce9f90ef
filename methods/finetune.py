"""`finetune`: every weight of the chosen towers trains through all tasks, the forgetting reference.
(On a language model the one tower is "decoder": every weight of the model.)

The logit scale stays frozen (as in ZSCL's fine-tuning baseline), so only the towers move.
ViT-B/16 defaults follow ZSCL's MTIL fine-tuning (AdamW, lr 1e-5, 1000 iterations per task,
batch 64, label smoothing 0.2 over the task's classes, 100 warm-up iterations before the cosine
decay); the tiny-clip profile is ours (no smoothing, no warm-up), chosen so the embedded default
shows forgetting.
"""

from __future__ import annotations

from typing import Any

from cl_bench import Method, MethodSpec, Supports, UserError, hookimpl

# ZSCL's fine-tuning baseline (ZSCL mtil/src/main.py and its MTIL scripts): ls 0.2, warmup 100.
ZSCL_LABEL_SMOOTHING = 0.2
ZSCL_WARMUP_ITERS = 100
# What `finetune` trains with on ViT-B/16 (ZSCL's MTIL fine-tuning: AdamW lr 1e-5, 1000 iterations,
# batch 64) and its tiny-clip profile; the methods built on it (lwf, zscl, icarl, wise-ft) start
# from the same two.
ZSCL_TRAINING = {"lr": 1e-5, "iters": 1000, "weight_decay": 0.0, "towers": "both", "label_smoothing": ZSCL_LABEL_SMOOTHING, "warmup_iters": ZSCL_WARMUP_ITERS}
TINY_CLIP_TRAINING = {"lr": 3e-4, "iters": 200, "label_smoothing": 0.0, "warmup_iters": 0}

TOWER_CHOICES = {"both": ("image", "text"), "image": ("image",), "text": ("text",), "decoder": ("decoder",)}


class FineTune(Method):
    def __init__(self, hparams: dict[str, Any]) -> None:
        if hparams["towers"] not in TOWER_CHOICES:
            raise UserError(f"method.towers must be one of {', '.join(TOWER_CHOICES)}, not {hparams['towers']!r}")
        self.towers = TOWER_CHOICES[hparams["towers"]]
        if not 0.0 <= hparams["label_smoothing"] < 1.0:
            raise ValueError(f"method.label_smoothing must be in [0, 1), not {hparams['label_smoothing']}")
        self.label_smoothing = hparams["label_smoothing"]

    def trainable_parameters(self, model):
        return [p for tower in self.towers for p in model.tower_parameters(tower)]

    def make_optimizer(self, params, hparams):
        betas = hparams.get("betas")  # language models: TRACE's Adam (0.9, 0.95); else the strategy's AdamW
        if betas is None:
            return None
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"method.betas must be two numbers in [0, 1), got {betas}")
        import torch

        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=(float(betas[0]), float(betas[1])))

    def extra_loss(self, model, batch, outputs):
        """Turns the strategy's cross-entropy into its label-smoothed form over the label space."""
        if not self.label_smoothing:
            return None
        import torch.nn.functional as F

        space = model.label_space
        columns = outputs[:, space].float()
        targets = (batch[1].unsqueeze(1) == space.unsqueeze(0)).float().argmax(dim=1)
        return F.cross_entropy(columns, targets, label_smoothing=self.label_smoothing) - F.cross_entropy(columns, targets)


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="finetune",
            factory=FineTune,
            summary="baseline: full fine-tuning of both towers through all tasks (the forgetting reference)",
            paper="https://arxiv.org/abs/2303.06628",
            defaults=ZSCL_TRAINING,
            # Language models: every weight (the decoder tower) as MoRAM's TRACE code trains its `base`
            # row: Adam betas (0.9, 0.95), constant, no decay (TRACE/training/main.py:607-626), lr 1e-5
            # (TreeLoRA's scripts/full_grad_methods/base.sh). `betas` exists on these runs only.
            kind_defaults={"causal-lm": {"towers": "decoder", "label_smoothing": 0.0, "warmup_iters": 0, "lr": 1e-5, "betas": [0.9, 0.95]}},  # the rest: the backbone's method_defaults
            profiles={"tiny-clip": TINY_CLIP_TRAINING, "tiny-lm": {"lr": 1e-3, "iters": 150, "batch_size": 16}},
            supports=Supports(backbone_kinds=("clip", "causal-lm"), sharded=True),
            version="1",
        )
    ]
