"""LwF (ZSCL's CLIP version): the two-way distillation against an explicit restatement, the
teacher (the previous task's model), the label space it distils over, weight 0 as finetune bit for
bit, and resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from distill_reference import Losses, soft_cross_entropy, transpose
from toys import ToyPlugin, interrupt_at_second_task, toy_plan

from cl_bench import RunConfig, build, run
from cl_bench.methods.lwf import CLIP_DEFAULTS
from cl_bench.methods.lwf.method import LwF, two_way_distillation

HP = {**CLIP_DEFAULTS, "label_smoothing": 0.0, "weight": 0.7}


def hand_two_way(student_images, teacher_images, texts, scale: float, T: float) -> tuple[float, float]:
    """Z = scale · images textsᵀ (as lists), then both directions of the soft cross-entropy."""
    def logits(images):
        return [[scale * sum(a * b for a, b in zip(image, text)) for text in texts] for image in images]

    texts = texts.tolist()
    z_s, z_t = logits(student_images.tolist()), logits(teacher_images.tolist())
    return soft_cross_entropy(z_s, z_t, T), soft_cross_entropy(transpose(z_s), transpose(z_t), T)


def test_two_way_distillation_equals_the_explicit_softmax_formulas():
    g = torch.Generator().manual_seed(0)
    student = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    teacher = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64), dim=-1)
    for T in (2.0, 0.5):
        image_kd, text_kd = two_way_distillation(student, teacher, texts, torch.tensor(10.0, dtype=torch.float64), T)
        hand_image, hand_text = hand_two_way(student, teacher, texts, 10.0, T)
        assert float(image_kd) == pytest.approx(hand_image, rel=1e-5) and float(text_kd) == pytest.approx(hand_text, rel=1e-5)
    # the same logits in both: only the teacher's entropy is left, and the gradient is zero
    same = student.clone().requires_grad_(True)
    image_kd, text_kd = two_way_distillation(same, student, texts, torch.tensor(10.0, dtype=torch.float64), 2.0)
    (image_kd + text_kd).backward()
    assert float(same.grad.abs().max()) < 1e-5  # distillation_loss computes in float32


def toy_parts(method, protocol: str = "mtil", tasks: int = 2, iters: int = 4):
    planned = toy_plan(iters=iters, batch_size=4, method__lr=1e-2, scenario__tasks=tasks, scenario__protocol=protocol, eval_batch_size=256)
    return build(planned, method=method, progress=False)


@pytest.mark.parametrize(
    ("protocol", "space", "texts", "expected"),
    [("class-il", "protocol", "teacher", [0, 1, 2, 3]), ("class-il", "task", "teacher", [2, 3]), ("mtil", "protocol", "teacher", [2, 3]), ("x-tail", "protocol", "teacher", [0, 1, 2, 3, 4, 5]), ("class-il", "protocol", "student", [0, 1, 2, 3])],
)
def test_the_loss_is_finetune_plus_distillation_towards_the_previous_model_over_the_chosen_classes(protocol, space, texts, expected):
    method = LwF({**HP, "distill_space": space, "distill_texts": texts})
    parts = toy_parts(method, protocol=protocol, tasks=3)
    model, stream, strategy = parts.model, parts.stream, parts.strategy
    strategy.train(stream.benchmark.streams["train"][0])
    assert method.teacher is None  # dropped when the task ended
    experience = stream.experience(1)
    before_task = copy.deepcopy(model)  # the teacher, taken independently
    method.before_experience(model, experience)
    assert method.classes == expected
    with torch.no_grad():  # move the model away from the teacher, so the distillation is not at its minimum
        for param in model.clip.parameters():
            param.add_(0.05 * torch.randn_like(param))
        model.clip.logit_scale.copy_(before_task.clip.logit_scale)
    images, targets = next(experience.batches(6))
    model.set_label_space(experience.classes)
    loss = method.extra_loss(model, (images, targets), model(images))
    with torch.no_grad():
        teacher_logits = before_task.scores(images, expected)  # s · f_prev(x) g_prev(classes)ᵀ, the class texts' mean prompt feature
        texts_of = model if texts == "student" else before_task  # whose class text features score the current images
        teacher_texts = texts_of.class_text_features(torch.tensor(expected))
        student_images = F.normalize(model.clip.encode_image(model.preprocess(images)), dim=-1)
        scale = float(model.clip.logit_scale.exp())
    student_logits = (scale * student_images @ teacher_texts.t()).tolist()
    hand = soft_cross_entropy(student_logits, teacher_logits.tolist(), 2.0) + soft_cross_entropy(transpose(student_logits), transpose(teacher_logits.tolist()), 2.0)
    assert float(loss.detach()) == pytest.approx(0.7 * hand, rel=1e-4)
    assert hand > 1e-3


def test_the_teacher_is_the_model_as_the_previous_task_left_it_and_the_distillation_trains_the_image_tower_only():
    method = LwF(HP)
    parts = toy_parts(method)
    model, stream, strategy = parts.model, parts.stream, parts.strategy
    zero_shot = copy.deepcopy(model.state_dict())
    method.before_experience(model, stream.experience(0))
    assert all(torch.equal(a, zero_shot[k]) for k, a in method.teacher.module.state_dict().items())  # task 1: the pre-trained model
    strategy.train(stream.benchmark.streams["train"][0])
    after_first = copy.deepcopy(model.state_dict())
    method.before_experience(model, stream.experience(1))
    teacher = method.teacher
    assert all(torch.equal(a, after_first[k]) for k, a in teacher.module.state_dict().items())
    assert not any(p.requires_grad for p in teacher.module.parameters())
    images, targets = next(stream.experience(1).batches(4))
    for param in model.parameters():
        param.requires_grad_(True)
        param.grad = None
    model.set_label_space(stream.experience(1).classes)
    with torch.no_grad():
        for param in model.clip.visual.parameters():
            param.add_(0.05 * torch.randn_like(param))
    method.extra_loss(model, (images, targets), model(images)).backward()
    text_params = [p for name, p in model.clip.named_parameters() if not name.startswith("visual.") and name != "logit_scale"]
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in text_params)
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.clip.visual.parameters())
    student = LwF({**HP, "distill_texts": "student"})  # its own class texts: the text tower is distilled too
    student.before_experience(model, stream.experience(1))
    student.teacher = teacher
    for param in model.parameters():
        param.grad = None
    student.extra_loss(model, (images, targets), model(images)).backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in text_params)


def toy_run(tmp_path, method: str, **settings):
    losses = Losses()
    config = toy_plan(method, out=str(tmp_path), iters=4, batch_size=4, method__lr=1e-2, method__warmup_iters=0, **settings).config
    return run(config, plugins=[ToyPlugin(), losses]), losses.by_task


def test_weight_zero_is_finetune_bit_for_bit_and_weight_one_is_not(tmp_path):
    finetune, finetune_losses = toy_run(tmp_path / "ft", "finetune")
    off, off_losses = toy_run(tmp_path / "off", "lwf", method__weight=0.0)
    on, on_losses = toy_run(tmp_path / "on", "lwf")
    assert off.acc_matrix == finetune.acc_matrix and off.control_matrix == finetune.control_matrix
    assert off_losses == finetune_losses and len(off_losses[1]) == 4
    assert on_losses[0] != finetune_losses[0]


@pytest.mark.slow
def test_weight_zero_is_finetune_bit_for_bit_on_an_embedded_stream(tmp_path):
    settings = {"scenario": "embedded-cil", "scenario_params": {"tasks": 2}, "iters": 3, "out": str(tmp_path), "progress": False}
    finetune = run(RunConfig(method="finetune", **settings))
    off = run(RunConfig(method="lwf", method_params={"weight": 0.0}, **settings))
    assert off.acc_matrix == finetune.acc_matrix and off.control_matrix == finetune.control_matrix
    assert finetune.acc_matrix[1] != finetune.acc_matrix[0]


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    whole, whole_losses = toy_run(tmp_path / "whole", "lwf")
    interrupt_at_second_task(monkeypatch, lambda: toy_run(tmp_path / "split", "lwf"))
    assert json.loads(next((tmp_path / "split").glob("*.json")).read_text())["status"] == "partial"
    resumed, resumed_losses = toy_run(tmp_path / "split", "lwf", resume=True)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed_losses == {1: whole_losses[1]}


@pytest.mark.parametrize(("key", "value", "message"), [("weight", -1.0, "method.weight"), ("temperature", 0.0, "method.temperature"), ("distill_space", "seen", "method.distill_space"), ("distill_texts", "both", "method.distill_texts"), ("towers", "decoder", "method.towers")])
def test_bad_settings_are_one_line_errors(key, value, message):
    with pytest.raises(ValueError, match=message) as info:
        LwF({**HP, key: value})
    assert "\n" not in str(info.value)
