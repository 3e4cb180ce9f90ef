"""Typed parameters: the training defaults every method has, their ranges, and how a value from the
command line or a file becomes the type of its default."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cl_bench.errors import UserError, shown, unknown_name

# Training hyper-parameters every method has; a MethodSpec's defaults and profiles override them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "iters": 500,  # optimiser steps per experience
    "batch_size": 64,
    "lr": 5e-4,
    "weight_decay": 0.0,
    "warmup_iters": 0,  # linear warm-up before the cosine decay
}


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean (true/false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, (list, tuple)):
        return "a comma-separated list"
    return "a string"


def coerce(label: str, value: Any, default: Any) -> Any:
    """Convert `value` (a string from the command line, or a TOML/JSON value) to `default`'s type."""
    wrong = UserError(f"{label} expects {_type_name(default)} (default {shown(default)}), got {shown(value)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "off"}:
            return False
        raise wrong
    if isinstance(default, int):
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise wrong from None
        raise wrong
    if isinstance(default, float):
        if isinstance(value, bool):
            raise wrong
        try:
            number = float(value.strip() if isinstance(value, str) else value) if isinstance(value, (int, float, str)) else None
        except (ValueError, OverflowError):
            raise wrong from None
        if number is None:
            raise wrong
        if not math.isfinite(number):
            raise UserError(f"{label} must be a finite number, got {shown(value)}")
        return number
    if isinstance(default, (list, tuple)):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise wrong
        element = default[0] if default else ""
        return [coerce(label, item.strip() if isinstance(item, str) else item, element) for item in items if item != ""]
    if isinstance(value, str):
        return value
    raise wrong


# Parameters of the shared strategy's training loop: TRAIN_DEFAULTS' and the two a backbone or a
# method may add (the learning-rate schedule, gradient accumulation).
TRAINING_KEYS = frozenset({"iters", "batch_size", "lr", "weight_decay", "warmup_iters", "schedule", "grad_accum"})


# Ranges of the training parameters every method has: (lowest allowed, whether the lowest itself is allowed).
TRAIN_RANGES: dict[str, tuple[float, bool]] = {"iters": (1, True), "batch_size": (1, True), "lr": (0.0, False), "weight_decay": (0.0, True), "warmup_iters": (0, True), "grad_accum": (1, True)}


# The learning-rate schedules of the shared strategy; a method has a `schedule` parameter only
# where its defaults set one (cosine where it has none).
SCHEDULES = ("cosine", "constant")


# Upper bounds, far above any real run, so that a typo (10**12 iterations, a batch of 10**9) is
# refused before any work instead of exhausting memory after the model has loaded.
TRAIN_LIMITS: dict[str, int] = {"iters": 10_000_000, "batch_size": 1_000_000, "grad_accum": 1_000_000, "warmup_iters": 10_000_000}
# The examples one experience draws (iters x batch_size) are listed up front.
MAX_DRAWN_EXAMPLES = 2**31


def check_training(hparams: Mapping[str, Any]) -> None:
    """Refuse training parameters outside their range (before any work, not after a task has trained)."""
    for key, highest in TRAIN_LIMITS.items():
        value = hparams.get(key)
        if value is not None and value > highest:
            raise UserError(f"method.{key} must be at most {highest:,}, got {shown(value)}")
    if hparams.get("iters") and hparams.get("batch_size") and hparams["iters"] * hparams["batch_size"] > MAX_DRAWN_EXAMPLES:
        raise UserError(f"method.iters x method.batch_size must be at most 2^31 examples per experience, got {hparams['iters']} x {hparams['batch_size']}")
    if hparams.get("schedule", "cosine") not in SCHEDULES:
        raise UserError(f"method.schedule must be one of {', '.join(SCHEDULES)}, got {shown(hparams['schedule'])}")
    for key, (lowest, inclusive) in TRAIN_RANGES.items():
        value = hparams.get(key)
        if value is None:
            continue
        if value < lowest or (value == lowest and not inclusive):
            bound = f"at least {lowest}" if inclusive else f"greater than {lowest}"
            raise UserError(f"method.{key} must be {bound}, got {shown(value)}")
    accum = hparams.get("grad_accum", 1)  # a parameter where a method's defaults set one (the LLM track's)
    if hparams.get("batch_size") and hparams["batch_size"] % accum:
        raise UserError(f"method.batch_size {hparams['batch_size']} must be a multiple of method.grad_accum {accum} (each step accumulates grad_accum equal micro-batches)")


def resolve_params(owner: str, prefix: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Merge user values into typed defaults; unknown keys and wrong types are `UserError`s."""
    resolved = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise unknown_name(f"{prefix} parameter", key, defaults, hint=f"(the parameters of {owner})")
        resolved[key] = coerce(f"{prefix}.{key}", value, defaults[key])
    return resolved

