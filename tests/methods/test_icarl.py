"""iCaRL (ZSCL's CLIP version): which exemplars herding keeps, the nearest-mean classifier, the
distillation term, memory=0 against finetune bit for bit, resume, and the memory budget."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from toys import ToyPlugin, interrupt_at_second_task, toy_strategy

from cl_bench import RunConfig, run
from cl_bench.config.registry import Registry
from cl_bench.errors import UserError
from cl_bench.methods.icarl import CLIP_DEFAULTS
from cl_bench.methods.icarl.method import ICaRL, NearestMeanHead, class_means

# Small settings for the toy CLIP (the ViT-B/16 defaults would run 1000 iterations a task).
TOY = {"iters": 4, "batch_size": 4, "lr": 1e-2, "warmup_iters": 0}


def method(**overrides) -> ICaRL:
    return ICaRL({**CLIP_DEFAULTS, **TOY, **overrides})


# ---------------------------------------------------------------------------------------------
# Herding: which examples the method keeps, on a constructed case

# Four unit features: the mean is (0.52, 0.64). Herding picks c (distance² 0.08 to the mean; a 0.64,
# b 0.40, d 0.16), then d ((c + d)/2 is 0.02 from the mean; with b 0.04, with a 0.26), then a
# ((c + d + a)/3: 0.044; with b: 0.071), then b. So its order is c, d, a, b.
A, B, C, D = (1.0, 0.0), (0.0, 1.0), (0.8, 0.6), (0.28, 0.96)


class FeatureTable(torch.nn.Module):
    """A stand-in model: each input is one number, an index into a table of features."""

    def __init__(self, table: list[tuple[float, float]]) -> None:
        super().__init__()
        self.register_buffer("label_space", torch.zeros(1, dtype=torch.long))
        self.table = torch.tensor(table)
        self.head = "untouched"

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.table[inputs[:, 0].long()]

    def set_head(self, head) -> None:
        self.head = head


@dataclass
class Task:
    """A stand-in experience: inputs are row numbers into the FeatureTable."""

    index: int
    ids: list[int]
    targets: list[int]

    @property
    def dataset(self):
        return [(torch.tensor([i]), torch.tensor(t)) for i, t in zip(self.ids, self.targets)]

    def batches(self, batch_size: int = 256):
        for start in range(0, len(self.ids), batch_size):
            yield torch.tensor(self.ids[start : start + batch_size]).view(-1, 1), torch.tensor(self.targets[start : start + batch_size])


def kept(icarl: ICaRL) -> list[list[int]]:
    """The input ids each memory group holds, in priority order."""
    return [icarl.memory.group(key)[0].view(-1).tolist() for key in icarl.memory.groups]


def test_herding_per_task_ignores_classes_and_shares_the_budget_per_task():
    # Task 0: ids 0-3 are a, b, c, d (classes 0, 0, 1, 1: ignored). Task 1: ids 4-7 are the same
    # features in the order d, c, b, a, so its herding order is ids 5 (c), 4 (d), 7 (a), 6 (b).
    model = FeatureTable([A, B, C, D, D, C, B, A])
    icarl = method(memory=4, group_by="task", classifier="text")
    icarl.after_experience(model, Task(0, [0, 1, 2, 3], [0, 0, 1, 1]))
    assert kept(icarl) == [[2, 3, 0, 1]]  # c, d, a, b: all four, in herding order
    icarl.after_experience(model, Task(1, [4, 5, 6, 7], [2, 2, 3, 3]))
    assert kept(icarl) == [[2, 3], [5, 4]]  # two each (not ZSCL's 4 - 4 // 2 for the new task)
    assert model.head == "untouched"  # the text classifier sets no head


def test_herding_per_class_keeps_each_class_own_herding_order():
    # Class 0 holds a, b, c, d (ids 0-3); class 1 the same features in reverse (ids 4-7).
    model = FeatureTable([A, B, C, D, D, C, B, A])
    icarl = method(memory=4, group_by="class")
    icarl.after_experience(model, Task(0, [4, 0, 5, 1, 6, 2, 7, 3], [1, 0, 1, 0, 1, 0, 1, 0]))
    assert kept(icarl) == [[2, 3], [5, 4]]  # class 0: c, d; class 1: c, d (ids 5, 4)


def test_herding_pool_is_a_seeded_subset_beyond_its_size():
    model = FeatureTable([A, B, C, D] * 4)
    picked = []
    for _ in range(2):
        icarl = method(memory=16, herding_pool=6)
        icarl._seed = 123  # as before_experience reads it from the experience's seed
        icarl.after_experience(model, Task(0, list(range(16)), [0] * 16))
        picked.append(sorted(kept(icarl)[0]))
    assert len(picked[0]) == 6 and picked[0] == picked[1]


def test_memory_budget_holds_across_tasks():
    # 5 tasks of 6 examples each, budget 10: quotas 10, 5+5, 4+3+3, 3+3+2+2, 2+2+2+2+2 (never above 10,
    # where ZSCL's K - K // t for the newest task would hold 10, 15, 13, 12 and 12 from task 3 on).
    features = [(math.cos(0.3 * i), math.sin(0.3 * i)) for i in range(30)]
    model = FeatureTable(features)
    for group_by in ("task", "class"):
        icarl = method(memory=10, group_by=group_by)
        sizes = []
        for t in range(5):
            ids = list(range(6 * t, 6 * t + 6))
            icarl.after_experience(model, Task(t, ids, [2 * t + i % 2 for i in range(6)]))
            assert len(icarl.memory) <= 10
            sizes.append([len(ids) for ids in kept(icarl)])
        if group_by == "task":
            assert sizes == [[6], [5, 5], [4, 3, 3], [3, 3, 2, 2], [2, 2, 2, 2, 2]]
        else:  # two classes a task: 10 classes share 10 examples at the end
            assert sizes[0] == [3, 3] and sizes[-1] == [1] * 10


# ---------------------------------------------------------------------------------------------
# The nearest-mean classifier, by hand


class Space:
    """What the head reads from the model: the label space, the class count, the logit scale."""

    def __init__(self, label_space: list[int]) -> None:
        self.label_space = torch.tensor(label_space)
        self.num_classes = 8
        self.logit_scale = torch.tensor(100.0)


def test_nearest_mean_scores_by_hand():
    # Class 3's exemplars (2, 0) and (0, 1): normalised (1, 0) and (0, 1), mean direction (1, 1)/√2.
    # Class 5's one exemplar (0, 3): direction (0, 1).
    classes, means = class_means(torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]), torch.tensor([3, 5, 3]))
    assert classes.tolist() == [3, 5]
    assert torch.allclose(means, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]))
    head = NearestMeanHead(classes, means)
    image = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    text = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # the text head's scores over classes 3, 5, 7
    scores = head.scores(Space([3, 5, 7]), image, text)
    expected = torch.tensor([[100 * 1.4 / math.sqrt(2), 80.0, 3.0], [100 / math.sqrt(2), 0.0, 6.0]])  # class 7: no exemplars, text score kept
    assert torch.allclose(scores, expected)
    assert scores[0, :2].argmax() == 0 and scores[1, :2].argmax() == 0  # nearest mean by cosine
    # a label space where no class has exemplars (a later task, a control set): the text head alone
    assert head.scores(Space([6, 7]), image, text[:, :2]) is not None
    assert torch.equal(head.scores(Space([6, 7]), image, text[:, :2]), text[:, :2])


def test_nme_head_is_set_after_each_task_and_removed_while_training():
    icarl = method(memory=6, classifier="nme")
    strategy, model, stream = toy_strategy(icarl, tasks=2, iters=3)
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    assert isinstance(model.head, NearestMeanHead)
    assert model.head.classes.tolist() == sorted(set(icarl.memory.tensors()[1].tolist()))
    # its means are those of the exemplars' features under the trained model
    inputs, targets, _ = icarl.memory.tensors()
    model.eval()
    with torch.no_grad():
        _, expected = class_means(model.features(inputs), targets)
    assert torch.allclose(model.head.means.cpu(), expected, atol=1e-6)
    icarl.before_experience(model, stream.experience(1))
    assert model.head is None  # the next task trains through the text head


# ---------------------------------------------------------------------------------------------
# The distillation term, against a restatement


def restated_kd(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """ZSCL's helpers.distillation(t, s, T): T² · mean over rows of −Σ softmax(t/T) log softmax(s/T)."""
    p = torch.softmax(teacher / T, dim=1)
    return -(p * torch.log_softmax(student / T, dim=1)).sum(dim=1).mean() * T * T


def test_distillation_term_equals_a_restatement_and_reaches_only_the_image_tower():
    icarl = method(memory=6, image_kd=0.7, text_kd=0.3, batch_size=5)
    strategy, model, stream = toy_strategy(icarl, tasks=2, iters=3)
    zero_shot = copy.deepcopy(model)  # the teacher is the model before any training
    strategy.train(stream.benchmark.streams["train"][0])
    experience = stream.experience(1)
    torch.manual_seed(77)  # as the strategy seeds the experience
    icarl.before_experience(model, experience)
    model.set_label_space(experience.classes)
    model.train()
    kd = icarl.distillation(model)

    # Restatement: the same draw, then both logits over the zero-shot text features of task 1's classes.
    from cl_bench.methods.icarl.method import _derived_seed

    draw = torch.randint(6, (5,), generator=torch.Generator().manual_seed(_derived_seed(77, "draws")))
    x = icarl.memory.tensors()[0][draw]
    with torch.no_grad():
        U = zero_shot.class_text_features(torch.tensor(experience.classes))
        scale = float(zero_shot.clip.logit_scale.exp())  # frozen: the same in both models
        z0 = scale * F.normalize(zero_shot.clip.encode_image(zero_shot.preprocess(x)), dim=1) @ U.t()
    z = scale * F.normalize(model.clip.encode_image(model.preprocess(x)), dim=1) @ U.t()
    expected = 0.7 * restated_kd(z, z0, 2.0) + 0.3 * restated_kd(z.t(), z0.t(), 2.0)
    assert torch.allclose(kd, expected, rtol=1e-5, atol=1e-6)
    assert float(kd.detach()) > 0

    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    icarl.before_experience(model, experience)
    icarl.distillation(model).backward()
    image, text = list(model.tower_parameters("image")), list(model.tower_parameters("text"))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in image)
    assert all(p.grad is None or not p.grad.any() for p in text)  # U is the teacher's: the text tower gets nothing


def test_an_empty_memory_adds_no_distillation():
    icarl = method(memory=6)
    strategy, model, stream = toy_strategy(icarl, tasks=2, iters=1)
    icarl.before_experience(model, stream.experience(0))
    assert icarl.distillation(model) is None  # task 0: nothing stored yet
    off = method(memory=6, image_kd=0.0, text_kd=0.0)
    strategy, model, stream = toy_strategy(off, tasks=2, iters=1)
    strategy.train(stream.benchmark.streams["train"][0])
    off.before_experience(model, stream.experience(1))
    assert len(off.memory) == 6 and off.distillation(model) is None


# ---------------------------------------------------------------------------------------------
# Whole runs on the toy stream: memory 0 is finetune, a resume repeats the run


def toy_run(folder, name: str, resume: bool = False, **params):
    """A run on the toy stream (class-il, 3 tasks), as `clbench run` makes it."""
    config = RunConfig(method=name, scenario="toy", backbone="toy-clip", out=str(folder), progress=False, iters=4, batch_size=4, resume=resume)
    config.set("scenario.protocol", params.pop("protocol", "class-il"))
    config.set("scenario.tasks", 3)
    for key, value in {"lr": 1e-2, "warmup_iters": 0, "label_smoothing": 0.2, **params}.items():
        config.set(f"method.{key}", value)
    return run(config, registry=Registry([ToyPlugin()]))


@pytest.fixture(scope="module")
def finetune(tmp_path_factory):
    """finetune at the same settings: the run icarl with memory 0 must repeat."""
    return toy_run(tmp_path_factory.mktemp("finetune"), "finetune")


@pytest.mark.parametrize("classifier", ["text", "nme"])
def test_memory_zero_reproduces_finetune_bit_for_bit(tmp_path, finetune, classifier):
    icarl = toy_run(tmp_path, "icarl", memory=0, classifier=classifier)
    assert icarl.acc_matrix == finetune.acc_matrix and icarl.control_matrix == finetune.control_matrix


@pytest.mark.parametrize("classifier", ["text", "nme"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, finetune, classifier):
    whole = toy_run(tmp_path / "whole", "icarl", memory=6, classifier=classifier)
    assert whole.acc_matrix != finetune.acc_matrix  # the memory does change the run
    if classifier == "text":  # task 0 trains as finetune does: nothing is in memory yet
        assert whole.acc_matrix[:2] == finetune.acc_matrix[:2]
    interrupt_at_second_task(monkeypatch, lambda: toy_run(tmp_path / "split", "icarl", memory=6, classifier=classifier))
    assert list((tmp_path / "split").glob("*.ckpt"))
    resumed = toy_run(tmp_path / "split", "icarl", resume=True, memory=6, classifier=classifier)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("memory", -1, "method.memory must be an integer >= 0"),
        ("group_by", "domain", "method.group_by must be one of task, class"),
        ("classifier", "linear", "method.classifier must be one of text, nme"),
        ("temperature", 0.0, "method.temperature must be positive"),
        ("image_kd", -1.0, "method.image_kd must be >= 0"),
        ("herding_pool", -5, "method.herding_pool must be >= 0"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, key, value, message):
    with pytest.raises(UserError, match=message):
        toy_run(tmp_path, "icarl", **{key: value})


def test_group_by_class_is_refused_on_domain_il(tmp_path):
    with pytest.raises(UserError, match="group_by=class on a domain-il stream"):
        toy_run(tmp_path, "icarl", protocol="domain-il", group_by="class")
