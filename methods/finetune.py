"""`finetune`: every weight of the chosen towers trains through all tasks, the forgetting reference.

The logit scale stays frozen (as in ZSCL's fine-tuning baseline), so only the towers move.
ViT-B/16 defaults follow ZSCL's MTIL fine-tuning (AdamW, lr 1e-5, 1000 iterations per task,
batch 64); the tiny-clip profile is ours, chosen so the embedded default shows forgetting.
"""

from __future__ import annotations

from typing import Any

from cl_bench import Method, MethodSpec, UserError, hookimpl

TOWER_CHOICES = {"both": ("image", "text"), "image": ("image",), "text": ("text",)}


class FineTune(Method):
    def __init__(self, hparams: dict[str, Any]) -> None:
        if hparams["towers"] not in TOWER_CHOICES:
            raise UserError(f"method.towers must be one of {', '.join(TOWER_CHOICES)}, not {hparams['towers']!r}")
        self.towers = TOWER_CHOICES[hparams["towers"]]

    def trainable_parameters(self, model):
        return [p for tower in self.towers for p in model.tower_parameters(tower)]


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="finetune",
            factory=FineTune,
            summary="baseline: full fine-tuning of both towers through all tasks (the forgetting reference)",
            paper="https://arxiv.org/abs/2303.06628",
            defaults={"lr": 1e-5, "iters": 1000, "weight_decay": 0.0, "towers": "both"},
            profiles={"tiny-clip": {"lr": 3e-4, "iters": 200}},
            version="1",
        )
    ]
