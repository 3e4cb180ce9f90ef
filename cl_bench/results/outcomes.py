"""Per-example outcomes of a result file (schema `cl_bench.result/5`; docs/results.md).

For every cell of the accuracy and control matrices the result stores which test examples were
right, in the order the evaluation fed them (the test set's own order):

- a classifier's cell as a bitmap: `numpy.packbits(right, bitorder="little")` in base64 (bit i of
  byte i // 8 is example i; the padding bits of the last byte are 0), one bit per example;
- a text cell as the list of its per-example scores in [0, 1];
- `null` where the model's scorer kept no outcomes (a plugin's own `CellScorer`).

Each recomputes its cell bit for bit: a bitmap through the arithmetic of Avalanche's `Accuracy`
(the running mean over the evaluation batches of `outcomes.batch_sizes[row]` examples: sum over
batches of (k_b / n_b) * n_b, divided by the examples, times 100), a score list through
`cells.mean_score` (100 x left-to-right sum / count). `clbench validate` checks every cell.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cl_bench.cells import mean_score, running_accuracy

FIELDS = ("batch_sizes", "control_sizes", "acc", "control")


def encode_bits(right: Sequence[bool] | np.ndarray) -> str:
    """A bitmap of booleans: packbits (little bit order) in base64."""
    return base64.b64encode(np.packbits(np.asarray(right, dtype=bool), bitorder="little").tobytes()).decode("ascii")


def decode_bits(text: str, count: int) -> np.ndarray:
    """The `count` booleans of a bitmap; ValueError when it does not hold exactly `count` bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != (count + 7) // 8:
        raise ValueError(f"{len(raw)} bytes for {count} examples (expected {(count + 7) // 8})")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[count:].any():
        raise ValueError("padding bits set past the last example")
    return bits[:count].astype(bool)


def encode_cell(outcomes: Sequence[Any] | None, batch_size: int) -> tuple[str | list[float] | None, Callable[[], float] | None]:
    """A scorer's outcomes as stored, and how to recompute the cell from them (None, None: no outcomes)."""
    if outcomes is None:
        return None, None
    values = list(outcomes)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        right = np.asarray(values, dtype=bool)
        return encode_bits(right), lambda: running_accuracy(right, batch_size)
    scores = [float(v) for v in values]
    return scores, lambda: mean_score(scores)


def cell_value(stored: Any, count: int, batch_size: int) -> float:
    """The cell a stored outcome recomputes to (ValueError for a malformed one)."""
    if isinstance(stored, str):
        return running_accuracy(decode_bits(stored, count), batch_size)
    if isinstance(stored, list):
        if len(stored) != count:
            raise ValueError(f"{len(stored)} scores for {count} examples")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in stored):
            raise ValueError("scores must be numbers in [0, 1]")
        return mean_score([float(v) for v in stored])
    raise ValueError("a cell's outcomes are a bitmap (base64 string), a list of scores or null")


def example_values(stored: Any, count: int) -> np.ndarray | None:
    """A stored cell's per-example values as floats in [0, 1] (1.0 = right), or None."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return decode_bits(stored, count).astype(float)
    return np.asarray(stored, dtype=float)


def problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a (schema-5) result's `outcomes`, or None: shapes, and every cell
    recomputing exactly to the matrix's value."""
    outcomes = data.get("outcomes")
    if not isinstance(outcomes, dict) or any(key not in outcomes for key in FIELDS):
        return f"'outcomes' must be an object with {', '.join(FIELDS)}"
    acc, control = data["acc_matrix"], data["control_matrix"]
    rows = len(acc)
    batch_sizes, control_sizes = outcomes["batch_sizes"], outcomes["control_sizes"]
    if not isinstance(batch_sizes, list) or len(batch_sizes) != rows or not all(_count(b) for b in batch_sizes):
        return f"outcomes.batch_sizes must hold {rows} positive integers (one evaluation batch size per row)"
    controls = len(data["scenario"].get("control_sets", []))
    if not isinstance(control_sizes, list) or len(control_sizes) != controls or not all(_count(n) for n in control_sizes):
        return f"outcomes.control_sizes must hold {controls} positive integers (the examples of each control set)"
    sizes = {"acc": data["scenario"]["test_sizes"], "control": control_sizes}
    for name, matrix in (("acc", acc), ("control", control)):
        cells = outcomes[name]
        if not isinstance(cells, list) or len(cells) != rows or not all(isinstance(r, list) and len(r) == len(sizes[name]) for r in cells):
            return f"outcomes.{name} must hold {rows} rows of {len(sizes[name])} cells, as {name}_matrix"
        for i, row in enumerate(cells):
            for j, stored in enumerate(row):
                if stored is None:
                    continue
                try:
                    value = cell_value(stored, sizes[name][j], batch_sizes[i])
                except ValueError as exc:
                    return f"outcomes.{name} row {i} cell {j}: {exc}"
                if value != matrix[i][j]:
                    return f"{name}_matrix row {i} cell {j} is {matrix[i][j]!r} but its per-example outcomes give {value!r}: the file was edited or is corrupt"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**53
