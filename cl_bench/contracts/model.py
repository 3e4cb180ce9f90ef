"""The model contract: what the shared strategy, the evaluation and the methods need of a backbone.

A backbone plugin (see `backbones/`) returns a model that subclasses `Backbone`. The strategy and
the accuracy matrix call nothing else on it, so a new kind of model (a causal language model,
say) plugs in without touching them:

- `adaptable_layers(towers, layers)`: the Linear layers a method may wrap (LoRA, MoRAM, ...), each as an
  `AdaptableLayer` that knows where it sits and how to swap it;
- `prepare(stream)`: learn the stream's outputs once (CLIP: tokenise every class's prompts);
- `set_task_context(context)`: which task the next batches come from and which outputs they are
  scored over (CLIP: the label space of a training task or of one accuracy-matrix cell);
- `trainable_changed(params)`: the parameters the coming experience trains (a model may cache
  what they cannot change);
- `forward(inputs)` and `loss(outputs, targets)`: one training step's loss for a batch;
- `scorer(context)`: a `CellScorer` that turns one test set's batches into one accuracy-matrix
  cell, a score in [0, 100], and keeps each example's outcome (right or wrong; a text score) for
  the result file (docs/results.md, Per-example outcomes).

Two more a classifier backbone offers to methods (from inside any hook; the built-in CLIP has both):

- `scores(inputs, classes)`: logits over any label space (the classes seen so far, all classes),
  one column per class id in the order given, whatever the current task context;
- `features(inputs)`: the embedding its scores are computed from (CLIP: normalised image
  features), for methods that classify, select or distil in feature space.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AdaptableLayer:
    """One adaptable Linear: where it sits and how to swap it."""

    name: str  # qualified name inside the model, e.g. clip.visual.transformer.resblocks.0.attn.q_proj
    tower: str  # the part of the model it belongs to: image | text (CLIP), decoder (a language model)
    block: int  # the transformer block, input side first
    kind: str  # what the Linear does: q | k | v | out | fc | proj
    parent: nn.Module
    attr: str

    @property
    def module(self) -> nn.Module:
        return getattr(self.parent, self.attr)

    def replace(self, new: nn.Module) -> None:
        setattr(self.parent, self.attr, new)


class LinearAdapter(nn.Module):
    """Base for a module that replaces an adaptable Linear and keeps it, unchanged, as `self.base`.

    It exposes the base's `weight` and `bias`, since model code reads `.weight.dtype` of some layers.
    """

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def grow_on_load(self, *names: str) -> None:
        """Let a fresh adapter load a state in which the parameters `names` have other shapes (a
        memory grown over tasks, from a checkpoint): before loading, each one whose incoming shape
        differs is replaced by an empty parameter of that shape, keeping its `requires_grad`."""

        def resize(module, state, prefix, *args) -> None:
            for name in names:
                incoming, current = state.get(prefix + name), getattr(module, name)
                if incoming is not None and incoming.shape != current.shape:
                    setattr(module, name, nn.Parameter(current.new_empty(incoming.shape), requires_grad=current.requires_grad))

        self._register_load_state_dict_pre_hook(resize, with_module=True)


@dataclass(frozen=True)
class TaskContext:
    """Where the next batches come from: a task (or control set) and the outputs scored over.

    `split` is "train", "test" or "control"; `task` indexes the tasks (or the control sets);
    `label_space` holds the global class ids the batch competes over (the protocol decides it).
    `seed` (evaluation only) is the cell's own seed, derived from the run's seed, the matrix row
    and the cell, for a model whose outputs are drawn at random (sampled decoding): the same in
    an uninterrupted and a resumed run, whatever was evaluated before. `first_batch` (evaluation
    only) is the place in the cell of the first batch that follows: 0, or in a multi-process run
    that shares the cell's batches out, where this process's share starts; a model that draws per
    batch counts its batches from it, so each batch draws what it draws in one process.
    """

    split: str
    task: int
    name: str
    label_space: tuple[int, ...] = field(default=())
    seed: int | None = None
    first_batch: int = 0


class CellScorer:
    """Accumulates one test set's batches into one accuracy-matrix cell (a score in [0, 100]).

    The default counts top-1 predictions that equal the target with Avalanche's `Accuracy` metric
    (the cell is its running mean over the batches), and keeps which examples were right.

    `outcomes()` gives the cell's per-example outcomes in the order the examples were fed, which
    the result file stores and the intervals resample (docs/results.md): booleans (right or
    wrong) for a cell that is the share of right examples (Avalanche's running mean over the
    evaluation batches), or floats in [0, 1] for a cell that is 100 x their mean
    (`mean_score`: the text scorers). A scorer that keeps none
    returns None (the default for a subclass that does not call `super().__init__()`); its
    cells are stored without outcomes and count seeds only in the intervals.
    """

    def __init__(self) -> None:
        from avalanche.evaluation.metrics import Accuracy

        self._accuracy = Accuracy()
        self._correct: list[Tensor] = []

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        self._accuracy.update(outputs, targets)
        # The predictions and targets exactly as Avalanche's Accuracy reads them (labels, or the
        # argmax of logits and one-hot rows), so the kept outcomes count what it counted.
        predicted, true = torch.as_tensor(outputs), torch.as_tensor(targets)
        if predicted.dim() > 1:
            predicted = torch.max(predicted, 1)[1]
        if true.dim() > 1:
            true = torch.max(true, 1)[1]
        self._correct.append(torch.eq(predicted, true).detach().reshape(-1).cpu())

    def result(self) -> float:
        return 100.0 * float(self._accuracy.result())

    @staticmethod
    def mean_score(scores: Sequence[float]) -> float:
        """The cell of per-example scores in [0, 1]: 100 x their left-to-right sum / count, the
        arithmetic a result file's outcomes are checked with (use it in `result()`)."""
        from cl_bench.cells import mean_score

        return mean_score(scores)

    def outcomes(self) -> Sequence[bool] | Sequence[float] | None:
        """Per-example outcomes in the order fed (see the class), or None when none were kept."""
        correct = getattr(self, "_correct", None)
        if correct is None:
            return None
        return torch.cat(correct).tolist() if correct else []


class Backbone(nn.Module):
    """Base class of every backbone model; the defaults suit a classifier over global class ids."""

    kind = "model"  # the backbone kind methods declare support for (`Supports.backbone_kinds`)
    # A multi-process run shares each cell's evaluation batches out to its processes: true when a
    # batch's outputs depend only on the batch, the model's state and the cell's context (a model
    # that draws at random counts batches from `TaskContext.first_batch`); false: one process
    # evaluates (docs/multi-process.md, Sharded evaluation).
    shards_evaluation = True
    backbone_name = ""
    weights_sha256: str | None = None
    image_size: int | None = None  # what a stream resizes images to; None for models without images

    def adaptable_layers(self, towers: Sequence[str] = (), layers: Sequence[str] = ()) -> list[AdaptableLayer]:
        """The Linear layers a method may wrap: those of the `towers` (image, text; decoder) whose
        kind is among `layers` (q, k, v, out, fc, proj, ...). A backbone gives each argument its own
        default (every tower, its usual kinds); methods pass their `towers` and `layers`
        hyper-parameters. An unknown tower or kind is a `UserError` naming the choices."""
        raise NotImplementedError(f"{type(self).__name__} has no adaptable layers")

    def prepare(self, stream) -> None:
        """Learn what the stream's outputs are, once, before any method is set up."""

    def set_task_context(self, context: TaskContext) -> None:
        """The next batches come from `context`; score them over its label space."""

    def trainable_changed(self, params: Iterable[nn.Parameter]) -> None:
        """The coming experience trains exactly `params` (the rest is frozen)."""

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training loss of one batch (methods may add `Method.extra_loss`)."""
        return F.cross_entropy(outputs.float(), targets)

    def scorer(self, context: TaskContext) -> CellScorer:
        """A fresh scorer for the accuracy-matrix cell of `context`."""
        return CellScorer()

    def scores(self, inputs: Tensor, classes: Sequence[int]) -> Tensor:
        """Logits of `inputs` over the label space `classes` (global ids): shape (len(inputs),
        len(classes)), column j for `classes[j]`. The current task context is left as it was."""
        raise NotImplementedError(f"{type(self).__name__} has no label-space scores")

    def features(self, inputs: Tensor) -> Tensor:
        """The embedding of `inputs` the model's scores are computed from, one row per input."""
        raise NotImplementedError(f"{type(self).__name__} exposes no features")

    def shard_units(self) -> list[nn.Module]:
        """The modules sharded one by one under `shard_weights` (the transformer blocks; the rest
        goes with the root). Only a backbone whose spec says `shardable` is asked."""
        raise NotImplementedError(f"{type(self).__name__} cannot be sharded")
