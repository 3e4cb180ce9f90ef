"""What plugins declare (MethodSpec, ScenarioSpec, BackboneSpec), the per-run `Method` protocol and
the run configuration.

This module imports no heavy library: `clbench ls` and `clbench --help` read specs without torch.
A spec's `factory` may be a callable or an import path "package.module:attribute", so that a
plugin module can register itself cheaply and import torch only when a run starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import UserError, clip, shown, unknown_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor, nn

    from .model import Backbone
    from .stream import Experience, Stream

PROTOCOLS = ("class-il", "domain-il", "mtil", "x-tail", "instruct")
IMAGE_PROTOCOLS = ("class-il", "domain-il", "mtil", "x-tail")  # classification by image
TEXT_PROTOCOLS = ("instruct",)  # generated answers, scored per task
# Backbone kinds of the built-in backbones (a plugin may declare others).
BACKBONE_KINDS = ("clip", "causal-lm")

# Training hyper-parameters every method has; a MethodSpec's defaults and profiles override them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "iters": 500,  # optimiser steps per experience
    "batch_size": 64,
    "lr": 5e-4,
    "weight_decay": 0.0,
    "warmup_iters": 0,  # linear warm-up before the cosine decay
}


def resolve_factory(factory: Callable[..., Any] | str) -> Callable[..., Any]:
    """Return the callable behind a factory given as a callable or as "module:attribute"."""
    if callable(factory):
        return factory
    module_name, _, attr = str(factory).partition(":")
    if not attr:
        raise UserError(f"factory '{factory}' must be a callable or 'package.module:attribute'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load factory '{factory}': {exc}") from exc


@dataclass(frozen=True)
class Supports:
    """What a method can run on: evaluation protocols and backbone kinds."""

    protocols: tuple[str, ...] = PROTOCOLS
    backbone_kinds: tuple[str, ...] = ("clip",)


@dataclass(frozen=True)
class MethodSpec:
    """A continual-learning method, as a plugin declares it.

    `factory(hparams)` builds the per-run `Method` from the resolved hyper-parameters: the core
    training defaults, then `defaults`, then `kind_defaults[backbone kind]`, then
    `profiles[backbone name]`, then the user's values. Each default's Python type is the
    parameter's type (int, float, bool, str, list). `kind_defaults` may add parameters that only
    runs on that kind of backbone have (a language model's decoding of the LoRA scale, say), so
    adding a track leaves the other tracks' hyper-parameters, and run ids, as they were.
    """

    name: str
    factory: Callable[[dict[str, Any]], Method] | str
    summary: str
    paper: str = ""
    supports: Supports = Supports()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    version: str = "1"
    kind_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resolve(self, backbone: str, given: Mapping[str, Any], kind: str = "clip") -> dict[str, Any]:
        base = {**TRAIN_DEFAULTS, **self.defaults, **self.kind_defaults.get(kind, {})}
        for key in self.profiles.get(backbone, {}):
            if key not in base:
                raise UserError(f"method '{self.name}' profile '{backbone}' sets unknown parameter '{key}'")
        base.update(self.profiles.get(backbone, {}))
        resolved = resolve_params(f"method '{self.name}'", "method", base, given)
        check_training(resolved)
        return resolved


@dataclass
class ScenarioContext:
    """What a scenario factory may need beyond its parameters.

    `image_size` is what the backbone wants images resized to (None for a model without images);
    `encode_examples` is the backbone's `encode_examples` for text streams (None for a model without
    a tokenizer): it turns `{prompt, answer}` examples into the tensors its batches hold.
    """

    data_root: str | None
    image_size: int | None
    encode_examples: Callable[..., Any] | None = None


@dataclass(frozen=True)
class ScenarioSpec:
    """A stream (benchmark) family member, as a plugin declares it.

    `factory(params, context)` returns a `cl_bench.stream.Stream`; `context` is a
    `ScenarioContext` (data root, image size the backbone wants, its text encoder). `check_data(data_root)` returns
    None when the data is present, else a short message naming what is missing.
    `pretraining_data()` (embedded scenarios only) returns {source name: PretrainingSplit} used by
    the tiny-clip pre-training script. `check_params(params)` refuses values of the right type that
    the stream cannot take (raise `UserError`, one line), before any data loads; the factory may
    assume they passed. `count_tasks(params)` is the number of tasks the parameters make, for a
    stream whose count they change (else `num_tasks`).
    """

    name: str
    factory: Callable[..., Any] | str
    summary: str
    protocol: str
    num_tasks: int
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version: str = "1"
    check_data: Callable[[str | None], str | None] | None = None
    pretraining_data: Callable[[], Mapping[str, Any]] | None = None
    check_params: Callable[[Mapping[str, Any]], None] | None = None
    count_tasks: Callable[[Mapping[str, Any]], int] | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"scenario '{self.name}': protocol must be one of {PROTOCOLS}, not {self.protocol!r}")

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Typed parameters (defaults, then `given`), checked by `check_params`."""
        resolved = resolve_params(f"scenario '{self.name}'", "scenario", dict(self.defaults), given)
        if self.check_params:
            self.check_params(resolved)
        return resolved

    def task_count(self, params: Mapping[str, Any]) -> int:
        """The number of tasks of the stream these resolved parameters make."""
        return self.count_tasks(params) if self.count_tasks else self.num_tasks


@dataclass(frozen=True)
class Weights:
    """The weights file a run's backbone loads, hashed once when the run is planned."""

    path: str
    sha256: str


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: `factory(params, weights)` returns a model that subclasses `cl_bench.Backbone`.

    `weights_file(params)` names the file the factory will load for these parameters (the run plan
    hashes it: the hash, not the path, is part of the run id), or raises `UserError` saying what is
    missing and where to put it; `weights` is then `Weights(path, sha256)` (None without
    `weights_file`). `weights_param` is the parameter holding a user-given path, left out of the
    run id. `protocols` are the evaluation protocols its models can be scored under (image
    classification for CLIP-like models, `TEXT_PROTOCOLS` for language models). Factories must
    never download anything.
    """

    name: str
    factory: Callable[[dict[str, Any], Weights | None], Any] | str
    summary: str
    kind: str = "clip"
    protocols: tuple[str, ...] = IMAGE_PROTOCOLS
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version: str = "1"
    weights_file: Callable[[Mapping[str, Any]], str] | None = None
    weights_param: str = "pretrained"

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_params(f"backbone '{self.name}'", "backbone", dict(self.defaults), given)


@dataclass(frozen=True)
class LoggerSpec:
    """An experiment tracker fed by the run events: `factory(folder)` returns a plugin object.

    The object implements some of the run-event hooks (`cl_bench_run_start`, ...) with
    `@cl_bench.hookimpl`; it is attached to the run's plugin manager for that run only. `folder` is
    `<out>/logs`, where a tracker keeps a local store unless told otherwise (report and publish
    never read it as results). `requires` names the modules it imports; a missing one is reported
    before any work.
    """

    name: str
    factory: Callable[[str], Any] | str
    summary: str
    requires: tuple[str, ...] = ()
    install: str = ""  # what to pip install when `requires` is missing

    def missing_packages(self) -> str | None:
        """None when every required module imports, else what is missing and how to install it."""
        import importlib.util

        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if not missing:
            return None
        return f"needs the {', '.join(missing)} package; install it with: pip install {self.install or ' '.join(missing)}"


@runtime_checkable
class Method(Protocol):
    """The per-run method object. The shared strategy calls it directly (no pluggy on the hot path).

    Subclass it to inherit the defaults below and override what your method changes. All model
    parameters are frozen before `setup`; the strategy trains exactly `trainable_parameters`.
    """

    def setup(self, model: Backbone, stream: Stream) -> None:
        """Wrap layers, add prompts or experts. Called once, before row 0 is evaluated."""

    def before_experience(self, model: Backbone, experience: Experience) -> None:
        """Grow or reset per-task state before training on `experience`."""

    def trainable_parameters(self, model: Backbone) -> Iterable[nn.Parameter]:
        """The parameters to optimise during the coming experience."""
        return []

    def extra_loss(self, model: Backbone, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        """A term added to the cross-entropy loss (None for none)."""
        return None

    def make_optimizer(self, params: list[nn.Parameter], hparams: Mapping[str, Any]) -> torch.optim.Optimizer | None:
        """A custom optimiser over `params`, or None for AdamW(lr, weight_decay)."""
        return None

    def after_experience(self, model: Backbone, experience: Experience) -> None:
        """Freeze, merge or consolidate after training on `experience`."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond the model's own tensors (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned; the model is restored after this call."""


METHOD_HOOKS = ("setup", "before_experience", "trainable_parameters", "extra_loss", "make_optimizer", "after_experience", "state_dict", "load_state_dict")


def as_method(candidate: Any, name: str) -> Method:
    """A factory's product as a `Method`: every hook it leaves out falls back to `Method`'s default.

    A plugin need not subclass `Method`: a duck-typed object gets the missing hooks from a
    subclass made for it, which forwards the hooks it has (and every other attribute) to it.
    """
    if candidate is None or isinstance(candidate, (type, str, int, float, bool, list, dict, tuple)):
        raise UserError(f"method '{name}': its factory returned {shown(candidate)}, not a method object; fix the plugin's factory")
    for hook in METHOD_HOOKS:
        if hasattr(candidate, hook) and not callable(getattr(candidate, hook)):
            raise UserError(f"method '{name}': its '{hook}' is {type(getattr(candidate, hook)).__name__}, not a callable; fix the plugin")
    if isinstance(candidate, Method):  # a subclass, or a duck type with every hook
        return candidate
    present = {hook: _forward(hook) for hook in METHOD_HOOKS if hasattr(candidate, hook)}
    completed = type(f"Completed{type(candidate).__name__}", (_Forwarding,), present)
    return completed(candidate)


def _forward(hook: str):
    def forward(self, *args, **kwargs):
        return getattr(self.wrapped, hook)(*args, **kwargs)

    forward.__name__ = hook
    return forward


class _Forwarding(Method):
    """Base of the completions `as_method` makes: attributes not defined here come from `wrapped`."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)


# --------------------------------------------------------------------------------------------
# Typed parameters


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean (true/false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, (list, tuple)):
        return "a comma-separated list"
    return "a string"


def coerce(label: str, value: Any, default: Any) -> Any:
    """Convert `value` (a string from the command line, or a TOML/JSON value) to `default`'s type."""
    wrong = UserError(f"{label} expects {_type_name(default)} (default {shown(default)}), got {shown(value)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "off"}:
            return False
        raise wrong
    if isinstance(default, int):
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise wrong from None
        raise wrong
    if isinstance(default, float):
        if isinstance(value, bool):
            raise wrong
        try:
            number = float(value.strip() if isinstance(value, str) else value) if isinstance(value, (int, float, str)) else None
        except (ValueError, OverflowError):
            raise wrong from None
        if number is None:
            raise wrong
        if not math.isfinite(number):
            raise UserError(f"{label} must be a finite number, got {shown(value)}")
        return number
    if isinstance(default, (list, tuple)):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise wrong
        element = default[0] if default else ""
        return [coerce(label, item.strip() if isinstance(item, str) else item, element) for item in items if item != ""]
    if isinstance(value, str):
        return value
    raise wrong


# Ranges of the training parameters every method has: (lowest allowed, whether the lowest itself is allowed).
TRAIN_RANGES: dict[str, tuple[float, bool]] = {"iters": (1, True), "batch_size": (1, True), "lr": (0.0, False), "weight_decay": (0.0, True), "warmup_iters": (0, True), "grad_accum": (1, True)}


# The learning-rate schedules of the shared strategy; a method has a `schedule` parameter only
# where its defaults set one (cosine where it has none).
SCHEDULES = ("cosine", "constant")


def check_training(hparams: Mapping[str, Any]) -> None:
    """Refuse training parameters outside their range (before any work, not after a task has trained)."""
    if hparams.get("schedule", "cosine") not in SCHEDULES:
        raise UserError(f"method.schedule must be one of {', '.join(SCHEDULES)}, got {shown(hparams['schedule'])}")
    for key, (lowest, inclusive) in TRAIN_RANGES.items():
        value = hparams.get(key)
        if value is None:
            continue
        if value < lowest or (value == lowest and not inclusive):
            bound = f"at least {lowest}" if inclusive else f"greater than {lowest}"
            raise UserError(f"method.{key} must be {bound}, got {shown(value)}")
    accum = hparams.get("grad_accum", 1)  # a parameter where a method's defaults set one (the LLM track's)
    if hparams.get("batch_size") and hparams["batch_size"] % accum:
        raise UserError(f"method.batch_size {hparams['batch_size']} must be a multiple of method.grad_accum {accum} (each step accumulates grad_accum equal micro-batches)")


def resolve_params(owner: str, prefix: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge user values into typed defaults; unknown keys and wrong types are `UserError`s."""
    resolved = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise unknown_name(f"{prefix} parameter", key, defaults, hint=f"(the parameters of {owner})")
        resolved[key] = coerce(f"{prefix}.{key}", value, defaults[key])
    return resolved


# --------------------------------------------------------------------------------------------
# Run configuration


MAX_SEED = 2**32 - 1  # numpy's seed range; torch and random accept it too
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")


@dataclass
class RunConfig:
    """Everything that defines a run. The result file stores it, so a run can be repeated."""

    method: str = "moram"
    scenario: str = "embedded-mtil"
    backbone: str = "tiny-clip"
    seed: int = 0
    iters: int | None = None  # shortcut for method.iters
    batch_size: int | None = None  # shortcut for method.batch_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    data_root: str | None = None
    pretrained: str | None = None  # shortcut for backbone.pretrained
    out: str = "runs"
    eval_batch_size: int = 256
    num_workers: int = 0
    threads: int | None = None  # CPU threads of this run; None: half the usable cores (see default_threads)
    method_params: dict[str, Any] = field(default_factory=dict)
    scenario_params: dict[str, Any] = field(default_factory=dict)
    backbone_params: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # experiment trackers fed by the run events (--log)
    resume: bool = False
    progress: bool = True

    # Fields that name where and how a run executes, not what it computes (the run id comes from
    # the resolved plan, `cl_bench.run_plan`, where these have no part either).
    EXECUTION_FIELDS = ("out", "resume", "progress", "device", "num_workers", "eval_batch_size", "data_root", "threads", "log")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        config = cls()
        for key, value in data.items():
            config.set(key, value, source)
        return config

    def set(self, key: str, value: Any, source: str = "--set") -> None:
        """Apply one `key=value`: a field of this class, or `method.X`, `scenario.X`, `backbone.X`."""
        head, dot, rest = key.partition(".")
        if dot and head in ("method", "scenario", "backbone") and rest:
            getattr(self, f"{head}_params")[rest] = value
            return
        if key in ("method_params", "scenario_params", "backbone_params"):
            if not isinstance(value, Mapping):
                raise UserError(f"{source}: '{key}' must be a table of parameters, got {value!r}")
            getattr(self, key).update(value)
            return
        fields = {f.name: f for f in dataclasses.fields(self)}
        if key not in fields:
            known = [f for f in fields] + ["method.<param>", "scenario.<param>", "backbone.<param>"]
            raise unknown_name("setting", key, known, hint=f"(in {source})")
        default = fields[key].default
        if key in ("iters", "batch_size", "threads"):
            setattr(self, key, None if value is None else coerce(key, value, 1))
        elif key in ("data_root", "pretrained"):
            setattr(self, key, None if value in (None, "") else coerce(key, value, ""))
        elif key == "log":
            names = value.split(",") if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"{source}: 'log' must be logger names (a list, or a comma-separated string), got {shown(value)}")
            self.log = [n.strip() for n in names if n.strip()]
        else:
            setattr(self, key, coerce(key, value, default))

    def check(self) -> None:
        """Refuse values of the right type but outside their range; called before any work."""
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be between 0 and {MAX_SEED} (2^32 - 1), got {shown(self.seed)}")
        if self.eval_batch_size < 1:
            raise UserError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.num_workers < 0:
            raise UserError(f"num_workers must be 0 or more, got {self.num_workers}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise UserError(f"unknown device {shown(self.device)}: use auto, cpu, cuda or cuda:N")
        if self.threads is not None and self.threads < 1:  # iters and batch_size are method.<key>: checked there
            raise UserError(f"threads must be at least 1, got {self.threads}")


def default_threads() -> int:
    """Half the cores this process may use, at least one.

    Measured on two cores (seq-lora, 50 iterations per task): idle, two threads train 1.4x faster
    than one; beside one busy process, two threads train 13x slower than one, since PyTorch's
    threads wait for each other on a core that is taken. Half the cores keeps that cliff away.
    """
    import os

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable // 2)


def data_root_or_env(data_root: str | None) -> str | None:
    """The data root given on the command line or in a config, else $CL_BENCH_DATA, else None."""
    import os

    return data_root or os.environ.get("CL_BENCH_DATA") or None


MAX_CONFIG_BYTES = 1 << 20
# Values a configuration may expand to, counting every reference again: YAML aliases can make a
# few hundred bytes stand for billions of values ("billion laughs").
MAX_CONFIG_VALUES = 10_000


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML, YAML or JSON run configuration (a result file's `config` section works too)."""
    from pathlib import Path

    from .results import OLDER_SCHEMAS, READABLE_SCHEMAS, SCHEMA

    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file '{path}' not found")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"config file '{path}' is over {MAX_CONFIG_BYTES >> 20} MiB; a run configuration is a few lines")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"config file '{path}': use a .toml, .yaml or .json file")
    except UserError:
        raise
    except Exception as exc:  # parse errors of three libraries, nesting too deep (RecursionError)
        raise UserError(f"config file '{path}' cannot be parsed: {clip(str(exc) or type(exc).__name__)}") from None
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise UserError(f"config file '{path}' expands to over {MAX_CONFIG_VALUES} values (YAML aliases?); write the settings out plainly")
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a table of settings")
    if "schema" in data:
        if data["schema"] not in (*READABLE_SCHEMAS, *OLDER_SCHEMAS) or not isinstance(data.get("config"), dict):
            raise UserError(f"config file '{path}' is a {shown(data['schema'])} document, neither a run configuration nor a {SCHEMA} result file")
        data = data["config"]  # a result file: repeat its run
    return data


def _expanded_size(data: Any, cap: int) -> int:
    """How many values `data` holds, counting shared ones each time; stops counting past `cap`."""
    count, pending = 0, [data]
    while pending and count <= cap:
        value = pending.pop()
        count += 1
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return count
