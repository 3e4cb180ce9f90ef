"""The episodic memory: herding against a brute-force restatement, quotas, reservoir sampling's
uniformity, budgets of 0 and checkpoint round trips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cl_bench import EpisodicMemory, herding_order

pytestmark = pytest.mark.unit


def herding_reference(features: np.ndarray, count: int) -> list[int]:
    """iCaRL's herding restated with numpy: the prefix sum that keeps the running mean closest."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    mu, chosen, total = x.mean(axis=0), [], np.zeros(x.shape[1])
    for k in range(1, count + 1):
        best, best_distance = -1, np.inf
        for i in range(len(x)):
            if i in chosen:
                continue
            distance = np.linalg.norm(mu - (total + x[i]) / k)
            if distance < best_distance:
                best, best_distance = i, distance
        chosen.append(best)
        total += x[best]
    return chosen


def test_herding_matches_a_brute_force_restatement():
    rng = np.random.default_rng(0)
    for n, d, count in ((12, 3, 12), (30, 8, 7), (5, 2, 9)):
        features = rng.normal(size=(n, d))
        assert herding_order(torch.from_numpy(features), count).tolist() == herding_reference(features, min(count, n))


def test_herding_picks_the_exemplar_nearest_the_mean_first_on_a_hand_made_case():
    # Three unit vectors; the mean of all three points is nearest to the middle one.
    features = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert herding_order(features, 3).tolist() == [1, 0, 2]


def test_quotas_share_the_budget_and_keep_each_groups_priority_prefix():
    memory = EpisodicMemory(10, "herding", "class")
    x, y = torch.randn(40, 3), torch.arange(40) % 4
    memory.add(x, y, 0, features=x)
    first = {k: memory.group(k)[0].clone() for k in memory.groups}
    assert [len(memory.group(k)[1]) for k in memory.groups] == [3, 3, 2, 2]
    x2 = torch.randn(30, 3)
    memory.add(x2, torch.tensor([4, 5, 6] * 10), 1, features=x2)
    assert len(memory) == 10 and [len(memory.group(k)[1]) for k in memory.groups] == [2, 2, 2, 1, 1, 1, 1]
    for key in range(4):  # reduced, not re-selected: the first exemplars chosen stay
        kept = memory.group(key)[0]
        assert torch.equal(kept, first[key][: len(kept)])
    inputs, targets, tasks = memory.tensors()
    assert tasks.tolist() == [0] * 7 + [1] * 3 and set(targets.tolist()) == set(range(7))


def test_grouping_by_task_and_random_selection_are_seeded():
    def filled(seed):
        memory = EpisodicMemory(6, "random", "task")
        for task in range(3):
            memory.add(torch.arange(10).float() + 10 * task, torch.zeros(10), task, generator=torch.Generator().manual_seed(seed + task))
        return memory

    a, b, c = filled(0), filled(0), filled(5)
    assert a.groups == [0, 1, 2] and [len(a.group(k)[1]) for k in a.groups] == [2, 2, 2]
    assert torch.equal(a.tensors()[0], b.tensors()[0]) and not torch.equal(a.tensors()[0], c.tensors()[0])


def test_reservoir_keeps_every_example_with_equal_probability():
    counts = torch.zeros(40)
    for seed in range(600):
        memory = EpisodicMemory(10, "reservoir")
        generator = torch.Generator().manual_seed(seed)
        for task in range(4):  # offered in four tasks of ten
            memory.add(torch.arange(10 * task, 10 * task + 10), torch.zeros(10), task, generator=generator)
        held = memory.tensors()[0]
        assert len(held) == 10 and len(set(held.tolist())) == 10 and memory.seen == 40
        counts[held] += 1
    # Each of the 40 is kept with probability 1/4: 150 of 600 expected, sd about 10.6.
    assert (counts - 150).abs().max() < 45, counts


def test_a_budget_of_zero_keeps_nothing():
    for rule in ("herding", "random", "reservoir"):
        memory = EpisodicMemory(0, rule)
        memory.add(torch.randn(5, 2), torch.arange(5), 0, features=torch.randn(5, 2), generator=torch.Generator())
        inputs, targets = memory.sample(4, torch.Generator())
        assert len(memory) == 0 and len(targets) == 0


def test_state_round_trip_holds_and_draws_the_same():
    memory = EpisodicMemory(8, "herding", "class")
    x = torch.randn(24, 4)
    memory.add(x, torch.arange(24) % 3, 0, features=x)
    restored = EpisodicMemory(8, "herding", "class")
    restored.load_state_dict(memory.state_dict())
    for a, b in itertools.zip_longest(memory.tensors(), restored.tensors()):
        assert torch.equal(a, b)
    draws = [m.sample(5, torch.Generator().manual_seed(3)) for m in (memory, restored)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    too_small = EpisodicMemory(2, "herding", "class")
    with pytest.raises(ValueError, match="over its budget"):
        too_small.load_state_dict(memory.state_dict())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="budget"):
        EpisodicMemory(-1)
    with pytest.raises(ValueError, match="rule"):
        EpisodicMemory(4, "fifo")
    with pytest.raises(ValueError, match="herding needs"):
        EpisodicMemory(4).add(torch.randn(3, 2), torch.arange(3), 0)
    with pytest.raises(ValueError, match="Generator"):
        EpisodicMemory(4, "reservoir").add(torch.randn(3, 2), torch.arange(3), 0)


def test_distillation_loss_matches_a_hand_computed_case():
    import math

    from cl_bench import distillation_loss

    student, teacher = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    # T = 1: teacher (1/2, 1/2), student (1/4, 3/4): −(½ log ¼ + ½ log ¾) = ½ log(16/3).
    assert float(distillation_loss(student, teacher, 1.0)) == pytest.approx(0.5 * math.log(16 / 3))
    # T = 2 scales the logits by ½ and the loss by 4: student (1, √3)/(1 + √3).
    p = 1 / (1 + math.sqrt(3.0))
    assert float(distillation_loss(student, teacher, 2.0)) == pytest.approx(-4 * 0.5 * (math.log(p) + math.log(1 - p)))
    same = torch.randn(4, 5)
    entropy = -(torch.softmax(same / 2, -1) * torch.log_softmax(same / 2, -1)).sum(-1).mean() * 4
    assert float(distillation_loss(same, same)) == pytest.approx(float(entropy), rel=1e-6)
