"""`clbench sweep`: a grid of runs (methods x scenarios x seeds) as local processes.

Each run is a `clbench run` child process with its configuration in a file, so a crash or a
bad setting in one run cannot take the others down. Runs whose complete result already exists are
skipped (so an interrupted sweep resumes), unless `force`. With several jobs, each child gets an
equal share of the CPU threads: two PyTorch processes that each use every core run far slower
than one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from cl_bench.config.registry import Registry
from cl_bench.config.run_config import RunConfig, default_threads
from cl_bench.errors import UserError
from cl_bench.files import write_json
from cl_bench.paths import SWEEP_LOGS
from cl_bench.results.validation import load_valid
from cl_bench.running.plan import plan


@dataclass
class Planned:
    config: RunConfig
    result_path: Path

    @property
    def name(self) -> str:
        return f"{self.config.method} on {self.config.scenario}, seed {self.config.seed}"


def split_settings(items: Sequence[str], methods: Sequence[str], known: Iterable[str]) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """`--set` items for every run, and those for one method's runs (`<method>.<param>=VALUE`).

    A setting for a `known` method that the sweep does not run is refused.
    """
    shared: list[str] = []
    per_method: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        head = key.split(".", 1)[0]
        owner = next((m for m in sorted(methods, key=len, reverse=True) if key.startswith(m + ".")), None)
        if head in ("method", "scenario", "backbone") or not sep:
            shared.append(item)
        elif owner:
            per_method.setdefault(owner, []).append((key[len(owner) + 1 :], value))
        elif head in known:
            raise UserError(f"--set {item}: '{head}' is not among --methods ({', '.join(methods)})")
        else:
            shared.append(item)
    return shared, per_method


def plan_grid(
    base: RunConfig,
    methods: Sequence[str],
    scenarios: Sequence[str],
    seeds: Sequence[int],
    registry: Registry,
    per_method: dict[str, list[tuple[str, str]]] | None = None,
) -> list[Planned]:
    """Every (method, scenario, seed) of the grid; any bad name or setting is refused before anything runs.

    `per_method` holds settings for one method's runs only: {method: [(parameter, value), ...]}.
    """
    for kind, names in (("method", methods), ("scenario", scenarios)):
        for name in names:
            registry.get(kind, name)
    per_method = per_method or {}
    grid = []
    for scenario in scenarios:
        for method in methods:
            for seed in seeds:
                config = replace(
                    base, method=method, scenario=scenario, seed=seed,
                    method_params=dict(base.method_params), scenario_params=dict(base.scenario_params), backbone_params=dict(base.backbone_params),
                )
                for key, value in per_method.get(method, []):
                    config.set(f"method.{key}", value, source=f"--set {method}.{key}")
                planned = Planned(config, Path())
                try:
                    planned.result_path = plan(config, registry).result_path
                except UserError as exc:
                    hint = ""
                    if "unknown method parameter" in str(exc) and base.method_params:
                        hint = f"; to set a parameter for one method's runs only, use --set {method if len(methods) == 1 else '<method>'}.<param>=VALUE"
                    raise UserError(f"{planned.name}: {exc}{hint}") from None
                grid.append(planned)
    return grid


def result_status(path: Path) -> str | None:
    """"complete" or "partial" for a valid result file; None when it is missing, broken or tampered."""
    if not path.is_file():
        return None
    try:
        return load_valid(path).status
    except UserError:
        return None


def is_complete(path: Path) -> bool:
    return result_status(path) == "complete"


# Set in a child's environment: the child asks the kernel to kill it when the sweep dies.
PARENT_VARIABLE = "CL_BENCH_SWEEP_PARENT"


def _run_child(planned: Planned, threads: int, log_dir: Path) -> tuple[Planned, int, Path]:
    log = log_dir / f"{planned.result_path.stem}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = planned.config.threads or threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), PARENT_VARIABLE: str(os.getpid())}
    # The child's configuration sits beside its log: a killed sweep leaves no temporary folder, and
    # a restarted one overwrites it. The child's own lock keeps two processes off one run.
    config_file = log.with_suffix(".config.json")
    settings = {k: v for k, v in planned.config.to_dict().items() if k not in ("resume", "progress")} | {"threads": threads}
    write_json(config_file, settings)
    command = [sys.executable, "-m", "cl_bench", "run", "--config", str(config_file), "--quiet", "--resume"]
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    return planned, code, log


def die_with_sweep() -> None:
    """In a sweep's child: be killed when the sweep process dies (Linux), even by SIGKILL.

    Elsewhere an orphaned child runs on, and the run lock stops a restarted sweep from racing it.
    """
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if str(os.getppid()) != parent:  # the sweep died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def execute(
    grid: Sequence[Planned], jobs: int = 1, force: bool = False, progress: bool = True, engine: str = "local", ray_options: dict | None = None
) -> tuple[list[Planned], list[Planned], list[tuple[Planned, Path]]]:
    """Run what the grid still needs; returns (ran, skipped, failed with their log files).

    `engine` "local" runs child processes here (`jobs` at once); "ray" runs each run as a Ray task
    (see sweep_ray.py, `ray_options`: address, cpus_per_run, gpus_per_run). The skip, redo and
    --force rules are the same for both.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise UserError("--jobs must be at least 1")
    if engine not in ("local", "ray"):
        raise UserError(f"unknown --engine {engine!r}: use local or ray")
    todo = [p for p in grid if force or not is_complete(p.result_path)]
    skipped = [p for p in grid if p not in todo]
    for planned in todo:
        if force:  # redo from the first task
            planned.result_path.with_suffix(".ckpt").unlink(missing_ok=True)
        if force or result_status(planned.result_path) is None:  # a broken or tampered result is redone
            planned.result_path.unlink(missing_ok=True)
    if engine == "ray":
        from cl_bench.sweep.ray_engine import run_on_ray

        outcomes = run_on_ray(todo, force=force, **(ray_options or {}))
    else:
        outcomes = _run_locally(todo, jobs)
    ran, failed = [], []
    bar = tqdm(total=len(grid), initial=len(skipped), desc="sweep", unit="run", disable=not progress, dynamic_ncols=True)
    for planned, log in outcomes:
        if is_complete(planned.result_path):
            ran.append(planned)
        else:
            failed.append((planned, log))
        bar.set_postfix_str(planned.name, refresh=False)
        bar.update(1)
    bar.close()
    return ran, skipped, failed


def _run_locally(todo: Sequence[Planned], jobs: int):
    """(planned, log file) as each child process ends, `jobs` at a time."""
    threads = default_threads(jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_child, planned, threads, planned.result_path.parent / SWEEP_LOGS) for planned in todo]
        for future in as_completed(futures):
            planned, _, log = future.result()
            yield planned, log
