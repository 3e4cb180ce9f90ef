"""The checkpoint a run writes after each experience, and the checks it passes before a resume.

A checkpoint is two files: `<run>.ckpt`, a JSON manifest, and `<run>.ckpt.<address>.safetensors`,
the tensors the run changed (nothing is unpickled; safetensors files are made to be read from
untrusted sources). Tensors still bit-equal to the model as `build` made it (the pre-trained
backbone, and whatever a method set up before training and never changed) are not copied: the
manifest names them by sha256, and a resume, which builds the model again as usual, checks each
one before loading the rest. Everything else of the model's state, the method's tensors, and the
plain values of the method's and the strategy's state (as tagged JSON) are stored.

The manifest lists every tensor with its dtype, shape, sha256 and where it lives, and carries a
sha256 over all of itself, so flipped bytes in either file, a truncated copy or an edit are
refused with a one-line error instead of resuming into wrong numbers. The progress is also
checked for shape and range: a checkpoint whose digest was recomputed after an edit still cannot
make the run write a result that `clbench validate` rejects.

The pair is never half-updated: the tensors file is written first under a name of its own (the
sha256 of its tensor list), then the manifest atomically replaces the previous one, and only then
are the previous tensors file and any left by a killed save removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, clip
from cl_bench.files import write_atomic
from cl_bench.results.identity import canonical_json
from cl_bench.results.validation import is_number

# /1 had no digest; /2 was one torch.save file holding the whole model
FORMAT = "cl_bench.checkpoint/3"
REFERENCE, STORED = "reference", "file"  # where a tensor lives: the rebuilt model, or the tensors file
_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAGS = ("tensor", "float", "list", "tuple", "dict")  # how the JSON of method and strategy state marks its values
_FIX = "delete it to start over"
MAX_MANIFEST_BYTES = 256 << 20  # four times a result file's limit: it holds a result's outcomes and a line per tensor


@dataclass(frozen=True)
class Fingerprint:
    """What the manifest records of a tensor."""

    dtype: str
    shape: tuple[int, ...]
    sha256: str

    def record(self, where: str) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "sha256": self.sha256, "in": where}


@dataclass
class Checkpoint:
    next_task: int
    progress: dict[str, Any]
    model: dict[str, Any]  # the stored model tensors; the others are `referenced`, checked equal to the rebuilt model's
    method: Any
    strategy: dict[str, Any] = field(default_factory=dict)
    referenced: frozenset[str] = frozenset()


def fingerprint(tensor: Any) -> Fingerprint:
    """dtype, shape and the sha256 of the tensor's bytes (row-major, as safetensors stores them)."""
    data = tensor.detach().reshape(-1).contiguous().cpu()
    dtype = str(tensor.dtype).removeprefix("torch.")
    import torch

    hasher = hashlib.sha256(data.view(torch.uint8).numpy() if data.numel() else b"")
    return Fingerprint(dtype, tuple(int(n) for n in tensor.shape), hasher.hexdigest())


def fingerprints(state: Mapping[str, Any]) -> dict[str, Fingerprint]:
    """The fingerprint of every tensor of a model's `state_dict()`: taken once the run is built, it
    is what later checkpoints reference instead of copying (and what a resume checks against).
    Hashed on the run's CPU threads at once (hashlib lets go of the GIL while it hashes)."""
    import torch

    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        return dict(zip(state, pool.map(fingerprint, state.values())))


def digest(manifest: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of the manifest without its own `sha256` (every tensor enters
    through its sha256, so this covers the tensors file as well)."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "sha256"}).encode()).hexdigest()


def tensors_files(path: Path) -> list[Path]:
    """Every tensors file of the checkpoint at `path`, the current one and any a killed save left."""
    return sorted(path.parent.glob(f"{glob_escape(path.name)}.*.safetensors")) if path.parent.is_dir() else []


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def remove(path: Path) -> None:
    """Delete the checkpoint: the manifest first, so that no manifest ever names a missing file."""
    path.unlink(missing_ok=True)
    for stale in tensors_files(path):
        stale.unlink(missing_ok=True)


def save(
    path: Path,
    *,
    run_id: str,
    identity: str,
    next_task: int,
    progress: Mapping[str, Any],
    model: Mapping[str, Any],
    method: Mapping[str, Any],
    reference: Mapping[str, Fingerprint] | None = None,
    strategy: Mapping[str, Any] | None = None,
) -> None:
    """Write the checkpoint: tensors of `model` whose fingerprint equals `reference`'s are named, the
    others stored. A kill at any point leaves the previous checkpoint or this one, whole."""
    from safetensors.torch import save_file

    reference = reference or {}
    entries: dict[str, dict[str, Any]] = {}
    stored: dict[str, Any] = {}
    for name, now in fingerprints(model).items():
        where = REFERENCE if reference.get(name) == now else STORED
        entries[f"model/{name}"] = now.record(where)
        if where == STORED:
            stored[f"model/{name}"] = model[name]
    method_tree = encode(method, "method", stored)
    strategy_tree = encode(dict(strategy or {}), "strategy", stored)
    for name, tensor in stored.items():
        if name not in entries:
            entries[name] = fingerprint(tensor).record(STORED)
    tensors_name = None
    if stored:
        address = hashlib.sha256(canonical_json({k: v for k, v in entries.items() if k in stored}).encode()).hexdigest()[:16]
        tensors_name = f"{path.name}.{address}.safetensors"
        write_atomic(path.with_name(tensors_name), lambda tmp: save_file(plain_tensors(stored), str(tmp), metadata={"format": FORMAT}))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "run_id": run_id,
        "identity": json.loads(identity),
        "next_task": next_task,
        "progress": progress,
        "tensors_file": tensors_name,
        "tensors": entries,
        "method": method_tree,
        "strategy": strategy_tree,
    }
    manifest["sha256"] = digest(manifest)
    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for stale in tensors_files(path):  # the previous checkpoint's, and any a killed save left
        if stale.name != tensors_name:
            stale.unlink(missing_ok=True)


def plain_tensors(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors as safetensors writes them: on the CPU, contiguous, none sharing memory (tied
    weights, a method's tensor that is also a parameter: safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in stored.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        out[name] = tensor
    return out


def encode(value: Any, where: str, tensors: dict[str, Any]) -> Any:
    """Method or strategy state as JSON: tensors go to `tensors` (named by where they sit) and are
    referred to by name; tuples, dicts with int keys and non-finite floats are tagged, so that
    `decode` gives back the same values and types. Anything else is refused (nothing is pickled)."""
    import torch

    if isinstance(value, torch.Tensor):
        if where in tensors:  # keys holding "/" can spell the same place twice
            where = f"{where}#{len(tensors)}"
        tensors[where] = value
        return {"tensor": where}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        items = [encode(item, f"{where}/{i}", tensors) for i, item in enumerate(value)]
        return {"list" if isinstance(value, list) else "tuple": items}
    if isinstance(value, Mapping):
        pairs = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise UserError(f"checkpoint: the {where} state has a key of type {type(key).__name__}; a checkpoint keeps str and int keys only")
            pairs.append([key, encode(item, f"{where}/{key}", tensors)])
        return {"dict": pairs}
    raise UserError(f"checkpoint: {clip(where)} in the state is a {type(value).__name__}; a checkpoint keeps tensors and plain values (None, bool, int, float, str, lists, tuples, dicts)")


def decode(tree: Any, tensors: Mapping[str, Any]) -> Any:
    """The values `encode` wrote; ValueError for anything it cannot have written."""
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if not isinstance(tree, dict) or len(tree) != 1 or next(iter(tree)) not in _TAGS:
        raise ValueError(f"an untagged value {clip(repr(tree), 40)}")
    ((tag, body),) = tree.items()
    if tag == "tensor":
        if body not in tensors:
            raise ValueError(f"a tensor {clip(repr(body), 60)} that the checkpoint does not store")
        return tensors[body]
    if tag == "float":
        if body not in ("nan", "inf", "-inf"):
            raise ValueError(f"a float {clip(repr(body), 20)}")
        return float(body)
    if tag in ("list", "tuple") and isinstance(body, list):
        items = [decode(item, tensors) for item in body]
        return items if tag == "list" else tuple(items)
    if tag == "dict" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) and not isinstance(p[0], bool) for p in body):
        return {key: decode(item, tensors) for key, item in body}
    raise ValueError(f"a malformed {tag}")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest as JSON, or a one-line error (an older torch.save checkpoint is named as such)."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UserError(f"checkpoint {path} is over {MAX_MANIFEST_BYTES:,} bytes: not a {FORMAT} manifest; {_FIX}")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}); {_FIX}") from None
    if data.startswith(b"PK\x03\x04"):  # a zip archive: torch.save, the format before /3 (never loaded: it may pickle)
        raise UserError(f"{path} is not a {FORMAT} checkpoint (an older cl_bench wrote it with torch.save); {_FIX}")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}); {_FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(f"{path} is not a {FORMAT} checkpoint (format {clip(repr(found))}); {_FIX}")
    return manifest


def load(path: Path, *, identity: str, num_tasks: int, num_controls: int, reference: Mapping[str, Fingerprint] | None = None) -> Checkpoint:
    """Read and check a checkpoint; every problem is a one-line `UserError` naming the file.

    `reference`: the fingerprints of the model as this run built it; every tensor the checkpoint
    references must match its own there (checked here, so the caller loads only `model`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = read_manifest(path)
    if manifest.get("sha256") != digest(manifest):
        raise UserError(f"checkpoint {path} fails its sha256 check (corrupt or edited); {_FIX}")
    try:
        same_run = canonical_json(manifest.get("identity")) == identity
    except (TypeError, ValueError):
        same_run = False
    if not same_run:
        raise UserError(f"checkpoint {path} was written by a run with another configuration; {_FIX} or drop --resume")
    next_task: Any = manifest.get("next_task")  # an int once progress_problem() below passes it
    progress: Any = manifest.get("progress")  # a dict once progress_problem() below passes it
    problem = progress_problem(progress, next_task, num_tasks, num_controls)
    if problem:
        raise UserError(f"checkpoint {path}: {problem}; {_FIX}")
    entries = manifest.get("tensors")
    if not isinstance(entries, dict) or not all(isinstance(e, dict) and _entry_problem(e) is None for e in entries.values()):
        problems = ((name, _entry_problem(e) if isinstance(e, dict) else "not an object") for name, e in entries.items()) if isinstance(entries, dict) else iter([("tensors", "missing")])
        bad = next((f"{clip(name, 60)}: {problem}" for name, problem in problems if problem), "")
        raise UserError(f"checkpoint {path}: its tensor list is malformed ({bad}); {_FIX}")
    misplaced = [name for name, e in entries.items() if not name.startswith("model/" if e["in"] == REFERENCE else ("model/", "method/", "strategy/"))]
    if misplaced:
        raise UserError(f"checkpoint {path}: its tensor list is malformed ({clip(misplaced[0], 60)} cannot be {entries[misplaced[0]]['in']}); {_FIX}")
    reference = reference or {}
    referenced = {name.removeprefix("model/"): e for name, e in entries.items() if e["in"] == REFERENCE}
    for name, entry in referenced.items():
        mine = reference.get(name)
        if mine is None:
            raise UserError(f"checkpoint {path} does not fit this run (it references {clip(name, 80)}, which this run's model does not have); {_FIX}")
        if mine.record(REFERENCE) != entry:
            raise UserError(
                f"checkpoint {path}: this run's rebuilt {clip(name, 80)} is not the one the checkpoint references (sha256 {mine.sha256[:12]}, expected {str(entry['sha256'])[:12]}): "
                f"its weights or the code that builds it changed; {_FIX}"
            )
    stored_names = {name for name, e in entries.items() if e["in"] == STORED}
    tensors = read_tensors(path, manifest.get("tensors_file"), stored_names, load_file, SafetensorError)
    for name in stored_names:
        if fingerprint(tensors[name]).record(STORED) != entries[name]:
            raise UserError(f"checkpoint {path} fails its sha256 check ({clip(name, 80)} differs from its manifest: corrupt or edited); {_FIX}")
    try:
        method = decode(manifest.get("method"), tensors)
        strategy = decode(manifest.get("strategy"), tensors)
    except ValueError as exc:
        raise UserError(f"checkpoint {path}: its method or strategy state holds {exc}; {_FIX}") from None
    if not isinstance(method, Mapping) or not isinstance(strategy, dict):
        raise UserError(f"checkpoint {path} holds no method or strategy state; {_FIX}")
    model = {name.removeprefix("model/"): tensors[name] for name in stored_names if name.startswith("model/")}
    return Checkpoint(next_task, progress, model, method, strategy, frozenset(referenced))


def read_tensors(path: Path, name: Any, expected: set[str], load_file, error: type[Exception]) -> dict[str, Any]:
    """The stored tensors, from the tensors file the manifest names (a name beside the manifest, never a path)."""
    if not expected and name is None:
        return {}
    pattern = re.escape(path.name) + r"\.[0-9a-f]{16}\.safetensors"
    if not isinstance(name, str) or not re.fullmatch(pattern, name):
        raise UserError(f"checkpoint {path} names its tensors file {clip(repr(name))}, not {path.name}.<16 hex>.safetensors; {_FIX}")
    try:
        tensors = load_file(str(path.with_name(name)))
    except (OSError, error, ValueError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} cannot be read (its tensors file {name}: {type(exc).__name__}); {_FIX}") from None
    if set(tensors) != expected:
        raise UserError(f"checkpoint {path} fails its sha256 check (its tensors file holds other tensors than its manifest lists); {_FIX}")
    return tensors


def _entry_problem(entry: Mapping[str, Any]) -> str | None:
    shape = entry.get("shape")
    if set(entry) != {"dtype", "shape", "sha256", "in"}:
        return "keys must be dtype, shape, sha256, in"
    if entry["dtype"] not in _DTYPES:
        return f"dtype {clip(repr(entry['dtype']), 20)}"
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return "shape is not a list of sizes"
    if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
        return "sha256 is not 64 hex digits"
    if entry["in"] not in (REFERENCE, STORED):
        return f"'in' is {clip(repr(entry['in']), 20)}, not {REFERENCE} or {STORED}"
    return None


def restore_model(model: Any, saved: Checkpoint) -> None:
    """Load the stored tensors into the rebuilt model; the referenced ones are already there (and
    `load` checked them). Raises what `load_state_dict` raises, or ValueError for a tensor that the
    model has and the checkpoint neither stores nor references, or one the model lacks."""
    outcome = model.load_state_dict(saved.model, strict=False)
    missing = sorted(set(outcome.missing_keys) - saved.referenced)
    if missing:
        raise ValueError(f"it neither stores nor references {', '.join(missing[:3])}")
    if outcome.unexpected_keys:
        raise ValueError(f"it stores {', '.join(outcome.unexpected_keys[:3])}, which this run's model lacks")


def recorded_identity(path: Path) -> dict[str, Any] | None:
    """The run identity a checkpoint records (None when it cannot be read): what `--resume` names
    when it leaves another run's checkpoint alone and no partial result sits beside it."""
    try:
        identity = read_manifest(path).get("identity")
    except UserError:  # truncated, foreign, an older format: unknown, never a traceback
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
