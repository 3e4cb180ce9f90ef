"""`clbench sweep --engine slurm`: the grid's runs as Slurm job arrays, submitted through submitit.

Each run is one array task running the run in the job's Python process, as `clbench run --config
FILE --quiet --resume` would (same run id, result file and numbers), writing straight into the
sweep's `--out`: Slurm clusters share their file systems, and submitit needs that for its own job
files anyway. Runs that need the same resources form one job array (a sweep over one backbone is
one array). The resources come from `RESOURCES` below, keyed on the backbone's kind and the size
of its weights (the core knows no method or backbone by name), and every field can be overridden
on the command line.

Requeue: Slurm signals a job (SIGUSR2, 90 s ahead) before its time limit or when it is preempted;
submitit then calls the job's `checkpoint`, which resubmits the same call with resume on, and
requeues the job. The run was checkpointed after its last finished task, so the requeued job
resumes from there and ends with the uninterrupted run's numbers.

The sweep never reads submitit's result pickles: whether a run succeeded is read from its result
file, as under the other engines. `CL_BENCH_SLURM_CLUSTER=local` swaps Slurm for submitit's local
executor (jobs as processes on this machine): the tests use it, and it tries a sweep's jobs on a
machine without Slurm.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, clip, shown
from cl_bench.paths import SWEEP_LOGS

SLURM_FOLDER = "slurm"  # under <out>/logs: submitit's job files and every job's stdout and stderr
CLUSTER_VARIABLE = "CL_BENCH_SLURM_CLUSTER"  # "local": submitit's local executor instead of Slurm
REQUEUES = 3  # times a job may time out and be requeued (preemptions do not count)
POLL_SECONDS = {"slurm": 30.0, "local": 0.5}  # how often the waiting sweep asks after its jobs
JOB_NAME = "clbench-sweep"


@dataclass(frozen=True)
class Resources:
    """What one run's job asks Slurm for."""

    cpus: int
    gpus: int
    mem_gb: int
    time_min: int

    def describe(self) -> str:
        return f"{self.cpus} CPU{'s' * (self.cpus != 1)}, {self.gpus} GPU{'s' * (self.gpus != 1)}, {self.mem_gb} GB, {self.time_min} min"


GB = 2**30
# The defaults, by backbone kind and the size of the backbone's weights on disk (a proxy for its
# parameter count that needs no model built). The first row whose kind matches (None: any) and
# whose size bound holds wins. A run uses one device, so no row asks for more than one GPU; larger
# language models get more host memory (the weights are loaded on the CPU first) and more time.
# The embedded models (tiny-clip, 14 MB; tiny-lm, 4 MB) train on CPUs in seconds to minutes.
RESOURCES: tuple[tuple[str | None, int, Resources], ...] = (
    (None, 64 * 2**20, Resources(cpus=2, gpus=0, mem_gb=4, time_min=60)),  # embedded models
    ("clip", 2 * GB, Resources(cpus=8, gpus=1, mem_gb=32, time_min=8 * 60)),  # ViT-B/16 (600 MB), ViT-L/14
    ("clip", sys.maxsize, Resources(cpus=8, gpus=1, mem_gb=64, time_min=12 * 60)),
    ("causal-lm", 4 * GB, Resources(cpus=8, gpus=1, mem_gb=32, time_min=12 * 60)),  # up to ~2B parameters in bf16
    ("causal-lm", 16 * GB, Resources(cpus=8, gpus=1, mem_gb=96, time_min=24 * 60)),  # ~7-8B
    ("causal-lm", sys.maxsize, Resources(cpus=16, gpus=1, mem_gb=192, time_min=48 * 60)),
    (None, sys.maxsize, Resources(cpus=8, gpus=1, mem_gb=64, time_min=24 * 60)),  # a plugin's other kind
)


def default_resources(kind: str, weights_bytes: int) -> Resources:
    """The table's row for a backbone of this kind whose weights take this many bytes."""
    return next(r for row_kind, bound, r in RESOURCES if row_kind in (None, kind) and weights_bytes <= bound)


def weights_size(path: str | None) -> int:
    """Bytes of a backbone's weights: a file, or the weight files of a model folder (or a shard index's folder)."""
    if not path:
        return 0
    where = Path(path)
    if where.is_file() and where.suffix != ".json":
        return where.stat().st_size
    folder = where if where.is_dir() else where.parent
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth") and p.is_file())


@dataclass
class SlurmOptions:
    """The sweep's Slurm settings as given on the command line (None: the table's default)."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None  # minutes, or Slurm's [D-]HH:MM[:SS]
    cpus: float | None = None
    gpus: float | None = None
    mem: str | None = None  # 16G, 500M, 1T
    array_parallelism: int | None = None
    sbatch: Sequence[str] = ()  # extra sbatch flags: KEY=VALUE, or KEY alone for a flag without value
    wait: bool = True
    config: str | None = None  # a file whose `slurm` section fills what the command line left unset


_NAME = re.compile(r"[A-Za-z0-9_.,+-]+")  # a partition (or comma-separated list) or account name
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")
# sbatch flags submitit writes itself or the options below own: given twice, one would silently win.
_OWNED = {
    "partition": "--partition",
    "account": "--account",
    "time": "--time",
    "mem": "--mem",
    "mem-per-cpu": "--mem",
    "mem-per-gpu": "--mem",
    "cpus-per-task": "--cpus-per-run",
    "gpus": "--gpus-per-run",
    "gpus-per-node": "--gpus-per-run",
    "gres": "--gpus-per-run",
    "array": "--array-parallelism",
    "job-name": None,
    "output": None,
    "error": None,
    "signal": None,
    "open-mode": None,
    "nodes": None,
    "ntasks": None,
    "ntasks-per-node": None,
    "wrap": None,
}


def parse_time(text: str) -> int:
    """`--time` in whole minutes: MINUTES, HH:MM[:SS] or D-HH[:MM[:SS]] (Slurm's forms), rounded up."""
    value = text.strip()
    days = 0
    if "-" in value:
        head, _, value = value.partition("-")
        if not head.isdigit():
            raise UserError(f"--time must be minutes, HH:MM:SS or D-HH:MM:SS, got {shown(text)}")
        days = int(head)
    parts = value.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise UserError(f"--time must be minutes, HH:MM:SS or D-HH:MM:SS, got {shown(text)}")
    numbers = [int(p) for p in parts]
    if days or "-" in text:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:
        hours, minutes, seconds = 0, numbers[0], 0
    elif len(numbers) == 2:  # Slurm reads MM:SS here; HH:MM is what people mean far more often, so it is refused
        raise UserError(f"--time {shown(text)} is ambiguous (Slurm reads MM:SS); write HH:MM:SS or minutes")
    else:
        hours, minutes, seconds = numbers
    total = days * 24 * 60 + hours * 60 + minutes + math.ceil(seconds / 60)
    if total < 1:
        raise UserError(f"--time must be at least one minute, got {shown(text)}")
    return total


def parse_mem(text: str) -> int:
    """`--mem` in whole GB, rounded up: a number with a unit K, M, G or T (sbatch's, powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])B?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise UserError(f"--mem must be a size with a unit, such as 16G or 500M, got {shown(text)}")
    scale = {"K": 2**-20, "M": 2**-10, "G": 1, "T": 2**10}[match.group(2).upper()]
    size = float(match.group(1)) * scale
    if size <= 0:
        raise UserError(f"--mem must be above zero, got {shown(text)}")
    return max(1, math.ceil(size))


def _whole(value: float | None, flag: str, least: int) -> int | None:
    if value is None:
        return None
    if not float(value).is_integer() or value < least:
        raise UserError(f"{flag} must be a whole number of at least {least} under --engine slurm, got {value:g}")
    return int(value)


def sbatch_flags(items: Sequence[str]) -> dict[str, Any]:
    """`--sbatch` items as submitit's additional parameters ({"constraint": "a100"}, {"exclusive": True})."""
    flags: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not _SBATCH_KEY.fullmatch(key):
            raise UserError(f"--sbatch takes KEY=VALUE or KEY (an sbatch option without its dashes, e.g. constraint=a100 or exclusive), got {shown(item)}")
        if key in _OWNED:
            owner = _OWNED[key]
            raise UserError(f"--sbatch {key}: " + (f"use {owner} instead" if owner else "the Slurm engine sets this one itself"))
        if sep and (not value or any(ord(c) < 32 for c in value)):
            raise UserError(f"--sbatch {key}: the value must be non-empty and on one line, got {shown(value)}")
        flags[key.replace("-", "_")] = value if sep else True
    return flags


@dataclass(frozen=True)
class Checked:
    """SlurmOptions checked and parsed; overrides are None where the table decides."""

    partition: str | None
    account: str | None
    time_min: int | None
    cpus: int | None
    gpus: int | None
    mem_gb: int | None
    array_parallelism: int | None
    sbatch: dict[str, Any]

    def resources(self, default: Resources) -> Resources:
        given = {"cpus": self.cpus, "gpus": self.gpus, "mem_gb": self.mem_gb, "time_min": self.time_min}
        return replace(default, **{k: v for k, v in given.items() if v is not None})


def check_options(options: SlurmOptions) -> Checked:
    """Every option checked before anything is submitted; a bad one is one line."""
    if options.config is not None:
        options = with_file(options.config, replace(options, config=None))
    for flag, name in (("--partition", options.partition), ("--account", options.account)):
        if name is not None and not _NAME.fullmatch(name):
            raise UserError(f"{flag} must be a Slurm name (letters, digits, '_', '.', '-', commas between partitions), got {shown(name)}")
    if options.array_parallelism is not None and options.array_parallelism < 1:
        raise UserError(f"--array-parallelism must be at least 1, got {options.array_parallelism}")
    return Checked(
        partition=options.partition,
        account=options.account,
        time_min=None if options.time is None else parse_time(options.time),
        cpus=_whole(options.cpus, "--cpus-per-run", 1),
        gpus=_whole(options.gpus, "--gpus-per-run", 0),
        mem_gb=None if options.mem is None else parse_mem(options.mem),
        array_parallelism=options.array_parallelism,
        sbatch=sbatch_flags(options.sbatch),
    )


# The `slurm` section of a --slurm-config file: its keys, and the types each takes.
FILE_KEYS: dict[str, tuple[type, ...]] = {
    "partition": (str,),
    "account": (str,),
    "time": (str, int),
    "cpus": (int,),
    "gpus": (int,),
    "mem": (str,),
    "array_parallelism": (int,),
    "sbatch": (dict,),
}


def with_file(path: str, given: SlurmOptions) -> SlurmOptions:
    """The `slurm` section of a TOML, YAML or JSON file, under `given` (the command line wins field by field;
    `--sbatch` items are added to the file's, a key given on both taking the command line's value)."""
    from cl_bench.config.loading import load_config_file
    from cl_bench.errors import unknown_name

    data = load_config_file(path)
    if not isinstance(data, dict) or set(data) != {"slurm"} or not isinstance(data["slurm"], dict):
        raise UserError(f"--slurm-config {path}: the file must hold one section, slurm, a table of {', '.join(FILE_KEYS)}")
    section = data["slurm"]
    for key, value in section.items():
        if key not in FILE_KEYS:
            raise unknown_name(f"key of {path}'s slurm section:", key, FILE_KEYS)
        if isinstance(value, bool) or not isinstance(value, FILE_KEYS[key]):
            raise UserError(f"--slurm-config {path}: slurm.{key} must be {' or '.join(t.__name__ for t in FILE_KEYS[key])}, got {shown(value)}")
    sbatch = []
    for key, value in section.get("sbatch", {}).items():
        if value is True:
            sbatch.append(str(key))
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            sbatch.append(f"{key}={value}")
        else:
            raise UserError(f"--slurm-config {path}: slurm.sbatch.{key} must be a string, a number or true, got {shown(value)}")

    def pick(field: str, key: str) -> Any:
        mine = getattr(given, field)
        return mine if mine is not None else section.get(key)

    limit = pick("time", "time")
    return replace(
        given,
        partition=pick("partition", "partition"),
        account=pick("account", "account"),
        time=None if limit is None else str(limit),
        cpus=pick("cpus", "cpus"),
        gpus=pick("gpus", "gpus"),
        mem=pick("mem", "mem"),
        array_parallelism=pick("array_parallelism", "array_parallelism"),
        sbatch=[*sbatch, *given.sbatch],
    )


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--engine slurm needs submitit, an optional extra: pip install -e '.[slurm]' (or pip install 'submitit>=1.5')") from None
    return submitit


def cluster() -> str:
    """ "slurm", or "local" where CL_BENCH_SLURM_CLUSTER asks for submitit's local executor; sbatch must be on PATH for Slurm."""
    chosen = os.environ.get(CLUSTER_VARIABLE, "slurm")
    if chosen not in ("slurm", "local"):
        raise UserError(f"{CLUSTER_VARIABLE} must be slurm or local, got {shown(chosen)}")
    missing = [command for command in ("sbatch", "srun") if chosen == "slurm" and shutil.which(command) is None]
    if missing:
        raise UserError(f"--engine slurm needs Slurm's {' and '.join(missing)} on PATH: run the sweep on a login node of the cluster (or set {CLUSTER_VARIABLE}=local to run the jobs on this machine)")
    return chosen


def preflight(options: SlurmOptions) -> tuple[Checked, str, Any]:
    """The options checked, the cluster and submitit: everything that can refuse a sweep before it deletes or submits anything."""
    checked = check_options(options)
    where = cluster()
    return checked, where, _import_submitit()


def _job_id() -> str:
    """This job's id as squeue shows it (ARRAY_TASK for an array task), or the local executor's."""
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?")


class RunJob:
    """One run of the sweep as a Slurm job: the run in the job's process, its output appended to the
    run's log in `<out>/logs`. `checkpoint` (which submitit calls on preemption or timeout) resubmits
    the same call with resume on, so the requeued job continues from the run's last checkpoint."""

    def __call__(self, settings: dict[str, Any], cwd: str, log: str, resume: bool) -> str:
        from cl_bench.config.registry import Registry
        from cl_bench.config.run_config import RunConfig
        from cl_bench.running.runner import run

        os.chdir(cwd)  # relative --out, --data-root and --pretrained mean what they meant where the sweep started
        with open(log, "a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            job = _job_id()
            print(f"slurm: job {job} on {socket.gethostname()}, process {os.getpid()}", flush=True)
            registry = Registry()
            for error in registry.errors:
                print(f"clbench: warning: {error}")
            config = RunConfig.from_dict(settings)
            config.resume, config.progress = resume, False
            try:
                run(config, registry=registry)
            except UserError as exc:
                print(f"clbench: error: {exc}")
                return "failed"
            except Exception:  # a crash: its stack in the run's log, which the sweep names; the job fails
                traceback.print_exc()
                raise
        return "complete"

    def checkpoint(self, settings: dict[str, Any], cwd: str, log: str, resume: bool):
        from submitit.helpers import DelayedSubmission

        with open(log, "a", encoding="utf-8") as handle:
            handle.write("\nslurm: preempted or out of time; requeued to resume from the last finished task\n")
        return DelayedSubmission(self, settings, cwd, log, True)


def _log_of(planned) -> Path:
    return planned.result_path.parent / SWEEP_LOGS / f"{planned.result_path.stem}.log"


def submit(todo: Sequence, options: SlurmOptions, *, force: bool = False) -> tuple[list[tuple[Any, Any]], str]:
    """Submit `todo` (planned runs, each with its plan): one job array per distinct set of resources.

    Returns [(job, planned), ...] and which cluster took them ("slurm" or "local")."""
    checked, where, submitit = preflight(options)
    groups: dict[Resources, list] = {}
    for planned in todo:
        groups.setdefault(checked.resources(resources_of(planned)), []).append(planned)
    submitted: list[tuple[Any, Any]] = []
    cwd = os.getcwd()
    for resources, runs in groups.items():
        folder = runs[0].result_path.parent / SWEEP_LOGS / SLURM_FOLDER
        executor = submitit.AutoExecutor(folder=folder, cluster=where, slurm_max_num_timeout=REQUEUES)
        # No GPU asked is no --gpus-per-node line at all: a cluster without GPUs may refuse even a zero.
        parameters: dict[str, Any] = {"name": JOB_NAME, "timeout_min": resources.time_min, "cpus_per_task": resources.cpus, "gpus_per_node": resources.gpus or None, "mem_gb": resources.mem_gb}
        if where == "slurm":
            parameters |= {"slurm_partition": checked.partition, "slurm_account": checked.account, "slurm_array_parallelism": checked.array_parallelism, "slurm_additional_parameters": checked.sbatch}
        executor.update_parameters(**parameters)
        job = RunJob()
        out = runs[0].result_path.parent
        existed = {p for p in (out, *out.rglob("*")) if p.exists()} if out.exists() else set()
        appended: list[tuple[Path, int]] = []
        try:
            # submitit prints sbatch's complaint as well as raising it: said once, in the error below
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                pending = []
                for planned in runs:
                    settings = {k: v for k, v in planned.config.to_dict().items() if k not in ("resume", "progress")}
                    settings["threads"] = planned.config.threads or resources.cpus
                    log = _log_of(planned)
                    log.parent.mkdir(parents=True, exist_ok=True)
                    # Appended, not replaced: a job of an earlier sweep may still be writing here.
                    size = log.stat().st_size if log.is_file() else 0
                    appended.append((log, size))
                    separator = "\n" if size else ""
                    with open(log, "a", encoding="utf-8") as handle:
                        handle.write(f"{separator}sweep: submitted {time.strftime('%Y-%m-%d %H:%M:%S')} ({resources.describe()})\n")
                    pending.append((executor.submit(job, settings, cwd, str(log), not force), planned))
        except (submitit.core.utils.FailedJobError, OSError) as exc:
            _remove_new(out, existed)  # the refused array's new logs and submitit's files for it
            for log, size in appended:  # and what was added to the logs that were there
                with contextlib.suppress(OSError):
                    os.truncate(log, size)
            lines = [line for line in str(exc).splitlines() if line.strip()]
            earlier = f"; job array(s) {', '.join(sorted({str(j.job_id).split('_')[0] for j, _ in submitted}))} were submitted before and run on" if submitted else ""
            raise UserError(f"sbatch refused the jobs ({resources.describe()}): {clip(lines[-1] if lines else type(exc).__name__)}{earlier}") from None
        submitted.extend(pending)
        ids = sorted({str(j.job_id).split("_")[0] for j, _ in pending})
        print(f"sweep: submitted {len(runs)} run(s) as {'job array' if where == 'slurm' else 'local job(s)'} {', '.join(ids)} ({resources.describe()} each); logs in {folder}", file=sys.stderr)
    return submitted, where


def _remove_new(out: Path, existed: set[Path]) -> None:
    """Remove what appeared under `out` (deepest first) since `existed` was listed."""
    for path in sorted((p for p in (out, *out.rglob("*")) if p.exists() and p not in existed), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()


def run_on_slurm(todo: Sequence, options: SlurmOptions, *, force: bool = False) -> Generator[tuple[Any, Path], None, None]:
    """(planned, log file) as each run's job ends; with `options.wait` off, submit and yield nothing."""
    if not todo:
        return
    submitted, where = submit(todo, options, force=force)
    if not options.wait:
        return
    from submitit.helpers import as_completed

    by_job = {id(job): planned for job, planned in submitted}
    left = {id(job): job for job, _ in submitted}
    try:
        for job in as_completed([job for job, _ in submitted], poll_frequency=POLL_SECONDS[where]):
            del left[id(job)]
            yield by_job[id(job)], _log_of(by_job[id(job)])
    finally:
        if left:  # a Ctrl-C or an error here: the jobs are the cluster's, and they run on
            ids = " ".join(sorted({str(job.job_id).split("_")[0] for job in left.values()}))
            stop = f"scancel {ids}" if where == "slurm" else f"kill {ids}"
            print(f"sweep: stopped waiting; {len(left)} job(s) run on ({stop} stops them); rerun the sweep to pick up their results", file=sys.stderr)


def resources_of(planned) -> Resources:
    """The table's resources for one planned run (what `submit` asks for without overrides)."""
    run_plan = planned.plan
    return default_resources(run_plan.backbone.spec.kind, weights_size(run_plan.weights.path if run_plan.weights else None))
