"""`distillation_loss`: knowledge distillation between two sets of logits (Hinton et al. 2015).

    L = T² · mean over rows of  −Σ_j softmax(t / T)_j · log_softmax(s / T)_j

with student logits s and teacher logits t over the same columns. This is the soft-target
cross-entropy that ZSCL's code uses for LwF, iCaRL and ZSCL (temperature 2); it differs from the
KL divergence only by the teacher's entropy, a constant, so the gradients are the same. The T²
factor keeps the gradient's scale independent of T.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 2.0) -> Tensor:
    """The soft-target cross-entropy of `student` against `teacher` (both rows × columns), ×T²."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    soft = F.softmax(teacher.float() / temperature, dim=-1)
    return -(soft * F.log_softmax(student.float() / temperature, dim=-1)).sum(dim=-1).mean() * temperature**2
