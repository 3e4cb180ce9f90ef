"""`run(config)`: one continual-learning run from configuration to result file (DESIGN section 3).

After every experience the runner writes a checkpoint and a partial result, both atomically;
`resume=True` continues from the checkpoint and, because every experience is seeded on its own,
ends with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import sys
import time
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import checkpoint, locks
from .errors import UserError, clip
from .paths import check_writable_folder
from .provenance import hardware_info, versions_info
from .plugins import Registry
from .results import SCHEMA, SWEEP_LOGS, RunResult, load, load_valid, remove_stale_temporaries, validate, write_json
from .spec import Method, RunConfig, ScenarioContext, as_method, data_root_or_env, default_threads, resolve_factory
# Third-party warnings that say nothing to a cl_bench user.
QUIET = ("No loggers specified", "no QP solver", "QP solver", "positional arguments", "torch.distributed")


def quiet_third_party_warnings() -> None:
    for text in QUIET:
        warnings.filterwarnings("ignore", message=f".*{text}.*")
    for module in ("avalanche", "torchvision", "open_clip", "timm", "qpsolvers", "pytorchcv"):
        warnings.filterwarnings("ignore", module=module)


def resolve_device(name: str):
    """auto, cpu, cuda or cuda:N (as `RunConfig.check` admits) as a torch device that exists here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def run_id_for(config: RunConfig, versions: Iterable[str]) -> str:
    digest = hashlib.sha256((config.identity_json() + "|" + "|".join(versions)).encode()).hexdigest()[:8]
    return f"{config.scenario}_{config.method}_{config.backbone}_seed{config.seed}_{digest}"


def result_path_for(config: RunConfig, registry: Registry) -> Path:
    """Where `config`'s result file goes (its run id names it), without building anything."""
    versions = tuple(registry.get(kind, getattr(config, kind)).spec.version for kind in ("method", "scenario", "backbone"))
    return Path(config.out) / f"{run_id_for(config, versions)}.json"


class _Run:
    """The state of one run, shared by the steps below. Building it checks every setting and does no work."""

    def __init__(self, config: RunConfig, registry: Registry) -> None:
        config.check()
        self.config = config
        self.started = time.perf_counter()
        self.method_reg = registry.get("method", config.method)
        self.scenario_reg = registry.get("scenario", config.scenario)
        self.backbone_reg = registry.get("backbone", config.backbone)
        method_spec, scenario_spec, backbone_spec = self.method_reg.spec, self.scenario_reg.spec, self.backbone_reg.spec
        if scenario_spec.protocol not in method_spec.supports.protocols:
            raise UserError(f"method '{method_spec.name}' does not support the {scenario_spec.protocol} protocol of '{scenario_spec.name}'")
        if backbone_spec.kind not in method_spec.supports.backbone_kinds:
            raise UserError(f"method '{method_spec.name}' does not run on {backbone_spec.kind} backbones like '{backbone_spec.name}'")
        given = dict(config.method_params)
        for key in ("iters", "batch_size"):
            if getattr(config, key) is not None:
                given[key] = getattr(config, key)
        self.hparams = method_spec.resolve(backbone_spec.name, given)
        self.scenario_params = scenario_spec.resolve(config.scenario_params)
        backbone_given = dict(config.backbone_params)
        if config.pretrained:
            backbone_given["pretrained"] = config.pretrained
        self.backbone_params = backbone_spec.resolve(backbone_given)
        self.device = resolve_device(config.device)
        from .strategy import resolve_precision

        self.precision = resolve_precision(config.precision, self.device)
        self.result_path = result_path_for(config, registry)
        self.run_id = self.result_path.stem
        self.checkpoint_path = self.result_path.with_suffix(".ckpt")
        self.method = build_method(method_spec.name, method_spec.factory, self.hparams)
        self.data_root = data_root_or_env(config.data_root)
        for check_present, argument in ((scenario_spec.check_data, self.data_root), (backbone_spec.check_weights, self.backbone_params)):
            problem = check_present(argument) if check_present else None
            if problem:
                raise UserError(problem)
        check_writable_folder(config.out, "--out")
        self.loggers = build_loggers(registry, config.log, config.out)
        self.acc_rows: list[list[float]] = []
        self.control_rows: list[list[float]] = []
        self.timings: dict[str, Any] = {"setup": 0.0, "eval_before": 0.0, "experiences": [], "total": 0.0}
        self.params: dict[str, Any] = {"backbone": 0, "trainable": [], "added": [], "final": 0}
        self.elapsed_before = 0.0  # time spent before a resume
        self.execution_id = uuid.uuid4().hex  # this execution; run_id names the configuration

    # ---------------------------------------------------------------- pieces of the result

    def document(self, status: str, stream, model) -> dict[str, Any]:
        from . import metrics

        self.timings["total"] = round(self.elapsed_before + time.perf_counter() - self.started, 3)
        method_spec, backbone_spec = self.method_reg.spec, self.backbone_reg.spec
        complete = status == "complete"
        scenario = {**stream.describe(), "plugin": self.scenario_reg.plugin}
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "execution_id": self.execution_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "status": status,
            "config": self.config.to_dict(),
            "method": {"name": method_spec.name, "version": method_spec.version, "plugin": self.method_reg.plugin, "paper": method_spec.paper, "hyperparameters": self.hparams},
            "scenario": scenario,
            "backbone": {
                "name": backbone_spec.name,
                "version": backbone_spec.version,
                "plugin": self.backbone_reg.plugin,
                "params": self.backbone_params,
                "weights_sha256": model.weights_sha256,
            },
            "seed": self.config.seed,
            "versions": versions_info(),
            "hardware": hardware_info(self.device, self.precision, self.config.threads),
            "acc_matrix": self.acc_rows,
            "control_matrix": self.control_rows,
            "metrics": metrics.compute(self.acc_rows, self.control_rows if stream.control_names else None, protocol=stream.protocol, test_sizes=scenario["test_sizes"]) if complete else {},
            "timings": self.timings,
            "params": self.params,
        }

    def resolved(self, first_task: int) -> dict[str, Any]:
        """The run as resolved (typed, after profiles and defaults): what loggers record at run_start."""
        method_spec, scenario_spec, backbone_spec = self.method_reg.spec, self.scenario_reg.spec, self.backbone_reg.spec
        return {
            "method": {"name": method_spec.name, "version": method_spec.version, "plugin": self.method_reg.plugin, "hyperparameters": self.hparams},
            "scenario": {"name": scenario_spec.name, "version": scenario_spec.version, "protocol": scenario_spec.protocol, "params": self.scenario_params},
            "backbone": {"name": backbone_spec.name, "version": backbone_spec.version, "params": self.backbone_params},
            "seed": self.config.seed,
            "device": str(self.device),
            "precision": self.precision,
            "data_root": self.data_root,
            "out": self.config.out,
            "result_path": str(self.result_path),
            "first_task": first_task,
        }

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, next_task: int, model, method) -> None:
        progress = {"acc": self.acc_rows, "control": self.control_rows, "timings": self.timings, "params": self.params, "elapsed": self.elapsed_before + time.perf_counter() - self.started}
        checkpoint.save(
            self.checkpoint_path, run_id=self.run_id, identity=self.config.identity_json(), next_task=next_task, progress=progress, model=model.state_dict(), method=method.state_dict()
        )

    def load_checkpoint(self, model, method, stream) -> int:
        path = self.checkpoint_path
        saved = checkpoint.load(path, identity=self.config.identity_json(), num_tasks=stream.num_tasks, num_controls=len(stream.control_names))
        try:
            method.load_state_dict(saved.method)
            model.load_state_dict(saved.model, strict=True)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            raise UserError(f"checkpoint {path} does not fit this run ({clip(str(exc))}); delete it to start over") from None
        progress = saved.progress
        self.acc_rows, self.control_rows = progress["acc"], progress["control"]
        self.timings, self.params = progress["timings"], progress["params"]
        self.elapsed_before = float(progress["elapsed"])
        return saved.next_task

    def unused_checkpoints(self) -> list[str]:
        """The other checkpoints in --out, each with how its configuration differs from this run's."""
        notes = []
        mine = self.config.identity()
        for other in sorted(self.checkpoint_path.parent.glob("*.ckpt")):
            if other == self.checkpoint_path:
                continue
            try:
                theirs = load(other.with_suffix(".json"))["config"]
                differ = [f"{key} {clip(repr(theirs.get(key)), 40)} there, {clip(repr(value), 40)} here" for key, value in mine.items() if theirs.get(key) != value]
                why = "another configuration: " + "; ".join(differ) if differ else "another cl_bench or plugin version"
            except (UserError, KeyError, TypeError, AttributeError):
                why = "its configuration is unknown: no readable partial result beside it"
            notes.append(f"{other.name} ({why})")
        return notes


def check(config: RunConfig, registry: Registry) -> Path:
    """Check every setting of `config` as `run` would, without doing any work; returns its result path."""
    return _Run(config, registry).result_path


def build_method(name: str, factory, hparams: dict[str, Any]) -> Method:
    """The method object for one run; a plugin's own ValueError about its settings is a one-line error."""
    try:
        made = resolve_factory(factory)(dict(hparams))
    except ValueError as exc:
        raise setting_error(name, exc) from None
    return as_method(made, name)


def build_loggers(registry: Registry, names: Iterable[str], out: str) -> list[object]:
    """The run's experiment trackers (`--log`), each checked for its packages before any work."""
    loggers = []
    for name in dict.fromkeys(names):
        spec = registry.get("logger", name).spec
        problem = spec.missing_packages()
        if problem:
            raise UserError(f"logger '{name}' {problem}")
        loggers.append(resolve_factory(spec.factory)(str(Path(out) / SWEEP_LOGS)))
    return loggers


def setting_error(method: str, exc: ValueError) -> UserError:
    """A method's own complaint about its settings, as the one-line error naming the method."""
    return UserError(f"method '{method}': {clip(str(exc), 200)}")


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


def run(config: RunConfig, *, registry: Registry | None = None, plugins: Iterable[object] = ()) -> RunResult:
    """Run one configuration to the end and write its result file; returns the result."""
    quiet_third_party_warnings()
    registry = registry or Registry(plugins)
    state = _Run(config, registry)
    import torch

    lock = state.result_path.with_name(f".{state.run_id}.lock")
    created = not lock.parent.exists()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locks.held(lock, wait=False), registry.attached(state.loggers):
            return _execute(state, registry)
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


def _execute(state: _Run, registry: Registry) -> RunResult:
    """The run itself, under its lock: nothing else writes this configuration's files meanwhile."""
    config = state.config
    for path in (state.result_path, state.checkpoint_path):
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
    scenario_spec, backbone_spec, method_spec = state.scenario_reg.spec, state.backbone_reg.spec, state.method_reg.spec

    import torch

    from .evaluation import AccuracyMatrix, evaluate_row
    from .seeding import seed_everything
    from .strategy import ClStrategy

    seed_everything(config.seed)
    model = resolve_factory(backbone_spec.factory)(state.backbone_params)
    stream = resolve_factory(scenario_spec.factory)(state.scenario_params, ScenarioContext(state.data_root, model.image_size))
    for param in model.parameters():
        param.requires_grad_(False)
    state.params["backbone"] = sum(p.numel() for p in model.parameters())
    model.set_classes(stream.prompts())
    method = state.method
    try:
        method.setup(model, stream)
    except ValueError as exc:  # a setting that only the model's shapes refute (a rank too large, ...)
        raise setting_error(method_spec.name, exc) from None
    model.to(state.device)
    plugin = AccuracyMatrix(stream)
    strategy = ClStrategy(
        model=model,
        method=method,
        stream=stream,
        hparams=state.hparams,
        device=state.device,
        precision=state.precision,
        seed=config.seed,
        eval_batch_size=config.eval_batch_size,
        num_workers=config.num_workers,
        plugins=[plugin],
        progress=config.progress,
    )
    first_task = 0
    if config.resume and state.checkpoint_path.is_file():
        first_task = state.load_checkpoint(model, method, stream)
        model.to(state.device)
        for row, (acc, control) in enumerate(zip(state.acc_rows, state.control_rows)):
            plugin.acc[row], plugin.control[row] = acc, control
    state.timings["setup"] = round(time.perf_counter() - state.started, 3)
    ids = {"run_id": state.run_id, "execution_id": state.execution_id}
    emit(registry, "cl_bench_run_start", **ids, config=config.to_dict(), plan=state.resolved(first_task))

    if first_task == 0:
        began = time.perf_counter()
        acc, control = evaluate_row(strategy, plugin, 0)
        state.acc_rows, state.control_rows = [acc], [control]
        state.timings["eval_before"] = round(time.perf_counter() - began, 3)
        emit(registry, "cl_bench_before_training", **ids, row=0, acc_row=acc, control_row=control, timings={"eval": state.timings["eval_before"]})

    train_stream = stream.benchmark.streams["train"]
    for task in range(first_task, stream.num_tasks):
        before = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        strategy.train(train_stream[task])
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        trained = time.perf_counter() - began
        check_finite(model, stream.task_names[task], state.hparams)
        state.params["trainable"].append(sum(p.numel() for p in strategy.trainable))
        state.params["added"].append(sum(p.numel() for p in model.parameters()) - before)
        began = time.perf_counter()
        acc, control = evaluate_row(strategy, plugin, task + 1)
        state.acc_rows.append(acc)
        state.control_rows.append(control)
        iters = int(state.hparams["iters"]) if strategy.trainable else 0
        state.timings["experiences"].append(
            {"task": stream.task_names[task], "train": round(trained, 3), "eval": round(time.perf_counter() - began, 3), "iters": iters}
        )
        if task + 1 < stream.num_tasks:
            state.save_checkpoint(task + 1, model, method)
            write_result(state.result_path, state.document("partial", stream, model))
        emit(registry, "cl_bench_experience_end", **ids, task=task, row=task + 1, acc_row=acc, control_row=control, timings=state.timings["experiences"][-1])

    state.params["final"] = sum(p.numel() for p in model.parameters())
    document = state.document("complete", stream, model)
    write_result(state.result_path, document)
    state.checkpoint_path.unlink(missing_ok=True)
    emit(registry, "cl_bench_run_end", **ids, path=str(state.result_path), result=document)
    return RunResult(document, state.result_path)


def emit(registry: Registry, event: str, **arguments: Any) -> None:
    for failure in registry.emit(event, **arguments):
        print(f"clbench: warning: {failure}", file=sys.stderr)
