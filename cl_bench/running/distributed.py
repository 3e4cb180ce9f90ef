"""Multi-process runs (`--nproc N`): one run trained data-parallel across N processes
(docs/multi-process.md).

The clbench process plans and checks the run, takes its lock, and starts N worker processes with
`torch.multiprocessing.start_processes` (spawn), one per rank; they meet through a file in a fresh
temporary folder (`torch.distributed`, gloo on CPU, NCCL on CUDA). The launcher is the CLI itself
rather than torchrun: a sweep, a notebook and a test start a multi-process run exactly as a
one-process one (`run(config)`), the rendezvous needs no port, and the launcher's join loop notices
at once a rank that dies (a `kill -9`, an out-of-memory kill), stops the others and reports it in
one line; the training collectives also time out (`TRAINING_TIMEOUT`) as a last guard.

Every rank builds the same model from the same seed and draws the same random numbers; each
training step splits the global batch (the same order on every rank) into N equal contiguous
shards, each rank computes its shard's loss and gradients, and the gradients are averaged
(`World.average_gradients`): the update is the one-process update up to float rounding. What a
method computes or decides between steps (memories, subspaces, prompt pools, closed-form fits) is
computed on every rank from the same data and random numbers; after each evaluation the ranks
compare a digest of their model and method state (`World.sync_state`) and, where they differ, the
others take rank 0's, as a resume would. Each rank evaluates a contiguous share of every cell's
evaluation batches (`evaluation_share`) and rank 0 gathers the per-example outcomes
(`World.gather_bytes`) to compute the cells (running/evaluation.py). Rank 0 alone writes the
checkpoint, the result, the events and the progress bars.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import signal
import sys
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cl_bench.config.registry import Registry
from cl_bench.config.run_config import RunConfig
from cl_bench.errors import UserError, clip

# A training collective never waits this long for a live rank; the launcher catches dead ones at once.
TRAINING_TIMEOUT = dt.timedelta(minutes=30)
# The collectives around evaluation wait this long: for the slowest share of a cell, or for rank 0
# evaluating a cell alone (a language model's generation over a large test set can take hours);
# only a hung rank would run into it.
EVALUATION_TIMEOUT = dt.timedelta(hours=24)


@dataclass
class World:
    """This process's place in a multi-process run."""

    rank: int
    size: int
    device: str
    waiting: Any = None  # a gloo group with the long timeout: the collectives around evaluation

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, batch):
        """This rank's contiguous share of a batch (its first dimension divides evenly: `plan` checks)."""
        share = batch.shape[0] // self.size
        return batch[self.rank * share : (self.rank + 1) * share]

    def average_gradients(self, params: Iterable[Any], loss):
        """Average the gradients of `params` and `loss` over the ranks; returns the global loss.

        A parameter that no rank gave a gradient keeps none (AdamW then skips it, as it would in
        one process); one that some ranks did gets the others' zeros. One all-reduce per dtype."""
        import torch
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        params = [p for p in params if not isinstance(p, DTensor)]  # sharded training: FSDP reduce-scatters those
        flags = torch.tensor([float(p.grad is not None) for p in params] + [float(loss.detach())], dtype=torch.float64, device=loss.device)
        dist.all_reduce(flags)  # how many ranks have each gradient, and the summed loss
        reached = [p for p, count in zip(params, flags[:-1].tolist()) if count > 0]
        by_dtype: dict[Any, list[Any]] = {}
        for param in reached:
            if param.grad is None:  # only other ranks' shards reached it
                param.grad = torch.zeros_like(param)
            by_dtype.setdefault(param.grad.dtype, []).append(param)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            flat /= self.size
            offset = 0
            for param in group:
                param.grad.copy_(flat[offset : offset + param.numel()].view_as(param.grad))
                offset += param.numel()
        return (flags[-1] / self.size).to(loss.dtype)

    def gather_bytes(self, payload: bytes) -> list[bytes]:
        """Every rank's `payload`, in rank order (on every rank; waits as long as an evaluation may).

        Bytes the caller encodes itself (JSON): nothing is pickled, so nothing is unpickled."""
        import torch
        import torch.distributed as dist

        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(payload)], dtype=torch.int64), group=self.waiting)
        longest = max(int(size[0]) for size in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        if payload:
            mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        everyone = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.size)]
        dist.all_gather(everyone, mine, group=self.waiting)
        return [data[: int(size[0])].numpy().tobytes() for data, size in zip(everyone, sizes)]

    def sync_state(self, model, method) -> bool:
        """Make every rank hold rank 0's model and method state; True when some rank had to take it.

        The ranks compare a digest first: they compute the same things from the same data, so the
        state (megabytes to gigabytes) travels only when a rank differs."""
        import torch
        import torch.distributed as dist

        state = {"model": model.state_dict(), "method": method.state_dict()}
        mine = torch.frombuffer(bytearray(state_digest(state)), dtype=torch.uint8)
        everyone = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(everyone, mine, group=self.waiting)
        if all(torch.equal(other, everyone[0]) for other in everyone):
            return False
        size = torch.zeros(1, dtype=torch.int64)
        payload = b""
        if self.leader:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            payload = buffer.getvalue()
            size[0] = len(payload)
        dist.broadcast(size, src=0, group=self.waiting)
        data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.leader else torch.empty(int(size[0]), dtype=torch.uint8)
        dist.broadcast(data, src=0, group=self.waiting)
        if not self.leader:
            # weights_only: nothing is unpickled, as for a checkpoint
            received = torch.load(io.BytesIO(data.numpy().tobytes()), map_location="cpu", weights_only=True)
            method.load_state_dict(received["method"])
            model.load_state_dict(received["model"], strict=True)
            model.to(self.device)
        return True


def evaluation_share(batches: int, size: int, rank: int) -> range:
    """The evaluation batches (indices into a cell's `batches`) that rank `rank` of `size`
    evaluates: a contiguous share, the shares in rank order, sizes differing by at most one (a
    rank's share is empty when the cell has fewer batches than ranks)."""
    return range(rank * batches // size, (rank + 1) * batches // size)


_WORLD: World | None = None


def current() -> World | None:
    """This process's world in a multi-process run (None in a one-process run and in the launcher)."""
    return _WORLD


def state_digest(state: Mapping[str, Any]) -> bytes:
    """sha256 over a nested state of tensors and plain values: keys, types, dtypes, shapes and bytes."""
    import torch

    hasher = hashlib.sha256()
    pending: list[tuple[str, Any]] = [("", state)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            hasher.update(f"{where}|tensor|{value.dtype}|{tuple(value.shape)}|".encode())
            hasher.update(data.numpy().tobytes())
        elif isinstance(value, Mapping):
            hasher.update(f"{where}|map|{len(value)}|".encode())
            pending.extend((f"{where}/{key}", value[key]) for key in sorted(value, key=str, reverse=True))
        elif isinstance(value, (list, tuple)):
            hasher.update(f"{where}|{type(value).__name__}|{len(value)}|".encode())
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        else:
            hasher.update(f"{where}|{type(value).__name__}|{value!r}|".encode())
    return hasher.digest()


# ------------------------------------------------------------------------------------ launching


def rank_devices(device: str, nproc: int) -> list[str]:
    """The device of each rank: CUDA devices index, index + 1, ... from the run's device; CPU for all
    on CPU. A one-line error when this machine lacks them."""
    if device == "cpu":
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if nproc > usable:
            raise UserError(f"--nproc {nproc} on CPU: this process may use {usable} core(s); use --nproc {usable} or fewer")
        return ["cpu"] * nproc
    import torch

    first = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if first + nproc > count:
        raise UserError(f"--nproc {nproc} from {device} needs CUDA devices {first} to {first + nproc - 1}; this machine has {count}")
    return [f"cuda:{first + rank}" for rank in range(nproc)]


def _portable(plugins: Iterable[object]) -> list[object]:
    """The run's extra plugins as a spawned process can receive them: modules by name."""
    return [("module", plugin.__name__) if isinstance(plugin, types.ModuleType) else plugin for plugin in plugins]


def _restored(plugins: list[object]) -> list[object]:
    import importlib

    return [importlib.import_module(p[1]) if isinstance(p, tuple) and len(p) == 2 and p[0] == "module" else p for p in plugins]


def launch(run: Callable[..., Any], configs: Sequence[RunConfig], devices: list[str], registry: Registry, log_folder: Path | None) -> None:
    """`run(config, registry=..., log_folder=...)` for each of `configs` in turn, in len(devices)
    processes (the runner's `run`, which finds its rank in `current()`); waits for them; a rank's
    failure is a one-line error.

    A run is one config; several share the processes and their process group, one after another
    (each seeds itself, as in one process): the tests pay for starting the processes once."""
    import pickle

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    plugins, entry_points = registry.given
    portable = _portable(plugins)
    try:
        pickle.dumps(portable)
    except Exception as exc:  # noqa: BLE001 - any failure to pickle is the same problem for the user
        raise UserError(f"--nproc {len(devices)}: a plugin object of this run cannot be sent to the worker processes ({clip(str(exc))}); register it by entry point or module") from None
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)  # its "terminating process ..." lines: the one-line error below says it
    with tempfile.TemporaryDirectory(prefix="clbench-nproc-") as folder:
        rendezvous = Path(folder) / "rendezvous"
        processes = mp.start_processes(
            _worker, args=(run, devices, list(configs), portable, entry_points, str(rendezvous), errors, log_folder), nprocs=len(devices), join=False, start_method="spawn"
        )
        try:
            while not processes.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            raise _failure(exc, processes.processes, errors, len(devices), ", ".join(dict.fromkeys(c.out for c in configs))) from None
        finally:
            spawn_log.setLevel(level)


def _failure(exc: Any, processes: list[Any], errors, nproc: int, out: str) -> Exception:
    """The one line that says why a multi-process run stopped: a rank's cl_bench error, else a rank
    killed by a signal (the others then fail in their collectives: effects, not the cause), else
    the first failure's traceback (a bug)."""
    if not errors.empty():
        rank, text = errors.get()
        return UserError(f"process {rank} of {nproc}: {text}")
    killed = [(rank, p) for rank, p in enumerate(processes) if p.exitcode is not None and p.exitcode < 0 and p.exitcode != -signal.SIGTERM]
    if killed:
        rank, process = killed[0]
        return UserError(
            f"process {rank} of {nproc} (pid {process.pid}) was killed by {signal.Signals(-process.exitcode).name}; "
            f"the other processes were stopped (--resume continues from the last checkpoint in {out})"
        )
    code = getattr(exc, "exit_code", None)
    if code is not None:
        return UserError(f"process {exc.error_index} of {nproc} exited with code {code}; the other processes were stopped (--resume continues from the last checkpoint in {out})")
    return RuntimeError(f"process {getattr(exc, 'error_index', '?')} of {nproc} failed:\n{getattr(exc, 'msg', exc)}")


def _worker(rank: int, run: Callable[..., Any], devices: list[str], configs: list[RunConfig], plugins: list[object], entry_points: bool, rendezvous: str, errors, log_folder: Path | None) -> None:
    global _WORLD
    import torch
    import torch.distributed as dist

    # Avalanche builds a logger when imported, which it refuses to do in a rank other than 0 once
    # torch.distributed is initialised: import it first.
    import cl_bench.running.strategy  # noqa: F401

    device = devices[rank]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=len(devices), timeout=TRAINING_TIMEOUT)
    try:
        waiting = dist.new_group(backend="gloo", timeout=EVALUATION_TIMEOUT)
        _WORLD = World(rank, len(devices), device, waiting)

        registry = Registry(_restored(plugins), entry_points=entry_points)
        for config in configs:
            run(config, registry=registry, log_folder=log_folder)
    except UserError as exc:
        errors.put((rank, str(exc)))
        sys.stderr.flush()
        os._exit(2)  # at once: the other ranks may be waiting in a collective for this one
    finally:
        _WORLD = None
        dist.destroy_process_group()
