"""cl_bench: a benchmark suite for continual learning of pre-trained models.

The names in `__all__` are the stable API: everything a method, stream or backbone plugin
needs is importable from `cl_bench` itself, and plugins import no submodule. Importing this
package is cheap: torch, Avalanche and open_clip load only when a name that needs them is used
(`Stream`, `LinearAdapter`, `run`, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import UserError, unknown_name
from .hookspecs import hookimpl
from .paths import safe_slug
from .spec import IMAGE_PROTOCOLS, TEXT_PROTOCOLS, BackboneSpec, LoggerSpec, Method, MethodSpec, RunConfig, ScenarioContext, ScenarioSpec, Supports, Weights

__version__ = "0.1.0"

# Names whose modules import torch, loaded on first use: name -> module.
_DEFERRED = {
    "plan": "run_plan",
    "build": "run_plan",
    "RunPlan": "run_plan",
    "run": "runner",
    "RunResult": "results",
    "Stream": "stream",
    "StreamTask": "stream",
    "assemble_stream": "stream",
    "assemble_text_stream": "stream",
    "TextTask": "stream",
    "Generation": "stream",
    "Experience": "stream",
    "build_benchmark": "stream",
    "classification_dataset": "stream",
    "DEFAULT_TEMPLATES": "stream",
    "Backbone": "model",
    "AdaptableLayer": "model",
    "LinearAdapter": "model",
    "TaskContext": "model",
    "CellScorer": "model",
    "LoRALinear": "lora",
    "check_lora_rank": "lora",
    "file_sha256": "provenance",
}

__all__ = [
    "IMAGE_PROTOCOLS",
    "TEXT_PROTOCOLS",
    "BackboneSpec",
    "Method",
    "LoggerSpec",
    "MethodSpec",
    "RunConfig",
    "ScenarioContext",
    "ScenarioSpec",
    "Supports",
    "UserError",
    "Weights",
    "hookimpl",
    "safe_slug",
    "unknown_name",
    *_DEFERRED,
]


def __getattr__(name: str) -> Any:
    # Deferred so that `import cl_bench` (and `clbench --help`, `clbench ls`) does not import torch.
    if name in _DEFERRED:
        return getattr(import_module(f".{_DEFERRED[name]}", __name__), name)
    raise AttributeError(f"module 'cl_bench' has no attribute {name!r}")
