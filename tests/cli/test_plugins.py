"""Plugin discovery through installed entry points, failure isolation, did-you-mean.

The third-party plugins (tests/plugin_example, the example of docs/plugins.md; tests/plugin_lwf_example,
the worked example of docs/writing-methods.md) and a broken one (tests/plugin_broken) are installed
with pip into a folder and found by a fresh `clbench` process through importlib.metadata, never
registered by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cl_bench import MethodSpec, hookimpl
from cl_bench.config.registry import Registry
from cl_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).resolve().parents[1] / "plugin_example"
LWF_EXAMPLE = Path(__file__).resolve().parents[1] / "plugin_lwf_example"
BROKEN = Path(__file__).resolve().parents[1] / "plugin_broken"
BUILTIN_METHODS = {"zeroshot", "finetune", "seq-lora"}


def docs_example(page: str = "plugins.md", marker: str = "example-plugin") -> dict[str, str]:
    """The files of a plugin example in a docs page, keyed by path (marked by HTML comments)."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    blocks = re.findall(rf"<!-- {marker}: (\S+) -->\s*```\w*\n(.*?)```", text, flags=re.S)
    return {path: body for path, body in blocks}


def package_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_docs_show_exactly_the_tested_plugin():
    assert docs_example() == package_files(EXAMPLE)


def test_docs_show_exactly_the_tested_lwf_plugin():
    assert docs_example("writing-methods.md", "example-lwf") == package_files(LWF_EXAMPLE)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugins and a broken plugin package from the test tree, pip-installed into one folder."""
    base = tmp_path_factory.mktemp("plugins")
    packages = [shutil.copytree(source, base / source.name) for source in (EXAMPLE, LWF_EXAMPLE, BROKEN)]  # build outside the tree
    site = base / "site"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(site), *map(str, packages)],
        check=True,
        capture_output=True,
    )
    return site


def clbench(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "cl_bench", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_builtins_register_through_entry_points(registry):
    assert BUILTIN_METHODS <= set(registry.methods())
    assert {"embedded-mtil", "embedded-cil"} <= set(registry.scenarios())
    assert {"tiny-clip", "clip-vit-b16"} <= set(registry.backbones())
    assert registry.all("method")["seq-lora"].plugin == "seq_lora"  # the entry-point name


@pytest.mark.slow
@pytest.mark.cli
def test_installed_third_party_plugin_is_found_and_runs(plugin_site, tmp_path):
    listing = clbench(plugin_site, "ls")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^bitfit\s", listing.stdout, flags=re.M)
    out = tmp_path / "runs"
    ran = clbench(plugin_site, "run", "--method", "bitfit", "--iters", "3", "--quiet", "--out", str(out), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (result,) = out.glob("*.json")
    data = json.loads(result.read_text())
    assert data["method"]["name"] == "bitfit" and data["method"]["plugin"] == "bitfit"
    assert data["status"] == "complete" and data["params"]["trainable"][0] > 0


@pytest.mark.slow
@pytest.mark.cli
def test_the_worked_lwf_plugin_is_found_runs_and_with_weight_zero_is_finetune(plugin_site, tmp_path):
    listing = clbench(plugin_site, "ls")
    assert re.search(r"^my-lwf\s+1\s+my_lwf\s", listing.stdout, flags=re.M), listing.stdout
    short = ("--scenario", "embedded-cil", "--set", "scenario.tasks=2", "--iters", "3", "--quiet", "--out", str(tmp_path / "runs"))

    def matrix(*args: str) -> list[list[float]]:
        ran = clbench(plugin_site, "run", *args, *short, "--format", "md", cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        path = re.search(r"^result: (\S+)$", ran.stdout, flags=re.M)
        data = json.loads((tmp_path / path.group(1)).read_text()) if path else {}
        assert data.get("status") == "complete", ran.stdout
        return data["acc_matrix"]

    distilled = matrix("--method", "my-lwf")
    plain = matrix("--method", "my-lwf", "--set", "method.weight=0")
    finetune = matrix("--method", "finetune")
    assert plain == finetune  # the same settings on tiny-clip (lr 3e-4, no smoothing, no warm-up): bit for bit
    assert distilled[2] != finetune[2]  # the distillation acts from the second task on


@pytest.mark.slow
@pytest.mark.cli
def test_broken_plugins_are_reported_by_name_and_the_rest_still_load(plugin_site):
    listing = clbench(plugin_site, "ls")
    assert listing.returncode == 0
    assert "plugin 'broken_import': cannot be loaded (RuntimeError: this plugin is broken on purpose)" in listing.stdout
    assert "plugin 'broken_hook': cl_bench_methods() failed (ValueError: hook exploded)" in listing.stdout
    assert "plugin 'exits_at_import': cannot be loaded (called sys.exit('this plugin calls sys.exit() at import'))" in listing.stdout
    assert "plugin 'interrupts_at_import': cannot be loaded (KeyboardInterrupt)" in listing.stdout
    for name in ("7 is int, not a string", "None is NoneType, not a string", "'../../../escape' may hold only", "'has space' may hold only"):
        assert f"plugin 'bad_names': method name {name}" in listing.stdout
    assert re.search(r"^bitfit\s", listing.stdout, flags=re.M) and re.search(r"^seq-lora\s", listing.stdout, flags=re.M)
    assert "Traceback" not in listing.stderr


@pytest.mark.slow
@pytest.mark.cli
def test_misbehaving_plugins_do_not_stop_a_run_and_a_bad_name_writes_nowhere(plugin_site, tmp_path):
    escaped = clbench(plugin_site, "run", "--method", "../../../escape", "--quiet", "--out", str(tmp_path / "a" / "b" / "c"), cwd=tmp_path)
    assert escaped.returncode == 2 and "unknown method '../../../escape'" in escaped.stderr and "Traceback" not in escaped.stderr
    assert not any(tmp_path.iterdir())
    ran = clbench(plugin_site, "run", "--method", "zeroshot", "--quiet", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "plugin 'exits_at_import'" in ran.stderr and len(list((tmp_path / "runs").glob("*.json"))) == 1


@pytest.mark.cli
def test_unknown_method_is_a_one_line_did_you_mean_with_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cl_bench", "run", "--method", "seqlora", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("clbench: error")]
    assert len(lines) == 1 and "did you mean 'seq-lora'?" in lines[0] and "Known: " in lines[0]
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.cli
def test_listing_and_help_do_not_import_torch():
    code = "import sys, contextlib, io\nfrom cl_bench.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['ls'])\nprint('torch' in sys.modules, 'avalanche' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


class _Plugin:
    def __init__(self, *specs, fail=None):
        self.specs, self.fail = specs, fail

    @hookimpl
    def cl_bench_methods(self):
        if self.fail:
            raise self.fail
        return list(self.specs)


def test_duplicates_and_wrong_types_are_reported_not_fatal():
    first = MethodSpec(name="same", factory=dict, summary="first")
    registry = Registry([_Plugin(first), _Plugin(MethodSpec(name="same", factory=dict, summary="second"), "not a spec")], entry_points=False)
    assert registry.methods() == {"same": first}
    messages = [str(e) for e in registry.errors]
    assert any("already provided" in m for m in messages) and any("returned str" in m for m in messages)


def test_get_unknown_lists_known_names_and_suggests():
    registry = Registry([_Plugin(MethodSpec(name="moram", factory=dict, summary=""))], entry_points=False)
    with pytest.raises(UserError, match=r"unknown method 'mooram'; did you mean 'moram'\? Known: moram\."):
        registry.get("method", "mooram")


def test_run_event_failures_are_returned_not_raised():
    seen = []

    class Logger:
        @hookimpl
        def cl_bench_run_start(self, run_id):  # declares only what it needs, as pluggy allows
            seen.append(run_id)

    class Broken:
        @hookimpl
        def cl_bench_run_start(self, run_id, execution_id, config, plan):
            raise OSError("disk full")

    registry = Registry([Logger(), Broken()], entry_points=False)
    failures = registry.emit("cl_bench_run_start", run_id="x", execution_id="e", config={}, plan={})
    assert seen == ["x"] and len(failures) == 1 and "cl_bench_run_start failed (OSError: disk full)" in str(failures[0])


def test_the_hook_of_earlier_releases_is_named_with_its_replacements():
    class OldLogger:
        @hookimpl
        def cl_bench_run_event(self, event, payload):
            pass

    registry = Registry([OldLogger()], entry_points=False)
    assert any("cl_bench_run_event" in str(e) and "split into cl_bench_run_start, cl_bench_before_training" in str(e) for e in registry.errors)


def test_a_misspelled_hook_is_reported_not_silently_ignored():
    class Misspelled:
        @hookimpl
        def cl_bench_method(self):  # the hook is cl_bench_methods
            return []

    registry = Registry([Misspelled()], entry_points=False)
    (error,) = registry.errors
    assert "unknown hook 'cl_bench_method'; did you mean 'cl_bench_methods'?" in str(error)
    assert "never called" in str(error)
