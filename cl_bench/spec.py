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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import UserError, unknown_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor, nn

    from .backbones.clip import ClipModel
    from .stream import Experience, Stream

PROTOCOLS = ("class-il", "domain-il", "mtil", "x-tail")

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
    training defaults, then `defaults`, then `profiles[backbone name]`, then the user's values.
    Each default's Python type is the parameter's type (int, float, bool, str, list).
    """

    name: str
    factory: Callable[[dict[str, Any]], Method] | str
    summary: str
    paper: str = ""
    supports: Supports = Supports()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    version: str = "1"

    def resolve(self, backbone: str, given: Mapping[str, Any]) -> dict[str, Any]:
        base = {**TRAIN_DEFAULTS, **self.defaults}
        for key in self.profiles.get(backbone, {}):
            if key not in base:
                raise UserError(f"method '{self.name}' profile '{backbone}' sets unknown parameter '{key}'")
        base.update(self.profiles.get(backbone, {}))
        return resolve_params(f"method '{self.name}'", "method", base, given)


@dataclass(frozen=True)
class ScenarioSpec:
    """A stream (benchmark) family member, as a plugin declares it.

    `factory(params, context)` returns a `cl_bench.stream.Stream`; `context` is a
    `ScenarioContext` (data root, image size the backbone wants). `check_data(data_root)` returns
    None when the data is present, else a short message naming what is missing.
    `pretraining_data()` (embedded scenarios only) returns {source name: PretrainingSplit} used by
    the tiny-clip pre-training script.
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

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"scenario '{self.name}': protocol must be one of {PROTOCOLS}, not {self.protocol!r}")

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_params(f"scenario '{self.name}'", "scenario", dict(self.defaults), given)


@dataclass(frozen=True)
class BackboneSpec:
    """A CLIP-like backbone: `factory(params)` returns a `cl_bench.backbones.clip.ClipModel`."""

    name: str
    factory: Callable[[dict[str, Any]], Any] | str
    summary: str
    kind: str = "clip"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version: str = "1"
    check_weights: Callable[[Mapping[str, Any]], str | None] | None = None

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_params(f"backbone '{self.name}'", "backbone", dict(self.defaults), given)


@runtime_checkable
class Method(Protocol):
    """The per-run method object. The shared strategy calls it directly (no pluggy on the hot path).

    Subclass it to inherit the defaults below and override what your method changes. All model
    parameters are frozen before `setup`; the strategy trains exactly `trainable_parameters`.
    """

    def setup(self, model: ClipModel, stream: Stream) -> None:
        """Wrap layers, add prompts or experts. Called once, before row 0 is evaluated."""

    def before_experience(self, model: ClipModel, experience: Experience) -> None:
        """Grow or reset per-task state before training on `experience`."""

    def trainable_parameters(self, model: ClipModel) -> Iterable[nn.Parameter]:
        """The parameters to optimise during the coming experience."""
        return []

    def extra_loss(self, model: ClipModel, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        """A term added to the cross-entropy loss (None for none)."""
        return None

    def make_optimizer(self, params: list[nn.Parameter], hparams: Mapping[str, Any]) -> torch.optim.Optimizer | None:
        """A custom optimiser over `params`, or None for AdamW(lr, weight_decay)."""
        return None

    def after_experience(self, model: ClipModel, experience: Experience) -> None:
        """Freeze, merge or consolidate after training on `experience`."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond the model's own tensors (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned; the model is restored after this call."""


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
    wrong = UserError(f"{label} expects {_type_name(default)} (default {default!r}), got {value!r}")
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
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise wrong from None
        raise wrong
    if isinstance(default, (list, tuple)):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise wrong
        element = default[0] if default else ""
        return [coerce(label, item.strip() if isinstance(item, str) else item, element) for item in items if item != ""]
    if isinstance(value, str):
        return value
    raise wrong


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
    method_params: dict[str, Any] = field(default_factory=dict)
    scenario_params: dict[str, Any] = field(default_factory=dict)
    backbone_params: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    progress: bool = True

    # Fields that name where and how a run executes, not what it computes.
    EXECUTION_FIELDS = ("out", "resume", "progress", "device", "num_workers", "eval_batch_size", "data_root")

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
        if key in ("iters", "batch_size"):
            setattr(self, key, None if value is None else coerce(key, value, 1))
        elif key in ("data_root", "pretrained"):
            setattr(self, key, None if value in (None, "") else coerce(key, value, ""))
        else:
            setattr(self, key, coerce(key, value, default))

    def identity(self) -> dict[str, Any]:
        """The part of the config that determines the numbers (for run ids and resume checks)."""
        data = self.to_dict()
        for name in self.EXECUTION_FIELDS:
            data.pop(name, None)
        return data

    def identity_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)


def data_root_or_env(data_root: str | None) -> str | None:
    """The data root given on the command line or in a config, else $CL_BENCH_DATA, else None."""
    import os

    return data_root or os.environ.get("CL_BENCH_DATA") or None


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML, YAML or JSON run configuration (a result file's `config` section works too)."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file '{path}' not found")
    text = file.read_text(encoding="utf-8")
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
    except Exception as exc:  # parse errors of three libraries
        raise UserError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a table of settings")
    if "schema" in data and isinstance(data.get("config"), dict):
        data = data["config"]  # a result file: repeat its run
    return data
