"""The shared strategy: what trains, for how long, on which loss, with which optimizer."""

from __future__ import annotations

import pytest
import torch
from avalanche.core import SupervisedPlugin
from toys import toy_plan

from cl_bench import Method, build
from cl_bench.files import write_atomic
from cl_bench.methods.seq_lora.lora import SeqLoRA
from cl_bench.running.evaluation import evaluate_row

HPARAMS = {"iters": 6, "batch_size": 4, "lr": 1e-2}
LORA = {"rank": 2, "alpha": 4.0, "layers": ["q", "k", "v", "out", "fc", "proj"], "towers": ["image", "text"]}


def make(method, protocol="mtil", plugins=(), precision="fp32", **hparams):
    """`method` set up on the toy stream and the strategy that trains it, built from a run plan."""
    settings = {f"method__{key}": value for key, value in {**HPARAMS, **hparams}.items()}
    parts = build(toy_plan(precision=precision, scenario__protocol=protocol, **settings), method=method, plugins=plugins, progress=False)
    return parts.strategy, parts.model, parts.stream


class Recorder(SupervisedPlugin):
    """Counts iterations and records what the loop saw."""

    def __init__(self):
        super().__init__()
        self.iterations, self.finite_classes, self.losses = [], [], []

    def before_training_exp(self, strategy, **kwargs):
        self.iterations.append(0)

    def after_forward(self, strategy, **kwargs):
        finite = torch.isfinite(strategy.mb_output[0]).nonzero().flatten().tolist()
        self.finite_classes.append(finite)

    def before_backward(self, strategy, **kwargs):
        self.losses.append((strategy.loss.item(), strategy.mb_output.detach(), strategy.mb_y))

    def after_training_iteration(self, strategy, **kwargs):
        self.iterations[-1] += 1


def test_seq_lora_changes_only_lora_weights_and_backbone_stays_bit_identical():
    strategy, model, stream = make(SeqLoRA(LORA))
    frozen = {name: t.clone() for name, t in model.state_dict().items() if "lora_" not in name}
    lora_before = {name: t.clone() for name, t in model.state_dict().items() if "lora_" in name}
    for experience in stream.benchmark.streams["train"]:
        strategy.train(experience)
    after = model.state_dict()
    assert all(torch.equal(after[name], value) for name, value in frozen.items())
    assert any(not torch.equal(after[name], value) for name, value in lora_before.items() if name.endswith("lora_B"))
    optimised = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in strategy.trainable} and all(p.requires_grad for p in strategy.trainable)
    assert sum(p.requires_grad for p in model.parameters()) == len(strategy.trainable)


def test_each_experience_trains_exactly_the_iteration_budget_on_its_own_classes():
    recorder = Recorder()
    strategy, _, stream = make(SeqLoRA(LORA), plugins=[recorder], iters=7, batch_size=3)
    for experience in stream.benchmark.streams["train"]:
        strategy.train(experience)
    assert recorder.iterations == [7, 7]
    assert all(c == [0, 1] for c in recorder.finite_classes[:7]) and all(c == [2, 3] for c in recorder.finite_classes[7:])


class ExtraLoss(SeqLoRA):
    def extra_loss(self, model, batch, outputs):
        return torch.tensor(2.5)


def test_extra_loss_is_added_to_the_cross_entropy():
    recorder = Recorder()
    strategy, _, stream = make(ExtraLoss(LORA), plugins=[recorder], iters=2)
    strategy.train(stream.benchmark.streams["train"][0])
    for loss, logits, targets in recorder.losses:
        assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item() + 2.5, abs=1e-5)


class SgdLoRA(SeqLoRA):
    def make_optimizer(self, params, hparams):
        return torch.optim.SGD(params, lr=0.5)


def test_method_optimizer_replaces_adamw_and_a_cosine_schedule_runs():
    strategy, _, stream = make(SgdLoRA(LORA), iters=4)
    strategy.train(stream.benchmark.streams["train"][0])
    assert isinstance(strategy.optimizer, torch.optim.SGD)
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine reached its end
    default, _, stream = make(SeqLoRA(LORA), iters=4)
    default.train(stream.benchmark.streams["train"][0])
    assert isinstance(default.optimizer, torch.optim.AdamW)


class Nothing(Method):
    pass


def test_a_method_without_trainable_parameters_trains_nothing():
    recorder = Recorder()
    strategy, model, stream = make(Nothing(), plugins=[recorder])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.train(stream.benchmark.streams["train"][0])
    assert recorder.iterations == [0] and strategy.optimizer is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_training_is_seeded_per_experience():
    runs = []
    for _ in range(2):
        strategy, model, stream = make(SeqLoRA(LORA))
        for experience in stream.benchmark.streams["train"]:
            strategy.train(experience)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_bf16_autocast_runs_on_cpu():
    recorder = Recorder()
    strategy, _, stream = make(SeqLoRA(LORA), plugins=[recorder], precision="bf16", iters=3)
    strategy.train(stream.benchmark.streams["train"][0])
    assert len(recorder.losses) == 3 and all(torch.isfinite(torch.tensor(loss)) for loss, _, _ in recorder.losses)


def test_accuracy_matrix_rows_follow_the_protocol_label_space():
    parts = build(toy_plan(scenario__protocol="class-il"), progress=False)
    strategy, model, stream, plugin = parts.strategy, parts.model, parts.stream, parts.matrix
    acc, control = evaluate_row(strategy, plugin, 0)
    # Independent count for task 2 at row 0: label space = classes of tasks 1..2
    x, y = zip(*(stream.benchmark.streams["test"][1].dataset[i][:2] for i in range(len(stream.benchmark.streams["test"][1].dataset))))
    model.set_label_space([0, 1, 2, 3])
    with torch.no_grad():
        predicted = model(torch.stack(x)).argmax(1)
    assert acc[1] == pytest.approx(100.0 * (predicted == torch.tensor(y)).float().mean().item())
    assert len(control) == 1 and 0.0 <= control[0] <= 100.0


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "checkpoint.ckpt"
    target.write_bytes(b"old")

    def half_write(tmp):
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(target, half_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.ckpt"]
