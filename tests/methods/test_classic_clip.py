"""The classic methods (ewc, replay, gem, ogd) on CLIP: each core on images against a restated
reference (the projections' own maths is checked in tests/llm/test_classic.py), the label space
of memory examples per protocol, each with its rule off repeating its base's accuracy matrix bit
for bit, and a resumed memory run equal to an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toys import ToyPlugin, interrupt_at_second_task, toy_model, toy_stream

from cl_bench import RunConfig, TaskContext, run
from cl_bench.config.registry import Registry
from cl_bench.methods.classic import CLIP_FULL, CLIP_SEQ_LORA
from cl_bench.methods.classic.ewc import EWC
from cl_bench.methods.classic.gem import GEM, project_dual
from cl_bench.methods.classic.ogd import OGD, orthonormal_extend, project_out
from cl_bench.methods.classic.replay import Replay

TOY = {"iters": 4, "batch_size": 4, "lr": 1e-2, "warmup_iters": 0, "towers": "image"}


def set_up(method, protocol: str = "class-il", tasks: int = 3, per_class: int = 8):
    """A toy CLIP and stream with `method` set up on them, as a run does before training."""
    torch.manual_seed(0)
    model, stream = toy_model(), toy_stream(protocol, tasks=tasks, per_class=per_class)
    model.prepare(stream)
    method.setup(model, stream)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in method.params(model):
        p.requires_grad_(True)
    return model, stream


def training(model, stream, task: int) -> None:
    model.set_task_context(TaskContext("train", task, stream.task_names[task], tuple(stream.task_classes[task])))


def restated_scores(model, images, classes):
    """CLIP's logits written out: s · normalise(f(x)) · normalise(mean of each class's prompt features)ᵀ."""
    image = F.normalize(model.clip.encode_image(model.preprocess(images)), dim=-1)
    text = model.class_text_features(torch.tensor(classes))
    return model.clip.logit_scale.exp() * image @ text.t()


def restated_grad(model, params, value) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


def test_ewc_fisher_on_images_is_the_mean_squared_per_example_gradient_over_the_task_classes():
    method = EWC({**CLIP_FULL, **TOY, "label_smoothing": 0.0, "strength": 5.0, "fisher_samples": 1000})
    model, stream = set_up(method, per_class=3)
    training(model, stream, 0)
    experience = stream.experience(0)
    method.after_experience(model, experience)
    params = method.params(model)
    images, targets = next(experience.batches(1000))
    assert len(targets) == 6
    classes = experience.classes
    reference = torch.zeros(sum(p.numel() for p in params))
    for x, y in zip(images, targets):
        logits = restated_scores(model, x[None], classes)
        loss = F.cross_entropy(logits, torch.tensor([classes.index(int(y))]))
        reference += restated_grad(model, params, loss) ** 2
    reference /= len(targets)
    fisher = torch.cat([f.reshape(-1) for f in method.fisher])
    assert float(reference.abs().max()) > 0
    assert torch.allclose(fisher, reference, rtol=1e-4, atol=1e-10)
    # the penalty strength/2 · Σ F (θ − θ*)² after a move of the weights
    with torch.no_grad():
        for p in params:
            p.add_(0.01)
    penalty = 0.5 * 5.0 * float((reference * 0.01**2).sum())
    assert float(method.extra_loss(model, None, None).detach()) == pytest.approx(penalty, rel=1e-4)


@pytest.mark.parametrize(
    "protocol, expected",
    [("class-il", [0, 1, 2, 3]), ("x-tail", [0, 1, 2, 3]), ("mtil", [0, 1]), ("domain-il", [0, 1])],
)
def test_memory_examples_are_scored_over_the_protocols_space_among_the_seen_classes(protocol, expected):
    method = Replay({**CLIP_FULL, **TOY, "memory": 2, "replay_ratio": 1.0})
    set_up(method, protocol)
    assert method.memory_space(0, current=1) == expected  # x-tail: not task 2's classes, not seen yet


def test_gem_on_images_projects_so_no_earlier_tasks_memory_loss_rises():
    method = GEM({**CLIP_FULL, **TOY, "memory": 3, "margin": 0.0})
    model, stream = set_up(method)
    for task in (0, 1):
        training(model, stream, task)
        method.after_experience(model, stream.experience(task))
    method.before_experience(model, stream.experience(2))
    training(model, stream, 2)
    params = method.params(model)
    seen = stream.seen_classes(2)
    inputs, targets, tasks = method.memory.tensors()
    assert tasks.tolist() == [0, 0, 0, 1, 1, 1]
    rows = []
    for task in (0, 1):  # each earlier task's memory loss, over every class seen (class-il)
        logits = restated_scores(model, inputs[tasks == task], seen)
        columns = torch.tensor([seen.index(int(y)) for y in targets[tasks == task]])
        rows.append(restated_grad(model, params, F.cross_entropy(logits, columns)))
    memories = torch.stack(rows).double()
    g = -3.0 * memories[0] + 0.5 * memories[1]  # conflicts with task 0's memory
    offset = 0
    for p in params:
        p.grad = g[offset : offset + p.numel()].view_as(p).float().clone()
        offset += p.numel()
    method.before_update(model, params)
    assert method.projections == 1
    projected = torch.cat([p.grad.reshape(-1) for p in params]).double()
    expected = project_dual(g.numpy(), memories.numpy(), 0.0)
    assert np.allclose(projected.numpy(), expected, rtol=1e-4, atol=1e-6 * float(g.abs().max()))
    assert bool((memories @ projected >= -1e-3 * float((memories @ g).abs().max())).all())


def test_ogd_on_images_keeps_the_step_orthogonal_to_ground_truth_logit_gradients():
    method = OGD({**CLIP_SEQ_LORA, **TOY, "gradient": "logit", "strength": 1.0, "directions": 3})
    model, stream = set_up(method, "mtil")
    training(model, stream, 0)
    experience = stream.experience(0)
    images, targets = next(experience.batches(3))
    method.examples = lambda experience, count: iter([(x[None], y[None]) for x, y in zip(images, targets)])  # type: ignore[method-assign]
    method.after_experience(model, experience)
    params = method.params(model)
    classes = experience.classes
    directions = []
    for x, y in zip(images, targets):  # OGD-GTL: the gradient of the true class's logit
        logit = restated_scores(model, x[None], classes)[0, classes.index(int(y))]
        directions.append(restated_grad(model, params, logit))
    reference = np.linalg.qr(torch.stack(directions).double().numpy().T)[0]
    assert method.basis is not None and method.basis.shape == (3, reference.shape[0])
    g = torch.randn(reference.shape[0], generator=torch.Generator().manual_seed(1))
    assert np.allclose(project_out(g, method.basis).double().numpy(), g.double().numpy() - reference @ (reference.T @ g.double().numpy()), atol=1e-5)
    offset = 0
    for p in params:
        p.grad = g[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    method.before_update(model, params)
    stepped = torch.cat([p.grad.reshape(-1) for p in params])
    assert float((torch.stack(directions) @ stepped).abs().max()) < 1e-4 * float(g.norm() * torch.stack(directions).norm(dim=1).max())
    assert orthonormal_extend(None, torch.stack(directions)).shape == (3, len(g))


@pytest.mark.parametrize("protocol", ["class-il", "mtil"])
def test_replay_on_images_is_the_joined_batchs_mean_cross_entropy(protocol):
    method = Replay({**CLIP_FULL, **TOY, "memory": 4, "replay_ratio": 0.5})
    model, stream = set_up(method, protocol)
    training(model, stream, 0)
    method.after_experience(model, stream.experience(0))
    method.before_experience(model, stream.experience(1))
    training(model, stream, 1)
    images, targets = next(stream.experience(1).batches(4, shuffle=True, seed=3))
    state = method.generator.get_state()
    outputs = model(images)
    joined = model.loss(outputs, targets) + method.extra_loss(model, (images, targets), outputs)
    method.generator.set_state(state)
    drawn = torch.randint(4, (2,), generator=method.generator)
    held, held_targets, _ = method.memory.tensors()
    current, seen = stream.task_classes[1], stream.seen_classes(1)
    if protocol == "mtil":  # each task over its own classes: the current ones, and task 0's for the memory
        losses = [F.cross_entropy(restated_scores(model, x[None], current), torch.tensor([current.index(int(y))])) for x, y in zip(images, targets)]
        own = stream.task_classes[0]
        losses += [F.cross_entropy(restated_scores(model, held[i][None], own), torch.tensor([own.index(int(held_targets[i]))])) for i in drawn]
    else:  # class-il: current and memory examples alike over every class seen (one joined batch, one head)
        losses = [F.cross_entropy(restated_scores(model, x[None], seen), torch.tensor([seen.index(int(y))])) for x, y in zip(images, targets)]
        losses += [F.cross_entropy(restated_scores(model, held[i][None], seen), torch.tensor([seen.index(int(held_targets[i]))])) for i in drawn]
    # finetune's label smoothing (0.2 in CLIP_FULL), over the training label space, on the current examples only
    smoothing = F.cross_entropy(outputs[:, current], torch.tensor([current.index(int(y)) for y in targets]), label_smoothing=0.2) - F.cross_entropy(
        outputs[:, current], torch.tensor([current.index(int(y)) for y in targets])
    )
    reference = (sum(losses[:4]) + 4 * smoothing + sum(losses[4:])) / 6
    assert float(joined.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Whole runs on the toy stream


def toy_run(folder, name: str, resume: bool = False, protocol: str = "class-il", **params):
    """A run on the toy stream (3 tasks), as `clbench run` makes it."""
    config = RunConfig(method=name, scenario="toy", backbone="toy-clip", out=str(folder), progress=False, iters=4, batch_size=4, resume=resume)
    config.set("scenario.protocol", protocol)
    config.set("scenario.tasks", 3)
    for key, value in {"lr": 1e-2, "warmup_iters": 0, **params}.items():
        config.set(f"method.{key}", value)
    return run(config, registry=Registry([ToyPlugin()]))


FULL_RUN = {"label_smoothing": 0.2}  # finetune's smoothing on: the base's own loss term is kept
LORA_RUN = {"lr": 0.05}  # LoRA starts at zero: a larger step, so 4 iterations change predictions


@pytest.mark.parametrize(
    "method, off, on, base, protocol",
    [
        ("ewc", {"strength": 0.0}, {"strength": 1e4, "fisher_samples": 4}, "finetune", "class-il"),
        ("replay", {"memory": 0}, {"memory": 4}, "finetune", "mtil"),
        ("gem", {"memory": 0}, {"memory": 4}, "finetune", "class-il"),
        ("ogd", {"strength": 0.0}, {"strength": 1.0}, "seq-lora", "class-il"),
    ],
)
def test_with_its_rule_off_a_method_repeats_its_base_on_clip_bit_for_bit(tmp_path, method, off, on, base, protocol):
    shared = FULL_RUN if base == "finetune" else LORA_RUN
    reference = toy_run(tmp_path / "base", base, protocol=protocol, **shared)
    result = toy_run(tmp_path / "off", method, protocol=protocol, **shared, **off)
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix
    switched_on = toy_run(tmp_path / "on", method, protocol=protocol, **shared, **on)
    assert switched_on.acc_matrix[:2] == reference.acc_matrix[:2]  # task 0 trains as the base: nothing earlier to keep
    assert switched_on.acc_matrix != reference.acc_matrix  # the rule does act from task 1 on


@pytest.mark.parametrize("method", ["gem", "replay"])
def test_a_resumed_memory_run_on_clip_equals_an_uninterrupted_one(tmp_path, monkeypatch, method):
    whole = toy_run(tmp_path / "whole", method, memory=4)
    interrupt_at_second_task(monkeypatch, lambda: toy_run(tmp_path / "split", method, memory=4))
    assert list((tmp_path / "split").glob("*.ckpt"))
    resumed = toy_run(tmp_path / "split", method, resume=True, memory=4)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix


@pytest.mark.parametrize("bad, message", [({"towers": "all"}, "method.towers"), ({"gradient": "hessian"}, "method.gradient")])
def test_bad_clip_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        OGD({**CLIP_SEQ_LORA, **TOY, "gradient": "logit", "strength": 1.0, "directions": 3, **bad})
