"""The MoE-LoRA method: expert pools beside every MLP, a router per task, a task selector at test time.

- setup: an `ExpertPool` beside the MLP of every block of the chosen towers, one router per task of
  the stream (zero at start), and a `TaskSelector` with one autoencoder per task.
- training on task t: router t and the experts not yet frozen train, with the strategy's
  cross-entropy plus `balance_weight` · Σ over pools of cv²(importance) + cv²(load).
- after task t: in each pool the two experts router t picked most often are frozen (kept
  bit-identical from then on); task t's autoencoder learns the frozen model's features of its data.
- evaluation: each image goes to the task the selector picks, with that task's router in both
  towers, or to the frozen zero-shot path when no task claims it (`ClipModel.set_conditioning`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cl_bench import Method

from .experts import ExpertMLP, ExpertPool, check_pool
from .selector import TaskSelector


class TaskRouting:
    """The model state per input: a task's routers, or -1 for the frozen zero-shot path."""

    def __init__(self, pools: list[ExpertPool], selector: TaskSelector) -> None:
        self.pools = pools
        self.selector = selector
        self.training_task = -1

    def activate(self, state: int) -> None:
        for pool in self.pools:
            pool.task = state

    def assign(self, model, images: Tensor) -> int | Tensor:
        if model.training:
            return self.training_task
        if int(self.selector.trained) == 0:
            return -1
        self.activate(-1)
        with torch.no_grad():
            features = model.encode_image(images)
        return self.selector.assign(features)


class MoELoRA(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        check_pool(hparams["experts"], hparams["rank"], hparams["top_k"], hparams["expert"])
        self.hparams = dict(hparams)
        self.pools: list[ExpertPool] = []
        self.routing: TaskRouting | None = None

    def setup(self, model, stream) -> None:
        hp = self.hparams
        for tower in hp["towers"]:
            for block in model.residual_blocks(tower):
                pool = ExpertPool(
                    block.ln_2.normalized_shape[0],
                    experts=hp["experts"],
                    rank=hp["rank"],
                    tasks=stream.num_tasks,
                    top_k=hp["top_k"],
                    kind=hp["expert"],
                    scale=hp["scale"],
                    dropout=hp["dropout"],
                    noise_epsilon=hp["noise_epsilon"],
                ).to(block.ln_2.weight.device)
                ExpertMLP(block, pool)
                self.pools.append(pool)
        dim = model.clip.visual.output_dim
        selector = TaskSelector(stream.num_tasks, dim, hp["selector_code"]).to(model.logit_scale.device)
        model.add_module("task_selector", selector)
        self.routing = TaskRouting(self.pools, selector)
        model.set_conditioning(self.routing)

    def before_experience(self, model, experience) -> None:
        assert self.routing is not None  # made by setup(), which runs first
        self.routing.training_task = experience.index
        for pool in self.pools:
            pool.selected.zero_()

    def trainable_parameters(self, model):
        task = self.routing.training_task
        return [p for pool in self.pools for p in pool.trainable_parameters(task)]

    def extra_loss(self, model, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        terms = []
        for pool in self.pools:
            if pool.balance is not None:
                terms.append(pool.balance)
                pool.balance = None
        if not terms or self.hparams["balance_weight"] == 0:
            return None
        return self.hparams["balance_weight"] * torch.stack(terms).sum()

    def after_experience(self, model, experience) -> None:
        for pool in self.pools:
            pool.freeze_most_selected(self.hparams["freeze_per_task"])
        assert self.routing is not None  # made by setup(), which runs first
        self.routing.activate(-1)
        device = model.logit_scale.device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            features = torch.cat([model.encode_image(images.to(device)) for images, _ in experience.batches(batch_size=256)])
        model.train(was_training)
        hp = self.hparams
        self.routing.selector.fit(
            experience.index,
            features,
            iters=hp["selector_iters"],
            lr=hp["selector_lr"],
            batch_size=hp["selector_batch_size"],
            quantile=hp["selector_quantile"],
        )
