"""The core's layers: every module imports only modules of its own layer or of layers below it, and
no import circle exists, counting imports inside functions and those made for type checking only.

Layers, bottom first (a folder is a layer; the top-level modules other than `cli` are the leaves):
leaves < contracts < blocks < results < config < running < sweep, publish < cli. The package
facade `cl_bench/__init__.py` re-exports the public API lazily and is the one module exempt.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import cl_bench

pytestmark = pytest.mark.unit

PACKAGE = Path(cl_bench.__file__).parent
LAYERS = [("leaves",), ("contracts",), ("blocks",), ("results",), ("config",), ("running",), ("sweep", "publish"), ("cli",)]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("cl_bench", *parts)).removesuffix(".__init__")


def group_of(module: str) -> str:
    """The folder a module sits in (`leaves` for the top-level modules but cli)."""
    parts = module.split(".")
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "leaves"


def rank_of(group: str) -> int:
    for rank, groups in enumerate(LAYERS):
        if group in groups:
            return rank
    raise AssertionError(f"the folder cl_bench/{group}/ is in no layer: add it to LAYERS in {__file__}")


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every cl_bench module that `source` (the text of `module`) imports anywhere in its body:
    at module level, inside functions, under `if TYPE_CHECKING`; relative imports resolved."""
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("cl_bench"))
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module or ""
            if not base.startswith("cl_bench"):
                continue
            for alias in node.names:  # `from cl_bench.results import metrics` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if (PACKAGE / Path(*candidate.split(".")[1:])).with_suffix(".py").exists() else base)
    return found


def core_modules() -> dict[str, set[str]]:
    return {
        module_name(path): imports_of(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "__init__.py"
    }


def test_every_module_imports_only_its_layer_and_below():
    problems = []
    for module, imported in core_modules().items():
        group = group_of(module)
        for target in sorted(imported):
            if target == "cl_bench":
                if module != "cl_bench.cli":  # the facade; only the command line may read __version__ from it
                    problems.append(f"{module} imports the package facade cl_bench; import the module that defines the name")
                continue
            target_group = group_of(target)
            if target_group != group and rank_of(target_group) >= rank_of(group):
                problems.append(f"{module} ({group}) imports {target} ({target_group}), which is not below it")
    assert problems == []


def test_no_import_circle():
    graph = {module: {t for t in imported if t != "cl_bench"} for module, imported in core_modules().items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_the_check_sees_every_kind_of_import():
    # A module of the results layer importing upward in the three ways that hid the old circle.
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..running.plan import RunPlan\n"
        "def f():\n    from cl_bench.publish import report\n    import cl_bench.config.registry\n"
        "from . import metrics\n"
    )
    imported = imports_of(source, "cl_bench.results.validation")
    assert imported == {"cl_bench.running.plan", "cl_bench.publish.report", "cl_bench.config.registry", "cl_bench.results.metrics"}
    upward = [t for t in imported if rank_of(group_of(t)) > rank_of(group_of("cl_bench.results.validation"))]
    assert sorted(upward) == ["cl_bench.config.registry", "cl_bench.publish.report", "cl_bench.running.plan"]
