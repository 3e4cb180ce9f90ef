"""`wise-ft`: fine-tuning (what `finetune` trains, with its settings) whose weights are interpolated
after every task with an anchor: θ_t = α·θ_t^ft + (1 − α)·θ_anchor.

- `anchor="previous"` (default) is ZSCL's continual WiSE-FT (`mtil/scripts/WiSE_finetune.sh`,
  `--wise_merge --wise_ft_model n --wise_ft_alpha 0.8`): the anchor is the model the task started
  from (the previous task's merged weights; the pre-trained ones for the first task), so the
  pre-trained weights weigh (1 − α)^t after t tasks.
- `anchor="zeroshot"` is the original WiSE-FT (Wortsman et al., CVPR 2022; mlfoundations/wise-ft
  `src/wise_ft.py`), applied after every task: each task's fine-tuned weights are interpolated with
  the pre-trained ones (ZSCL's `--wise_ft_model zeroshot`). The original paper's α is 0.5 (its
  `--alpha` default); `--set method.alpha=0.5` gives it.

Every parameter `finetune` trains (the chosen towers) is interpolated; buffers and the frozen logit
scale are left alone (ZSCL interpolates `parameters()`, where the frozen logit scale has the same
value on both sides). α = 1 is `finetune` exactly (no interpolation runs) and α = 0 puts the anchor's
copy back bit for bit (every row then equals the pre-trained model's).

Resume: a checkpoint holds the model at a task boundary, so the anchor is taken from the model as
it is then (in `before_experience`; for `zeroshot` in `setup`, which runs before a checkpoint is
loaded) and a resumed run takes the same anchor again: nothing beyond the model is saved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cl_bench import MethodSpec, Supports, hookimpl

from .finetune import TINY_CLIP_TRAINING, ZSCL_TRAINING, FineTune

ANCHORS = ("previous", "zeroshot")
# ZSCL's continual WiSE-FT merges with weight 0.8 on the fine-tuned model (`--wise_ft_alpha 0.8`).
ZSCL_ALPHA = 0.8
# finetune's tiny-clip profile (the fine-tuning it interpolates is the same run), with α 0.5 (the
# original WiSE-FT's): at 200 iterations of lr 3e-4 tiny-clip moves far from its starting weights,
# and α 0.8 keeps too much of each task's move (the sweep is in docs/methods.md#wise-ft).
TINY_CLIP_PROFILE = {**TINY_CLIP_TRAINING, "alpha": 0.5}


def snapshot(module: Any, params: Iterable[Any]) -> dict[str, Any]:
    """Detached copies of the module's parameters that are in `params`, keyed by their names."""
    chosen = {id(p) for p in params}
    return {name: p.detach().clone() for name, p in module.named_parameters() if id(p) in chosen}


def interpolate(module: Any, anchor: Mapping[str, Any], alpha: float) -> None:
    """In place, every parameter named in `anchor`: θ ← α·θ + (1 − α)·anchor (computed in float32).

    α = 1 leaves θ untouched and α = 0 copies the anchor: neither runs a float operation, so both
    ends are exact. Parameters not in `anchor` and all buffers are left alone.
    """
    import torch

    if alpha == 1.0:
        return
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name not in anchor:
                continue
            start = anchor[name].to(param.device)
            if alpha == 0.0:
                param.copy_(start)
            else:
                param.copy_(param.float().mul(alpha).add_(start.float(), alpha=1.0 - alpha))


class WiseFT(FineTune):
    """`finetune`, then after each task θ ← α·θ + (1 − α)·anchor over the parameters it trained."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        if hparams["towers"] == "decoder":
            raise ValueError("towers must be both, image or text on CLIP, not 'decoder'")
        alpha = hparams["alpha"]
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (the fine-tuned weights' share), not {alpha}")
        if hparams["anchor"] not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, not {hparams['anchor']!r}")
        self.alpha = float(alpha)
        self.anchor_kind = hparams["anchor"]
        self.anchor: dict[str, Any] | None = None

    def _take_anchor(self, model) -> None:
        if self.alpha != 1.0:  # α = 1 never reads it
            self.anchor = snapshot(model, self.trainable_parameters(model))

    def setup(self, model, stream) -> None:
        if self.anchor_kind == "zeroshot":
            self._take_anchor(model)  # the pre-trained weights: setup runs before a checkpoint loads

    def before_experience(self, model, experience) -> None:
        if self.anchor_kind == "previous":
            self._take_anchor(model)  # the weights this task starts from (a resume restores them)

    def after_experience(self, model, experience) -> None:
        if self.alpha == 1.0:
            return
        assert self.anchor is not None, "the anchor is taken before the first task trains"
        interpolate(model, self.anchor, self.alpha)
        if self.anchor_kind == "previous":
            self.anchor = None  # the next task takes its own; free the memory meanwhile


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="wise-ft",
            factory=WiseFT,
            summary="baseline: full fine-tuning, then after each task the weights interpolated with the task's starting (or the pre-trained) weights",
            paper="https://arxiv.org/abs/2109.01903",
            # ZSCL's WiSE_finetune.sh: its fine-tuning settings and α 0.8 against the previous task's weights.
            defaults={**ZSCL_TRAINING, "alpha": ZSCL_ALPHA, "anchor": "previous"},
            profiles={"tiny-clip": TINY_CLIP_PROFILE},
            supports=Supports(protocols=("class-il", "domain-il", "mtil", "x-tail"), backbone_kinds=("clip",)),
            version="1",
        )
    ]
