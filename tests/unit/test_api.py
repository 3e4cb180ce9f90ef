"""The public import surface: every name in `cl_bench.__all__` resolves, importing the package
loads no heavy library, and no plugin (built-in or the docs' examples) imports a core submodule."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cl_bench

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_TREES = [ROOT / "backbones", ROOT / "methods", ROOT / "scenarios", ROOT / "loggers", ROOT / "tests" / "plugin_example", ROOT / "tests" / "plugin_lwf_example", ROOT / "tests" / "stream_example"]


def test_every_public_name_resolves():
    for name in cl_bench.__all__:
        assert getattr(cl_bench, name) is not None, name
    assert cl_bench.Stream.__module__ == "cl_bench.contracts.stream" and cl_bench.LinearAdapter.__module__ == "cl_bench.contracts.model"


def test_importing_cl_bench_loads_no_heavy_library():
    code = "import sys, cl_bench; print(*(m in sys.modules for m in ('torch', 'avalanche', 'open_clip', 'pandas')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False"] * 4


PLUGIN_PACKAGES = ("cl_bench.backbones.", "cl_bench.methods.", "cl_bench.scenarios.", "cl_bench.loggers.")


def core_imports(path: Path) -> list[str]:
    """Imports of cl_bench submodules other than the plugin packages themselves: absolute ones, and
    relative ones that climb out of the plugin's top folder into the core."""
    found = []
    tree = next(t for t in PLUGIN_TREES if t in path.parents)
    depth = len(path.relative_to(tree).parts) - 1  # folders between the plugin tree and the file
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > depth + 1 and tree.name in ("backbones", "methods", "scenarios", "loggers"):
            found.append(f"{path.relative_to(ROOT)}: {'.' * node.level}{node.module or ''}")
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("cl_bench.") and not name.startswith(PLUGIN_PACKAGES):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_plugins_import_only_the_public_api():
    offenders = [hit for tree in PLUGIN_TREES for path in sorted(tree.rglob("*.py")) for hit in core_imports(path)]
    assert offenders == []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = [(page.name, block.split("```")[0]) for page in pages for block in page.read_text(encoding="utf-8").split("```python")[1:]]
    assert blocks, "no Python examples found in the README or docs/"
    assert not [(name, b) for name, b in blocks if "from cl_bench." in b or "import cl_bench." in b]
