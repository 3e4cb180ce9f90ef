"""cl_bench: a benchmark suite for continual learning of pre-trained models.

The names in `__all__` are the stable API: everything a method, stream or backbone plugin
needs is importable from `cl_bench` itself, and plugins import no submodule. Importing this
package is cheap: torch, Avalanche and open_clip load only when a name that needs them is used
(`Stream`, `LinearAdapter`, `run`, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cl_bench.config.run_config import RunConfig
from cl_bench.contracts.hookspecs import hookimpl
from cl_bench.contracts.method import Method
from cl_bench.contracts.protocols import IMAGE_PROTOCOLS, TEXT_PROTOCOLS
from cl_bench.contracts.specs import BackboneSpec, LoggerSpec, MethodSpec, ScenarioContext, ScenarioSpec, Supports, Weights
from cl_bench.errors import UserError, unknown_name
from cl_bench.paths import safe_slug

__version__ = "0.1.0"

# Names whose modules import torch, loaded on first use: name -> module.
_DEFERRED = {
    "plan": "running.plan",
    "build": "running.build",
    "RunPlan": "running.plan",
    "run": "running.runner",
    "RunResult": "results.schema",
    "Stream": "contracts.stream",
    "StreamTask": "contracts.stream",
    "assemble_stream": "contracts.stream",
    "assemble_text_stream": "contracts.stream",
    "TextTask": "contracts.stream",
    "Generation": "contracts.stream",
    "Experience": "contracts.stream",
    "build_benchmark": "contracts.stream",
    "classification_dataset": "contracts.stream",
    "DEFAULT_TEMPLATES": "contracts.stream",
    "Backbone": "contracts.model",
    "AdaptableLayer": "contracts.model",
    "LinearAdapter": "contracts.model",
    "TaskContext": "contracts.model",
    "CellScorer": "contracts.model",
    "LoRALinear": "blocks.lora",
    "check_lora_rank": "blocks.lora",
    "file_sha256": "provenance",
    "get_scorer": "blocks.text_scores",
    "cached_tensors": "blocks.tensor_cache",
    "Teacher": "blocks.teacher",
    "EpisodicMemory": "blocks.memory",
    "herding_order": "blocks.memory",
    "pad_left": "blocks.memory",
    "ReferenceData": "contracts.stream",
    "distillation_loss": "blocks.distillation",
    "PromptPool": "blocks.prompts",
    "check_prompt_pool": "blocks.prompts",
    "gather_batch": "blocks.data_parallel",
    "batch_share": "blocks.data_parallel",
    "process_count": "blocks.data_parallel",
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
