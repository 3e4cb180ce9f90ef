"""RAIL as a cl_bench method: the closed-form `fit` per task and the fusion head.

After each task, `fit` computes the frozen model's normalised image features of the task's
training data (batches of `batch_size`, the stream's own order) and updates the regression
(regression.py). The fusion head (`FusionHead`, installed with `model.set_head` in `setup`)
then scores every test batch over the model's current label space L (one column per class of L,
in L's order). With z the text head's logits over L (CLIP's logit scale times cosine; 100 for
OpenAI's ViT-B/16, the official code's fixed 100):

    ĉ = argmax z                          the zero-shot prediction
    ĉ in a learned class (a class of a task fitted so far):
        out = β · s + (1 − β) · softmax(z)   s: the regression's scores of L's learned classes, 0 for the others
    otherwise:
        out = z                             the zero-shot logits, untouched

β = `fusion_weight`. The official code's rule is the same with L = every class of every task
(X-TAIL): its "seen" test is ĉ < the number of classes trained so far, classes being numbered in
task order. Here L is whatever the protocol scores:

- x-tail: every class of every task, as the official code.
- mtil: the test task's classes. Once that task is learned, every ĉ is a learned class, so every
  image is fused (the regression restricted to that task's columns); before, pure zero-shot. The
  official code has no MTIL evaluation (it always scores over all classes).
- class-il: the classes of the tasks seen so far (rows after task t testing tasks ≤ t: all learned,
  every image fused); the zero-shot part decides only for the columns not learned yet.
- domain-il: one label space that the first task already learns: every image fused from then on.
- control sets (never trained on): never learned, so exactly zero-shot.

Output scale: a fused row holds RAIL's own fused values (a mix of probabilities and raw regression
scores, roughly in [0, 1], float32), an unfused row the text head's logits, so each row's argmax is
RAIL's prediction (softmax keeps the argmax of z) and unfused rows are bit for bit what
`zeroshot` scores. Only the argmax is meaningful across both kinds of rows (the accuracy matrix
uses nothing else; nothing trains on these outputs). With `fusion_weight` = 0 the head is not
installed at all: the runs then equal `zeroshot`'s bit for bit (tested), while the regression is
still fitted.

Departures from the official code, besides those in regression.py: the projection's seed is drawn
from the global generator when the first task starts, which the shared strategy seeds from the run
seed (`derive_seed(seed, "experience", 0)`), so P depends on the run seed alone (officially it is
whatever torch seed 42 gives after building CLIP); the features are those of the stream's training
images as the stream serves them (the built-in streams resize and centre-crop; the official code
takes one random-resized crop, scale 0.9-1, per image); batches come in the stream's order (the
official loader shuffles, which changes only rounding); the dual form's λ is a parameter
(officially hard-coded 0.001) and its kernel is computed in float64 (officially float32).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from cl_bench import Method, UserError

from .regression import KernelRidge, PrimalRidge, random_projection


class FusionHead:
    """The classifier `ClipModel` calls for every batch (see the module docstring)."""

    def __init__(self, method: RAIL) -> None:
        self.method = method

    def scores(self, model: Any, image_features: Tensor, text_scores: Tensor) -> Tensor:
        method = self.method
        if not method.classes:
            return text_scores
        learned = method.columns_of(model.label_space)  # column of each label-space class, −1 if not learned
        fused_rows = (learned[text_scores.argmax(dim=1)] >= 0).nonzero().squeeze(1)
        if fused_rows.numel() == 0:
            return text_scores
        zero_shot = torch.softmax(text_scores[fused_rows].double(), dim=1)
        regression = method.regression_scores(image_features[fused_rows])  # (rows, classes learned)
        known = learned >= 0
        padded = torch.where(known, regression[:, learned.clamp_min(0)], regression.new_zeros(()))
        beta = method.fusion_weight
        out = text_scores.float().clone()
        out[fused_rows] = (beta * padded + (1.0 - beta) * zero_shot).float()
        return out


class RAIL(Method):
    """RAIL's closed-form learner, in its primal (`form="primal"`) or dual (`form="dual"`) form."""

    def __init__(self, hparams: Mapping[str, Any], form: str) -> None:
        self.form = form
        self.fusion_weight = float(hparams["fusion_weight"])
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], not {self.fusion_weight}")
        self.regularization = float(hparams["regularization"])
        if not self.regularization > 0.0:
            raise ValueError(f"regularization must be positive, not {self.regularization}")
        self.batch_size = int(hparams["batch_size"])
        self.expansion = 0
        self.kernel_gamma = 0.0
        if form == "primal":
            self.expansion = int(hparams["expansion"])
            if self.expansion < 0:
                raise ValueError(f"expansion must be 0 (no expansion) or a width, not {self.expansion}")
        else:
            self.kernel_gamma = float(hparams["kernel_gamma"])
            if not self.kernel_gamma > 0.0:
                raise ValueError(f"kernel_gamma must be positive, not {self.kernel_gamma}")
        self.classes: list[int] = []  # learned classes, in the order their columns were added
        self.projection_seed: int | None = None
        self.primal: PrimalRidge | None = None
        self.dual: KernelRidge | None = None
        self._column_of: Tensor | None = None  # global class id -> column, −1 if not learned
        self._feature_dim: int | None = None

    # ------------------------------------------------------------------ hooks

    def setup(self, model, stream) -> None:
        if self.fusion_weight > 0.0:
            model.set_head(FusionHead(self))

    def before_experience(self, model, experience) -> None:
        if self.form == "primal" and self.expansion and self.projection_seed is None:
            # The strategy seeded the global generator from the run seed for this task.
            self.projection_seed = int(torch.randint(0, 2**31 - 1, (1,)))

    def fit(self, model, experience) -> None:
        for cls in experience.classes:
            if cls not in self.classes:
                self.classes.append(cls)
        self._column_of = None
        device = next(model.parameters()).device
        lookup = self._lookup(device)

        def batches() -> Iterator[tuple[Tensor, Tensor]]:
            for images, targets in experience.batches(self.batch_size):
                features = model.features(images.to(device)).float()
                self._feature_dim = features.shape[1]
                yield features, lookup[targets.to(device).long()]

        stream = batches()
        first = next(stream, None)  # the feature width, before the projection is drawn
        if first is None:
            raise UserError(f"rail-{self.form}: task {experience.name!r} has no training images")
        try:
            self._solver().fit(itertools.chain([first], stream), len(self.classes))
        except torch.linalg.LinAlgError:
            raise UserError(f"rail-{self.form}: the regularised system is not positive definite in float64; raise method.regularization (now {self.regularization})") from None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"form": self.form, "classes": list(self.classes), "feature_dim": self._feature_dim}
        if self.form == "primal":
            state["projection_seed"] = self.projection_seed
            solver = self.primal
            state["R"] = None if solver is None or solver.R is None else solver.R.cpu()
            state["W"] = None if solver is None or solver.W is None else solver.W.cpu()
        else:
            dual = self.dual
            for name in ("memory", "columns", "alpha"):
                value = None if dual is None else getattr(dual, name)
                state[name] = None if value is None else value.cpu()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("form") != self.form:
            raise ValueError(f"the checkpoint holds rail-{state.get('form')} state, not rail-{self.form}")
        self.classes = list(state["classes"])
        self._feature_dim = state["feature_dim"]
        self._column_of = None
        self.primal = self.dual = None
        if self.form == "primal":
            self.projection_seed = state["projection_seed"]
            if state["W"] is not None:
                solver = self._solver()
                assert isinstance(solver, PrimalRidge)
                solver.R, solver.W = state["R"], state["W"]
        elif state["alpha"] is not None:
            dual = self._solver()
            assert isinstance(dual, KernelRidge)
            dual.memory, dual.columns, dual.alpha = state["memory"], state["columns"], state["alpha"]

    # ------------------------------------------------------------------ parts

    def _solver(self) -> PrimalRidge | KernelRidge:
        if self.form == "dual":
            if self.dual is None:
                self.dual = KernelRidge(self.regularization, self.kernel_gamma)
            return self.dual
        if self.primal is None:
            projection = None
            if self.expansion:
                if self.projection_seed is None:  # fit called without before_experience (by hand)
                    self.projection_seed = int(torch.randint(0, 2**31 - 1, (1,)))
                assert self._feature_dim is not None
                projection = random_projection(self.projection_seed, self.expansion, self._feature_dim)
            self.primal = PrimalRidge(self.regularization, projection)
        return self.primal

    def _lookup(self, device: torch.device) -> Tensor:
        """Global class id -> column (−1: not learned), on `device`."""
        if self._column_of is None or self._column_of.device != device:
            size = max(self.classes) + 1 if self.classes else 0
            lookup = torch.full((size,), -1, dtype=torch.long)
            lookup[torch.tensor(self.classes, dtype=torch.long)] = torch.arange(len(self.classes))
            self._column_of = lookup.to(device)
        return self._column_of

    def columns_of(self, class_ids: Tensor) -> Tensor:
        """The regression column of each class in `class_ids` (−1 for a class not learned yet)."""
        lookup = self._lookup(class_ids.device)
        inside = class_ids < len(lookup)
        return torch.where(inside, lookup[class_ids.clamp_max(len(lookup) - 1)], torch.full_like(class_ids, -1))

    def regression_scores(self, features: Tensor) -> Tensor:
        """The regression's outputs over the learned classes (rows × len(classes)), float64."""
        return self._solver().scores(features.float())


class RAILPrimal(RAIL):
    """`rail-primal`'s factory."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__(hparams, "primal")


class RAILDual(RAIL):
    """`rail-dual`'s factory."""

    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__(hparams, "dual")
