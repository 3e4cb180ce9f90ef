"""`gem`: gradient episodic memory (Lopez-Paz & Ranzato, 2017), on both tracks.

A memory of `memory` training examples per task (a seeded random draw, `cl_bench.EpisodicMemory`).
At every step from the second task on, the gradient g_k of the loss on each earlier task k's
memory is computed (at the current parameters, `chunk` examples at a time); if the step's
gradient g has g·g_k < 0 for some k, g is replaced by the g̃ closest to it with g̃·g_k >= 0 for
every k, found through GEM's dual: with G the rows g_k,

    minimise ½ vᵀ (G Gᵀ + eps I) v + (G g)ᵀ v   subject to  v >= margin,     g̃ = Gᵀ v + g,

solved by quadprog (Goldfarb-Idnani), as GEM's code does, with its margin 0.5 and eps 1e-3.
The gradient is over every trainable parameter at once (the `before_update` hook), in float32.

Departures from TRACE's GEM (BeyonderXX/TRACE and MoRAM `TRACE/model/Regular/GEM.py`):
- TRACE keeps no examples, only one gradient per task: that of the last micro-batch (one example)
  of the task's last epoch, stored in bf16; here the memory's examples, re-differentiated at the
  current parameters at every step, as in GEM's paper and code.
- TRACE projects each parameter tensor apart with qpth on the same (P, q, G=I, h=margin) as
  quadprog's call; qpth reads them as min ½vᵀPv + qᵀv s.t. v <= h, so the sign of the linear
  term and of the constraint flip (by reading: for one memory the conflicting component is
  doubled, not removed). Here the whole gradient is projected with GEM's own dual.
- Memory cost: the earlier tasks' gradients are held at once (tasks × trainable parameters,
  float32, on the model's device); on a 7B model use `base=seq-lora` or expect TRACE's own
  ~112 GB of host memory per rank.

On CLIP (images) each earlier task k's memory loss is the cross-entropy over the classes the
protocol scores task k over, among those seen so far (`ClassicBase.memory_space`): on mtil task
k's own classes (as GEM's code scores a past CIFAR task over its own outputs), on domain-il
every class (as its MNIST tasks), on class-il and x-tail every class seen so far. Departures
from GEM's code on images (facebookresearch/GradientEpisodicMemory `model/gem.py`): its memory
is the task's last `n_memories` examples of a single pass (a ring buffer), here a seeded random
draw of the task's training set; it steps with SGD, here with the base's AdamW, so the step
itself is the projected gradient rescaled per coordinate (the constraint holds for the gradient).
On class-il the constraints (memory losses over every seen class) forbid raising the current
classes' scores on old images while the base's step trains the current task over its own
classes: old tasks are kept, the newest is learnt less (docs/methods.md has the tiny-clip runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import flat_grad, memory_gradient, set_flat_grad
from .memory import WithMemory

MARGIN = 0.5  # GEM's memory_strength (its code's default; TRACE's `margin`)
EPS = 1e-3  # added to the dual's diagonal (GEM's code and TRACE)


def project_dual(g: np.ndarray, memories: np.ndarray, margin: float = MARGIN, eps: float = EPS) -> np.ndarray:
    """GEM's projection: g̃ = Gᵀ v + g, v the solution of the dual QP above (float64)."""
    import quadprog

    gram = memories @ memories.T
    gram = 0.5 * (gram + gram.T) + eps * np.eye(len(memories))
    linear = memories @ g
    # quadprog: minimise ½ xᵀ P x − aᵀ x subject to Cᵀ x >= b
    v = quadprog.solve_qp(gram, -linear, np.eye(len(memories)), np.full(len(memories), margin))[0]
    return memories.T @ v + g


class GEM(WithMemory):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__(hparams)
        self.margin = float(hparams["margin"])
        if self.margin < 0:
            raise ValueError(f"method.margin must be >= 0, got {self.margin}")
        self.chunk = int(hparams["batch_size"]) // max(1, int(hparams.get("grad_accum", 1)))
        self.projections = 0  # steps whose gradient was projected (for the tests and the curious)

    def before_update(self, model, params) -> None:
        if not len(self.memory):
            return
        params = self.params(model)
        inputs, targets, tasks = self.memory_tensors(params[0].device)
        rows = [memory_gradient(model, params, inputs[tasks == t], targets[tasks == t], self.chunk, self.spaces.get(t)) for t in self.memory.groups]
        memories = torch.stack(rows)
        g = flat_grad(params)
        if bool((memories @ g >= 0).all()):
            return
        projected = project_dual(g.double().cpu().numpy(), memories.double().cpu().numpy(), self.margin)
        set_flat_grad(params, torch.from_numpy(projected).to(g.device))
        self.projections += 1
