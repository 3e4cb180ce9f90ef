"""`run(config)`: one continual-learning run from configuration to result file (docs/development.md, How a run flows).

After every experience the runner writes a checkpoint and a partial result, both atomically;
`resume=True` continues from the checkpoint and, because every experience is seeded on its own,
ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cl_bench import locks
from cl_bench.config.registry import Registry
from cl_bench.config.run_config import RunConfig
from cl_bench.contracts.specs import resolve_factory
from cl_bench.errors import UserError, clip
from cl_bench.files import remove_stale_temporaries, write_json
from cl_bench.paths import SWEEP_LOGS
from cl_bench.provenance import hardware_info, versions_info
from cl_bench.results.identity import identity_of_result
from cl_bench.results.schema import EXECUTION_SETTINGS, SCHEMA, RunResult
from cl_bench.results.validation import load, load_valid, validate
from cl_bench.running import checkpoint
from cl_bench.running.plan import RunPlan, plan

# Third-party warnings that say nothing to a cl_bench user.
QUIET = ("No loggers specified", "no QP solver", "QP solver", "positional arguments", "torch.distributed")


def quiet_third_party_warnings() -> None:
    for text in QUIET:
        warnings.filterwarnings("ignore", message=f".*{text}.*")
    for module in ("avalanche", "torchvision", "open_clip", "timm", "qpsolvers", "pytorchcv"):
        warnings.filterwarnings("ignore", module=module)


class _Run:
    """The state of one run, shared by the steps below: its plan and what it has measured so far."""

    def __init__(self, plan: RunPlan, registry: Registry, log_folder: Path | None = None, *, writes: bool = True) -> None:
        self.plan = plan
        self.config = plan.config
        self.started = time.perf_counter()
        self.run_id = plan.run_id
        self.result_path = plan.result_path
        self.checkpoint_path = plan.checkpoint_path
        self.writes = writes  # False: a multi-process run's rank other than 0 (it trains, rank 0 writes)
        self.loggers = build_loggers(registry, plan.config.log, log_folder or plan.out / SWEEP_LOGS) if writes else []
        self.acc_rows: list[list[float]] = []
        self.control_rows: list[list[float]] = []
        self.outcome_rows: list[dict[str, Any]] = []  # per row: its cells' per-example outcomes and evaluation batch size
        self.control_sizes: list[int] = []
        self.timings: dict[str, Any] = {"setup": 0.0, "eval_before": 0.0, "experiences": [], "total": 0.0}
        self.params: dict[str, Any] = {"backbone": 0, "trainable": [], "added": [], "final": 0}
        self.elapsed_before = 0.0  # time spent before a resume
        self.execution_id = uuid.uuid4().hex  # this execution; run_id names the configuration
        self.built: dict[str, checkpoint.Fingerprint] = {}  # the model as built: what checkpoints reference instead of copying

    # ---------------------------------------------------------------- pieces of the result

    def document(self, status: str, stream, model) -> dict[str, Any]:
        import torch

        from cl_bench.results import metrics

        self.timings["total"] = round(self.elapsed_before + time.perf_counter() - self.started, 3)
        plan = self.plan
        complete = status == "complete"
        # The resolved parameters and version (what the run id hashes), whatever the stream echoes.
        scenario = {
            **stream.describe(),
            "version": plan.scenario.version,
            "params": plan.scenario.params,
            "plugin": plan.scenario.plugin,
            "distribution": plan.scenario.distribution,
        }
        if plan.data_sha256:
            scenario["data_sha256"] = plan.data_sha256
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "execution_id": self.execution_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "status": status,
            "method": {
                "name": plan.method.name,
                "version": plan.method.version,
                "plugin": plan.method.plugin,
                "distribution": plan.method.distribution,
                "paper": plan.method.spec.paper,
                "hyperparameters": plan.hparams,
            },
            "scenario": scenario,
            "backbone": {
                "name": plan.backbone.name,
                "version": plan.backbone.version,
                "plugin": plan.backbone.plugin,
                "distribution": plan.backbone.distribution,
                "params": plan.backbone.params,
                "weights_param": plan.backbone.spec.weights_param,
                "weights": plan.weights.path if plan.weights else None,
                "weights_sha256": plan.weights.sha256 if plan.weights else None,
            },
            "seed": plan.seed,
            "execution": {key: (str(plan.out) if key == "out" else plan.data_root if key == "data_root" else getattr(self.config, key)) for key in EXECUTION_SETTINGS},
            "versions": versions_info(),
            "hardware": hardware_info(torch.device(plan.device), plan.precision, self.config.threads),
            "acc_matrix": self.acc_rows,
            "control_matrix": self.control_rows,
            "metrics": metrics.compute(self.acc_rows, self.control_rows if stream.control_names else None, protocol=stream.protocol, test_sizes=scenario["test_sizes"]) if complete else {},
            "timings": self.timings,
            "params": self.params,
            "outcomes": {
                "batch_sizes": [row["batch_size"] for row in self.outcome_rows],
                "control_sizes": self.control_sizes,
                "acc": [row["acc"] for row in self.outcome_rows],
                "control": [row["control"] for row in self.outcome_rows],
            },
        }

    def record_row(self, plugin, row: int) -> None:
        """Keep row `row`'s per-example outcomes (after `evaluate_row`)."""
        from cl_bench.running.evaluation import row_outcomes

        del self.outcome_rows[row:]
        self.outcome_rows.append(row_outcomes(plugin, row))
        self.control_sizes = list(plugin.control_sizes)

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, next_task: int, model, method, strategy) -> None:
        progress = {
            "acc": self.acc_rows,
            "control": self.control_rows,
            "outcomes": self.outcome_rows,
            "control_sizes": self.control_sizes,
            "timings": self.timings,
            "params": self.params,
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
        }
        checkpoint.save(
            self.checkpoint_path,
            run_id=self.run_id,
            identity=self.plan.identity_json(),
            next_task=next_task,
            progress=progress,
            model=model.state_dict(),
            method=method.state_dict(),
            reference=self.built,
            strategy=strategy_state(strategy),
        )

    def load_checkpoint(self, model, method, stream, strategy) -> int:
        path = self.checkpoint_path
        saved = checkpoint.load(path, identity=self.plan.identity_json(), num_tasks=stream.num_tasks, num_controls=len(stream.control_names), reference=self.built)
        try:
            method.load_state_dict(saved.method)
            checkpoint.restore_model(model, saved)
            if strategy.scaler is not None and "grad_scaler" in saved.strategy:
                strategy.scaler.load_state_dict(saved.strategy["grad_scaler"])
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise UserError(f"checkpoint {path} does not fit this run ({clip(str(exc))}); delete it to start over") from None
        progress = saved.progress
        self.acc_rows, self.control_rows = progress["acc"], progress["control"]
        # A checkpoint of a cl_bench before per-example outcomes: its rows are kept without them.
        empty = {"acc": [None] * len(self.acc_rows[0]), "control": [None] * len(self.control_rows[0]), "batch_size": 1}
        self.outcome_rows = progress.get("outcomes") or [dict(empty) for _ in self.acc_rows]
        self.control_sizes = progress.get("control_sizes") or [1] * len(self.control_rows[0])
        self.timings, self.params = progress["timings"], progress["params"]
        self.elapsed_before = float(progress["elapsed"])
        return saved.next_task

    def unused_checkpoints(self) -> list[str]:
        """The other checkpoints in --out, each with how its plan differs from this run's."""
        notes = []
        mine = flatten(self.plan.identity())
        for other in sorted(self.checkpoint_path.parent.glob("*.ckpt")):
            if other == self.checkpoint_path:
                continue
            try:
                identity = identity_of_result(load(other.with_suffix(".json")))
            except (UserError, KeyError, TypeError, AttributeError):
                identity = None
            identity = identity or checkpoint.recorded_identity(other)  # no partial result: the checkpoint's own record
            if identity is None:
                why = "its configuration is unknown: neither it nor a partial result beside it can be read"
            else:
                theirs = flatten(identity)
                differ = [f"{key} {clip(repr(theirs.get(key)), 40)} there, {clip(repr(value), 40)} here" for key, value in mine.items() if theirs.get(key) != value]
                why = "another configuration: " + "; ".join(differ[:4]) if differ else "another cl_bench version"
            notes.append(f"{other.name} ({why})")
        return notes


def strategy_state(strategy) -> dict[str, Any]:
    """What of the strategy outlives an experience: only fp16's grad scaler (its scale carries over
    from task to task). The optimizer and its schedule are made anew and every RNG reseeded at
    each experience (strategy.py), so checkpoints, written between experiences, need neither."""
    return {"grad_scaler": strategy.scaler.state_dict()} if strategy.scaler is not None else {}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"method": {"params": {"rank": 4}}} as {"method.params.rank": 4}: differences name one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check(config: RunConfig, registry: Registry) -> Path:
    """Check every setting of `config` as `run` would, without doing any work; returns its result path."""
    return plan(config, registry).result_path


def build_loggers(registry: Registry, names: Iterable[str], folder: Path) -> list[object]:
    """The run's experiment trackers (`--log`; the plan checked their packages), each keeping its
    local store in `folder`."""
    return [resolve_factory(registry.get("logger", name).spec.factory)(str(folder)) for name in dict.fromkeys(names)]


def check_finite(model, task_name: str, hparams: dict[str, Any]) -> None:
    """Stop a diverged run before its checkpoint or result is written."""
    import torch

    named = list(model.named_parameters())
    finite = torch.stack([torch.isfinite(param).all() for _, param in named])  # one device sync, not one per tensor
    if not bool(finite.all()):
        name = named[int((~finite).nonzero()[0])][0]
        raise UserError(f"training diverged on task '{task_name}': {name} holds inf or nan; lower method.lr (now {hparams.get('lr')}); nothing of this task was saved")


def write_result(path: Path, document: dict[str, Any]) -> None:
    """Validate, then write atomically: a result this cl_bench cannot read back is never written."""
    validate(document, str(path))
    write_json(path, document)


def run(config: RunConfig, *, registry: Registry | None = None, plugins: Iterable[object] = (), log_folder: Path | None = None) -> RunResult:
    """Run one configuration to the end and write its result file; returns the result.

    `log_folder` is where experiment trackers keep their local stores (default `<out>/logs`; the
    Ray engine's workers stage results elsewhere but log where the sweep's `--out` says)."""
    quiet_third_party_warnings()
    from cl_bench.running import distributed

    registry = registry or Registry(plugins)
    world = distributed.current()
    if world is not None:  # a rank of a multi-process run: its launcher holds the lock and checked the folder
        import dataclasses

        state = _Run(dataclasses.replace(plan(config, registry), device=world.device), registry, log_folder, writes=world.leader)
        with registry.attached(state.loggers):
            return _execute(state, registry, world)
    state = _Run(plan(config, registry), registry, log_folder, writes=config.nproc == 1)
    devices = distributed.rank_devices(state.plan.device, config.nproc) if config.nproc > 1 else []
    import torch

    lock = state.result_path.with_name(f".{state.run_id}.lock")
    created = not lock.parent.exists()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(state.plan.threads)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locks.held(lock, wait=False), registry.attached(state.loggers):
            return _launch(state, registry, devices, log_folder) if devices else _execute(state, registry)
    except locks.Busy:
        raise UserError(
            f"another clbench process is running this configuration into {lock.parent} (it holds {lock.name}); wait for it or stop it"
        ) from None
    except BaseException:
        if created:  # a run that failed before writing anything leaves no empty --out behind
            with contextlib.suppress(OSError):
                lock.parent.rmdir()
        raise
    finally:
        torch.set_num_threads(threads_before)  # a caller's process keeps its own setting


def _prepare(state: _Run) -> RunResult | None:
    """Before any work, under the lock: the run's finished result if `--resume` has nothing left to do."""
    config = state.config
    for path in (state.result_path, state.checkpoint_path):
        if path.is_dir():  # found now, not when the first task has trained and its checkpoint cannot be written
            raise UserError(f"{path} is a folder where this run writes its {'checkpoint' if path.suffix == '.ckpt' else 'result'}; move it away or choose another --out")
        remove_stale_temporaries(path)  # what a kill during an atomic write of this run left
    if config.resume and not state.checkpoint_path.is_file():
        if state.result_path.is_file():  # nothing left to do if this configuration already finished
            finished = load_valid(state.result_path)
            if finished.status == "complete":
                return finished
        print(f"clbench: no checkpoint for this configuration in {state.checkpoint_path.parent}; starting from the first task", file=sys.stderr)
        for note in state.unused_checkpoints():
            print(f"clbench: --resume left alone {note}", file=sys.stderr)
    elif not config.resume and state.checkpoint_path.is_file():
        print(f"clbench: starting over; {state.checkpoint_path} will be replaced (pass --resume to continue it)", file=sys.stderr)
    return None


def _launch(state: _Run, registry: Registry, devices: list[str], log_folder: Path | None) -> RunResult:
    """A multi-process run: its processes train it and rank 0 writes its result, read back here."""
    from cl_bench.running import distributed

    finished = _prepare(state)
    if finished is not None:
        return finished
    distributed.launch(run, [state.config], devices, registry, log_folder)
    return load_valid(state.result_path)


def _execute(state: _Run, registry: Registry, world=None) -> RunResult:
    """The run itself, under its lock: nothing else writes this configuration's files meanwhile.
    `world`: this process's rank in a multi-process run (None: the run's only process)."""
    if world is None:
        finished = _prepare(state)
        if finished is not None:
            return finished
    config = state.config
    leader = world is None or world.leader
    import torch

    from cl_bench.running.build import build
    from cl_bench.running.strategy import LossRecorder

    losses = LossRecorder()
    parts = build(state.plan, plugins=[losses], progress=config.progress and leader, world=world)
    model, stream, method, strategy, plugin = parts.model, parts.stream, parts.method, parts.strategy, parts.matrix
    state.params["backbone"] = parts.backbone_size
    state.built = checkpoint.fingerprints(model.state_dict())
    first_task = 0
    if config.resume and state.checkpoint_path.is_file():
        first_task = state.load_checkpoint(model, method, stream, strategy)
        # Said also under --quiet (which silences progress bars only): a resume changes what runs.
        if leader:
            print(f"clbench: resuming {state.run_id} from {state.checkpoint_path.name} at task {first_task + 1} of {stream.num_tasks}", file=sys.stderr)
        model.to(parts.strategy.device)
        for row, (acc, control) in enumerate(zip(state.acc_rows, state.control_rows)):
            plugin.acc[row], plugin.control[row] = acc, control
    state.timings["setup"] = round(time.perf_counter() - state.started, 3)
    ids = {"run_id": state.run_id, "execution_id": state.execution_id}
    if leader:
        emit(registry, "cl_bench_run_start", **ids, config=config.to_dict(), plan={**state.plan.record(), "first_task": first_task})

    if first_task == 0:
        began = time.perf_counter()
        acc, control = evaluate(strategy, plugin, 0, world, state.plan.method.name)
        if leader:
            state.acc_rows, state.control_rows = [acc], [control]
            state.record_row(plugin, 0)
        state.timings["eval_before"] = round(time.perf_counter() - began, 3)
        if leader:
            emit(registry, "cl_bench_before_training", **ids, row=0, acc_row=acc, control_row=control, timings={"eval": state.timings["eval_before"]})

    train_stream = stream.benchmark.streams["train"]
    for task in range(first_task, stream.num_tasks):
        before = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        strategy.train(train_stream[task])
        if strategy.device.type == "cuda":
            torch.cuda.synchronize(strategy.device)
        trained = time.perf_counter() - began
        check_finite(model, stream.task_names[task], state.plan.hparams)
        state.params["trainable"].append(sum(p.numel() for p in strategy.trainable))
        state.params["added"].append(sum(p.numel() for p in model.parameters()) - before)
        began = time.perf_counter()
        acc, control = evaluate(strategy, plugin, task + 1, world, state.plan.method.name)
        if not leader:
            losses.take()
            continue
        state.acc_rows.append(acc)
        state.control_rows.append(control)
        state.record_row(plugin, task + 1)
        iters = int(state.plan.hparams["iters"]) if strategy.trainable else 0
        state.timings["experiences"].append(
            {"task": stream.task_names[task], "train": round(trained, 3), "eval": round(time.perf_counter() - began, 3), "iters": iters}
        )
        if task + 1 < stream.num_tasks:
            state.save_checkpoint(task + 1, model, method, strategy)
            write_result(state.result_path, state.document("partial", stream, model))
        emit(registry, "cl_bench_experience_end", **ids, task=task, row=task + 1, acc_row=acc, control_row=control, timings=state.timings["experiences"][-1], losses=losses.take())

    if not leader:
        return RunResult({}, None)
    state.params["final"] = sum(p.numel() for p in model.parameters())
    document = state.document("complete", stream, model)
    write_result(state.result_path, document)
    checkpoint.remove(state.checkpoint_path)
    emit(registry, "cl_bench_run_end", **ids, path=str(state.result_path), result=document)
    return RunResult(document, state.result_path)


def evaluate(strategy, plugin, row: int, world, method_name: str = "") -> tuple[list[float], list[float]]:
    """Row `row` of both matrices (meaningful on rank 0), after which every rank holds the same state.

    One process evaluates alone. In a multi-process run that shares the cells' batches out
    (`plugin.world`), every rank first takes rank 0's state where its own differs (each evaluates
    a share with the same model), and afterwards the states are compared again: a rank that
    differs then means evaluation changed the state by what each share saw, which one process
    seeing every batch need not match, so the run stops. Otherwise rank 0 evaluates while the
    others wait, and any state its evaluation changed is passed on to them."""
    from cl_bench.running.evaluation import evaluate_row

    if world is None:
        return evaluate_row(strategy, plugin, row)
    model, method = strategy.model, strategy.method
    if plugin.world is None:
        acc, control = evaluate_row(strategy, plugin, row) if world.leader else ([], [])
        world.sync_state(model, method)
        return acc, control
    world.sync_state(model, method)
    acc, control = evaluate_row(strategy, plugin, row)
    if world.sync_state(model, method):
        raise UserError(
            f"evaluating row {row} changed the state of method '{method_name}' or of its model differently in each process, so the cells of a shared "
            "evaluation need not be one process's; set shards_evaluation = False on the method (or the model), or run with --nproc 1"
        )
    return acc, control


def emit(registry: Registry, event: str, **arguments: Any) -> None:
    for failure in registry.emit(event, detach_failed=True, **arguments):
        print(f"clbench: warning: {failure}", file=sys.stderr)
