"""The `treelora` method: seq-lora's one LoRA through all tasks plus TreeLoRA's regulariser.

Restated from ZinYY/TreeLoRA `model/Regular/Tree_LoRA.py` (L63-152) and `utils/kd_lora_tree.py`
(c6a9b6d; MoRAM's TRACE copy is the same). In that code's one-process trainer the LoRA is never
split per task: one LoRA (r 8, alpha 32, dropout 0.1) trains through every task, as seq-lora here.
With `reg` > 0, at micro-step k (0-based) of an epoch of T micro-steps:

1. ρ = reg · k / T (a ramp from 0 within each epoch, L169-171);
2. X = the stack of every adapted module's A, flattened (D × r·d_in: the current parameters, not
   gradients); the epoch's running sum c ← c + D · X / T (the code adds X / T once per module:
   L173-181). At the end of task t, g_t = c of its last epoch, and the tree (tree.py) is rebuilt
   over g_0..g_t;
3. from the second task on, each module m draws an earlier task j_m (tree.py's search, which
   then adds −‖c_m − g_{j_m, m}‖₁ to that arm's sum and counts the visit), and with
   R = −Σ_m ⟨X_m, g_{j_m, m}⟩ the loss becomes CE − R / (R.detach() + 1e-5) · CE.detach() · ρ
   (L76-90, L264-271): its value is CE − ρ·CE, its gradient ρ·CE·∇ log|Σ_m ⟨X_m, g_{j_m, m}⟩|,
   a pull of each A towards the chosen task's epoch-mean A whose size does not depend on the
   inner product's scale.

With `reg` = 0 nothing of this runs (as in the code, which skips it all), and a run is seq-lora's
run bit for bit. Departures from the official code (also in docs/methods.md):
- One epoch = one task here (cl_bench trains a task for `iters` steps): the ramp, the running
  sum, the arm statistics restart at each task, not at each of the official 1-3 epochs, and g_t
  is the mean over the whole task rather than over its last epoch. T counts micro-batches
  (`iters` × `grad_accum`), as the code's T counts the micro-batches of one GPU.
- The two categorical draws per step come from a generator of the method's own, seeded per task
  from the experience's seed, not from the global torch generator: data order and dropout are
  those of seq-lora whatever `reg` is, and a resumed run draws the same.
- `lora_depth` (adapting only the first K modules) is not offered: every selected layer is adapted.
- Optimizer: seq-lora's on language models (AdamW with weight decay 0 = Adam, betas (0.9, 0.95),
  constant rate), the optimizer restarted at each task as cl_bench does for every method.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from cl_bench import UserError

from ..seq_lora.lora import SeqLoRA
from .tree import TreeNode, build_tree, search, task_differences


class TreeLoRA(SeqLoRA):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.reg = float(hparams["reg"])
        if self.reg < 0:
            raise ValueError(f"method.reg must be 0 or more, got {self.reg}")
        self.steps_per_task = int(hparams["iters"]) * int(hparams.get("grad_accum", 1))
        self.stored: list[Tensor] = []  # g_j per finished task: D × (r·d_in), on the CPU
        self.root: TreeNode | None = None
        self.task = 0
        self._reset_epoch(None)

    def _reset_epoch(self, generator: torch.Generator | None) -> None:
        self.step = -1
        self.running: Tensor | None = None  # c: D · the mean so far of X over this epoch
        self.distance_sums: Tensor | None = None
        self.counts: Tensor | None = None
        self.draws = generator
        self._earlier: Tensor | None = None  # the stored g on the adapters' device

    def setup(self, model, stream) -> None:
        super().setup(model, stream)
        shapes = {tuple(adapter.lora_A.shape) for adapter in self.adapters}
        if len(shapes) > 1:
            raise UserError(f"treelora stacks every adapted layer's LoRA A, which needs one shape; these layers give {sorted(shapes)}: choose method.layers with one input width")

    def before_experience(self, model, experience) -> None:
        self.task = experience.index
        generator = None
        if self.reg > 0:  # seeded from the experience's seed (the strategy seeds each task), not drawn from it
            digest = hashlib.sha256(f"{torch.initial_seed()}:treelora".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF)
        self._reset_epoch(generator)

    def current(self) -> Tensor:
        """X: every adapted module's A, flattened, stacked in module order (differentiable)."""
        return torch.stack([adapter.lora_A.reshape(-1) for adapter in self.adapters])

    def extra_loss(self, model, batch, outputs) -> Tensor | None:
        if self.reg == 0:
            return None
        self.step += 1
        strength = self.reg * self.step / self.steps_per_task
        X = self.current()
        depth = X.shape[0]
        added = X.detach().float() * (depth / self.steps_per_task)
        self.running = added if self.running is None else self.running + added
        if not self.stored:
            return None
        if self._earlier is None:
            self._earlier = torch.stack(self.stored).to(X.device)  # N × D × F
            self.distance_sums = torch.zeros(len(self.stored), depth)
            self.counts = torch.zeros(len(self.stored), depth)
        assert self.distance_sums is not None and self.counts is not None and self.draws is not None
        chosen = search(self.distance_sums, self.counts, self.steps_per_task, self.step, self.root, self.draws)
        modules = torch.arange(depth)
        anchors = self._earlier[chosen.to(X.device), modules.to(X.device)]  # D × F: g_{j_m, m}
        self.counts[chosen, modules] += 1
        self.distance_sums[chosen, modules] -= (self.running - anchors).abs().sum(dim=1).cpu()
        inner = -(X.float() * anchors).sum()  # R
        cross_entropy = model.loss(outputs, batch[1]).detach()
        return -(inner / (inner.detach() + 1e-5) * cross_entropy * strength)

    def after_experience(self, model, experience) -> None:
        if self.reg == 0 or self.running is None:
            return
        self.stored.append(self.running.cpu())
        self.root = build_tree(task_differences(torch.stack(self.stored)))

    def state_dict(self) -> dict[str, Any]:
        return {"stored": list(self.stored)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stored = [t.cpu() for t in state["stored"]]
        self.root = build_tree(task_differences(torch.stack(self.stored))) if self.stored else None
