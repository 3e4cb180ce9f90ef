"""What the processes of tests/run/test_nproc_sharded.py run or load by name (spawned processes
cannot import a test module)."""

from __future__ import annotations

import os

from cl_bench import hookimpl


@hookimpl
def cl_bench_experience_end(task: int) -> None:
    """A run given this module as a plugin stops hard after its first task (rank 0 alone emits the
    event, after the checkpoint and the partial result are written): an interrupted run to resume."""
    if task == 0:
        os._exit(3)


def shard_and_gather(rank: int, rendezvous: str, out: str) -> None:
    """Shard tiny-lm with MoRAM's first task's atoms over two processes and gather it back,
    untrained: what each process holds of each weight meanwhile, and whether the gathered weights
    are the same. MoRAM's banks of earlier tasks' atoms are still empty parameters then."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from cl_bench import RunConfig

    # Avalanche builds a logger when imported, which it refuses to do in a rank other than 0 once
    # torch.distributed is initialised (as in distributed._worker): import it first.
    from cl_bench.running import strategy  # noqa: F401
    from cl_bench.running.build import build
    from cl_bench.running.plan import plan
    from cl_bench.running.sharding import gather, shard

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        config = RunConfig(method="moram", scenario="embedded-instruct", backbone="tiny-lm", device="cpu", out=os.path.dirname(out), progress=False)
        parts = build(plan(config))
        model = parts.model
        parts.method.before_experience(model, parts.stream.experience(0))
        trainable = list(parts.method.trainable_parameters(model))
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        sharded = shard(model, trainable, torch.device("cpu"))
        held = {name: (isinstance(p, DTensor), p.to_local().numel() if isinstance(p, DTensor) else p.numel(), p.numel()) for name, p in sharded.model.named_parameters()}
        released = all(p.numel() == 0 and (p.dim() == 1 or before[name].numel() == 0) for name, p in model.named_parameters())
        shapes = all(p.shape == before[name].shape for name, p in model.named_parameters() if before[name].numel() == 0)
        mapped = len(sharded.params) == len(trainable) and all(isinstance(p, DTensor) and p.requires_grad for p in sharded.params)
        gather(sharded)
        same = all(torch.equal(p, before[name]) for name, p in model.named_parameters())
        torch.save({"held": held, "released": released, "shapes": shapes, "mapped": mapped, "same": same, "trainable": len(trainable)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
