"""A toy stream and a toy CLIP, small enough for unit tests."""

from __future__ import annotations

import copy

import torch

from cl_bench import hookimpl

TOY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


def toy_model(seed: int = 0):
    """A randomly initialised, very small ClipModel (split attention, open_clip tokenizer)."""
    from cl_bench.backbones.tiny_clip import build_clip, wrap

    torch.manual_seed(seed)
    return wrap(build_clip(TOY_ARCH), TOY_ARCH, None)


def toy_images(num_classes: int, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c is a bright 6x6 square at a class-specific place, plus noise: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(num_classes * per_class, 1, 28, 28, generator=generator) * 0.3
    targets = torch.arange(num_classes).repeat_interleave(per_class)
    for index, cls in enumerate(targets.tolist()):
        row, col = divmod(cls, 4)
        images[index, 0, row * 7 : row * 7 + 6, col * 7 : col * 7 + 6] += 0.7
    return images, targets


def toy_stream(protocol: str = "mtil", tasks: int = 2, classes_per_task: int = 2, per_class: int = 8, control: bool = True, name: str | None = None):
    """A Stream over toy images with the given protocol (domain-il shares one label space)."""
    from cl_bench import StreamTask, assemble_stream, classification_dataset

    shared = protocol == "domain-il"
    total = classes_per_task if shared else tasks * classes_per_task
    task_classes = [list(range(classes_per_task)) if shared else list(range(t * classes_per_task, (t + 1) * classes_per_task)) for t in range(tasks)]
    images, targets = toy_images(total + (2 if control else 0), per_class)
    records = []
    for t, classes in enumerate(task_classes):
        mask = torch.isin(targets, torch.tensor(classes))
        shift = 0.05 * t if shared else 0.0  # a different "domain" per task
        data = classification_dataset(images[mask] + shift, targets[mask])
        records.append(StreamTask(f"task {t}", classes, train=data, test=data))
    names = [f"class {i}" for i in range(total)]
    controls = []
    if control:
        mask = targets >= total
        names += ["control a", "control b"]
        controls.append(StreamTask("toy control", [total, total + 1], test=classification_dataset(images[mask], targets[mask])))
    return assemble_stream(name or f"toy-{protocol}", "1", protocol, records, class_names=names, controls=controls, preload=True)


class ToyPlugin:
    """Registers the toy stream, the toy CLIP and a stand-in method, so tests plan and build runs
    as `clbench run` does: `Registry([ToyPlugin()])` and `--scenario toy --backbone toy-clip`."""

    @hookimpl
    def cl_bench_scenarios(self):
        from cl_bench import ScenarioSpec

        defaults = {"protocol": "mtil", "tasks": 2, "classes_per_task": 2, "per_class": 8, "control": True}
        return [ScenarioSpec(name="toy", factory=_toy_stream_factory, summary="toy squares", protocol="mtil", num_tasks=2, defaults=defaults, count_tasks=lambda params: params["tasks"])]

    @hookimpl
    def cl_bench_backbones(self):
        from cl_bench import BackboneSpec

        return [BackboneSpec(name="toy-clip", factory=lambda params, weights: toy_model(), summary="a random toy CLIP")]

    @hookimpl
    def cl_bench_methods(self):
        from cl_bench import Method, MethodSpec

        return [MethodSpec(name="toy-method", factory=lambda hparams: type("TrainsNothing", (Method,), {})(), summary="trains nothing; tests pass their own method to build()")]


def _toy_stream_factory(params, context):
    return toy_stream(name="toy", protocol=params["protocol"], tasks=params["tasks"], classes_per_task=params["classes_per_task"], per_class=params["per_class"], control=params["control"])


def toy_plan(method: str = "toy-method", *, out: str = "runs", **settings):
    """The plan of a run on the toy stream and toy CLIP; `settings` are `key=value` settings of `clbench run`."""
    from cl_bench import RunConfig, plan
    from cl_bench.config.registry import Registry

    config = RunConfig(method=method, scenario="toy", backbone="toy-clip", out=out, progress=False)
    for key, value in settings.items():
        config.set(key.replace("__", "."), value)
    return plan(config, Registry([ToyPlugin()]))


def toy_strategy(method, tasks: int = 2, iters: int = 4, batch_size: int = 4, lr: float = 1e-2, precision: str = "fp32"):
    """A frozen toy model with `method` set up on a toy MTIL stream, and the strategy that trains it (built from a plan)."""
    from cl_bench import build

    planned = toy_plan(iters=iters, batch_size=batch_size, method__lr=lr, scenario__tasks=tasks, precision=precision, eval_batch_size=256)
    parts = build(planned, method=method, progress=False)
    return parts.strategy, parts.model, parts.stream


def result_document(
    acc: list[list[float]],
    control: list[list[float]],
    status: str = "complete",
    *,
    method: str = "m",
    seed: int = 0,
    scenario: str = "s",
    protocol: str = "mtil",
    backbone: str = "b",
    hyperparameters: dict | None = None,
    trainable: list[int] | None = None,
    train_seconds: float = 0.0,
    examples: int | None = None,
) -> dict:
    """A minimal, self-consistent result document (the current schema; 10 test images a task).

    Without `examples` its cells have no per-example outcomes (null, as a plugin's scorer without
    them leaves them) and the matrices are as given. With `examples`, every task and control set
    has that many test examples, each cell a bitmap of round(value% of them) right examples (a
    random choice, seeded by `seed` and the cell), and the matrices hold what those bitmaps give."""
    import numpy as np

    from cl_bench.cells import running_accuracy
    from cl_bench.results import metrics
    from cl_bench.results.identity import run_id_of
    from cl_bench.results.outcomes import encode_bits
    from cl_bench.results.schema import SCHEMA

    tasks = [f"task {i}" for i in range(len(acc[0]))]
    size = examples or 10
    cells: dict[str, list] = {"acc": [[None] * len(row) for row in acc], "control": [[None] * len(row) for row in control]}
    if examples:
        acc, control = [list(row) for row in acc], [list(row) for row in control]
        for name, matrix in (("acc", acc), ("control", control)):
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    rng = np.random.default_rng([seed, i, j, name == "acc"])
                    right = np.zeros(size, dtype=bool)
                    right[rng.permutation(size)[: int(round(value / 100 * size))]] = True
                    cells[name][i][j] = encode_bits(right)
                    row[j] = running_accuracy(right, 256)
    hyperparameters = dict(hyperparameters or {})
    identity = {
        "method": {"name": method, "version": "1", "params": hyperparameters},
        "scenario": {"name": scenario, "version": "1", "params": {}},
        "backbone": {"name": backbone, "version": "1", "params": {}, "weights_sha256": None},
        "seed": seed,
        "precision": "fp32",
    }
    return {
        "schema": SCHEMA,
        "run_id": run_id_of(identity),
        "created": "2026-01-01T00:00:00+00:00",
        "status": status,
        "method": {"name": method, "version": "1", "hyperparameters": hyperparameters},
        "scenario": {"name": scenario, "version": "1", "params": {}, "protocol": protocol, "task_order": tasks, "test_sizes": [size] * len(tasks), "control_sets": [{"name": "c", "classes": [0]}] if control and control[0] else []},
        "backbone": {"name": backbone, "version": "1", "params": {}, "weights_param": None, "weights_sha256": None},
        "seed": seed,
        "execution": {"out": "runs"},
        "versions": {},
        "hardware": {"precision": "fp32"},
        "acc_matrix": acc,
        "control_matrix": control,
        "metrics": metrics.compute(acc, control if control and control[0] else None, protocol=protocol, test_sizes=[size] * len(tasks)) if status == "complete" else {},
        "timings": {"experiences": [{"task": t, "train": train_seconds / len(tasks), "eval": 0.0} for t in tasks]},
        "params": {"trainable": trainable or [0] * len(tasks)},
        "outcomes": {"batch_sizes": [256] * len(acc), "control_sizes": [size] * (1 if control and control[0] else 0), **cells},
    }


def as_partial(document: dict, rows: int = 2, keep_metrics: bool = False) -> dict:
    """`document` cut to its first `rows` rows as a partial result (matrices and outcomes alike)."""
    document.update(status="partial", acc_matrix=document["acc_matrix"][:rows], control_matrix=document["control_matrix"][:rows])
    if not keep_metrics:
        document["metrics"] = {}
    outcomes = document.get("outcomes")
    if outcomes:
        outcomes.update(batch_sizes=outcomes["batch_sizes"][:rows], acc=outcomes["acc"][:rows], control=outcomes["control"][:rows])
    return document


def rehash(document: dict) -> dict:
    """Forge consistently: give an edited schema-4 document the run id its sections now hash to."""
    from cl_bench.results.identity import identity_of_result, run_id_of

    document["run_id"] = run_id_of(identity_of_result(document))
    return document


def as_schema_4(document: dict) -> dict:
    """A schema-5 toy document as schema 4 wrote it: without per-example outcomes."""
    document = copy.deepcopy(document)
    document.pop("outcomes")
    return {**document, "schema": "cl_bench.result/4"}


def as_schema_3(document: dict) -> dict:
    """A schema-5 toy document as schema 3 wrote it: the configuration as given and the plan
    (with the identity the run id hashes), restated by hand from the schema-3 writer."""
    document = copy.deepcopy(document)
    identity = {
        "method": {"name": document["method"]["name"], "version": document["method"]["version"], "params": document["method"]["hyperparameters"]},
        "scenario": {"name": document["scenario"]["name"], "version": document["scenario"]["version"], "params": document["scenario"]["params"]},
        "backbone": {"name": document["backbone"]["name"], "version": document["backbone"]["version"], "params": document["backbone"]["params"], "weights_sha256": document["backbone"]["weights_sha256"]},
        "seed": document["seed"],
        "precision": document["hardware"]["precision"],
    }
    document.pop("outcomes")
    config = {"method": document["method"]["name"], "scenario": document["scenario"]["name"], "backbone": document["backbone"]["name"], "seed": document["seed"], "method_params": document["method"]["hyperparameters"]}
    document.pop("execution")
    return {**document, "schema": "cl_bench.result/3", "config": config, "plan": {"identity": identity}}


def snapshot(folder) -> dict[str, bytes | None]:
    """Every file and folder below `folder` with its bytes (None for folders); {} when it does not exist."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def interrupt_at_second_task(monkeypatch, start) -> None:
    """Call `start()` (a run) with the second task's training raising KeyboardInterrupt, as a killed run stops."""
    import pytest

    from cl_bench.running.strategy import ClStrategy

    calls = {"n": 0}
    original = ClStrategy.train

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClStrategy, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        start()
    monkeypatch.setattr(ClStrategy, "train", original)


def expect_one_line_error(tmp_path, monkeypatch, capsys, argv: list[str], message: str) -> None:
    """Run `argv` in an empty working folder; exit 2, one error line, nothing changed under tmp_path."""
    from cl_bench.cli import main

    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if not line.startswith("clbench: warning:")]
    assert code == 2, captured.err
    assert len(errors) == 1 and errors[0].startswith("clbench: error: "), captured.err
    assert message in errors[0], errors[0]
    assert len(errors[0]) < 600  # nothing from the input is echoed at length
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path) == before
