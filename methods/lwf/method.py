"""LwF for CLIP as ZSCL's code computes it (Thunderbeee/ZSCL, `mtil/src/models/finetune.py` with
`scripts/lwf.sh`: `--method ZSCL --image_loss --text_loss --ref-dataset <current task>
--ref-model <previous task's checkpoint>`).

Per training step, on top of `finetune`'s loss (cross-entropy over the task's classes with label
smoothing, every weight of the chosen towers, the logit scale frozen):

    U   = g_prev(prompts of the distillation classes), normalised (the teacher's text features)
    Z_s = s · f(x) Uᵀ,   Z_t = s · f_prev(x) Uᵀ          (B images × C classes; s = logit scale)
    L  += weight · ( KD(Z_s, Z_t) + KD(Z_sᵀ, Z_tᵀ) )
    KD(S, T) = τ² · mean over rows of −Σ_j softmax(T/τ)_j log softmax(S/τ)_j   (τ = temperature, 2)

The first KD runs, for each image, a softmax over the classes (image -> text); the second, for each
class, a softmax over the batch's images (text -> image). Both score the current image features
against the *teacher's* text features, so the distillation trains the image tower only (the text
tower learns from the cross-entropy), as in ZSCL's code (`distill_texts="student"` changes that,
below). The teacher is the model as the previous
task left it, taken in `before_experience` (the pre-trained model for the first task); a resumed
run takes it again from the checkpoint's model, so it is never saved.

Departures from ZSCL's code, and why:
- The distilled images are the training batch itself. ZSCL draws a second, independently
  shuffled batch of the current task's images with the test transform (no augmentation); the
  streams here have no augmentation, so the training batch already is un-augmented data of the
  task, and a second draw would only add another forward pass.
- `distill_space` chooses the classes U covers. ZSCL distils over the current task's class
  prompts, which is what the MTIL protocol scores a task over. The default, "protocol", takes the
  label space the protocol scores the task's test set over (`stream.label_space(task + 1, task)`):
  the classes seen so far under class-IL (the current task's two classes alone would leave the
  old classes' logits free; on embedded-cil this distils far better), the task's classes under
  MTIL (ZSCL's choice), every class under domain-IL and X-TAIL. "task" is ZSCL's choice under
  every protocol.
- A class's text feature is the normalised mean over its prompts (the stream's templates), as
  the model scores classes everywhere here; ZSCL embeds one template for training.
- `weight` scales both directions together (ZSCL adds each with weight 1; the default 1 is that).
- `distill_texts="student"` (not ZSCL's; the default "teacher" is) scores the current images against
  the current model's own class text features, Z_s = s · f(x) g(classes)ᵀ, as the original LwF
  distils the whole model's outputs: the distillation then also holds the text tower, whose
  features of earlier classes the cross-entropy over the new ones otherwise moves freely.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from cl_bench import Teacher, distillation_loss, gather_batch

from ..finetune import FineTune

DISTILL_SPACES = ("protocol", "task")
DISTILL_TEXTS = ("teacher", "student")


def check_clip_towers(name: str, hparams: dict[str, Any]) -> None:
    """The towers of a CLIP method: both, image or text (finetune's "decoder" is a language model's)."""
    if hparams["towers"] not in ("both", "image", "text"):
        raise ValueError(f"method.towers for {name} must be both, image or text, not {hparams['towers']!r}")


def check_weight(label: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"method.{label} must be a finite number >= 0, not {value}")
    return float(value)


def check_temperature(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"method.temperature must be a finite number > 0, not {value}")
    return float(value)


def two_way_distillation(student_images: Tensor, teacher_images: Tensor, texts: Tensor, scale: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """ZSCL's two distillation terms over one set of (the teacher's) normalised text features:
    image -> text (a softmax over the texts for each image, the mean over images) and text -> image
    (a softmax over the images for each text, the mean over texts)."""
    texts = texts.to(student_images.dtype)
    student = scale * student_images @ texts.t()
    teacher = scale * teacher_images.to(student_images.dtype) @ texts.t()
    return distillation_loss(student, teacher, temperature), distillation_loss(student.t(), teacher.t(), temperature)


class LwF(FineTune):
    """`finetune` plus ZSCL's two-way distillation towards the previous task's model."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        check_clip_towers("lwf", hparams)
        super().__init__(hparams)
        self.weight = check_weight("weight", hparams["weight"])
        self.temperature = check_temperature(hparams["temperature"])
        if hparams["distill_space"] not in DISTILL_SPACES:
            raise ValueError(f"method.distill_space must be one of {', '.join(DISTILL_SPACES)}, not {hparams['distill_space']!r}")
        self.distill_space = hparams["distill_space"]
        if hparams["distill_texts"] not in DISTILL_TEXTS:
            raise ValueError(f"method.distill_texts must be one of {', '.join(DISTILL_TEXTS)}, not {hparams['distill_texts']!r}")
        self.student_texts = hparams["distill_texts"] == "student"
        self.teacher: Teacher | None = None
        self.classes: list[int] = []
        self.text: Tensor | None = None  # the teacher's text features of `classes`, computed on first use

    def before_experience(self, model, experience) -> None:
        if not self.weight:  # weight 0 is finetune: no teacher, no extra forward pass
            return
        self.teacher = Teacher(model)
        task = experience.index
        self.classes = experience.stream.label_space(task + 1, task) if self.distill_space == "protocol" else sorted(experience.classes)
        self.text = None

    def extra_loss(self, model, batch, outputs):
        loss = super().extra_loss(model, batch, outputs)
        if not self.weight or self.teacher is None:
            return loss
        images = batch[0]
        if self.student_texts:  # both sides score with their own towers: s · f(x) g(classes)ᵀ
            # the text -> image direction softmaxes across the batch: a multi-process run's share is gathered
            student, teacher = gather_batch(model.scores(images, self.classes)), gather_batch(self.teacher.scores(images, self.classes))
            distill = self.weight * (distillation_loss(student, teacher, self.temperature) + distillation_loss(student.t(), teacher.t(), self.temperature))
            return distill if loss is None else loss + distill
        teacher_images = self.teacher.features(images)  # moves the teacher to the images' device
        if self.text is None:
            with torch.no_grad():
                self.text = self.teacher.module.class_text_features(torch.tensor(self.classes, device=images.device))
        image_kd, text_kd = two_way_distillation(gather_batch(model.features(images)), gather_batch(teacher_images), self.text, model.logit_scale.detach(), self.temperature)
        distill = self.weight * (image_kd + text_kd)
        return distill if loss is None else loss + distill

    def after_experience(self, model, experience) -> None:
        self.teacher, self.text = None, None  # the next task takes the model as this one leaves it
