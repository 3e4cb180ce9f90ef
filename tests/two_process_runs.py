"""The two-process runs of tests/run/test_nproc.py and tests/run/test_nproc_eval.py, all trained
through one launch (`launch_all`, a session fixture in tests/run/conftest.py): two spawned
processes import PyTorch, open_clip, transformers and Avalanche once, then train each run in turn
as `run(config with nproc=2)` has them do. Each run's one-process twin is trained by its test.

The settings make every evaluation split unevenly somewhere: on embedded-mtil, evaluation batches
of 500 give test sets of 1,040 (3 batches), 500 and a control set of 500 (1 batch: fewer than the
processes); on embedded-instruct, batches of 24 give 5 per 100-example cell (3 and 2 per process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from cl_bench import RunConfig
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
EVAL_LOG = "CLBENCH_TEST_EVAL_LOG"  # the folder where the toy CLIPs log the evaluation batches they see


def config(out: Path, **kwargs) -> RunConfig:
    return RunConfig(out=str(out), progress=False, device="cpu", **kwargs)


def image_settings(method: str) -> dict:
    settings = {"method": method, "iters": 4, "batch_size": 8, "eval_batch_size": 500}
    # rail-primal's tiny-clip expansion (2,000 wide) makes it the slowest run here; 500 takes the same path
    return {**settings, "method_params": {"expansion": 500}} if method == "rail-primal" else settings


def language_model_settings(method: str) -> dict:
    settings = {"method": method, "scenario": "embedded-instruct", "backbone": "tiny-lm", "iters": 3, "batch_size": 4, "eval_batch_size": 24}
    return {**settings, "method_params": {"dropout": 0.0}} if method in WITHOUT_DROPOUT else settings


def toy_settings(kind: str) -> dict:
    # 2 toy tasks of 16 test examples and a control set of 16, in evaluation batches of 6, 6 and 4
    return {"method": "seq-lora", "scenario": "toy", "backbone": f"toy-clip-{kind}", "iters": 2, "batch_size": 4, "eval_batch_size": 6}


def largest_cell_difference(one, two) -> float:
    """The largest difference (accuracy points) over two results' accuracy and control cells."""
    cells = [(a, b) for key in ("acc_matrix", "control_matrix") for ra, rb in zip(one.data[key], two.data[key]) for a, b in zip(ra, rb)]
    return max(abs(a - b) for a, b in cells)


def registry():
    import nproc_eval_toys

    from cl_bench.config.registry import Registry

    return Registry([nproc_eval_toys.EvalToys()])


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
    runs.update({f"{method} tiny-lm sharded": {**language_model_settings(method), "shard_weights": True} for method in SHARDED_METHODS})
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
