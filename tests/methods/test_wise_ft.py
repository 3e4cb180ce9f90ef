"""WiSE-FT: the interpolation against hand-computed values, which weights it moves, its two anchors,
both ends of α bit for bit (α = 1 is `finetune`, α = 0 the zero-shot model), and resume."""

from __future__ import annotations

import json

import pytest
import torch
from toys import interrupt_at_second_task, toy_model

from cl_bench import RunConfig, run
from cl_bench.methods.wise_ft import TINY_CLIP_PROFILE, WiseFT, interpolate, snapshot

HP = {"towers": "both", "label_smoothing": 0.0, "alpha": 0.8, "anchor": "previous"}


def test_interpolation_matches_a_hand_computed_case_and_leaves_the_rest_alone():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    linear, norm = module[0], module[1]
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        linear.bias.copy_(torch.tensor([0.5, -1.0]))
        norm.running_mean.fill_(7.0)
    anchor = snapshot(module, [linear.weight, linear.bias])
    assert set(anchor) == {"0.weight", "0.bias"}
    with torch.no_grad():  # "fine-tuning": new weights everywhere, buffers included
        linear.weight.copy_(torch.tensor([[2.0, 0.0], [-1.0, 4.0]]))
        linear.bias.copy_(torch.tensor([1.5, 1.0]))
        norm.weight.fill_(3.0)
        norm.running_mean.fill_(9.0)
    interpolate(module, anchor, 0.75)
    # 0.75 · fine-tuned + 0.25 · anchor, by hand
    assert torch.allclose(linear.weight, torch.tensor([[1.75, 0.5], [0.0, 4.0]]), rtol=0, atol=1e-7)
    assert torch.allclose(linear.bias, torch.tensor([1.25, 0.5]), rtol=0, atol=1e-7)
    assert torch.equal(norm.weight, torch.full((2,), 3.0)) and torch.equal(norm.running_mean, torch.full((2,), 9.0))  # not in the anchor / a buffer
    assert torch.equal(anchor["0.weight"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # the anchor is a copy, untouched


def test_the_ends_of_alpha_run_no_float_operation():
    module = torch.nn.Linear(3, 3)
    anchor = snapshot(module, module.parameters())
    with torch.no_grad():
        module.weight.mul_(1.7).add_(0.1)
    tuned = module.weight.detach().clone()
    interpolate(module, anchor, 1.0)
    assert torch.equal(module.weight, tuned)
    interpolate(module, anchor, 0.0)
    assert torch.equal(module.weight, anchor["weight"]) and torch.equal(module.bias, anchor["bias"])


def perturb(model, seed):
    """Stand-in for a task's training: moves every weight of both towers."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tower in ("image", "text"):
            for param in model.tower_parameters(tower):
                param.add_(torch.randn(param.shape, generator=generator) * 0.01)


def towers(model) -> dict[str, torch.Tensor]:
    return snapshot(model, [p for tower in ("image", "text") for p in model.tower_parameters(tower)])


@pytest.mark.parametrize("anchor", ["previous", "zeroshot"])
def test_each_task_ends_at_the_restated_mix_with_its_anchor(anchor):
    model, method = toy_model(), WiseFT({**HP, "anchor": anchor})
    zero_shot = towers(model)
    scale = model.clip.logit_scale.detach().clone()
    method.setup(model, None)
    expected_start = zero_shot
    for task in range(2):
        method.before_experience(model, None)
        perturb(model, task)
        tuned = towers(model)
        method.after_experience(model, None)
        after = towers(model)
        start = expected_start if anchor == "previous" else zero_shot
        assert set(after) == set(zero_shot) and len(after) == len(list(model.parameters())) - 1  # everything but the logit scale
        for name in after:
            assert torch.allclose(after[name], 0.8 * tuned[name] + 0.2 * start[name], rtol=0, atol=1e-6), name
        expected_start = after
    assert torch.equal(model.clip.logit_scale, scale)


def test_only_the_trained_tower_is_interpolated():
    model, method = toy_model(), WiseFT({**HP, "towers": "image"})
    method.before_experience(model, None)
    perturb(model, 0)
    tuned = towers(model)
    method.after_experience(model, None)
    text = {id(p) for p in model.tower_parameters("text")}
    for name, param in model.named_parameters():
        if id(param) in text:
            assert torch.equal(param, tuned[name]), name  # not trained by this method: left as it is


@pytest.mark.parametrize("bad, message", [({"alpha": 1.5}, "alpha must be in [0, 1]"), ({"anchor": "initial"}, "anchor must be one of previous, zeroshot")])
def test_bad_settings_are_refused_by_the_factory(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        WiseFT({**HP, **bad})


def test_the_tiny_clip_profile_is_finetunes():
    from cl_bench.methods.finetune import cl_bench_methods as finetune_specs
    from cl_bench.methods.wise_ft import cl_bench_methods as wise_specs

    (finetune,), (wise,) = finetune_specs(), wise_specs()
    ours, theirs = wise.resolve("tiny-clip", {}), finetune.resolve("tiny-clip", {})
    assert {k: v for k, v in ours.items() if k not in ("alpha", "anchor")} == theirs and TINY_CLIP_PROFILE["alpha"] == ours["alpha"]


# ---------------------------------------------------------------------------------- both ends, resume


def final_weights(method, **settings):
    """The model after every task of the toy stream, trained as a run trains it."""
    from toys import toy_plan

    from cl_bench import build

    parts = build(toy_plan(method, iters=4, batch_size=4, method__lr=1e-2, method__warmup_iters=0, **settings), progress=False)
    for experience in parts.stream.benchmark.streams["train"]:
        parts.strategy.train(experience)
    return parts.model.state_dict()


def test_alpha_one_trains_finetunes_weights_and_alpha_zero_keeps_the_pre_trained_ones_bit_for_bit():
    """The weights themselves (the toy model's accuracy matrix is too coarse to tell runs apart)."""
    tuned, one = final_weights("finetune"), final_weights("wise-ft", method__alpha=1.0)
    assert tuned.keys() == one.keys() and all(torch.equal(tuned[k], one[k]) for k in tuned)
    pre_trained = toy_model().state_dict()
    assert any(not torch.equal(tuned[k], pre_trained[k]) for k in tuned)
    for anchor in ("previous", "zeroshot"):
        zero = final_weights("wise-ft", method__alpha=0.0, method__anchor=anchor)
        assert all(torch.equal(zero[k], pre_trained[k]) for k in pre_trained if k in zero), anchor


def embedded_run(out, method, resume=False, **settings):
    """A short run on embedded-cil in two tasks (tiny-clip, three iterations a task)."""
    config = RunConfig(method=method, scenario="embedded-cil", out=str(out), progress=False, resume=resume, iters=3)
    for key, value in {"scenario.tasks": 2, **settings}.items():
        config.set(key, value)
    return run(config)


@pytest.mark.slow
def test_alpha_one_is_finetunes_matrix_and_alpha_zero_the_zero_shot_one_bit_for_bit(tmp_path):
    finetune, zeroshot = embedded_run(tmp_path, "finetune"), embedded_run(tmp_path, "zeroshot")
    assert finetune.acc_matrix != zeroshot.acc_matrix  # long enough to tell them apart
    one = embedded_run(tmp_path, "wise-ft", **{"method.alpha": 1.0})
    assert one.acc_matrix == finetune.acc_matrix and one.control_matrix == finetune.control_matrix
    for anchor in ("previous", "zeroshot"):
        zero = embedded_run(tmp_path, "wise-ft", **{"method.alpha": 0.0, "method.anchor": anchor})
        assert zero.acc_matrix == zeroshot.acc_matrix and zero.control_matrix == zeroshot.control_matrix


@pytest.mark.slow
@pytest.mark.parametrize("anchor", ["previous", "zeroshot"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, anchor):
    settings = {"method.alpha": 0.5, "method.anchor": anchor}
    whole = embedded_run(tmp_path / "whole", "wise-ft", **settings)
    interrupt_at_second_task(monkeypatch, lambda: embedded_run(tmp_path / "split", "wise-ft", **settings))
    (partial,) = (tmp_path / "split").glob("*.json")
    assert json.loads(partial.read_text())["status"] == "partial" and list((tmp_path / "split").glob("*.ckpt"))
    resumed = embedded_run(tmp_path / "split", "wise-ft", resume=True, **settings)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert whole.acc_matrix[2] != embedded_run(tmp_path / "ft", "finetune").acc_matrix[2]  # the interpolation shows in the matrix
