"""ZSCL: the reference distillation and the L2 pull against an explicit restatement, the weight
ensemble against a restated mean of snapshots, every term off as finetune bit for bit, resume, and
a stream without reference data."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from distill_reference import Losses, soft_cross_entropy, transpose
from toys import ToyPlugin, interrupt_at_second_task, toy_images, toy_strategy, toy_stream

from cl_bench import ReferenceData, RunConfig, ScenarioSpec, UserError, build, hookimpl, plan, run
from cl_bench.config.registry import Registry
from cl_bench.methods.zscl import CLIP_DEFAULTS
from cl_bench.methods.zscl.method import ZSCL

HP = {**CLIP_DEFAULTS, "label_smoothing": 0.0, "batch_size": 4}
REFERENCE_TEXTS = [f"a photo of a shape {i}." for i in range(5)]


def toy_reference() -> ReferenceData:
    images, labels = toy_images(5, 2, seed=7)  # 10 images: passes of 3 batches of 4 (the last 2)
    return ReferenceData("toy-reference", torch.utils.data.TensorDataset(images, labels), REFERENCE_TEXTS, source="toy squares")


def _toy_with_reference(params, context):
    stream = toy_stream(name="toy-ref", tasks=params["tasks"])
    stream.reference_loader = toy_reference
    return stream


class ReferencePlugin(ToyPlugin):
    """The toy plugin plus `toy-ref`: the toy stream with reference data."""

    @hookimpl
    def cl_bench_scenarios(self):
        return [
            *super().cl_bench_scenarios(),
            ScenarioSpec(name="toy-ref", factory=_toy_with_reference, summary="toy squares with reference data", protocol="mtil", num_tasks=2, defaults={"tasks": 2}, count_tasks=lambda p: p["tasks"]),
        ]


def toy_config(tmp_path, method: str = "zscl", scenario: str = "toy-ref", **method_params) -> RunConfig:
    params = {"lr": 1e-2, "warmup_iters": 0, **method_params}
    return RunConfig(method=method, scenario=scenario, backbone="toy-clip", out=str(tmp_path), iters=4, batch_size=4, progress=False, method_params=params)


def toy_run(config: RunConfig):
    losses = Losses()
    return run(config, plugins=[ReferencePlugin(), losses]), losses.by_task


def tower_params(model):
    return [p for name, p in model.clip.named_parameters() if name != "logit_scale"]


def test_reference_distillation_and_l2_pull_equal_their_restatement():
    method = ZSCL({**HP, "weight": 0.7, "l2_weight": 0.3, "we_interval": 0})
    parts = build(plan(toy_config("runs"), Registry([ReferencePlugin()])), method=method, progress=False)
    model, stream, strategy = parts.model, parts.stream, parts.strategy
    zero_shot = copy.deepcopy(model)
    strategy.train(stream.benchmark.streams["train"][0])  # the model moves away from the pre-trained one
    experience = stream.experience(1)
    method.before_experience(model, experience)
    start = [p.detach().clone() for p in tower_params(model)]
    with torch.no_grad():
        for param in model.clip.visual.parameters():
            param.add_(0.05 * torch.randn_like(param))
    drawn = []
    draw = method.next_reference_images
    method.next_reference_images = lambda: drawn.append(draw()) or drawn[-1]
    images, targets = next(experience.batches(4))
    model.set_label_space(experience.classes)
    loss = method.extra_loss(model, (images, targets), model(images))
    (reference,) = drawn
    assert reference.shape[0] == 4
    with torch.no_grad():
        tokens = zero_shot.tokenizer(REFERENCE_TEXTS, context_length=zero_shot.clip.context_length)
        texts = F.normalize(zero_shot.clip.encode_text(tokens), dim=-1)
        teacher_images = F.normalize(zero_shot.clip.encode_image(zero_shot.preprocess(reference)), dim=-1)
        student_images = F.normalize(model.clip.encode_image(model.preprocess(reference)), dim=-1)
        scale = float(zero_shot.clip.logit_scale.exp())
        z_s, z_t = (scale * student_images @ texts.t()).tolist(), (scale * teacher_images @ texts.t()).tolist()
        l2 = sum(float(((p.double() - s.double()) ** 2).sum()) for p, s in zip(tower_params(model), start))
    distill = soft_cross_entropy(z_s, z_t, 2.0) + soft_cross_entropy(transpose(z_s), transpose(z_t), 2.0)
    assert distill > 1e-3 and l2 > 1e-3
    assert float(loss.detach()) == pytest.approx(0.7 * distill + 0.3 * l2, rel=1e-4)


class Recording(ZSCL):
    """Keeps θ at each task start and after every optimiser step."""

    def __init__(self, hparams):
        super().__init__(hparams)
        self.starts, self.steps_seen, self.trained = [], [], []

    def before_experience(self, model, experience):
        super().before_experience(model, experience)
        self.trained.append(list(self.params))
        self.starts.append([p.detach().clone() for p in self.params])
        self.steps_seen.append([])

    def make_optimizer(self, params, hparams):
        optimizer = super().make_optimizer(params, hparams)
        optimizer.register_step_post_hook(lambda *_: self.steps_seen[-1].append([p.detach().clone() for p in self.params]))
        return optimizer


@pytest.mark.parametrize(("iters", "snapshots"), [(5, [0, 2, 4]), (4, [0, 2, 3])])  # 4 % 2 == 0: ZSCL's extra last step adds the final weights
def test_the_weight_ensemble_is_the_uniform_mean_of_the_start_and_the_snapshots(iters, snapshots):
    method = Recording({**HP, "weight": 0.0, "l2_weight": 0.0, "we_interval": 2})
    strategy, model, stream = toy_strategy(method, iters=iters, lr=1e-2)
    strategy.train(stream.benchmark.streams["train"][0])
    steps = method.steps_seen[0]
    assert len(steps) == iters
    vectors = [method.starts[0]] + [steps[i] for i in snapshots]
    assert len(method.trained[0]) == len(tower_params(model))
    for param, *values in zip(method.trained[0], *vectors):
        assert torch.allclose(param, torch.stack(values).mean(0), atol=1e-6, rtol=0)
    assert not torch.equal(method.trained[0][0], steps[-1][0])  # the ensemble, not the last weights
    strategy.train(stream.benchmark.streams["train"][1])
    ensemble = [torch.stack(values).mean(0) for values in zip(*vectors)]
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(method.starts[1], ensemble))  # the next task starts from it


def test_every_term_off_is_finetune_bit_for_bit_without_reading_reference_data(tmp_path):
    finetune, finetune_losses = toy_run(toy_config(tmp_path / "ft", "finetune", scenario="toy"))
    off, off_losses = toy_run(toy_config(tmp_path / "off", scenario="toy", weight=0.0, l2_weight=0.0, we_interval=0))
    assert off.acc_matrix == finetune.acc_matrix and off.control_matrix == finetune.control_matrix
    assert off_losses == finetune_losses and len(off_losses[1]) == 4
    on, on_losses = toy_run(toy_config(tmp_path / "on"))
    assert on_losses[0] != finetune_losses[0]


@pytest.mark.slow
def test_every_term_off_is_finetune_bit_for_bit_on_an_embedded_stream(tmp_path):
    settings = {"scenario": "embedded-cil", "scenario_params": {"tasks": 2}, "iters": 3, "out": str(tmp_path), "progress": False}
    finetune = run(RunConfig(method="finetune", **settings))
    off = run(RunConfig(method="zscl", method_params={"weight": 0.0, "l2_weight": 0.0, "we_interval": 0}, **settings))
    assert off.acc_matrix == finetune.acc_matrix and off.control_matrix == finetune.control_matrix
    assert finetune.acc_matrix[1] != finetune.acc_matrix[0]


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    settings = {"we_interval": 3, "l2_weight": 0.1}
    whole, whole_losses = toy_run(toy_config(tmp_path / "whole", **settings))
    interrupt_at_second_task(monkeypatch, lambda: toy_run(toy_config(tmp_path / "split", **settings)))
    assert json.loads(next((tmp_path / "split").glob("*.json")).read_text())["status"] == "partial"
    config = toy_config(tmp_path / "split", **settings)
    config.resume = True
    resumed, resumed_losses = toy_run(config)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed_losses == {1: whole_losses[1]} and whole_losses[1] != whole_losses[0]


def test_a_stream_without_reference_data_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="supplies no reference data") as info:
        toy_run(toy_config(tmp_path, scenario="toy"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), [("weight", -1.0, "method.weight"), ("l2_weight", float("nan"), "method.l2_weight"), ("we_interval", -1, "method.we_interval"), ("temperature", -2.0, "method.temperature"), ("towers", "decoder", "method.towers")])
def test_bad_settings_are_one_line_errors(key, value, message):
    with pytest.raises(ValueError, match=message) as info:
        ZSCL({**HP, key: value})
    assert "\n" not in str(info.value)
