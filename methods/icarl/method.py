"""iCaRL on CLIP, as ZSCL's code runs it (Thunderbeee/ZSCL @ b96e714, `mtil/src/models/icarl.py`,
`mtil/src/dynamic_dataset.py`), on top of `finetune`.

Per task t (0-based here), with f the student's and f₀ the zero-shot teacher's normalised image
features, U the teacher's normalised text features of the current task's classes (the label
space the strategy's cross-entropy uses) and s = 100 the frozen logit scale:

```text
before task t   draws ← a generator seeded from the experience's seed (see `_derived_seed`)
each step       L = CE_ls(batch) + image_kd · KD(Z, Z₀) + text_kd · KD(Zᵀ, Z₀ᵀ)
                x  = batch_size exemplars drawn uniformly with replacement from the memory
                Z  = s · f(x) Uᵀ,  Z₀ = s · f₀(x) Uᵀ (no gradient)
                KD = cl_bench.distillation_loss (soft-target cross-entropy × T², T = 2)
after task t    memory.add(task t's training images, features f(x) of the model as trained)
                group_by=task: one group per task, herded over the whole task (ZSCL);
                group_by=class: one group per class (iCaRL); quotas budget // groups, earlier
                groups cut to their first (highest-priority) quota examples
                classifier=nme: class means of f over each class's exemplars -> the model's head
```

With an empty memory (task 0, or `memory=0`) the distillation term is None, so every float the
strategy computes is `finetune`'s (tested bit for bit on the accuracy matrix).

Departures from ZSCL's code (docs/methods.md, section iCaRL, has the full list):
- bugs not reproduced: the new data set gets K // t exemplars like every other (ZSCL gives it
  K − K // t, so the memory grows past K from the third task on: 3,333 + 3,333 + 6,667 at t = 3);
  the herded images are those herding chose (ZSCL deletes each chosen row from the feature array
  with `np.delete` but takes the image at that index from the undeleted array, so after the first
  pick it stores other images than it chose); task 0 is herded too (ZSCL keeps its first 10,000
  images in file order);
- exemplars are drawn at random per step from a seeded generator (ZSCL cycles through the memory
  in 64-image slices in its stored order); the pool herded from is a seeded random subset of
  `herding_pool` images when a task has more (ZSCL reads the first 30,000 in file order);
- text features are the template ensemble every cl_bench CLIP method uses (ZSCL's training uses
  the data set's first template only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cl_bench import EpisodicMemory, Teacher, distillation_loss
from cl_bench.methods.finetune import FineTune

GROUPS = ("task", "class")
CLASSIFIERS = ("text", "nme")
FEATURE_BATCH = 256  # images per forward pass when the memory is filled or the means computed


def _derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one use within an experience (stable across processes)."""
    text = ":".join(str(p) for p in (seed, "icarl", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


class NearestMeanHead:
    """iCaRL's nearest-mean-of-exemplars classifier as a `ClipModel` head.

    `classes` (global ids) and `means` (one row each: the normalised mean of the normalised
    features of that class's exemplars). For the label space's classes that have a mean the score
    is s · cos(f(x), mean), so the argmax is the nearest mean by cosine; the classes without one
    (classes no task has trained yet, a control set's) keep their text-head scores, on the same
    scale. A label space without any class that has a mean is scored by the text head alone.
    """

    def __init__(self, classes: Tensor, means: Tensor) -> None:
        if classes.ndim != 1 or means.ndim != 2 or len(classes) != len(means):
            raise ValueError(f"one mean per class: {tuple(classes.shape)} classes, {tuple(means.shape)} means")
        self.classes, self.means = classes.long(), means
        self._slots: Tensor | None = None  # class id -> row of `means` (-1: none), on the features' device

    def _slot_table(self, size: int, device: torch.device) -> Tensor:
        if self._slots is None or len(self._slots) < size or self._slots.device != device:
            table = torch.full((max(size, int(self.classes.max()) + 1 if len(self.classes) else 0),), -1, dtype=torch.long)
            table[self.classes] = torch.arange(len(self.classes))
            self._slots = table.to(device)
            self.means = self.means.to(device)
        return self._slots

    def scores(self, model: Any, image_features: Tensor, text_scores: Tensor) -> Tensor:
        space = model.label_space
        slots = self._slot_table(int(model.num_classes), image_features.device)[space]
        known = slots >= 0
        if not bool(known.any()):
            return text_scores
        cosine = image_features @ self.means[slots.clamp(min=0)].t().to(image_features.dtype)
        nearest = (model.logit_scale * cosine).to(text_scores.dtype)
        return torch.where(known.unsqueeze(0), nearest, text_scores)


def class_means(features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The classes present in `targets` (sorted) and, per class, the normalised mean of its rows
    of `features` (each row normalised first, as iCaRL's NME does)."""
    x = torch.nn.functional.normalize(features.double(), dim=1)
    classes = targets.unique(sorted=True)
    means = torch.stack([x[targets == c].mean(dim=0) for c in classes.tolist()])
    return classes, torch.nn.functional.normalize(means, dim=1).float()


class ICaRL(FineTune):
    """`finetune` plus a herded exemplar memory, zero-shot distillation on it, and an NME option."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        memory = hparams["memory"]
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise ValueError(f"method.memory must be an integer >= 0 (examples kept in all), not {memory!r}")
        if hparams["group_by"] not in GROUPS:
            raise ValueError(f"method.group_by must be one of {', '.join(GROUPS)}, not {hparams['group_by']!r}")
        if hparams["classifier"] not in CLASSIFIERS:
            raise ValueError(f"method.classifier must be one of {', '.join(CLASSIFIERS)}, not {hparams['classifier']!r}")
        if not hparams["temperature"] > 0:
            raise ValueError(f"method.temperature must be positive, not {hparams['temperature']}")
        for key in ("image_kd", "text_kd"):
            if not hparams[key] >= 0:
                raise ValueError(f"method.{key} must be >= 0, not {hparams[key]}")
        if hparams["herding_pool"] < 0:
            raise ValueError(f"method.herding_pool must be >= 0 (0: every training image), not {hparams['herding_pool']}")
        self.memory = EpisodicMemory(memory, rule="herding", group_by=hparams["group_by"])
        self.classifier = hparams["classifier"]
        self.temperature = float(hparams["temperature"])
        self.image_kd, self.text_kd = float(hparams["image_kd"]), float(hparams["text_kd"])
        self.herding_pool = int(hparams["herding_pool"])
        self.memory_batch = int(hparams["batch_size"])  # ZSCL: the training batch size (64)
        self.teacher: Teacher | None = None
        self._seed = 0
        self._draws: torch.Generator | None = None  # draws of exemplars, one generator per experience
        self._exemplars: Tensor | None = None  # the memory's inputs while a task trains (None: empty)
        self._texts: Tensor | None = None  # the teacher's text features of the current classes

    # ------------------------------------------------------------------ hooks

    def setup(self, model, stream) -> None:
        if stream.protocol == "domain-il" and self.memory.group_by == "class" and self.memory.budget > 0:
            raise ValueError("group_by=class on a domain-il stream would keep only the latest domain's exemplars of each class (every task has the same classes); use group_by=task")
        # The zero-shot teacher (ZSCL's iCaRL distils from zero-shot CLIP, never from the previous
        # model); taken here, before any training, so a resumed run takes the same one again.
        self.teacher = Teacher(model) if self.memory.budget > 0 else None

    def before_experience(self, model, experience) -> None:
        model.set_head(None)  # training scores through the text head; the NME head is for evaluation
        # The strategy has just seeded torch with derive_seed(run seed, "experience", task): its
        # initial seed is that experience seed, read here without drawing from the global generator.
        self._seed = torch.initial_seed()
        self._draws = torch.Generator().manual_seed(_derived_seed(self._seed, "draws"))
        inputs, _, _ = self.memory.tensors()
        self._exemplars = inputs if len(inputs) and (self.image_kd or self.text_kd) else None
        self._texts = None

    def extra_loss(self, model, batch, outputs):
        smoothing = super().extra_loss(model, batch, outputs)
        kd = self.distillation(model)
        if kd is None:
            return smoothing
        return kd if smoothing is None else smoothing + kd

    def distillation(self, model) -> Tensor | None:
        """The KD term on one draw of exemplars, or None when the memory is empty."""
        if self._exemplars is None or self.teacher is None or self._draws is None:
            return None
        device = model.label_space.device
        index = torch.randint(len(self._exemplars), (self.memory_batch,), generator=self._draws)
        if self._exemplars.device != device:
            self._exemplars = self._exemplars.to(device)
        x = self._exemplars[index.to(device)]
        with torch.no_grad():
            teacher_features = self.teacher.features(x)
            if self._texts is None:  # the teacher's text features of this task's classes (fixed: it is frozen)
                self._texts = self.teacher.module.class_text_features(model.label_space).detach()
        texts = self._texts
        scale = model.logit_scale
        student = scale * model.features(x) @ texts.t().to(teacher_features.dtype)
        teacher = scale * teacher_features @ texts.t().to(teacher_features.dtype)
        loss: Tensor | None = None
        if self.image_kd:
            loss = self.image_kd * distillation_loss(student, teacher, self.temperature)
        if self.text_kd:
            term = self.text_kd * distillation_loss(student.t(), teacher.t(), self.temperature)
            loss = term if loss is None else loss + term
        return loss

    def after_experience(self, model, experience) -> None:
        super().after_experience(model, experience)
        self._exemplars, self._texts = None, None
        if self.memory.budget == 0:
            return
        device = model.label_space.device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                inputs, targets, features = self._pool(model, experience, device)
                self.memory.add(inputs, targets, experience.index, features=features)
                if self.classifier == "nme":
                    model.set_head(self.nearest_mean_head(model, device))
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ the memory

    def _pool(self, model, experience, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The task's training images to herd from (at most `herding_pool`, a seeded random
        subset beyond), their targets, and their features under the model as trained."""
        size = len(experience.dataset)
        batches = experience.batches(FEATURE_BATCH)
        if self.herding_pool and size > self.herding_pool:  # read only the pool's images
            from torch.utils.data import DataLoader, Subset

            generator = torch.Generator().manual_seed(_derived_seed(self._seed, "pool"))
            rows = torch.randperm(size, generator=generator)[: self.herding_pool].sort().values
            batches = ((batch[0], batch[1]) for batch in DataLoader(Subset(experience.dataset, rows.tolist()), batch_size=FEATURE_BATCH))
        inputs, targets, features = [], [], []
        for images, labels in batches:
            features.append(model.features(images.to(device)).float().cpu())
            inputs.append(images.cpu())
            targets.append(labels.long().cpu())
        return torch.cat(inputs), torch.cat(targets), torch.cat(features)

    def nearest_mean_head(self, model, device: torch.device) -> NearestMeanHead | None:
        """Class means of the exemplars' features under the current model (None: no exemplars)."""
        inputs, targets, _ = self.memory.tensors()
        if len(targets) == 0:
            return None
        features = torch.cat([model.features(inputs[i : i + FEATURE_BATCH].to(device)).float().cpu() for i in range(0, len(inputs), FEATURE_BATCH)])
        return NearestMeanHead(*class_means(features, targets))

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
