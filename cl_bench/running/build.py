"""`build(plan) -> RunParts`: the model, the stream, the method and the strategy of a planned run.

The runner, the benchmarks and the test helpers all start from it. Unlike planning, building
imports torch and the plugins' heavy modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cl_bench.contracts.method import Method
from cl_bench.contracts.specs import ScenarioContext, resolve_factory
from cl_bench.errors import UserError
from cl_bench.running.plan import RunPlan, build_method, setting_error


@dataclass
class RunParts:
    """What `build` makes of a plan: the model with its method set up, the stream, the strategy,
    and the accuracy-matrix plugin that fills one row per `evaluate_row` call."""

    model: Any
    stream: Any
    method: Method
    strategy: Any
    matrix: Any
    backbone_size: int  # parameters of the backbone before the method added any


def build(plan: RunPlan, *, method: Method | None = None, plugins=(), progress: bool | None = None, world: Any = None) -> RunParts:
    """Model, stream, method and strategy for `plan`, seeded with the plan's seed, on the plan's
    CPU threads (`torch.set_num_threads(plan.threads)`: the process keeps that setting).

    `method` replaces the plan's method object (tests and benchmarks that drive a hand-made one);
    `plugins` are extra Avalanche plugins for the strategy (clocks, probes); `world` is this
    process's place in a multi-process run (`distributed.World`).
    """
    import torch

    from cl_bench.running.evaluation import AccuracyMatrix, shards_evaluation
    from cl_bench.running.strategy import ClStrategy
    from cl_bench.seeding import seed_everything

    method = method or plan.made_method.pop("method", None) or build_method(plan.method)
    torch.set_num_threads(plan.threads)  # the plan's threads, also for a notebook that builds directly
    seed_everything(plan.seed)
    model = resolve_factory(plan.backbone.spec.factory)(dict(plan.backbone.params), plan.weights)
    stream = resolve_factory(plan.scenario.spec.factory)(dict(plan.scenario.params), ScenarioContext(plan.data_root, model.image_size, getattr(model, "encode_examples", None)))
    if stream.name != plan.scenario.name:
        raise UserError(f"scenario '{plan.scenario.name}' built a stream named {stream.name!r}; a plugin's stream takes its spec's name")
    if stream.num_tasks != plan.num_tasks:
        raise UserError(f"scenario '{plan.scenario.name}' built {stream.num_tasks} tasks but its spec counts {plan.num_tasks}; fix the plugin's task count")
    for param in model.parameters():
        param.requires_grad_(False)
    backbone_size = sum(p.numel() for p in model.parameters())
    model.prepare(stream)
    try:
        method.setup(model, stream)
    except ValueError as exc:  # a setting that only the model's shapes refute (a rank too large, ...)
        raise setting_error(plan.method.name, exc) from None
    device = torch.device(plan.device)
    model.to(device)
    # A multi-process run shares each cell's batches out unless the model or the method says its
    # evaluation depends on more than each batch (docs/multi-process.md, Sharded evaluation).
    sharding = world is not None and shards_evaluation(model, method)
    matrix = AccuracyMatrix(stream, world=world if sharding else None)
    strategy = ClStrategy(
        model=model,
        method=method,
        stream=stream,
        hparams=plan.hparams,
        device=device,
        precision=plan.precision,
        seed=plan.seed,
        eval_batch_size=plan.config.eval_batch_size,
        num_workers=plan.config.num_workers,
        plugins=[matrix, *plugins],
        progress=plan.config.progress if progress is None else progress,
        world=world,
        shard_weights=plan.config.shard_weights,
    )
    return RunParts(model, stream, method, strategy, matrix, backbone_size)

