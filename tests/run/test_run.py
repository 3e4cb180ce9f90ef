"""Whole runs on the embedded default (few iterations): result files, resume, events, CLI errors."""

from __future__ import annotations

import json

import pytest
from toys import interrupt_at_second_task

from cl_bench import RunConfig, hookimpl, run
from cl_bench.cli import main
from cl_bench.errors import UserError
from cl_bench.results.validation import validate
from cl_bench.running.strategy import ClStrategy


def config(tmp_path, **kwargs) -> RunConfig:
    return RunConfig(out=str(tmp_path), progress=False, **kwargs)


@pytest.mark.slow
def test_seq_lora_run_writes_a_valid_self_describing_result(tmp_path):
    result = run(config(tmp_path, method="seq-lora", iters=3))
    data = json.loads(result.path.read_text())
    validate(data)
    assert data["status"] == "complete" and len(data["acc_matrix"]) == 4 and len(data["control_matrix"][0]) == 1
    assert data["method"]["hyperparameters"]["iters"] == 3 and data["method"]["hyperparameters"]["rank"] == 8
    assert data["scenario"]["task_order"] == ["letters", "pixelated digits", "faded fashion"]
    assert data["scenario"]["data"]["domains"]["faded fashion"]["train"]["size"] == 3000
    assert len(data["backbone"]["weights_sha256"]) == 64 and data["versions"]["avalanche"] == "0.6.0"
    assert [e["iters"] for e in data["timings"]["experiences"]] == [3, 3, 3]
    assert data["params"]["trainable"] == [data["params"]["final"] - data["params"]["backbone"]] * 3
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*tmp"))


def test_zeroshot_rows_all_equal_row_zero(tmp_path):
    result = run(config(tmp_path, method="zeroshot"))
    assert all(row == result.acc_matrix[0] for row in result.acc_matrix)
    assert all(row == result.control_matrix[0] for row in result.control_matrix)
    assert result.metrics["zs_retention"] == 1.0 and result.metrics["bwt"] == 0.0


@pytest.mark.slow
def test_finetune_moves_backbone_weights_and_shows_in_the_matrix(tmp_path):
    result = run(config(tmp_path, method="finetune", iters=5, scenario="embedded-cil"))
    assert result.data["params"]["trainable"][0] == result.data["params"]["backbone"] - 1  # all but the logit scale
    assert len(result.acc_matrix) == 6 and result.acc_matrix[1] != result.acc_matrix[0]
    # class-IL: avg is the mean, after each task, of the accuracy on the tasks seen so far (equal test sizes here)
    acc = result.acc_matrix
    assert result.data["scenario"]["test_sizes"] == [200] * 5
    assert result.metrics["avg"] == pytest.approx(sum(sum(acc[i][:i]) / i for i in range(1, 6)) / 5)
    assert result.metrics["avg_all_cells"] == pytest.approx(sum(map(sum, acc[1:])) / 25)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["seq-lora", "moram", "mora", "moe-lora", "l2p", "eblora", "o-lora", "codyra", "finetune", "zeroshot"])  # codyra restarts its adapters per task; moram regrows atoms; o-lora its frozen per-task LoRAs; moe-lora restores frozen experts and selectors; l2p its active pool; eblora its protected bases F; finetune stores every weight, zeroshot none
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, method):
    whole = run(config(tmp_path / "whole", method=method, iters=4))
    interrupt_at_second_task(monkeypatch, lambda: run(config(tmp_path / "split", method=method, iters=4)))
    (partial,) = (tmp_path / "split").glob("*.json")
    assert json.loads(partial.read_text())["status"] == "partial" and list((tmp_path / "split").glob("*.ckpt"))
    resumed = run(config(tmp_path / "split", method=method, iters=4, resume=True))
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed.metrics == whole.metrics and not list((tmp_path / "split").glob("*.ckpt"))
    assert resumed.data["outcomes"] == whole.data["outcomes"]  # the per-example outcomes travel through the checkpoint


@pytest.mark.slow
def test_a_resumed_run_keeps_the_grad_scale_of_the_uninterrupted_one(tmp_path, monkeypatch):
    """fp16's grad scaler is the strategy's one state that outlives an experience. fp16 needs CUDA,
    so the strategy gets the CPU scaler here, doubling its scale every step (growth_interval 1):
    a resume that restarted it would end 2 steps x 1 task = 4 doublings short."""
    import functools

    import torch

    scalers = []
    made = ClStrategy.__init__

    @functools.wraps(made)  # Avalanche checks the keyword arguments against the signature
    def with_a_scaler(self, **kwargs):
        made(self, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1)
        scalers.append(self.scaler)

    monkeypatch.setattr(ClStrategy, "__init__", with_a_scaler)
    whole = run(config(tmp_path / "whole", method="seq-lora", iters=2))
    interrupt_at_second_task(monkeypatch, lambda: run(config(tmp_path / "split", method="seq-lora", iters=2)))
    resumed = run(config(tmp_path / "split", method="seq-lora", iters=2, resume=True))
    assert scalers[0].get_scale() == 16.0 * 2**6 and scalers[-1].get_scale() == scalers[0].get_scale()
    assert resumed.acc_matrix == whole.acc_matrix


def test_resuming_a_finished_run_returns_its_result_without_training(tmp_path, monkeypatch, capsys):
    first = run(config(tmp_path, method="zeroshot", resume=True))
    assert "starting from the first task" in capsys.readouterr().err  # nothing to resume yet

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(ClStrategy, "train", no_training)
    again = run(config(tmp_path, method="zeroshot", resume=True))
    assert again.path == first.path and again.data == first.data


def test_a_quiet_resume_says_where_it_resumes_and_the_result_names_its_run(tmp_path, monkeypatch, capsys):
    interrupt_at_second_task(monkeypatch, lambda: run(config(tmp_path, method="zeroshot")))
    capsys.readouterr()
    resumed = run(config(tmp_path, method="zeroshot", resume=True))  # progress=False: --quiet
    err = capsys.readouterr().err
    assert f"clbench: resuming {resumed.run_id} from {resumed.run_id}.ckpt at task 2 of 3" in err
    assert (resumed.method, resumed.scenario, resumed.seed) == ("zeroshot", "embedded-mtil", 0) and resumed.status == "complete"


def test_a_folder_at_the_checkpoint_path_is_refused_before_any_training(tmp_path, monkeypatch):
    from cl_bench import plan

    cfg = config(tmp_path, method="seq-lora", iters=2, resume=True)
    plan(cfg).checkpoint_path.mkdir(parents=True)
    monkeypatch.setattr(ClStrategy, "train", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("trained before refusing")))
    with pytest.raises(UserError, match="is a folder where this run writes its checkpoint"):
        run(cfg)


def test_resume_names_another_seeds_checkpoint_from_its_own_record(tmp_path, monkeypatch, capsys):
    interrupt_at_second_task(monkeypatch, lambda: run(config(tmp_path, method="zeroshot", seed=1)))
    for partial in tmp_path.glob("*seed1*.json"):
        partial.unlink()  # no partial result beside the checkpoint: only the checkpoint says whose it is
    capsys.readouterr()
    run(config(tmp_path, method="zeroshot", seed=0, resume=True))
    err = capsys.readouterr().err
    assert "--resume left alone embedded-mtil_zeroshot_tiny-clip_seed1_" in err and "(another configuration: seed 1 there, 0 here)" in err


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    cfg = config(tmp_path, method="seq-lora", iters=2, resume=True)
    from cl_bench import plan

    checkpoint = plan(cfg).checkpoint_path
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot be read"):
        run(cfg)
    import torch

    from cl_bench.running import checkpoint as checkpoints

    torch.save({"format": "cl_bench.checkpoint/2", "identity": "{}", "next_task": 1}, checkpoint)
    with pytest.raises(UserError, match=r"is not a cl_bench.checkpoint/3 checkpoint \(an older cl_bench wrote it with torch.save\)"):
        run(cfg)
    checkpoints.save(checkpoint, run_id="x", identity="{}", next_task=1, progress={}, model={}, method={})
    with pytest.raises(UserError, match="another configuration"):
        run(cfg)


class EventLog:
    """A logger of every run event, in the order they arrive."""

    def __init__(self):
        self.events = []

    @hookimpl
    def cl_bench_run_start(self, run_id, execution_id, config, plan):
        self.events.append(("run_start", {"run_id": run_id, "execution_id": execution_id, "config": config, "plan": plan}))

    @hookimpl
    def cl_bench_before_training(self, run_id, execution_id, row, acc_row, control_row, timings):
        self.events.append(("before_training", {"run_id": run_id, "execution_id": execution_id, "row": row, "acc_row": acc_row, "timings": timings}))

    @hookimpl
    def cl_bench_experience_end(self, run_id, execution_id, task, row, acc_row, control_row, timings, losses):
        self.events.append(("experience_end", {"run_id": run_id, "execution_id": execution_id, "task": task, "row": row, "acc_row": acc_row, "timings": timings, "losses": losses}))

    @hookimpl
    def cl_bench_run_end(self, run_id, execution_id, path, result):
        self.events.append(("run_end", {"run_id": run_id, "execution_id": execution_id, "path": path, "result": result}))


@pytest.mark.slow
def test_run_events_reach_loggers_in_order(tmp_path):
    log = EventLog()
    result = run(config(tmp_path, method="zeroshot", iters=3), plugins=[log])
    names = [e for e, _ in log.events]
    assert names == ["run_start", "before_training", "experience_end", "experience_end", "experience_end", "run_end"]
    assert log.events[-1][1]["result"]["metrics"] == result.metrics and log.events[-1][1]["path"] == str(result.path)
    assert [p["task"] for e, p in log.events if e == "experience_end"] == [0, 1, 2]
    rows = [p["acc_row"] for e, p in log.events if e in ("before_training", "experience_end")]
    assert rows == result.acc_matrix and [p["row"] for _, p in log.events[1:-1]] == [0, 1, 2, 3]
    assert [p["timings"] for e, p in log.events if e == "experience_end"] == result.data["timings"]["experiences"]
    assert all(p["losses"] == [] for e, p in log.events if e == "experience_end")  # zero-shot trains nothing
    plan = log.events[0][1]["plan"]  # resolved: typed, after the profile, with the device
    assert plan["method"]["hyperparameters"] == result.data["method"]["hyperparameters"] and plan["method"]["hyperparameters"]["iters"] == 3
    assert plan["device"] == "cpu" and plan["precision"] == "fp32" and plan["first_task"] == 0 and plan["backbone"]["name"] == "tiny-clip"
    assert log.events[0][1]["config"]["iters"] == 3
    executions = {p["execution_id"] for _, p in log.events}
    assert len(executions) == 1 and result.data["execution_id"] in executions and {p["run_id"] for _, p in log.events} == {result.data["run_id"]}
    again = EventLog()
    rerun = run(config(tmp_path, method="zeroshot", iters=3), plugins=[again])  # a forced re-run of one configuration
    assert rerun.data["run_id"] == result.data["run_id"] and again.events[0][1]["execution_id"] not in executions


def test_experience_end_carries_each_training_iterations_loss(tmp_path, monkeypatch):
    seen: list[float] = []
    original = ClStrategy._after_training_iteration

    def spy(self, **kwargs):
        seen.append(float(self.loss.detach()))  # the loss of the step, read where Avalanche still holds it
        original(self, **kwargs)

    monkeypatch.setattr(ClStrategy, "_after_training_iteration", spy)
    log = EventLog()
    run(config(tmp_path, method="seq-lora", scenario="embedded-dil", iters=3, method_params={"rank": 2}), plugins=[log])
    losses = [p["losses"] for e, p in log.events if e == "experience_end"]
    assert [len(task) for task in losses] == [3] * len(losses) and [v for task in losses for v in task] == pytest.approx(seen, rel=1e-6)


@pytest.mark.slow
def test_cli_run_prints_the_matrix_and_metrics(tmp_path, capsys):
    assert main(["run", "--method", "seq-lora", "--iters", "2", "--quiet", "--out", str(tmp_path), "--set", "method.rank=2"]) == 0
    out = capsys.readouterr().out
    for word in ("zero-shot", "after letters", "symbols (control)", "last", "transfer", "forgetting", "zs_retention", "result:"):
        assert word in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "method.rnak=2"], "did you mean 'rank'"),
        (["--set", "method.rank=two"], "method.rank expects an integer"),
        (["--set", "nonsense"], "--set expects key=value"),
        (["--scenario", "embedded-mtl"], "did you mean 'embedded-mtil'"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--precision", "fp8"], "precision must be"),
        (["--backbone", "clip-vit-b16", "--pretrained", "/nowhere/weights.safetensors"], "/nowhere/weights.safetensors not found"),
        (["--config", "/nowhere/run.toml"], "not found"),
    ],
)
def test_bad_run_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    assert main(["run", "--quiet", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


class DuckTypedPlugin:
    """Registers methods whose classes do not subclass cl_bench.Method and leave hooks out."""

    def __init__(self, **factories):
        self.factories = factories

    @hookimpl
    def cl_bench_methods(self):
        from cl_bench import MethodSpec

        return [MethodSpec(name=name, factory=factory, summary="duck-typed") for name, factory in self.factories.items()]


class TrainsTheTextTower:  # only trainable_parameters: no setup, make_optimizer, extra_loss, state_dict, ...
    def __init__(self, hparams):
        self.hparams = hparams

    def trainable_parameters(self, model):
        return list(model.tower_parameters("text"))


class Nothing:  # no hook at all: behaves like zeroshot
    def __init__(self, hparams):
        pass


@pytest.mark.slow
def test_duck_typed_methods_run_with_every_hook_optional(tmp_path):
    plugin = DuckTypedPlugin(duck=TrainsTheTextTower, empty=Nothing)
    trained = run(config(tmp_path, method="duck", iters=2, scenario="embedded-dil"), plugins=[plugin])
    assert trained.status == "complete" and trained.data["params"]["trainable"][0] > 0
    assert trained.acc_matrix[1] != trained.acc_matrix[0]  # the text tower really trained
    idle = run(config(tmp_path, method="empty", iters=2, scenario="embedded-dil"), plugins=[plugin])
    assert idle.data["params"]["trainable"] == [0, 0, 0] and all(row == idle.acc_matrix[0] for row in idle.acc_matrix)


def test_resume_names_the_checkpoints_it_leaves_alone_and_why(tmp_path, monkeypatch, capsys):
    from cl_bench import plan
    from cl_bench.running import checkpoint

    other = plan(config(tmp_path, method="seq-lora", iters=1))
    other_path = other.result_path
    checkpoint.save(other.checkpoint_path, run_id=other.run_id, identity=other.identity_json(), next_task=1, progress={}, model={}, method={})
    # What the other run's partial result says of it (schema 4: its resolved sections).
    partial = {
        "schema": "cl_bench.result/4",
        "method": {"name": other.method.name, "version": other.method.version, "hyperparameters": other.hparams},
        "scenario": {"name": other.scenario.name, "version": other.scenario.version, "params": other.scenario.params},
        "backbone": {"name": other.backbone.name, "version": other.backbone.version, "params": other.backbone.params, "weights_param": "pretrained", "weights_sha256": other.weights.sha256},
        "seed": other.seed,
        "hardware": {"precision": other.precision},
    }
    other_path.write_text(json.dumps(partial))
    monkeypatch.setattr(ClStrategy, "train", lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        run(config(tmp_path, method="seq-lora", iters=2, resume=True))
    err = capsys.readouterr().err
    assert "no checkpoint for this configuration" in err
    assert f"--resume left alone {other_path.stem}.ckpt (another configuration: method.params.iters 1 there, 2 here)" in err


def test_a_diverging_run_stops_before_writing_anything(tmp_path):
    with pytest.raises(UserError, match=r"training diverged on task 'letters': .* holds inf or nan; lower method.lr \(now 1e\+30\)"):
        run(config(tmp_path / "out", method="seq-lora", iters=3, method_params={"lr": 1e30}))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_threads_are_set_for_the_run_recorded_and_not_part_of_its_identity(tmp_path):
    import torch

    before = torch.get_num_threads()
    one = run(config(tmp_path / "one", method="zeroshot", threads=1))
    two = run(config(tmp_path / "two", method="zeroshot", threads=2))
    assert one.data["hardware"]["torch_threads"] == 1 and two.data["hardware"]["torch_threads"] == 2
    assert one.data["hardware"]["threads_setting"] == 1 and one.data["run_id"] == two.data["run_id"]  # same configuration
    assert torch.get_num_threads() == before  # the caller's setting is restored
    auto = run(config(tmp_path / "auto", method="zeroshot"))
    from cl_bench.config.run_config import default_threads

    assert auto.data["hardware"]["torch_threads"] == default_threads() and auto.data["hardware"]["threads_setting"].startswith("auto")


def test_finetune_label_smoothing_matches_zscl_and_the_vit_defaults_are_zscls(registry):
    import torch
    import torch.nn.functional as F
    from toys import toy_strategy

    from cl_bench.methods.finetune import FineTune

    method = FineTune({"towers": "both", "label_smoothing": 0.2})
    strategy, model, stream = toy_strategy(method, tasks=2)
    model.set_label_space([2, 3])
    torch.manual_seed(0)
    outputs = torch.full((6, model.num_classes), float("-inf"))
    outputs[:, 2:4] = torch.randn(6, 2) * 3
    targets = torch.tensor([2, 3, 3, 2, 2, 3])
    total = F.cross_entropy(outputs, targets) + method.extra_loss(model, (torch.zeros(6), targets), outputs)
    # the smoothed target spreads 0.2 over the task's two classes, none over the others
    expected = F.cross_entropy(outputs[:, 2:4], targets - 2, label_smoothing=0.2)
    assert float(total) == pytest.approx(float(expected), abs=1e-6)
    assert FineTune({"towers": "both", "label_smoothing": 0.0}).extra_loss(model, (None, targets), outputs) is None
    spec = registry.methods()["finetune"]
    vit = spec.resolve("clip-vit-b16", {})
    assert (vit["label_smoothing"], vit["warmup_iters"], vit["lr"], vit["iters"]) == (0.2, 100, 1e-5, 1000)
    tiny = spec.resolve("tiny-clip", {})
    assert (tiny["label_smoothing"], tiny["warmup_iters"]) == (0.0, 0)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        FineTune({"towers": "both", "label_smoothing": 1.0})
