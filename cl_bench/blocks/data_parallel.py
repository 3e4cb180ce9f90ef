"""For methods whose training terms couple a batch's examples, in multi-process runs (`--nproc`).

In a multi-process run each process trains on an equal contiguous share of every batch and the
gradients are averaged (docs/multi-process.md). A term that is a mean over the batch's examples
needs nothing; a term that couples them (a softmax across the batch, per-batch draws whose count
follows the batch size) uses these helpers to see, or draw for, the whole batch. In a one-process
run they change nothing: `gather_batch(x)` is `x`, `process_count()` is 1, `batch_share(n)` is
all n.
"""

from __future__ import annotations

import torch


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_count() -> int:
    """How many processes share each training batch (1 outside a multi-process run)."""
    return torch.distributed.get_world_size() if _distributed() else 1


def process_rank() -> int:
    """This process's place among them (0 outside a multi-process run)."""
    return torch.distributed.get_rank() if _distributed() else 0


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """The whole batch's rows of `tensor` (this process's share along dim 0, equal in every
    process), in batch order, with gradients flowing back to this process's rows.

    Every process then computes the same coupled term; its gradients are summed over the
    processes by the gather's backward, and the strategy's average divides them again: the
    term counts once, exactly as in one process."""
    if not _distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def batch_share(count: int) -> slice:
    """This process's contiguous share of `count` items drawn for the whole batch (every process
    draws the same ones: they keep the same random numbers)."""
    size, rank = process_count(), process_rank()
    return slice(rank * count // size, (rank + 1) * count // size)
