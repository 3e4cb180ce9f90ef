"""`plan(config) -> RunPlan` and `build(plan) -> RunParts`: a run between its settings and its training.

`plan` resolves a configuration once and checks all of it before any work: the registry look-ups,
typed parameters after profiles, the task count, the data root, the weights file and its sha256,
the device, precision and threads, the loggers and the output folder. The run id hashes the plan's
*identity* (the canonical, resolved values that decide the numbers: every spelling of one run has
one id; the weights enter by hash, not by path). `build` makes the model, the stream, the method and
the strategy from a plan; the runner, the benchmarks and the test helpers all start from it.

Importing this module loads no heavy library: `clbench sweep` plans its grid without torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cl_bench.config.registry import Registry
from cl_bench.config.run_config import RunConfig, data_root_or_env, default_threads
from cl_bench.contracts.method import Method, as_method
from cl_bench.contracts.specs import BackboneSpec, MethodSpec, Weights, resolve_factory
from cl_bench.errors import UserError, clip
from cl_bench.paths import check_writable_folder
from cl_bench.results.identity import canonical_json, run_id_of

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Resolved:
    """One registry entry (method, scenario or backbone) as this run uses it."""

    name: str
    version: str
    plugin: str
    params: dict[str, Any]
    spec: Any = field(repr=False, compare=False)
    distribution: str | None = None  # the installed package providing the plugin, "name version"

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params}


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, resolved and checked; `identity()` is what its run id hashes."""

    config: RunConfig  # the settings as given (kept in the result file, so the run repeats)
    method: Resolved  # params: the hyper-parameters after defaults, profile and the user's values
    scenario: Resolved
    backbone: Resolved
    protocol: str
    num_tasks: int
    weights: Weights | None
    seed: int
    device: str
    precision: str
    threads: int
    data_root: str | None
    out: Path
    run_id: str
    data_sha256: str | None = None  # the stream's declared data files, hashed (None: it declares none)
    # The method object planning made to check its hyper-parameters, handed to the first `build`
    # (a plugin's factory runs once per run); a second build of the same plan makes a fresh one.
    made_method: dict[str, Method] = field(default_factory=dict, repr=False, compare=False)

    @property
    def result_path(self) -> Path:
        return self.out / f"{self.run_id}.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.result_path.with_suffix(".ckpt")

    @property
    def hparams(self) -> dict[str, Any]:
        return self.method.params

    def identity(self) -> dict[str, Any]:
        return identity_of(self.method, self.scenario, self.backbone, self.weights, self.seed, self.precision, self.data_sha256)

    def identity_json(self) -> str:
        return canonical_json(self.identity())

    def record(self) -> dict[str, Any]:
        """The plan as the result file (`plan`) and the `run_start` event record it: the identity
        the run id hashes, and each part as resolved, with the plugin that provided it."""
        return {
            "identity": self.identity(),
            "method": {"name": self.method.name, "version": self.method.version, "plugin": self.method.plugin, "hyperparameters": self.hparams},
            "scenario": {
                "name": self.scenario.name, "version": self.scenario.version, "plugin": self.scenario.plugin,
                "protocol": self.protocol, "params": self.scenario.params, "num_tasks": self.num_tasks,
            },
            "backbone": {
                "name": self.backbone.name,
                "version": self.backbone.version,
                "plugin": self.backbone.plugin,
                "params": self.backbone.params,
                "weights": self.weights.path if self.weights else None,
                "weights_sha256": self.weights.sha256 if self.weights else None,
            },
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "threads": self.threads,
            "data_root": self.data_root,
            "out": str(self.out),
            "result_path": str(self.result_path),
        }


def identity_of(method: Resolved, scenario: Resolved, backbone: Resolved, weights: Weights | None, seed: int, precision: str, data_sha256: str | None = None) -> dict[str, Any]:
    """The values that decide a run's numbers; the path of the weights gives way to their hash, and
    the data files a stream declares enter by their hash (only for such streams: the others' run
    ids stay as they were)."""
    backbone_params = {k: v for k, v in backbone.params.items() if k != backbone.spec.weights_param}
    return {
        "method": method.identity(),
        "scenario": {**scenario.identity(), **({"data_sha256": data_sha256} if data_sha256 else {})},
        "backbone": {"name": backbone.name, "version": backbone.version, "params": backbone_params, "weights_sha256": weights.sha256 if weights else None},
        "seed": seed,
        "precision": precision,
    }


# ------------------------------------------------------------------------------------ resolving


def resolve_device(name: str) -> str:
    """auto, cpu, cuda or cuda:N (as `RunConfig.check` admits) as a device that exists here."""
    import torch

    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


def resolve_precision(precision: str, device: str) -> str:
    """auto becomes bf16 (fp16 where bf16 is missing) on CUDA and fp32 on CPU."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    on_cuda = device.startswith("cuda")
    if precision == "fp16" and not on_cuda:
        raise UserError("precision fp16 needs a CUDA device (on CPU the run would be fp32); use fp32 or bf16, or --device cuda")
    if precision != "auto":
        return precision
    if on_cuda:
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    from cl_bench.provenance import file_sha256

    return file_sha256(path)


def hash_weights(path: str) -> Weights:
    """The weights file (or folder) and its sha256 (each file hashed once per version in a process:
    a sweep plans many runs). A folder's sha256 covers every file in it (`files_sha256`): config,
    tokenizer and weights all decide the numbers."""
    file = Path(path)
    try:
        if file.is_dir():
            # Hidden files (.DS_Store, a .cache) decide nothing and are left out.
            files = sorted(p for p in file.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(file).parts))
            return Weights(str(file), files_sha256(file, files))
        stat = file.stat()
        return Weights(str(file), _hash_file(str(file), stat.st_size, stat.st_mtime_ns))
    except OSError as exc:
        raise UserError(f"cannot read the weights file {path}: {exc.strerror or exc}") from None


def files_sha256(root: Path, files: list[Path]) -> str:
    """One sha256 for a set of files under `root`: over each file's relative path and sha256, in
    order, so a renamed, added, removed or changed file changes it."""
    lines = []
    for file in files:
        stat = file.stat()
        lines.append(f"{file.relative_to(root).as_posix()}\0{_hash_file(str(file), stat.st_size, stat.st_mtime_ns)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def hash_data(spec, params: dict[str, Any], data_root: str | None) -> str | None:
    """The sha256 of the data files a stream declares it reads (`ScenarioSpec.data_files`), or None."""
    if spec.data_files is None:
        return None
    files = [Path(f) for f in spec.data_files(params, data_root)]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise UserError(f"{spec.name}: {missing} is missing; the stream reads it (check --data-root)")
    try:
        return files_sha256(Path(data_root or "."), files)
    except (OSError, ValueError) as exc:
        raise UserError(f"{spec.name}: cannot hash its data files under {data_root}: {getattr(exc, 'strerror', None) or exc}") from None


def _resolved(registry: Registry, kind: str, name: str, params: dict[str, Any]) -> Resolved:
    registered = registry.get(kind, name)
    return Resolved(name, registered.spec.version, registered.plugin, params, registered.spec, registered.distribution)


def plan(config: RunConfig, registry: Registry | None = None) -> RunPlan:
    """Resolve and check `config` for one run; raises a one-line `UserError` for the first problem."""
    registry = registry or Registry()
    config.check()
    method_spec = registry.get("method", config.method).spec
    scenario_spec = registry.get("scenario", config.scenario).spec
    backbone_spec = registry.get("backbone", config.backbone).spec
    if scenario_spec.protocol not in method_spec.supports.protocols:
        raise UserError(f"method '{method_spec.name}' does not support the {scenario_spec.protocol} protocol of '{scenario_spec.name}'")
    if scenario_spec.protocol not in backbone_spec.protocols:
        fitting = [name for name, spec in registry.backbones().items() if scenario_spec.protocol in spec.protocols]
        raise UserError(
            f"backbone '{backbone_spec.name}' cannot be scored under the {scenario_spec.protocol} protocol of '{scenario_spec.name}'; "
            f"use --backbone {' or '.join(fitting) or '<a backbone for it>'}"
        )
    if backbone_spec.kind not in method_spec.supports.backbone_kinds:
        raise UserError(f"method '{method_spec.name}' does not run on {backbone_spec.kind} backbones like '{backbone_spec.name}'")

    given = dict(config.method_params)
    for key in ("iters", "batch_size"):  # the shortcuts are spellings of method.<key>
        if getattr(config, key) is not None:
            given[key] = getattr(config, key)
    method = _resolved(registry, "method", config.method, method_spec.resolve(backbone_spec.name, given, backbone_spec.kind, backbone_spec.method_defaults))
    scenario_params = scenario_spec.resolve(config.scenario_params)
    scenario = _resolved(registry, "scenario", config.scenario, scenario_params)
    backbone_given = dict(config.backbone_params)
    if config.pretrained:
        backbone_given[backbone_spec.weights_param] = config.pretrained
    backbone = _resolved(registry, "backbone", config.backbone, backbone_spec.resolve(backbone_given))

    if config.nproc > 1:  # each rank's shard of every (micro-)batch must be equal: the mean of their means is then the batch's
        batch, accum = int(method.params["batch_size"]), int(method.params.get("grad_accum", 1))
        if batch % (config.nproc * accum):
            split = f"{config.nproc} processes" + (f" x {accum} micro-batches (method.grad_accum)" if accum > 1 else "")
            raise UserError(f"--nproc {config.nproc}: the batch size {batch} does not split into {split} of equal size; choose a batch size divisible by {config.nproc * accum}")
    data_root = data_root_or_env(config.data_root)
    problem = scenario_spec.check_data(data_root) if scenario_spec.check_data else None
    if problem:
        raise UserError(problem)
    weights = hash_weights(backbone_spec.weights_file(backbone.params)) if backbone_spec.weights_file else None
    data_sha256 = hash_data(scenario_spec, scenario_params, data_root)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    check_sharding(config, method_spec, backbone_spec, precision)
    made = build_method(method)  # its factory refuses bad hyper-parameters here, before any work
    check_loggers(registry, config.log)
    check_writable_folder(config.out, "--out")
    identity = identity_of(method, scenario, backbone, weights, config.seed, precision, data_sha256)
    return RunPlan(
        config=config,
        method=method,
        scenario=scenario,
        backbone=backbone,
        protocol=scenario_spec.protocol,
        num_tasks=scenario_spec.task_count(scenario_params),
        weights=weights,
        seed=config.seed,
        device=device,
        precision=precision,
        threads=config.threads or default_threads(config.nproc),
        data_root=data_root,
        out=Path(config.out),
        run_id=run_id_of(identity),
        data_sha256=data_sha256,
        made_method={"method": made},
    )


def check_sharding(config: RunConfig, method_spec: MethodSpec, backbone_spec: BackboneSpec, precision: str) -> None:
    """`shard_weights` only where it is exact (docs/multi-process.md, Sharded training)."""
    if not config.shard_weights:
        return
    if config.nproc < 2:
        raise UserError("shard_weights shards the weights over the processes of a run: it needs --nproc 2 or more")
    if not backbone_spec.shardable:
        raise UserError(
            f"shard_weights: backbone '{backbone_spec.name}' cannot be sharded (only language models, whose weights may not fit one device, "
            "are split into blocks for it); drop shard_weights: --nproc alone trains it data-parallel"
        )
    if not method_spec.supports.sharded:
        raise UserError(
            f"shard_weights: method '{method_spec.name}' does not train sharded (its hooks read whole weights during training or keep parameters "
            "outside the model; docs/multi-process.md, Sharded training); drop shard_weights"
        )
    if precision == "fp16":  # each process would see only its shards' overflows and skip steps on its own
        raise UserError("shard_weights does not train under fp16's grad scaler; use --precision bf16 (or fp32)")


def check_loggers(registry: Registry, names: list[str]) -> None:
    for name in dict.fromkeys(names):
        problem = registry.get("logger", name).spec.missing_packages()
        if problem:
            raise UserError(f"logger '{name}' {problem}")


def setting_error(method: str, exc: ValueError) -> UserError:
    """A method's own complaint about its settings, as the one-line error naming the method."""
    return UserError(f"method '{method}': {clip(str(exc), 200)}")


def build_method(method: Resolved) -> Method:
    """The method object for one run; a plugin's own ValueError about its settings is a one-line error."""
    try:
        made = resolve_factory(method.spec.factory)(dict(method.params))
    except ValueError as exc:
        raise setting_error(method.name, exc) from None
    return as_method(made, method.name)
