"""The shipped tiny-lm as a run loads it, a run configuration on it, and a fake TRACE data root:
helpers of the language-model tests (tests/llm/)."""

from __future__ import annotations

import json

from cl_bench import RunConfig
from cl_bench.config.registry import Registry


def tiny_lm(registry=None):
    """The shipped tiny-lm, loaded the way a run loads it (through its plan's weights)."""
    registry = registry or Registry()
    spec = registry.backbones()["tiny-lm"]
    from cl_bench.contracts.specs import resolve_factory
    from cl_bench.running.plan import hash_weights

    params = spec.resolve({})
    model = resolve_factory(spec.factory)(params, hash_weights(spec.weights_file(params)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lm_config(tmp_path, **settings) -> RunConfig:
    config = RunConfig(scenario="embedded-instruct", backbone="tiny-lm", out=str(tmp_path), progress=False, threads=1)
    for key, value in {"scenario.tasks": 2, "scenario.train_size": 64, "scenario.test_size": 16, "scenario.control_size": 16, **settings}.items():
        config.set(key, value)
    return config


def fake_trace(root, tasks=("C-STANCE", "Py150"), size=6):
    from cl_bench.scenarios.trace_tasks import TRACE_TASKS

    for task in TRACE_TASKS:
        if task.name not in tasks:
            continue
        folder = root / task.folder
        folder.mkdir(parents=True)
        for split in ("train", "eval", "test"):
            items = [{"prompt": f"{task.name} question {i}?", "answer": "A" if task.answer == "letter" else f"x = {i}"} for i in range(size)]
            (folder / f"{split}.json").write_text(json.dumps(items), encoding="utf-8")
        if task.answer == "letter":
            (folder / "labels.json").write_text(json.dumps(["A", "B", "C"]), encoding="utf-8")
