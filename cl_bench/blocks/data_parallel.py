"""For methods whose training terms couple a batch's examples, in multi-process runs (`--nproc`).

In a multi-process run each process trains on an equal contiguous share of every batch and the
gradients are averaged (docs/multi-process.md). A term that is a mean over the batch's examples
needs nothing; a term that couples them (a softmax across the batch, per-batch draws whose count
follows the batch size, counts kept from the training batches) uses these helpers to see, or
draw for, the whole batch. In a one-process run, and outside the training steps (in a method's
hooks, which every process runs on the same whole data, and in evaluation), they change nothing:
`gather_batch(x)` is `x`, `process_count()` is 1, `batch_share(n)` is all n.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_SHARDED = [False]  # inside a training step whose batch the processes share (set by the strategy)


@contextlib.contextmanager
def sharded_steps(active: bool) -> Iterator[None]:
    """The training steps run inside this block split their batches over the processes (when
    `active`); hooks outside it see the same whole data in every process and gather nothing."""
    before = _SHARDED[0]
    _SHARDED[0] = active
    try:
        yield
    finally:
        _SHARDED[0] = before


def _sharing() -> bool:
    return _SHARDED[0] and torch.distributed.is_available() and torch.distributed.is_initialized()


def process_count() -> int:
    """How many processes share the current training batch (1 outside a multi-process run's
    training steps)."""
    return torch.distributed.get_world_size() if _sharing() else 1


def process_rank() -> int:
    """This process's place among them (0 outside a multi-process run's training steps)."""
    return torch.distributed.get_rank() if _sharing() else 0


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """The whole batch's rows of `tensor` (this process's share along dim 0, equal in every
    process), in batch order, with gradients flowing back to this process's rows.

    Every process then computes the same coupled term; its gradients are summed over the
    processes by the gather's backward, and the strategy's average divides them again: the
    term counts once, exactly as in one process."""
    if not _sharing():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def batch_share(count: int) -> slice:
    """This process's contiguous share of `count` items drawn for the whole batch (every process
    draws the same ones: they keep the same random numbers)."""
    size, rank = process_count(), process_rank()
    return slice(rank * count // size, (rank + 1) * count // size)
