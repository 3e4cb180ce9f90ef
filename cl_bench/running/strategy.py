"""The one training strategy every method uses: a subclass of Avalanche's `SupervisedTemplate`.

What it changes in the template, and why:
- `make_optimizer`: the template puts every model parameter in its optimizer; here the optimizer
  covers exactly `method.trainable_parameters()` (everything else is frozen), AdamW or the method's
  own, with a fresh warm-up + cosine schedule per experience.
- An iteration budget: Avalanche counts epochs, so the train loader yields exactly `iters` batches.
- Loss: the model's `loss` (cross-entropy over the current task's classes for CLIP, over the
  answer tokens for a language model) plus `method.extra_loss`; none in evaluation, where the
  model's scorer fills the cells. The strategy uses only the model contract (`cl_bench.model`), so any
  backbone kind trains through it.
- `method.before_update(model, params)` after backward and before the optimizer step, only for
  methods that override it (gradient projection: GEM, OGD); other methods step as before.
- Method hooks at Avalanche's experience boundaries; seeding per experience, so a resumed run
  repeats an uninterrupted one exactly.
- Small in-memory streams are served as tensor batches (no per-sample dataset indexing), and
  per-iteration plugin callbacks go only to plugins that implement them: the loop stays within a
  few percent of a plain PyTorch loop (benchmarks/strategy_overhead.py).
- Autocast (bf16 or fp16 with a grad scaler) on CUDA.
- Gradient accumulation where a method has `grad_accum` (the LLM track): each step's batch runs as
  `grad_accum` equal micro-batches, forward and backward one at a time (the memory of one), and
  the step's loss is the mean of their losses, as DeepSpeed and Hugging Face accumulate.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from avalanche.core import BasePlugin, BaseSGDPlugin, SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader, RandomSampler, Subset
from tqdm.auto import tqdm

from cl_bench.blocks.data_parallel import sharded_steps
from cl_bench.contracts.method import Method
from cl_bench.contracts.model import Backbone, TaskContext
from cl_bench.contracts.stream import Stream
from cl_bench.seeding import derive_seed, seed_everything

# Callbacks fired once per mini-batch; dispatched only to plugins that implement them.
_ITERATION_EVENTS = (
    "before_training_iteration",
    "before_forward",
    "after_forward",
    "before_backward",
    "after_backward",
    "before_update",
    "after_update",
    "after_training_iteration",
    "before_eval_iteration",
    "before_eval_forward",
    "after_eval_forward",
    "after_eval_iteration",
)
_NO_OP_BASES = (BasePlugin, BaseSGDPlugin, SupervisedPlugin)


def _implements(plugin: object, event: str) -> bool:
    if isinstance(plugin, EvaluationPlugin):  # answers every event by name; ask its metrics and loggers
        return plugin.active and any(hasattr(x, event) for x in [*plugin.metrics, *plugin.loggers])
    impl = getattr(type(plugin), event, None)
    return impl is not None and all(impl is not getattr(base, event, None) for base in _NO_OP_BASES)


class TensorBatches:
    """Mini-batches gathered from in-memory tensors, in a given order (or sequentially)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, order: torch.Tensor | None = None) -> None:
        self.images, self.targets, self.batch_size, self.order = images, targets, batch_size, order

    def __len__(self) -> int:
        n = len(self.order) if self.order is not None else len(self.targets)
        return math.ceil(n / self.batch_size)

    def __iter__(self):
        if self.order is None:
            for start in range(0, len(self.targets), self.batch_size):
                yield self.images[start : start + self.batch_size], self.targets[start : start + self.batch_size]
        else:
            for start in range(0, len(self.order), self.batch_size):
                index = self.order[start : start + self.batch_size]
                yield self.images[index], self.targets[index]


class ClStrategy(SupervisedTemplate):
    """Avalanche's supervised template, trained through a cl_bench `Method`."""

    def __init__(
        self,
        *,
        model: Backbone,
        method: Method,
        stream: Stream,
        hparams: Mapping[str, Any],
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        plugins: Sequence[BasePlugin] = (),
        progress: bool = True,
        world: Any = None,
        shard_weights: bool = False,
    ) -> None:
        with warnings.catch_warnings():  # an evaluator without loggers is what we want here
            warnings.simplefilter("ignore")
            evaluator = EvaluationPlugin(loggers=[])
            super().__init__(
                model=model,
                optimizer=None,
                train_mb_size=int(hparams["batch_size"]),
                train_epochs=1,
                eval_mb_size=eval_batch_size,
                device=device,
                plugins=list(plugins),
                evaluator=evaluator,
                eval_every=-1,
            )
        self.method = method
        self.stream = stream
        self.hparams = dict(hparams)
        self.grad_accum = int(self.hparams.get("grad_accum", 1))  # micro-batches per step (1: none)
        self.seed = seed
        self.precision = precision
        self.num_workers = num_workers
        self.progress = progress
        self.world = world  # a multi-process run's `distributed.World`: train on this rank's shard of each batch
        self.shard_weights = shard_weights and world is not None  # train each experience on a sharded copy (sharding.py)
        self._sharded: Any = None  # that copy while an experience trains
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and self.device.type == "cuda" else None
        self.trainable: list[torch.nn.Parameter] = []
        self._extra_loss = getattr(type(method), "extra_loss", None) not in (None, Method.extra_loss)
        self._projects = getattr(type(method), "before_update", None) not in (None, Method.before_update)
        self._tensor_cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._listeners: dict[str, list] = {}
        self._bar = None
        self.last_loss: torch.Tensor | None = None  # the loss of the last training step

    # ------------------------------------------------------------------ callbacks off the hot path

    def _refresh_listeners(self) -> None:
        self._listeners = {e: [getattr(p, e) for p in self.plugins if _implements(p, e)] for e in _ITERATION_EVENTS}

    def _fire(self, event: str, **kwargs: Any) -> None:
        for callback in self._listeners[event]:
            callback(self, **kwargs)

    # Avalanche calls `_<event>` on the strategy for every iteration event; each one fires the
    # plugins listening (set on the class below the body, one per event, except this one).

    def _after_training_iteration(self, **kw):
        # Avalanche empties `loss` when an experience ends; keep the last step's (a tensor: no device sync).
        self.last_loss = self.loss.detach().clone()  # a copy: the tensor itself is reset in place
        self._fire("after_training_iteration", **kw)
        if self._bar is not None:
            self._bar.update(1)
            if self._bar.n % 25 == 0 or self._bar.n == self._bar.total:
                self._bar.set_postfix(loss=f"{float(self.loss.detach()):.3f}", refresh=False)

    def _check_distributed_training_compatibility(self):
        """Avalanche's own distributed mode is not used (it would print every plugin as
        unsupported): a multi-process run shards and averages itself (`world`)."""
        return True

    def _before_eval(self, **kw):
        self._refresh_listeners()
        super()._before_eval(**kw)

    # ------------------------------------------------------------------ experience boundaries

    @property
    def task(self) -> int:
        return int(self.experience.current_experience)

    def _before_training_exp(self, **kwargs):
        seed_everything(derive_seed(self.seed, "experience", self.task))
        info = self.stream.experience(self.task)
        self.method.before_experience(self.model, info)
        self.model.set_task_context(TaskContext("train", self.task, info.name, tuple(info.classes)))
        super()._before_training_exp(**kwargs)  # dataset, loader, model adaptation, optimizer, plugins
        self._refresh_listeners()
        if self.progress and self.optimizer is not None:
            self._bar = tqdm(
                total=len(self.dataloader),
                desc=f"task {self.task + 1}/{self.stream.num_tasks} {info.name}",
                unit="it",
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 15.0,  # keep logs short when not on a terminal
            )

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        if self.optimizer is None:  # nothing to optimise: a closed-form fit, or nothing (zero-shot)
            self.model.eval()
            with torch.no_grad():
                self.method.fit(self.model, self.stream.experience(self.task))
            self.model.train()
            return
        with sharded_steps(self.world is not None):  # what cl_bench.gather_batch and batch_share see
            super()._train_exp(experience, eval_streams, **kwargs)

    def _after_training_exp(self, **kwargs):
        if self._sharded is not None:  # the run's model takes the trained whole weights back
            from cl_bench.running.sharding import gather

            self.model, self.trainable, self.optimizer, self.scheduler = gather(self._sharded), self._sharded.trainable, None, None
            self._sharded = None
            gc.collect()  # FSDP's state and the copy's modules refer to each other: free the shards, their gradients and moments now
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.method.after_experience(self.model, self.stream.experience(self.task))
        super()._after_training_exp(**kwargs)

    def check_model_and_optimizer(self, **kwargs):
        self.model = self.model_adaptation()
        self.make_optimizer()

    def make_optimizer(self, **kwargs):
        """Optimise exactly the method's trainable parameters; freeze everything else."""
        params = list({id(p): p for p in self.method.trainable_parameters(self.model)}.values())
        for param in self.model.parameters():
            param.requires_grad_(False)
        for param in params:
            param.requires_grad_(True)
        self.model.trainable_changed(params)
        self.trainable = params
        if not params:
            self.optimizer, self.scheduler = None, None
            return
        if self.shard_weights:
            from cl_bench.running.sharding import shard

            self._sharded = shard(self.model, params, self.device)
            self.model, params = self._sharded.model, self._sharded.params
            self.trainable = params
        hp = self.hparams
        optimizer = self.method.make_optimizer(params, hp)
        if optimizer is None:
            optimizer = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        warmup, total = int(hp.get("warmup_iters", 0)), max(1, int(hp["iters"]))
        constant = hp.get("schedule", "cosine") == "constant"  # TRACE's language-model runs

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if constant:
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(1, total - warmup)))

        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ------------------------------------------------------------------ data

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The current experience's data as two tensors on the device (preloaded streams only)."""
        if not self.stream.preload:
            return None
        key = (self.experience.origin_stream.name, self.task)
        if key not in self._tensor_cache:
            loader = DataLoader(self.adapted_dataset, batch_size=1024, shuffle=False)
            images, targets = zip(*((b[0], b[1]) for b in loader))
            self._tensor_cache[key] = (torch.cat(images).to(self.device), torch.cat(targets).long().to(self.device))
        return self._tensor_cache[key]

    def make_train_dataloader(self, **kwargs):
        """Exactly `iters` shuffled batches (reshuffled each pass over the data), seeded per experience."""
        size = int(self.hparams["iters"]) * self.train_mb_size
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "loader", self.task))
        sampler = RandomSampler(self.adapted_dataset, num_samples=size, generator=generator)
        tensors = self._tensors()
        if tensors is not None:
            order = torch.tensor(list(sampler), dtype=torch.long, device=self.device)
            self.dataloader = TensorBatches(*tensors, batch_size=self.train_mb_size, order=order)
        else:
            self.dataloader = DataLoader(
                self.adapted_dataset,
                batch_size=self.train_mb_size,
                sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.num_workers > 0,
            )

    def make_eval_dataloader(self, **kwargs):
        self.dataloader = self.eval_batches(None)

    def eval_batches(self, share: range | None):
        """The current evaluation experience's batches of `eval_mb_size` examples, in order: all
        of them (None), or the batches whose indices are in `share` (a multi-process run's share
        of the cell), each holding exactly the examples it holds among all."""
        tensors = self._tensors()
        examples = None if share is None else range(share.start * self.eval_mb_size, share.stop * self.eval_mb_size)
        if tensors is not None:
            if examples is not None:
                tensors = (tensors[0][examples.start : examples.stop], tensors[1][examples.start : examples.stop])
            return TensorBatches(*tensors, batch_size=self.eval_mb_size)
        dataset = self.adapted_dataset
        if examples is not None:
            dataset = Subset(dataset, range(examples.start, min(examples.stop, len(dataset))))
        return DataLoader(dataset, batch_size=self.eval_mb_size, num_workers=self.num_workers, pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ one iteration

    def _unpack_minibatch(self):
        super()._unpack_minibatch()
        if self.world is not None and self.is_training:
            self.mbatch = [self.world.shard(part) for part in self.mbatch]

    def _autocast(self):
        if self.precision in ("bf16", "fp16") and (self.device.type == "cuda" or self.precision == "bf16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @property
    def accumulating(self) -> bool:
        return self.is_training and self.grad_accum > 1

    def forward(self):
        if self.accumulating:  # the micro-batches run forward and backward in criterion()
            return None
        with self._autocast():
            return self.model(self.mb_x)

    def criterion(self):
        if not self.is_training:  # cells are scored by the model's scorer; a generating model has no eval loss
            return torch.zeros((), device=self.device)
        if self.accumulating:
            return self._accumulate()
        return self._training_loss(self.mb_x, self.mb_y, self.mb_output)

    def _training_loss(self, inputs, targets, outputs):
        loss = self.model.loss(outputs, targets)
        if self._extra_loss:
            with self._autocast():
                extra = self.method.extra_loss(self.model, (inputs, targets), outputs)
            if extra is not None:
                loss = loss + extra.float()
        return loss

    def _accumulate(self):
        """Forward and backward of each micro-batch in turn; the gradients add up to those of the
        mean micro-batch loss, which is returned (detached: backward() has nothing left to do)."""
        parts = self.grad_accum
        total = torch.zeros((), device=self.device)
        for inputs, targets in zip(self.mb_x.chunk(parts), self.mb_y.chunk(parts)):
            with self._autocast():
                outputs = self.model(inputs)
            loss = self._training_loss(inputs, targets, outputs) / parts
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
        return total

    def backward(self):
        if not self.accumulating:
            (self.scaler.scale(self.loss) if self.scaler is not None else self.loss).backward()
        if self.world is not None:  # the global batch's gradients and loss, on every rank
            self.loss = self.world.average_gradients(self.trainable, self.loss)

    def optimizer_step(self):
        if self._projects:  # gradient projection (GEM, OGD): on the true, unscaled gradients
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            self.method.before_update(self.model, self.trainable)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()



class LossRecorder(SupervisedPlugin):
    """Keeps each training iteration's loss for the run's `experience_end` event (tensors until the
    task ends: one device sync a task, not one an iteration)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[torch.Tensor] = []

    def after_training_iteration(self, strategy, *args, **kwargs) -> None:
        self.losses.append(strategy.last_loss)

    def take(self) -> list[float]:
        """The losses recorded since the last call, as floats."""
        taken = torch.stack([loss.reshape(()) for loss in self.losses]).float().tolist() if self.losses else []
        self.losses = []
        return taken

def _firing(event: str):
    def fire(self: ClStrategy, **kwargs: Any) -> None:
        self._fire(event, **kwargs)

    fire.__name__ = f"_{event}"
    return fire


for _event in _ITERATION_EVENTS:
    if _event != "after_training_iteration":  # defined in the class: it also moves the progress bar
        setattr(ClStrategy, f"_{_event}", _firing(_event))
