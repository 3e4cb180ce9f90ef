"""`clbench sweep --engine ray`: each run of the grid as a Ray task.

A task runs the configuration in its Ray worker with `--resume`, writing its checkpoints (and its
own copy of the result) under `<out>/logs/ray/` as that worker sees the path: on one machine, or
where `--out` is on storage every node reaches, a retried task resumes from the last finished
task. The result document and the run's output travel back to the driver as the task's return
value, and the driver writes `<out>/<run id>.json` and `<out>/logs/<run id>.log` itself, so the
results need no shared filesystem. Ray retries a task whose worker died (node loss, OOM kill,
`kill -9`) up to `RETRIES` times; a run that fails on its own (a bad setting, divergence) is not
retried and is reported with its log.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import time
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, clip
from cl_bench.paths import SWEEP_LOGS

RETRIES = 3  # Ray's retries of a task whose worker process died
WORKER_FOLDER = "ray"  # under <out>/logs: the workers' checkpoints and own copies of results
_runs_here = 0  # runs this Ray worker process has started: Ray reuses a worker for CPU-only tasks


def _import_ray():
    # An offline tool: Ray's usage statistics would probe the network (cloud metadata, DNS).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install 'ray>=2.40')") from None
    except BaseException as exc:  # a broken installation fails in its own ways (SystemExit included)
        raise UserError(f"Ray is installed but cannot be imported ({type(exc).__name__}: {clip(str(exc))}); reinstall it: pip install --force-reinstall 'ray>=2.40'") from None
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a `host:port` address nothing listens on, in seconds: `ray.init` would retry forever."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address must be HOST:PORT (the Ray head's GCS address, e.g. 127.0.0.1:6379), 'auto' or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it with 'ray start --head' or check --address") from None


def run_in_worker(settings: dict[str, Any], out: str, force: bool, sweep_id: str) -> dict[str, Any]:
    """One run inside a Ray worker; returns its result document or its failure, with its output."""
    global _runs_here
    _runs_here += 1
    from cl_bench.config.registry import Registry
    from cl_bench.config.run_config import RunConfig
    from cl_bench.running.plan import plan
    from cl_bench.running.runner import run

    config = RunConfig.from_dict(settings)
    config.out = str(Path(out) / SWEEP_LOGS / WORKER_FOLDER)
    config.progress = False
    # Resume whatever an earlier attempt left, except under --force, where this sweep's first
    # attempt starts over and only its own retries resume (the marker names the sweep).
    registry = Registry()
    marker = plan(config, registry).result_path.with_suffix(".attempt")
    retry = marker.is_file() and marker.read_text(encoding="utf-8") == sweep_id
    config.resume = retry or not force
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(sweep_id, encoding="utf-8")
    output = io.StringIO()
    output.write(f"ray: worker process {os.getpid()}, run {_runs_here} in this process\n")
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            result = run(config, registry=registry, log_folder=Path(out) / SWEEP_LOGS)
        except UserError as exc:
            print(f"clbench: error: {exc}")
            return {"ok": False, "output": output.getvalue()}
    marker.unlink(missing_ok=True)
    document = dict(result.data)
    # Where the driver keeps it: the worker staged it elsewhere, the result names the sweep's --out.
    document["execution"] = {**document["execution"], "out": out}
    return {"ok": True, "result": document, "output": output.getvalue()}


def run_on_ray(
    todo: Sequence, *, force: bool = False, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0
) -> Generator[tuple[Any, Path], None, None]:
    """(planned, log file) as each run's task ends; the driver writes results and logs."""
    ray = _import_ray()
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise UserError("--cpus-per-run must be above 0 and --gpus-per-run at least 0")
    if not todo:  # every run complete: no cluster to start or join
        return
    began = time.perf_counter()
    check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}; start it with 'ray start --head' or check --address") from None
    print(f"sweep: Ray {'joined at ' + address if address else 'started locally'} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=RETRIES)(run_in_worker)
        threads = max(1, int(cpus_per_run))
        sweep_id = uuid.uuid4().hex
        pending = {}
        for planned in todo:
            settings = {k: v for k, v in planned.config.to_dict().items() if k not in ("resume", "progress", "out")}
            settings["threads"] = planned.config.threads or threads
            pending[task.remote(settings, str(planned.result_path.parent), force, sweep_id)] = planned
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            planned = pending.pop(done)
            try:
                outcome = ray.get(done)
            except Exception as exc:  # the worker died more often than Ray retries, or Ray itself failed
                outcome = {"ok": False, "output": f"ray: the task failed after {RETRIES} retries: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}\n"}
            log = planned.result_path.parent / SWEEP_LOGS / f"{planned.result_path.stem}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(outcome["output"], encoding="utf-8")
            if outcome["ok"]:
                from cl_bench.running.runner import write_result  # validated first: what a worker sends is checked like a file

                try:
                    write_result(planned.result_path, outcome["result"])
                except UserError as exc:
                    log.write_text(outcome["output"] + f"clbench: error: the worker's result was refused: {exc}\n", encoding="utf-8")
            yield planned, log
    finally:
        ray.shutdown()
