"""The run-result file (schemas in `results.schema`; docs/results.md): load and validate.

Results are written atomically by `cl_bench.files`. Validation checks the schema, the shapes and
ranges of the matrices, every field the readers use, that the file agrees with itself (its run id
re-hashes from its identity), that the stored metrics recompute from the accuracy matrix, and
(schema 5) that every cell recomputes exactly from its per-example outcomes (`results.outcomes`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeGuard

from cl_bench.contracts.protocols import PROTOCOLS
from cl_bench.errors import UserError, clip, shown
from cl_bench.paths import SWEEP_LOGS
from cl_bench.results import metrics as metrics_lib
from cl_bench.results import outcomes as outcomes_lib
from cl_bench.results.identity import identity_of_result, run_id_of
from cl_bench.results.schema import OLDER_SCHEMAS, READABLE_SCHEMAS, REQUIRED, REQUIRED_BY_SCHEMA, RESOLVED_SCHEMAS, SCHEMA, SCHEMA_2, SCHEMA_3, STATUSES, RunResult

TOLERANCE = 1e-6
# What one file may ask of the readers: every benchmark cl_bench knows has at most 100 tasks
# (Split CIFAR-100 at one class a task); a larger matrix would only cost report and publish memory.
MAX_TASKS = 100
MAX_CONTROLS = 20
MAX_RESULT_BYTES = 64 << 20
_KINDS: dict[Any, str] = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


def result_files(folder: Path) -> list[Path]:
    """The result files under a folder: every *.json but hidden files and a sweep's logs/ folder."""
    return sorted(p for p in folder.rglob("*.json") if not p.name.startswith(".") and SWEEP_LOGS not in p.relative_to(folder).parts[:-1])


def load(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"result file '{path}' not found")
    if file.stat().st_size > MAX_RESULT_BYTES:
        raise UserError(f"{path}: over {MAX_RESULT_BYTES >> 20} MiB, too large for a result file")
    try:
        return json.loads(file.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise UserError(f"{path}: not a valid JSON result file ({clip(str(exc))})") from None
    except RecursionError:
        raise UserError(f"{path}: not a result file (JSON nested too deeply)") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in a result file")


def is_number(value: Any) -> TypeGuard[int | float]:
    """A finite int or float (not a bool); an integer too large for a float is no number either."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int of hundreds of digits
        return False


def validate(data: Any, source: str = "result") -> None:
    """Raise a one-line `UserError` naming the first problem; return None for a valid result."""

    def bad(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    if not isinstance(data, dict):
        raise bad("a result file holds one JSON object")
    if data.get("schema") in OLDER_SCHEMAS:
        raise bad(
            f"schema is {data['schema']!r}, written by an older cl_bench without the test-set sizes this one scores by; "
            f"repeat the run to write a {SCHEMA!r} file: clbench run --config {source} --out <folder>"
        )
    if data.get("schema") not in READABLE_SCHEMAS:
        raise bad(f"schema is {shown(data.get('schema'))}; this cl_bench reads {' and '.join(map(repr, READABLE_SCHEMAS))}")
    for key, kind in {**REQUIRED, **REQUIRED_BY_SCHEMA[data['schema']]}.items():
        if key not in data:
            raise bad(f"required field '{key}' is missing")
        if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            raise bad(f"field '{key}' must be {_KINDS[kind]}")
    if data["status"] not in STATUSES:
        raise bad(f"status must be one of {', '.join(STATUSES)}, not {shown(data['status'])}")
    for section, field in (("method", "name"), ("scenario", "name"), ("scenario", "protocol"), ("backbone", "name")):
        if not isinstance(data[section].get(field), str):
            raise bad(f"'{section}.{field}' must be a string")
    if data["scenario"]["protocol"] not in PROTOCOLS:  # it decides what the metrics are
        raise bad(f"scenario.protocol is {shown(data['scenario']['protocol'])}; it must be one of {', '.join(PROTOCOLS)}")
    if data["schema"] in RESOLVED_SCHEMAS:
        _check_resolved(data, bad)
    else:
        config = data["config"]
        for section in ("method", "scenario", "backbone"):
            if config.get(section) != data[section]["name"]:
                raise bad(f"config.{section} is {shown(config.get(section))} but {section}.name is {shown(data[section]['name'])}")
        if config.get("seed") != data["seed"]:
            raise bad(f"config.seed is {shown(config.get('seed'))} but seed is {shown(data['seed'])}")
        if data["schema"] == SCHEMA_3:
            _check_plan(data, bad)
    if data["schema"] != SCHEMA_2:
        _check_run_id(data, bad)

    tasks = data["scenario"].get("task_order")
    controls = data["scenario"].get("control_sets", [])
    if not isinstance(tasks, list) or not tasks or not isinstance(controls, list):
        raise bad("scenario.task_order must be a non-empty list and scenario.control_sets a list")
    t = len(tasks)
    if t > MAX_TASKS or len(controls) > MAX_CONTROLS:
        raise bad(f"a result holds at most {MAX_TASKS} tasks and {MAX_CONTROLS} control sets, found {t} and {len(controls)}")
    _check_read_fields(data, bad)
    sizes = data["scenario"].get("test_sizes")
    if not isinstance(sizes, list) or len(sizes) != t or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n < 2**53 for n in sizes):
        raise bad(f"scenario.test_sizes must hold {t} positive integers (the test examples of each task), found {shown(sizes)}")
    acc, control = data["acc_matrix"], data["control_matrix"]
    complete = data["status"] == "complete"
    if complete and len(acc) != t + 1:
        raise bad(f"a complete run has {t + 1} rows in acc_matrix ({t} tasks), found {len(acc)}")
    if not 1 <= len(acc) <= t + 1:
        raise bad(f"acc_matrix has {len(acc)} rows; expected 1 to {t + 1}")
    if len(control) != len(acc):
        raise bad(f"control_matrix has {len(control)} rows but acc_matrix has {len(acc)}")
    for name, matrix, width in (("acc_matrix", acc, t), ("control_matrix", control, len(controls))):
        for i, row in enumerate(matrix):
            if not isinstance(row, list) or len(row) != width:
                raise bad(f"{name} row {i} must hold {width} numbers")
            for value in row:
                if not is_number(value) or not 0.0 <= value <= 100.0:
                    raise bad(f"{name} row {i} holds {shown(value)}; accuracies are percentages in [0, 100]")

    stored = data["metrics"]
    if not complete:
        if stored:
            raise bad("a partial result carries no metrics")
        _check_outcomes(data, bad)
        return
    expected = metrics_lib.compute(acc, control if controls else None, protocol=data["scenario"]["protocol"], test_sizes=sizes)
    if set(stored) != set(expected):
        missing = sorted(set(expected) - set(stored)) or sorted(set(stored) - set(expected))
        raise bad(f"metrics must be exactly {', '.join(expected)} (check {missing[0]!r})")
    for key, value in expected.items():
        got = stored[key]
        if value is None or got is None:
            if value is not got:
                raise bad(f"metric '{key}' is {shown(got)} but the accuracy matrix gives {value!r}: the file was edited or is corrupt")
        elif not is_number(got) or abs(got - value) > TOLERANCE * max(1.0, abs(value)):
            raise bad(f"metric '{key}' is {shown(got)} but the accuracy matrix gives {value:.6g}: the file was edited or is corrupt")
    _check_outcomes(data, bad)


def _check_outcomes(data: dict[str, Any], bad) -> None:
    """Schema 5: every cell recomputes exactly from its per-example outcomes (`results.outcomes`)."""
    if data["schema"] == SCHEMA:
        trouble = outcomes_lib.problem(data)
        if trouble:
            raise bad(trouble)


def _check_plan(data: dict[str, Any], bad) -> None:
    """The recorded plan agrees with the file, and the run id is the hash of its identity."""
    identity = data.get("plan", {}).get("identity") if isinstance(data.get("plan"), dict) else None
    if not isinstance(identity, dict) or not all(isinstance(identity.get(k), dict) for k in ("method", "scenario", "backbone")):
        raise bad("'plan.identity' must be an object with method, scenario and backbone (what the run id hashes)")
    for section in ("method", "scenario", "backbone"):
        if identity[section].get("name") != data[section]["name"]:
            raise bad(f"plan.identity.{section}.name is {shown(identity[section].get('name'))} but {section}.name is {shown(data[section]['name'])}")
    if identity.get("seed") != data["seed"]:
        raise bad(f"plan.identity.seed is {shown(identity.get('seed'))} but seed is {shown(data['seed'])}")
    if identity["method"].get("params") != data["method"].get("hyperparameters"):
        raise bad("plan.identity.method.params differ from method.hyperparameters: the file was edited or is corrupt")


# The resolved values a schema-4 result states once, each with its type: its run id is derived
# from them, and the readers (report, publish, repeating a run) use them.
RESOLVED_FIELDS: tuple[tuple[str, str, tuple[type, ...]], ...] = (
    ("method", "version", (str,)),
    ("method", "hyperparameters", (dict,)),
    ("scenario", "version", (str,)),
    ("scenario", "params", (dict,)),
    ("backbone", "version", (str,)),
    ("scenario", "data_sha256", (str, type(None))),
    ("backbone", "params", (dict,)),
    ("backbone", "weights_sha256", (str, type(None))),
    ("backbone", "weights_param", (str, type(None))),
    ("hardware", "precision", (str,)),
    ("execution", "out", (str,)),
)


def _check_read_fields(data: dict[str, Any], bad) -> None:
    """The fields report and publish read beyond the matrices, each with its type and shape, so a
    reader never meets a value it cannot use (a traceback instead of a one-line refusal)."""
    scenario = data["scenario"]
    if not all(isinstance(name, str) for name in scenario["task_order"]):
        raise bad("scenario.task_order must hold task names (strings)")
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in scenario.get("control_sets", [])):
        raise bad("scenario.control_sets must hold objects with a 'name' string")
    if not isinstance(scenario.get("params", {}), dict):
        raise bad("'scenario.params' must be an object")
    if data["schema"] != SCHEMA_2 and not isinstance(data["method"].get("hyperparameters"), dict):
        raise bad("'method.hyperparameters' must be an object")
    trainable = data["params"].get("trainable", [])
    if not isinstance(trainable, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53 for n in trainable):
        raise bad("params.trainable must be a list of parameter counts (non-negative integers)")
    experiences = data["timings"].get("experiences", [])
    if not isinstance(experiences, list) or not all(isinstance(e, dict) and is_number(e.get("train", 0.0)) and is_number(e.get("eval", 0.0)) for e in experiences):
        raise bad("timings.experiences must be a list of objects with numeric 'train' and 'eval' seconds")
    total = data["timings"].get("total", 0.0)
    if not is_number(total):
        raise bad("timings.total must be a number of seconds")


def _check_resolved(data: dict[str, Any], bad) -> None:
    for section, field, kinds in RESOLVED_FIELDS:
        if field not in data[section] and section == "scenario":  # optional: only streams that declare data files have it
            continue
        if field not in data[section] or not isinstance(data[section][field], kinds):
            wanted = " or ".join("null" if kind is type(None) else _KINDS[kind] for kind in kinds)
            raise bad(f"'{section}.{field}' must be {wanted}")


def _check_run_id(data: dict[str, Any], bad) -> None:
    """The run id is the hash of the run's identity (stored in schema 3, derived in schema 4)."""
    try:
        expected = run_id_of(identity_of_result(data) or {})
    except (TypeError, ValueError, KeyError):
        raise bad("the run's identity holds values a run id cannot be made of") from None
    if data["run_id"] != expected:
        raise bad(f"run_id is {shown(data['run_id'])} but the run's settings hash to {expected!r}: the file was edited or is corrupt")


def load_valid(path: str | Path) -> RunResult:
    data = load(path)
    validate(data, str(path))
    return RunResult(data, Path(path))
