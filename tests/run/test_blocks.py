"""The building blocks methods use from inside their hooks: scores over any label space, a frozen
teacher, closed-form fitting through the strategy, and the embedded streams' reference data."""

from __future__ import annotations

import hashlib

import pytest
import torch

from cl_bench import Method, Teacher
from tests.toys import toy_model, toy_strategy, toy_stream


def test_scores_over_any_label_space_leave_the_task_context_alone():
    model, stream = toy_model(), toy_stream("class-il", tasks=2)
    model.prepare(stream)
    model.set_label_space([0, 1])
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        everything = model.scores(images, [3, 0, 2, 1])
        model.set_label_space([0, 1, 2, 3])
        full = model(images)
    assert everything.shape == (3, 4)
    assert torch.equal(everything, full[:, [3, 0, 2, 1]])
    model.set_label_space([0, 1])
    with torch.no_grad():
        model.scores(images, [2, 3])
    assert model.label_space.tolist() == [0, 1]
    assert torch.equal(model.features(images), model.encode_image(images))


def test_a_teacher_is_frozen_outside_the_model_and_unmoved_by_training():
    class TrainsAll(Method):
        def setup(self, model, stream):
            self.teacher = Teacher(model)

        def trainable_parameters(self, model):
            return list(model.clip.visual.parameters())

    method = TrainsAll()
    strategy, model, stream = toy_strategy(method, tasks=1, iters=3)
    before = {k: v.clone() for k, v in method.teacher.module.state_dict().items()}
    strategy.train(stream.benchmark.streams["train"][0])
    after = method.teacher.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["clip.visual.conv1.weight"], model.state_dict()["clip.visual.conv1.weight"])
    assert not any(p.requires_grad for p in method.teacher.module.parameters())
    assert all(id(p) not in {id(q) for q in model.parameters()} for p in method.teacher.module.parameters())
    images = torch.rand(2, 1, 28, 28)
    assert not method.teacher.scores(images, [0, 1]).requires_grad


def test_a_closed_form_method_is_fitted_once_per_task_without_autograd():
    calls = []

    class Means(Method):
        def fit(self, model, experience):
            images = torch.cat([x for x, _ in experience.batches()])
            calls.append((experience.index, experience.seen_classes, torch.is_grad_enabled(), model.training, float(model.features(images).mean())))

    strategy, model, stream = toy_strategy(Means(), tasks=2)
    for task in range(2):
        strategy.train(stream.benchmark.streams["train"][task])
    assert [c[:4] for c in calls] == [(0, [0, 1], False, False), (1, [0, 1, 2, 3], False, False)]
    assert model.training  # handed back in training mode


def test_embedded_reference_data_is_pretraining_data_never_a_test_or_control_set():
    from cl_bench.scenarios import embedded

    reference = embedded.reference_data()
    images, labels = reference.dataset.tensors
    assert len(images) == len(labels) > 0 and int(labels.max()) < len(reference.texts)
    digest = {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images}
    held_out = [d.splits["test"] for d in (embedded.fashion(), embedded.digits(), embedded.letters(), embedded.symbols())]
    held_out.append(embedded.symbols().splits["pretrain"])
    for split in held_out:
        x, _ = embedded._tensors(split, 0)
        assert not digest & {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in x}
    stream = embedded.build_cil({"tasks": 5})
    assert stream.reference() is stream.reference()  # loaded once
    assert "symbol" not in reference.source


def test_a_stream_without_reference_data_says_so():
    from cl_bench import UserError

    with pytest.raises(UserError, match="supplies no reference data"):
        toy_stream().reference()
