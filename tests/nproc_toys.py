"""What the two processes of tests/run/test_nproc.py run (importable by name: spawned processes
cannot import a test module)."""

from __future__ import annotations


def coupled_step(rank: int, rendezvous: str, out: str) -> None:
    """One training step of a batch-coupled loss (a softmax across the batch, plus a replicated
    regulariser) on this rank's half of the batch, gradients averaged as the strategy does."""
    import torch
    import torch.distributed as dist

    from cl_bench import gather_batch
    from cl_bench.blocks.data_parallel import sharded_steps
    from cl_bench.running.distributed import World

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        weight, inputs = coupled_problem()
        with sharded_steps(True):
            shard = inputs[rank * 4 : (rank + 1) * 4]
            loss = coupled_loss(weight, shard, gather_batch)
            loss.backward()
            World(rank, 2, "cpu").average_gradients([weight], loss)
        if rank == 0:
            torch.save({"grad": weight.grad}, out)
    finally:
        dist.destroy_process_group()


def coupled_problem():
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, generator=generator, dtype=torch.float64).requires_grad_(True), torch.randn(8, 3, generator=generator, dtype=torch.float64)


def coupled_loss(weight, inputs, gather):
    import torch

    scores = gather(inputs @ weight)  # (batch, 5)
    across_batch = -torch.log_softmax(scores, dim=0)[:, 0].sum()  # couples the examples
    per_example = (inputs @ weight).square().mean()
    return per_example + across_batch + weight.square().sum()  # the last: a replicated regulariser


class _Memory:
    """A method's state: one tensor, restored by `load_state_dict`."""

    def __init__(self, values) -> None:
        self.values = values

    def state_dict(self):
        return {"values": self.values}

    def load_state_dict(self, state) -> None:
        self.values = state["values"].clone()


def sync_step(rank: int, rendezvous: str, out: str) -> None:
    """Rank 1 holds another model and method state than rank 0; `World.sync_state` twice."""
    import torch
    import torch.distributed as dist

    from cl_bench.running.distributed import World

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        world = World(rank, 2, "cpu", dist.new_group(backend="gloo"))
        torch.manual_seed(0)
        model, method = torch.nn.Linear(3, 2), _Memory(torch.zeros(4))
        if rank == 1:
            with torch.no_grad():
                model.weight.add_(1.0)
            method.values = torch.ones(4)
        first = world.sync_state(model, method)
        second = world.sync_state(model, method)
        torch.save({"first": first, "second": second, "weight": model.weight.detach(), "values": method.values}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()
