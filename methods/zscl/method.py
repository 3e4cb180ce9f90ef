"""ZSCL as its code computes it (Thunderbeee/ZSCL, `mtil/src/models/finetune.py` and `helpers.py`
with `scripts/ZSCL.sh`: `--method ZSCL --image_loss --text_loss --we --avg_freq 100 --l2 1
--ref-dataset ImageNet --ref-sentences conceptual_captions`).

Per training step, on top of `finetune`'s loss (cross-entropy over the task's classes with label
smoothing, every weight of the chosen towers, the logit scale frozen):

    x_r = the next batch of reference images (as many as the training batch)
    U   = g_0(every reference text), normalised (the pre-trained teacher's text features, M rows)
    Z_s = s · f(x_r) Uᵀ,   Z_t = s · f_0(x_r) Uᵀ               (B images × M texts)
    L  += weight · ( KD(Z_s, Z_t) + KD(Z_sᵀ, Z_tᵀ) )            (lwf's two directions, τ = 2)
    L  += l2_weight · Σ_θ ‖θ − θ_start‖²                        (a sum of squares, not a mean)

f_0 and g_0 are the pre-trained model's towers (the teacher, taken in `setup`, the same for every
task); θ_start are the weights the task started from. Weight ensemble (WE), with N = iters steps
numbered 0..N−1 and k = we_interval: starting from W = θ_start (count 1), after every optimiser
step i with i % k == 0, and once more at the end when N % k == 0, W ← (count · W + θ) / (count + 1),
count ← count + 1; after the task the model's weights become W, which is what is evaluated and
what the next task starts from. ZSCL's loop runs N + 1 steps (`range(iterations + 1)`) whose last
one has learning rate 0, so its last snapshot (step N) holds the final weights: the same set of
snapshots, {θ_start, θ after steps 0, k, 2k, ..., the final θ}, twelve for N = 1000, k = 100.

Setting `weight`, `l2_weight` and `we_interval` to 0 turns each term off; with all three 0 this is
`finetune`, bit for bit (no teacher, no reference data read, no extra pass). Each term is
independent, so `weight=0` alone is ZSCL without distillation (the paper's "WC + WE" ablation).

Departures from ZSCL's code, and why:
- The reference data is the stream's (`stream.reference()`). ZSCL's is ImageNet's training images
  and the Conceptual Captions validation captions; the embedded streams supply tiny-clip's own
  pre-training images of their domains, each labelled by one prompt per class, and those prompts
  are the texts. All texts enter every step, as in ZSCL (which embeds all ~15k captions each
  step; here the frozen teacher's text features are computed once and kept).
- The reference batches are drawn by a generator seeded from the global generator in
  `before_experience` (which the strategy seeds from the run seed and the task), so a resumed run
  draws the same batches; each pass over the reference data reshuffles.
- The weight ensemble is over the weights that train (ZSCL averages every parameter; the others
  do not move, so the average is the same), and its steps are counted by the optimiser's own
  steps.
- A class's text feature for the cross-entropy is the mean over its prompts (as `finetune`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from cl_bench import Teacher, UserError

from ..finetune import FineTune
from ..lwf.method import check_clip_towers, check_temperature, check_weight, two_way_distillation

TEXT_CHUNK = 1024  # reference texts encoded at a time


class ZSCL(FineTune):
    """`finetune` plus ZSCL's reference distillation, L2 pull and weight ensemble."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        check_clip_towers("zscl", hparams)
        super().__init__(hparams)
        self.weight = check_weight("weight", hparams["weight"])
        self.l2_weight = check_weight("l2_weight", hparams["l2_weight"])
        self.temperature = check_temperature(hparams["temperature"])
        if hparams["we_interval"] < 0:
            raise ValueError(f"method.we_interval must be >= 0 (0: no weight ensemble), not {hparams['we_interval']}")
        self.we_interval = int(hparams["we_interval"])
        self.batch_size = int(hparams["batch_size"])  # the reference batch, as ZSCL's loader
        self.teacher: Teacher | None = None
        self.reference: Any = None
        self.reference_text: Tensor | None = None  # the teacher's features of every reference text
        self.generator: torch.Generator | None = None
        self.batches: Iterator[tuple[Tensor, Tensor]] | None = None
        self.params: list[nn.Parameter] = []
        self.start: list[Tensor] = []  # θ_start
        self.average: list[Tensor] = []  # W
        self.count = 0  # weight vectors in W
        self.steps = 0  # optimiser steps taken in this task

    # ------------------------------------------------------------------ hooks

    def setup(self, model, stream) -> None:
        if not self.weight:
            return
        self.reference = stream.reference()  # a one-line UserError when the stream supplies none
        if not len(self.reference.texts) or not len(self.reference.dataset):
            raise UserError(f"stream {stream.name}: its reference data {self.reference.name!r} holds no texts or no images; zscl distils on both")
        self.teacher = Teacher(model)  # the pre-trained model, before any task

    def before_experience(self, model, experience) -> None:
        self.params = list({id(p): p for p in self.trainable_parameters(model)}.values())
        self.steps = 0
        with torch.no_grad():
            self.start = [p.detach().clone() for p in self.params] if self.l2_weight or self.we_interval else []
            self.average = [p.clone() for p in self.start] if self.we_interval else []
        self.count = 1
        if self.weight:
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
            self.batches = None

    def make_optimizer(self, params, hparams):
        if not self.we_interval:
            return None  # the strategy's AdamW
        optimizer = torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"])  # as the strategy's
        optimizer.register_step_post_hook(self._after_step)
        return optimizer

    def extra_loss(self, model, batch, outputs):
        loss = super().extra_loss(model, batch, outputs)
        terms = [] if loss is None else [loss]
        if self.l2_weight:
            terms.append(self.l2_weight * self.l2_distance())
        if self.weight:
            terms.append(self.weight * self.reference_distillation(model, outputs.device))
        if not terms:
            return None
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def after_experience(self, model, experience) -> None:
        if self.we_interval:
            if self.steps % self.we_interval == 0:  # ZSCL's extra last step (learning rate 0): the final weights
                self.accumulate()
            with torch.no_grad():
                for param, mean in zip(self.params, self.average):
                    param.copy_(mean)
            model.invalidate_text_cache()
        self.start, self.average, self.params = [], [], []

    # ------------------------------------------------------------------ terms

    def l2_distance(self) -> Tensor:
        """Σ_θ ‖θ − θ_start‖² over the trained weights (ZSCL's sum-reduced `l2_loss`)."""
        return torch.stack([(param.float() - start.float()).pow(2).sum() for param, start in zip(self.params, self.start)]).sum()

    def reference_distillation(self, model, device: torch.device) -> Tensor:
        assert self.teacher is not None
        images = self.next_reference_images().to(device)
        teacher_images = self.teacher.features(images)  # moves the teacher to the device
        if self.reference_text is None:
            self.reference_text = self.encode_reference_texts(device)
        image_kd, text_kd = two_way_distillation(model.features(images), teacher_images, self.reference_text, model.logit_scale.detach(), self.temperature)
        return image_kd + text_kd

    @torch.no_grad()
    def encode_reference_texts(self, device: torch.device) -> Tensor:
        """The pre-trained text tower's normalised features of every reference text (computed once:
        the teacher never changes)."""
        assert self.teacher is not None
        clip = self.teacher.module
        tokens = clip.tokenizer(list(self.reference.texts), context_length=clip.clip.context_length).to(device)
        return torch.cat([clip.encode_text(tokens[i : i + TEXT_CHUNK]) for i in range(0, len(tokens), TEXT_CHUNK)])

    def next_reference_images(self) -> Tensor:
        """The next reference batch; each pass over the reference data is reshuffled."""
        assert self.generator is not None
        while True:
            if self.batches is None:
                seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
                self.batches = self.reference.batches(self.batch_size, shuffle=True, seed=seed)
            batch = next(self.batches, None)
            if batch is not None:
                return batch[0]
            self.batches = None

    # ------------------------------------------------------------------ weight ensemble

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self.steps % self.we_interval == 0:
            self.accumulate()
        self.steps += 1

    @torch.no_grad()
    def accumulate(self) -> None:
        """W ← (count · W + θ) / (count + 1), ZSCL's `merge_we`."""
        for mean, param in zip(self.average, self.params):
            mean.mul_(self.count).add_(param.detach()).div_(self.count + 1)
        self.count += 1
