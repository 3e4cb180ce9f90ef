"""The two-process runs of tests/run/test_nproc.py and tests/run/test_nproc_eval.py, all trained
through one launch (`launch_all`, a session fixture in tests/run/conftest.py): two spawned
processes import PyTorch, open_clip, transformers and Avalanche once, then train each run in turn
as `run(config with nproc=2)` has them do. Each run's one-process twin is trained by its test.

Evaluation, and the methods that pass over a task's whole training set (rail's features, ewc's
Fisher, ogd's directions, icarl's herding), were most of a short run's time, so the runs use
shortened data: images on `embedded-mtil-short` (embedded-mtil with 80 training and 100 test
images per task, spread over its classes, and 30 control images; registered by `ShortStreams`),
text on embedded-instruct with 20 test and 10 control examples. Every evaluation splits unevenly
somewhere: batches of 40 give 3 per image task (2 and 1 per process) and one control batch (fewer
than the processes); batches of 12 give 2 per text task (of 12 and 8: one per process, each
decoding one batch, the slow part of a text cell) and one control batch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from cl_bench import RunConfig, hookimpl
from cl_bench.errors import UserError

# Every built-in method that trains an image backbone, on the embedded default stream (3 tasks).
IMAGE_METHODS = [
    "codyra", "dualprompt", "eblora", "ewc", "finetune", "gem", "icarl", "l2p", "lwf", "moe-lora",
    "mora", "moram", "o-lora", "ogd", "rail-dual", "rail-primal", "replay", "seq-lora", "wise-ft",
    "zeroshot", "zscl",
]  # fmt: skip
# With the image methods, every built-in method: those only on language models, and three on both.
LANGUAGE_MODEL_METHODS = ["seq-lora", "ewc", "replay", "icl", "hide-lora", "treelora"]
# Their LoRA dropout draws one mask per example, each process for its share: off, to compare exactly.
WITHOUT_DROPOUT = ("seq-lora", "hide-lora", "treelora")
# Trained sharded (`shard_weights`) and compared with the same two processes unsharded.
SHARDED_METHODS = ["seq-lora", "finetune", "replay"]
# The toy CLIPs of nproc_eval_toys whose runs end (the "counting" one stops its run: launched last).
EVAL_TOY_KINDS = ["logged", "plain", "unsure", "counting-alone"]
# The run test_nproc.py kills a rank of (in a `clbench run` process) and resumes: here uninterrupted.
KILLED_RANK_KEY = "seq-lora killed-rank"
KILLED_RANK_SETTINGS = {"method": "seq-lora", "scenario": "embedded-dil", "iters": 20, "batch_size": 8}
EVAL_LOG = "CLBENCH_TEST_EVAL_LOG"  # the folder where the toy CLIPs log the evaluation batches they see


def config(out: Path, **kwargs) -> RunConfig:
    return RunConfig(out=str(out), progress=False, device="cpu", **kwargs)


# Per-example passes over a task's data (Fisher samples, gradient directions, memory) and a random
# expansion, cut to sizes that take the same code paths: they made these image runs the slowest.
SMALLER = {"ewc": {"fisher_samples": 16}, "ogd": {"directions": 16}, "gem": {"memory": 16}, "rail-primal": {"expansion": 500}}


def image_settings(method: str) -> dict:
    settings = {"method": method, "scenario": "embedded-mtil-short", "iters": 4, "batch_size": 8, "eval_batch_size": 40}
    return {**settings, "method_params": SMALLER[method]} if method in SMALLER else settings


def language_model_settings(method: str) -> dict:
    settings = {"method": method, "scenario": "embedded-instruct", "backbone": "tiny-lm", "iters": 3, "batch_size": 4, "eval_batch_size": 12}
    settings["scenario_params"] = {"test_size": 20, "control_size": 10}
    return {**settings, "method_params": {"dropout": 0.0}} if method in WITHOUT_DROPOUT else settings


def sharded_settings(method: str) -> dict:
    """`language_model_settings` trained sharded: the launch's run and the interrupted one resumed in test_nproc_sharded.py."""
    return {**language_model_settings(method), "shard_weights": True}


def toy_settings(kind: str) -> dict:
    # 2 toy tasks of 16 test examples and a control set of 16, in evaluation batches of 6, 6 and 4
    return {"method": "seq-lora", "scenario": "toy", "backbone": f"toy-clip-{kind}", "iters": 2, "batch_size": 4, "eval_batch_size": 6}


def largest_cell_difference(one, two) -> float:
    """The largest difference (accuracy points) over two results' accuracy and control cells."""
    cells = [(a, b) for key in ("acc_matrix", "control_matrix") for ra, rb in zip(one.data[key], two.data[key]) for a, b in zip(ra, rb)]
    return max(abs(a - b) for a, b in cells)


def _spread(dataset, size: int):
    """`size` examples of `dataset` at even steps (every class of a class-sorted test set keeps some)."""
    step = max(1, len(dataset) // size)
    return dataset.subset(list(range(0, len(dataset), step))[:size])


def _short_mtil(params, context):
    from cl_bench.contracts.stream import build_benchmark
    from scenarios.embedded import build_mtil

    stream = build_mtil(params, context)
    streams = stream.benchmark.streams
    train = [_spread(experience.dataset, 80) for experience in streams["train"]]
    test = [_spread(experience.dataset, 100) for experience in streams["test"]]
    control = [_spread(experience.dataset, 30) for experience in streams["control"]]
    return dataclasses.replace(stream, name="embedded-mtil-short", benchmark=build_benchmark(train, test, control))


class ShortStreams:
    """`embedded-mtil-short`: embedded-mtil with its test and control sets shortened (the module's docstring)."""

    @hookimpl
    def cl_bench_scenarios(self):
        from cl_bench import ScenarioSpec

        return [ScenarioSpec(name="embedded-mtil-short", factory=_short_mtil, summary="embedded-mtil, 80 training and 100 test images per task", protocol="mtil", num_tasks=3)]


def registry():
    import nproc_eval_toys

    from cl_bench.config.registry import Registry

    return Registry([nproc_eval_toys.EvalToys(), ShortStreams()])


@dataclass
class Launched:
    root: Path
    results: dict  # run key -> RunResult
    error: UserError | None  # how the launch ended: the "counting" toy's run stops it

    def folder(self, key: str) -> Path:
        return self.root / key.replace(" ", "-")


def launch_all(root: Path) -> Launched:
    from cl_bench.results.validation import load_valid
    from cl_bench.running import distributed
    from cl_bench.running.runner import run

    runs = {method: image_settings(method) for method in IMAGE_METHODS}
    runs.update({f"{method} tiny-lm": language_model_settings(method) for method in dict.fromkeys(LANGUAGE_MODEL_METHODS + SHARDED_METHODS)})
    runs.update({f"{method} tiny-lm sharded": sharded_settings(method) for method in SHARDED_METHODS})
    runs[KILLED_RANK_KEY] = KILLED_RANK_SETTINGS
    runs.update({f"toy {kind}": toy_settings(kind) for kind in [*EVAL_TOY_KINDS, "counting"]})
    launched = Launched(root, {}, None)
    configs = [config(launched.folder(key), **settings, nproc=2) for key, settings in runs.items()]
    for each in configs:
        Path(each.out).mkdir(parents=True)
    (root / "logs").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EVAL_LOG, str(root / "logs"))  # the spawned processes inherit it
        try:
            distributed.launch(run, configs, distributed.rank_devices("cpu", 2), registry(), None)
        except UserError as exc:
            launched.error = exc
    launched.results = {key: load_valid(path) for key in runs for path in launched.folder(key).glob("*.json")}
    assert os.listdir(root / "logs")
    return launched
