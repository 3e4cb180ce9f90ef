"""The checkpoint a run writes after each experience, and the checks it passes before a resume.

A checkpoint is a `torch.save` dict of tensors and plain values, loaded with `weights_only=True`
(nothing is unpickled). It carries a sha256 over everything else it holds (the model and method
tensors byte for byte, the progress so far, the run's identity), so flipped bytes, a truncated
copy or an edit are refused with a one-line error instead of resuming into wrong numbers. The
progress is also checked for shape and range: a checkpoint whose digest was recomputed after an
edit still cannot make the run write a result that `clbench validate` rejects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, clip
from cl_bench.files import write_atomic
from cl_bench.results.validation import is_number

FORMAT = "cl_bench.checkpoint/2"  # /1 had no digest
_PAYLOAD = ("run_id", "identity", "next_task", "progress", "model", "method")


@dataclass
class Checkpoint:
    next_task: int
    progress: dict[str, Any]
    model: Mapping[str, Any]
    method: Mapping[str, Any]


def digest(state: Mapping[str, Any]) -> str:
    """sha256 over the payload fields of a checkpoint dict: keys, types, dtypes, shapes and bytes."""
    import torch

    hasher = hashlib.sha256()
    pending: list[tuple[str, Any]] = [(key, state.get(key)) for key in reversed(_PAYLOAD)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            hasher.update(f"{where}|tensor|{value.dtype}|{tuple(value.shape)}|".encode())
            hasher.update(data.numpy().tobytes())
        elif isinstance(value, Mapping):
            hasher.update(f"{where}|map|{len(value)}|".encode())
            pending.extend((f"{where}/{key}", value[key]) for key in sorted(value, key=str, reverse=True))
        elif isinstance(value, (list, tuple)):
            hasher.update(f"{where}|{type(value).__name__}|{len(value)}|".encode())
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
        else:
            hasher.update(f"{where}|{type(value).__name__}|{value!r}|".encode())
    return hasher.hexdigest()


def save(path: Path, *, run_id: str, identity: str, next_task: int, progress: Mapping[str, Any], model: Mapping[str, Any], method: Mapping[str, Any]) -> None:
    """Write the checkpoint atomically (a kill mid-write leaves the previous one)."""
    import torch

    state = {"format": FORMAT, "run_id": run_id, "identity": identity, "next_task": next_task, "progress": json.dumps(progress), "model": model, "method": method}
    state["sha256"] = digest(state)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load(path: Path, *, identity: str, num_tasks: int, num_controls: int) -> Checkpoint:
    """Read and check a checkpoint; every problem is a one-line `UserError` naming the file."""
    import torch

    fix = "delete it to start over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or holding objects we refuse to unpickle
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}); {fix}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise UserError(f"{path} is not a {FORMAT} checkpoint (format {clip(repr(found))}); {fix}")
    if state.get("sha256") != digest(state):
        raise UserError(f"checkpoint {path} fails its sha256 check (corrupt or edited); {fix}")
    if state.get("identity") != identity:
        raise UserError(f"checkpoint {path} was written by a run with another configuration; {fix} or drop --resume")
    next_task: Any = state.get("next_task")  # an int once progress_problem() below passes it
    try:
        progress = json.loads(state["progress"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {path}: its progress is not JSON ({clip(str(exc))}); {fix}") from None
    problem = progress_problem(progress, next_task, num_tasks, num_controls)
    if problem:
        raise UserError(f"checkpoint {path}: {problem}; {fix}")
    if not isinstance(state.get("model"), Mapping) or not isinstance(state.get("method"), Mapping):
        raise UserError(f"checkpoint {path} holds no model or method state; {fix}")
    return Checkpoint(next_task, progress, state["model"], state["method"])


def recorded_identity(path: Path) -> dict[str, Any] | None:
    """The run identity a checkpoint records (None when it cannot be read): what `--resume` names
    when it leaves another run's checkpoint alone and no partial result sits beside it."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        identity = json.loads(state["identity"]) if isinstance(state, dict) and isinstance(state.get("identity"), str) else None
    except Exception:  # truncated, foreign, refused by weights_only: unknown, never a traceback
        return None
    return identity if isinstance(identity, dict) else None


def progress_problem(progress: Any, next_task: Any, num_tasks: int, num_controls: int) -> str | None:
    """What is wrong with a checkpoint's progress record, or None when it can be resumed."""
    if isinstance(next_task, bool) or not isinstance(next_task, int) or not 1 <= next_task < num_tasks:
        return f"next_task is {clip(repr(next_task))}, not a task between 1 and {num_tasks - 1}"
    if not isinstance(progress, dict):
        return "its progress is not an object"
    for key, width in (("acc", num_tasks), ("control", num_controls)):
        rows = progress.get(key)
        if not isinstance(rows, list) or len(rows) != next_task + 1:
            return f"progress '{key}' must hold {next_task + 1} rows"
        for row in rows:
            if not isinstance(row, list) or len(row) != width or not all(is_number(v) and 0.0 <= v <= 100.0 for v in row):
                return f"progress '{key}' rows must hold {width} accuracies in [0, 100]"
    outcomes, control_sizes = progress.get("outcomes"), progress.get("control_sizes")  # absent before per-example outcomes
    if outcomes is not None and (
        not isinstance(outcomes, list)
        or len(outcomes) != next_task + 1
        or not all(_outcome_row(row, num_tasks, num_controls) for row in outcomes)
        or not isinstance(control_sizes, list)
        or len(control_sizes) != num_controls
        or not all(_count(n) for n in control_sizes)
    ):
        return f"progress 'outcomes' must hold {next_task + 1} rows of {num_tasks} test and {num_controls} control cells with a batch size, and 'control_sizes' {num_controls} counts"
    timings, params = progress.get("timings"), progress.get("params")
    if not isinstance(timings, dict) or not isinstance(timings.get("experiences"), list) or len(timings["experiences"]) != next_task:
        return f"progress 'timings' must list {next_task} experiences"
    if not isinstance(params, dict) or any(not isinstance(params.get(k), list) or len(params[k]) != next_task for k in ("trainable", "added")):
        return f"progress 'params' must list {next_task} trainable and added counts"
    elapsed = progress.get("elapsed")
    if not is_number(elapsed) or elapsed < 0:
        return "progress 'elapsed' must be a number of seconds"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**53


def _outcome_row(row: Any, num_tasks: int, num_controls: int) -> bool:
    """A row of kept outcomes has the row's cells (each a bitmap, a score list or None) and its batch size;
    whether each recomputes its cell is checked when the result is written (`results.outcomes`)."""
    if not isinstance(row, dict) or not _count(row.get("batch_size")):
        return False
    return all(
        isinstance(row.get(key), list) and len(row[key]) == width and all(cell is None or isinstance(cell, (str, list)) for cell in row[key])
        for key, width in (("acc", num_tasks), ("control", num_controls))
    )
