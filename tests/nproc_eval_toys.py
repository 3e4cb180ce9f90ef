"""Toy backbones for tests/run/test_nproc_eval.py (importable by name: spawned processes cannot
import a test module). Each is the toy CLIP of `toys` with one change to its evaluation; every
evaluation batch it sees is logged as "rank size" to <kind>.log in the folder named by
$CLBENCH_TEST_EVAL_LOG."""

from __future__ import annotations

import os

import torch
from toys import ToyPlugin, toy_model

from cl_bench import CellScorer, hookimpl


class AccuracyOnly(CellScorer):
    """Avalanche's accuracy and nothing kept: a plugin scorer without per-example outcomes."""

    def __init__(self) -> None:
        from avalanche.evaluation.metrics import Accuracy

        self._accuracy = Accuracy()

    def update(self, outputs, targets) -> None:
        self._accuracy.update(outputs, targets)


class Unsure(CellScorer):
    """Defines `outcomes()` but has none to give."""

    def outcomes(self):
        return None


def _batch_logger(kind: str):
    def log_batch(module, inputs, output) -> None:
        if module.training:
            return
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(os.path.join(os.environ["CLBENCH_TEST_EVAL_LOG"], f"{kind}.log"), "a", encoding="utf-8") as log:
            log.write(f"{rank} {len(inputs[0])}\n")

    return log_batch


def _counting_forward(model):
    """Counts its evaluation batches in a buffer of its state: an evaluation that changes the state."""
    model.register_buffer("evaluated", torch.zeros((), dtype=torch.long))
    forward = model.forward

    def counted(images):
        if not model.training:
            model.evaluated += 1
        return forward(images)

    model.forward = counted


def _toy(kind: str):
    model = toy_model()
    model.register_forward_hook(_batch_logger(kind))
    if kind == "plain":
        model.scorer = lambda context: AccuracyOnly()
    elif kind == "unsure":
        model.scorer = lambda context: Unsure()
    elif kind in ("counting", "counting-alone"):
        _counting_forward(model)
        model.shards_evaluation = kind == "counting"
    return model


class EvalToys(ToyPlugin):
    """The toy stream and method, and toy CLIPs named toy-clip-<kind>: logged (the default scorer),
    plain (no outcomes), unsure (outcomes() gives None), counting (evaluation changes its state),
    counting-alone (the same, with shards_evaluation = False)."""

    @hookimpl
    def cl_bench_backbones(self):
        from cl_bench import BackboneSpec

        kinds = ("logged", "plain", "unsure", "counting", "counting-alone")
        return [BackboneSpec(name=f"toy-clip-{kind}", factory=lambda params, weights, kind=kind: _toy(kind), summary=f"the toy CLIP, {kind}") for kind in kinds]
