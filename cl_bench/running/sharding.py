"""Sharded training (`shard_weights` under `--nproc N`): the training steps of an experience run on
a copy of the model whose parameters PyTorch's FSDP (`fully_shard`) splits over the processes
(docs/multi-process.md, Sharded training).

The run's own model stays a plain module: the method's hooks, the evaluation, `World.sync_state`
and the checkpoints see whole weights, as in the unsharded run. At the start of an experience's
training (`shard`), a structural copy of the model that shares its parameter objects is sharded
block by block (the backbone's `shard_units()`, then the root): each process keeps 1/N of every
weight, and the whole weights of the run's model are released until the experience ends. The
optimizer is made over the shards, so gradients and optimizer state are sharded as well, and FSDP
reduce-scatters the averaged gradients (`World.average_gradients` leaves those to it). At the end
of the training (`gather`), the whole weights are gathered from the shards into the run's model's
parameters, which keep their identity (methods hold references to them). The optimizer is made
anew at every experience (strategy.py), so nothing of it outlives the copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cl_bench.contracts.model import Backbone
from cl_bench.errors import UserError


@dataclass
class Sharded:
    """The sharded copy of a model for one experience's training, and the run's model it came from."""

    model: nn.Module  # the copy: FSDP modules, its parameters DTensor shards
    whole: Backbone  # the run's model: its parameters released until `gather`
    params: list[nn.Parameter]  # the shards of the trainable parameters, in the order given to `shard`
    trainable: list[nn.Parameter]  # those parameters of the run's model


def shard(model: Backbone, trainable: list[nn.Parameter], device: torch.device) -> Sharded:
    """Shard a copy of `model` over the processes of the default group; `trainable` (parameters
    of `model`) are mapped to their shards for the optimizer."""
    from torch.distributed.fsdp import fully_shard

    names = {id(p): name for name, p in model.named_parameters()}
    outside = [p for p in trainable if id(p) not in names]
    if outside:  # a plugin method that declared Supports(sharded=True) without being able to
        raise UserError(f"shard_weights: the method trains {len(outside)} parameter(s) outside the model, which FSDP cannot shard; it must not declare Supports(sharded=True)")
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # the copy's modules hold the same tensors
    copied = copy.deepcopy(model, memo=dict(shared))
    # Empty parameters (a bank of adapters before its first task) have nothing to shard, and a
    # DTensor of them cannot be gathered back (`redistribute` fails): FSDP leaves them alone.
    empty = {p for p in copied.parameters() if p.numel() == 0}
    for unit in copied.shard_units():
        fully_shard(unit, ignored_params=empty)
    fully_shard(copied, ignored_params=empty)
    kept = {id(p) for p in empty}
    by_name = dict(copied.named_parameters())
    params = [by_name[names[id(p)]] for p in trainable]
    for param in model.parameters():  # FSDP copied each shard out; the whole weights wait for `gather`
        if id(param) not in kept:  # an empty one is the copy's too: it keeps its shape
            param.data = torch.empty(0, dtype=param.dtype, device=device)
    return Sharded(copied, model, params, trainable)


def gather(sharded: Sharded) -> Backbone:
    """The whole weights back into the run's model (a collective: every process calls it); returns it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    whole = get_model_state_dict(sharded.model, options=StateDictOptions(full_state_dict=True))
    for name, param in sharded.whole.named_parameters():
        param.data = whole[name]  # type: ignore[assignment]  # a tensor: the state dict of a plain model
    return sharded.whole
