"""What plugins declare: `MethodSpec`, `ScenarioSpec`, `BackboneSpec`, `LoggerSpec`.

This module imports no heavy library: `clbench ls` and `clbench --help` read specs without torch.
A spec's `factory` may be a callable or an import path "package.module:attribute", so that a
plugin module can register itself cheaply and import torch only when a run starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cl_bench.contracts.method import Method
from cl_bench.contracts.params import TRAIN_DEFAULTS, TRAINING_KEYS, check_training, resolve_params
from cl_bench.contracts.protocols import IMAGE_PROTOCOLS, PROTOCOLS
from cl_bench.errors import UserError


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
    # Trains with `shard_weights` (docs/multi-process.md, Sharded training): its hooks need no
    # whole weight during the training steps and it adds no parameters outside the model.
    sharded: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """A continual-learning method, as a plugin declares it.

    `factory(hparams)` builds the per-run `Method` from the resolved hyper-parameters: the core
    training defaults, then `defaults`, then the backbone's `method_defaults` (see
    `BackboneSpec`), then `kind_defaults[backbone kind]`, then `profiles[backbone name]`, then
    the user's values. Each default's Python type is the
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

    def resolve(self, backbone: str, given: Mapping[str, Any], kind: str = "clip", backbone_defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = {**TRAIN_DEFAULTS, **self.defaults}
        # The backbone's training settings apply to every method; its other defaults (which
        # towers, which layers) only to methods that have that parameter.
        base.update({k: v for k, v in (backbone_defaults or {}).items() if k in TRAINING_KEYS or k in base})
        base.update(self.kind_defaults.get(kind, {}))
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
    stream whose count they change (else `num_tasks`). `data_files(params, data_root)` lists the
    files under the data root that these parameters read: the plan refuses a missing one before any
    work and hashes them into the run id, so two roots with other data never share a run id.
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
    data_files: Callable[[Mapping[str, Any], str | None], list[str]] | None = None

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
    never download anything. `method_defaults` are what a method trains with on this backbone
    unless its own `kind_defaults` or profile say otherwise: the training keys (iters,
    batch_size, lr, schedule, grad_accum, ...) apply to every method, other keys (towers, layers)
    to the methods that have them, so a plugin method gets a language model's training settings
    without declaring them.
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
    method_defaults: Mapping[str, Any] = field(default_factory=dict)
    shardable: bool = False  # its models give `shard_units()`: `shard_weights` may shard them

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

