"""The run configuration: every setting that defines a run, as given, and the defaults that
belong to no plugin (threads, data root)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cl_bench.contracts.params import coerce
from cl_bench.errors import UserError, shown, unknown_name

MAX_SEED = 2**32 - 1
MAX_THREADS = 1024  # more than any machine's cores; torch fails past its own limit with a traceback  # numpy's seed range; torch and random accept it too


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")


@dataclass
class RunConfig:
    """Everything that defines a run. The result file stores it, so a run can be repeated."""

    method: str = "moram"
    scenario: str = "embedded-mtil"
    backbone: str = "tiny-clip"
    seed: int = 0
    iters: int | None = None  # shortcut for method.iters
    batch_size: int | None = None  # shortcut for method.batch_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    data_root: str | None = None
    pretrained: str | None = None  # shortcut for backbone.pretrained
    out: str = "runs"
    eval_batch_size: int = 256
    num_workers: int = 0
    threads: int | None = None  # CPU threads of this run; None: half the usable cores (see default_threads)
    nproc: int = 1  # processes training the run data-parallel (cl_bench.running.distributed)
    shard_weights: bool = False  # under nproc > 1: shard a language model's weights over the processes while it trains (cl_bench.running.sharding)
    method_params: dict[str, Any] = field(default_factory=dict)
    scenario_params: dict[str, Any] = field(default_factory=dict)
    backbone_params: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # experiment trackers fed by the run events (--log)
    resume: bool = False
    progress: bool = True

    # Fields that name where and how a run executes, not what it computes (the run id comes from
    # the resolved plan, `cl_bench.running.plan`, where these have no part either).
    EXECUTION_FIELDS = ("out", "resume", "progress", "device", "num_workers", "eval_batch_size", "data_root", "threads", "log", "nproc", "shard_weights")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        config = cls()
        for key, value in data.items():
            config.set(key, value, source)
        return config

    def set(self, key: str, value: Any, source: str = "--set") -> None:
        """Apply one `key=value`: a field of this class, or `method.X`, `scenario.X`, `backbone.X`."""
        head, dot, rest = key.partition(".")
        if dot and head in ("method", "scenario", "backbone") and rest:
            getattr(self, f"{head}_params")[rest] = value
            return
        if key in ("method_params", "scenario_params", "backbone_params"):
            if not isinstance(value, Mapping):
                raise UserError(f"{source}: '{key}' must be a table of parameters, got {value!r}")
            getattr(self, key).update(value)
            return
        fields = {f.name: f for f in dataclasses.fields(self)}
        if key not in fields:
            known = [f for f in fields] + ["method.<param>", "scenario.<param>", "backbone.<param>"]
            raise unknown_name("setting", key, known, hint=f"(in {source})")
        default = fields[key].default
        if key in ("iters", "batch_size", "threads", "nproc"):
            setattr(self, key, None if value is None else coerce(key, value, 1))
        elif key in ("data_root", "pretrained"):
            setattr(self, key, None if value in (None, "") else coerce(key, value, ""))
        elif key == "log":
            names = value.split(",") if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"{source}: 'log' must be logger names (a list, or a comma-separated string), got {shown(value)}")
            self.log = [n.strip() for n in names if n.strip()]
        else:
            setattr(self, key, coerce(key, value, default))

    def check(self) -> None:
        """Refuse values of the right type but outside their range; called before any work."""
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be between 0 and {MAX_SEED} (2^32 - 1), got {shown(self.seed)}")
        if self.eval_batch_size < 1:
            raise UserError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.num_workers < 0:
            raise UserError(f"num_workers must be 0 or more, got {self.num_workers}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise UserError(f"unknown device {shown(self.device)}: use auto, cpu, cuda or cuda:N")
        if not 1 <= self.nproc <= MAX_THREADS:
            raise UserError(f"nproc must be between 1 and {MAX_THREADS}, got {shown(self.nproc)}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:  # iters and batch_size are method.<key>: checked there
            raise UserError(f"threads must be between 1 and {MAX_THREADS}, got {shown(self.threads)}")


def default_threads(runs_at_once: int = 1) -> int:
    """The CPU threads of one run when `runs_at_once` runs share this process's usable cores.

    The one owner of the default: `clbench run`, both sweep engines' runs and `build(plan)` use it.
    One run alone gets half the usable cores (at least one); runs side by side split the cores
    evenly. Measured on two cores (seq-lora, 50 iterations per task): idle, two threads train 1.4x
    faster than one; beside one busy process, two threads train 13x slower than one, since
    PyTorch's threads wait for each other on a core that is taken. Half the cores keeps that
    cliff away. The usable cores are this process's CPU affinity, not the machine's count.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable // max(2, runs_at_once))


def data_root_or_env(data_root: str | None) -> str | None:
    """The data root given on the command line or in a config, else $CL_BENCH_DATA, else None."""
    return data_root or os.environ.get("CL_BENCH_DATA") or None

