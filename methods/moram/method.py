"""The MoRAM / MoRA method: rank-1 memories on every adapted Linear, grown per task.

Training follows the official CLIP code (Artificer-AI-Lab/MoRAM, XTAIL/models/moram.py):
- before each task every memory layer appends `rank` atoms and freezes the older ones; only the new
  atoms train;
- the loss is the image-to-text cross-entropy over the current classes (the strategy's loss) plus a
  text-to-image cross-entropy: for each class, a softmax over the batch of its similarity to every
  image, scored at the images of that class. The official code averages this term over the prompts
  of every class seen so far (previous tasks' rows have no positives and add zero), so the term is
  divided by that count here too;
- AdamW with betas (0.9, 0.9999), no weight decay, cosine schedule without warm-up (the strategy's).
`balance_weight` > 0 adds the load-balancing term of the repository's earlier forward,
n·Σ_i P_i² (P_i the mean weight of atom i over the batch), averaged over layers.

On a language model (the official TRACE code, TRACE/model/Regular/MoRAM.py and training/main.py)
the loss is the answer-token cross-entropy alone, Adam betas are (0.9, 0.95) with a constant
learning rate, the memory's input passes through dropout 0.1 in training (`dropout`), and the
training block's B is scaled by alpha / r (`alpha`; `freeze_scaled` picks what a finished task
keeps, see `RankOneMemoryLinear`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cl_bench import Method, gather_batch

from .layer import RankOneMemoryLinear, check_settings


class RankOneMemories(Method):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        check_settings(hparams["rank"], hparams["topk"], hparams["temperature"])
        self.hparams = dict(hparams)
        self.layers: list[RankOneMemoryLinear] = []
        self.contrastive = True
        self.seen_prompts = 0  # classes of every task so far, as the official text-to-image term counts them

    def setup(self, model, stream) -> None:
        hp = self.hparams
        self.contrastive = model.kind == "clip"  # the text-to-image term needs a label space of classes
        scale = hp["alpha"] / hp["rank"] if "alpha" in hp else 1.0
        for layer in model.adaptable_layers(hp["towers"], hp["layers"]):
            memory = RankOneMemoryLinear(
                layer.module, hp["rank"], hp["topk"], hp["temperature"], hp["threshold"], hp["mask_in_training"], scale, hp.get("freeze_scaled", True), hp.get("dropout", 0.0)
            )
            memory.track_balance = hp["balance_weight"] > 0
            layer.replace(memory)
            self.layers.append(memory)

    def before_experience(self, model, experience) -> None:
        for memory in self.layers:
            memory.add_task()
        self.seen_prompts = sum(len(c) for c in experience.stream.task_classes[: experience.index + 1])

    def trainable_parameters(self, model):
        return [p for memory in self.layers for p in (memory.new_A, memory.new_B)]

    def extra_loss(self, model, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        if not self.contrastive:
            return self.balance_loss() if self.hparams["balance_weight"] > 0 else None
        targets = gather_batch(batch[1])  # the softmax runs across the batch: a multi-process run gathers its shares
        space = model.label_space
        columns = gather_batch(outputs[:, space].float())  # (batch, classes): scale * cos(image, class text)
        column_of = torch.full((model.num_classes,), -1, dtype=torch.long, device=space.device)
        column_of[space] = torch.arange(len(space), device=space.device)
        per_image = F.log_softmax(columns, dim=0).gather(1, column_of[targets].unsqueeze(1))
        loss = -per_image.sum() / max(self.seen_prompts, len(space))
        if self.hparams["balance_weight"] > 0:
            loss = loss + self.balance_loss()
        return loss

    def balance_loss(self) -> Tensor:
        balance = torch.stack([m.balance for m in self.layers if m.balance is not None]).mean()
        return self.hparams["balance_weight"] * balance

    def make_optimizer(self, params, hparams):
        betas = (0.9, 0.9999) if self.contrastive else (0.9, 0.95)  # the official CLIP and TRACE settings
        return torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], betas=betas)

    # No state of its own to checkpoint: the atoms live in the model, and each layer resizes
    # itself to a checkpoint's atoms when the model state loads.
