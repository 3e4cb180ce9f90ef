"""cl_bench: a benchmark suite for continual learning of pre-trained CLIP-like models.

The public names below stay stable. Importing this package is cheap: torch, Avalanche and
open_clip load only when a run starts.
"""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl
from .spec import BackboneSpec, Method, MethodSpec, RunConfig, ScenarioSpec, Supports

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "Method",
    "MethodSpec",
    "RunConfig",
    "RunResult",
    "ScenarioSpec",
    "Supports",
    "hookimpl",
    "run",
]


def __getattr__(name: str) -> Any:
    # Deferred so that `import cl_bench` (and `clbench --help`) does not import torch.
    if name in ("run", "RunResult"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'cl_bench' has no attribute {name!r}")
