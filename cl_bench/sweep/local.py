"""`clbench sweep`: a grid of runs (methods x scenarios x seeds) as local processes.

Each run is a process of its own running `clbench run --config FILE --quiet --resume`, so a crash
or a bad setting in one run cannot take the others down. On systems with fork the runs are forked
from the sweep's warm worker (warm.py), which has imported PyTorch and the grid's plugins once;
elsewhere each is a new `python -m cl_bench run` process. Runs whose complete result already
exists are skipped (so an interrupted sweep resumes), unless `force`. With several jobs, each run
gets an equal share of the CPU threads: two PyTorch processes that each use every core run far
slower than one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cl_bench.config.registry import Registry
from cl_bench.config.run_config import RunConfig, default_threads
from cl_bench.errors import UserError
from cl_bench.files import write_json
from cl_bench.paths import SWEEP_LOGS
from cl_bench.results.validation import load_valid
from cl_bench.running import checkpoint
from cl_bench.running.plan import RunPlan, plan
from cl_bench.sweep.warm import PARENT_VARIABLE, WarmWorker, WorkerGone, die_with, python_module


@dataclass
class Planned:
    config: RunConfig
    result_path: Path
    plan: RunPlan | None = field(default=None, compare=False, repr=False)  # the Slurm engine sizes a run's job from it

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
                    planned.plan = plan(config, registry)
                    planned.result_path = planned.plan.result_path
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


# "0" in the sweep's environment: every run as its own `python -m cl_bench run` process, as on
# systems without fork (for instance to rule the warm worker out when hunting a problem).
WARM_VARIABLE = "CL_BENCH_SWEEP_WARM"
WORKER_LOG = "warm-worker.txt"  # in <out>/logs: the warm worker's own output (not a run's log)
GRACE = 5.0  # seconds that runs get to stop on a Ctrl-C from the terminal before the sweep sends one


def die_with_sweep() -> None:
    """In a sweep's child process: be killed when the sweep process dies (Linux), even by SIGKILL.

    Elsewhere an orphaned child runs on, and the run lock stops a restarted sweep from racing it.
    (Runs forked by the warm worker are tied to it there, and it to the sweep: see warm.py.)
    """
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is not None:
        die_with(int(parent))


def _run_settings(planned: Planned, threads: int, log_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    """The `clbench run` arguments, environment and log file of one run of the sweep."""
    log = log_dir / f"{planned.result_path.stem}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = planned.config.threads or threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # The child's configuration sits beside its log: a killed sweep leaves no temporary folder, and
    # a restarted one overwrites it. The child's own lock keeps two processes off one run.
    config_file = log.with_suffix(".config.json")
    settings = {k: v for k, v in planned.config.to_dict().items() if k not in ("resume", "progress")} | {"threads": threads}
    write_json(config_file, settings)
    return ["run", "--config", str(config_file), "--quiet", "--resume"], env, log


class _Processes:
    """Each run as its own `python -m cl_bench run` process: where no warm worker can fork."""

    def __init__(self) -> None:
        self.running: dict[int, subprocess.Popen] = {}

    def run(self, key: int, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        env = {**env, PARENT_VARIABLE: str(os.getpid())}
        with open(log, "w", encoding="utf-8") as handle:
            self.running[key] = subprocess.Popen([*python_module("cl_bench"), *argv], stdout=handle, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float | None = None) -> tuple[int, int] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for key, process in self.running.items():
                if process.poll() is not None:
                    del self.running[key]
                    return key, process.returncode
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def signal(self, number: int) -> None:
        for process in self.running.values():
            if sys.platform == "win32":
                process.terminate()
            else:
                process.send_signal(number)

    def close(self) -> None:
        for process in self.running.values():
            process.kill()
            process.wait()
        self.running.clear()


def _launcher(todo: Sequence[Planned], threads: int, log_dir: Path) -> WarmWorker | _Processes:
    """A warm worker that forks the runs, or (without fork, or if it cannot start) plain processes."""
    if os.environ.get(WARM_VARIABLE, "1") == "0" or not hasattr(os, "fork"):
        return _Processes()
    plugins = sorted({(kind, name) for p in todo for kind, name in (("method", p.config.method), ("scenario", p.config.scenario), ("backbone", p.config.backbone))})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        return WarmWorker.start(plugins, env, log_dir / WORKER_LOG)
    except WorkerGone as exc:
        print(f"sweep: {exc}; each run starts as its own process instead", file=sys.stderr)
        return _Processes()


def _note_exit(log: Path, code: int) -> None:
    """Say at the end of a run's log how its process ended, unless it succeeded."""
    if code == 0:
        return
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}"
    else:
        how = f"exited with code {code}"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\nclbench sweep: the run's process {how}\n")


def execute(
    grid: Sequence[Planned],
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    engine: str = "local",
    ray_options: dict | None = None,
    slurm_options: Any = None,
) -> tuple[list[Planned], list[Planned], list[tuple[Planned, Path]]]:
    """Run what the grid still needs; returns (ran, skipped, failed with their log files).

    `engine` "local" runs child processes here (`jobs` at once); "ray" runs each run as a Ray task
    (see ray_engine.py, `ray_options`: address, cpus_per_run, gpus_per_run); "slurm" submits
    Slurm job arrays (see slurm_engine.py, `slurm_options`: a SlurmOptions; with its `wait` off,
    nothing is reported ran or failed). The skip, redo and --force rules are the same for all.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise UserError("--jobs must be at least 1")
    if engine not in ("local", "ray", "slurm"):
        raise UserError(f"unknown --engine {engine!r}: use local, ray or slurm")
    if engine == "slurm":  # checked before a result is deleted under --force
        from cl_bench.sweep.slurm_engine import SlurmOptions, preflight

        slurm_options = slurm_options or SlurmOptions()
        preflight(slurm_options)
    todo = [p for p in grid if force or not is_complete(p.result_path)]
    skipped = [p for p in grid if p not in todo]
    for planned in todo:
        if force:  # redo from the first task
            checkpoint.remove(planned.result_path.with_suffix(".ckpt"))
        if force or result_status(planned.result_path) is None:  # a broken or tampered result is redone
            planned.result_path.unlink(missing_ok=True)
    if engine == "ray":
        from cl_bench.sweep.ray_engine import run_on_ray

        outcomes = run_on_ray(todo, force=force, **(ray_options or {}))
    elif engine == "slurm":
        from cl_bench.sweep.slurm_engine import run_on_slurm

        outcomes = run_on_slurm(todo, slurm_options, force=force)
        progress = progress and slurm_options.wait
    else:
        outcomes = _run_locally(todo, jobs)
    ran, failed = [], []
    bar = tqdm(total=len(grid), initial=len(skipped), desc="sweep", unit="run", disable=not progress, dynamic_ncols=True)
    with contextlib.closing(outcomes):  # on Ctrl-C here, the engine stops its runs before we go on
        for planned, log in outcomes:
            if is_complete(planned.result_path):
                ran.append(planned)
            else:
                failed.append((planned, log))
            bar.set_postfix_str(planned.name, refresh=False)
            bar.update(1)
    bar.close()
    return ran, skipped, failed


def _run_locally(todo: Sequence[Planned], jobs: int) -> Generator[tuple[Planned, Path], None, None]:
    """(planned, log file) as each run ends, `jobs` at a time; on Ctrl-C no further run starts."""
    if not todo:
        return
    threads = default_threads(jobs)
    log_dir = todo[0].result_path.parent / SWEEP_LOGS
    waiting = list(enumerate(todo))
    running: dict[int, tuple[Planned, Path]] = {}
    launcher = _launcher(todo, threads, log_dir)
    try:
        while waiting or running:
            try:
                while waiting and len(running) < jobs:
                    key, planned = waiting[0]
                    argv, env, log = _run_settings(planned, threads, planned.result_path.parent / SWEEP_LOGS)
                    launcher.run(key, argv, env, log)
                    running[key] = waiting.pop(0)[1], log
                ended = launcher.wait()
            except WorkerGone as exc:  # its runs died with it; the rest start as their own processes
                print(f"sweep: {exc}; its runs were killed, and the remaining ones start as their own processes", file=sys.stderr)
                launcher.close()
                launcher = _Processes()
                lost = list(running.values())
                running.clear()
                for planned, log in lost:
                    with open(log, "a", encoding="utf-8") as handle:
                        handle.write(f"\nclbench sweep: {exc}; the run was killed with it\n")
                    yield planned, log
                continue
            assert ended is not None
            planned, log = running.pop(ended[0])
            _note_exit(log, ended[1])
            yield planned, log
    finally:
        try:
            if running:
                _stop(launcher, running)
        finally:
            launcher.close()


def _stop(launcher: WarmWorker | _Processes, running: dict[int, tuple[Planned, Path]]) -> None:
    """Stop the runs still going when the sweep stops early (Ctrl-C, an error): a Ctrl-C at the
    terminal reached them too, so they get GRACE seconds to end (the last finished task is
    checkpointed), then SIGINT from here; a second Ctrl-C kills them."""
    deadline, forwarded = time.monotonic() + GRACE, False
    try:
        while running:
            ended = launcher.wait(None if forwarded else max(0.0, deadline - time.monotonic()))
            if ended is None:
                launcher.signal(signal.SIGINT)
                forwarded = True
                continue
            planned, log = running.pop(ended[0])
            _note_exit(log, ended[1])
    except (KeyboardInterrupt, WorkerGone):
        pass  # closing the launcher kills what is left
