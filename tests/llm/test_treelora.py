"""treelora: the task tree and the bandit search against the hand-worked case of the research
notes, the regulariser's value and gradient against its formula, reg 0 = seq-lora bit for bit,
and its resume test is the shared one in test_llm_track.py."""

from __future__ import annotations

import math

import pytest
import torch
from lm_toys import lm_config
from torch import nn

from cl_bench import LoRALinear, run
from cl_bench.methods.treelora.method import TreeLoRA
from cl_bench.methods.treelora.tree import arm_scores, build_tree, first_probabilities, module_probabilities, search, task_differences

# Three earlier tasks, two modules, vectors in R²: the stored g_j (N × D × F).
STORED = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[2.0, 0.5], [1.0, 1.0]], [[1.0, 1.5], [3.0, 1.0]]])
COUNTS = torch.tensor([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
MEAN_DISTANCES = torch.tensor([[1.0, 2.0], [3.0, 0.5], [2.0, 2.0]])


def test_the_tree_splits_at_the_lower_median_of_each_levels_module():
    # Δ = (1,0),(1,0) | (1,0.5),(0,1) | (−1,1),(2,0); root (module 0): mean (1/3, 1/2), scores
    # (1/3, 7/12, 1/6), lower median 1/3 → {0, 1} | {2}; {0, 1} at module 1: scores (1/2, 1/2), τ 1/2,
    # nobody below it → split by position
    root = build_tree(task_differences(STORED))
    assert root.tasks == [0, 1, 2] and root.median == pytest.approx(1 / 3)
    assert root.left.tasks == [0, 1] and root.left.median == pytest.approx(0.5)
    assert root.right.tasks == [2] and root.right.median is None and root.right.left is None
    assert root.left.left.tasks == [0] and root.left.right.tasks == [1]


def by_hand_scores(steps: int, step: int) -> list[list[float]]:
    bonus = lambda n: math.sqrt(math.log(2 * steps * (step + 1) * (step + 2))) / math.sqrt(2 * n + 1e-5)  # noqa: E731
    raw = [[MEAN_DISTANCES[j, m].item() + bonus(COUNTS[j, m].item()) for m in range(2)] for j in range(3)]
    low = min(min(r) for r in raw)
    return [[x + low for x in r] for r in raw]


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [x / sum(e) for x in e]


def test_the_search_probabilities_equal_the_hand_worked_case():
    scores = arm_scores(-MEAN_DISTANCES * COUNTS, COUNTS, 10, 4)
    assert torch.allclose(scores, torch.tensor([[4.029, 5.553], [6.553, 3.529], [5.553, 5.553]]), atol=1e-3)
    assert torch.allclose(scores, torch.tensor(by_hand_scores(10, 4)), atol=1e-5)
    assert torch.allclose(first_probabilities(scores), torch.tensor([0.138, 0.228, 0.634]), atol=1e-3)
    root = build_tree(task_differences(STORED))
    near = torch.tensor([[0.202, 0.282, 0.515], [0.260, 0.199, 0.541]])  # f in {0, 1}: rows 0, 1 × τ 0.5
    far = torch.tensor([[0.202, 0.465, 0.334], [0.398, 0.204, 0.398]])  # f = 2: a leaf child, × 1
    for first, expected in ((0, near), (1, near), (2, far)):
        assert torch.allclose(module_probabilities(scores, root, first).T, expected, atol=1e-3)
    # by hand for f = 2: the scores over their range, a softmax per module
    flat = by_hand_scores(10, 4)
    spread = max(max(r) for r in flat) - min(min(r) for r in flat) + 1e-5
    for m in range(2):
        assert module_probabilities(scores, root, 2)[:, m].tolist() == pytest.approx(softmax([flat[j][m] / spread for j in range(3)]), abs=1e-6)


def test_an_arm_never_tried_takes_its_module_and_one_arm_is_certain():
    counts = COUNTS.clone()
    counts[1, 0] = 0  # task 1 never chosen for module 0: its bonus dominates
    sums = -MEAN_DISTANCES * counts
    root = build_tree(task_differences(STORED))
    scores = arm_scores(sums, counts, 10, 4)
    assert scores[1, 0] == scores.max() and scores[1, 0] > 100 * scores[0, 0]  # bonus √log(600)/√1e-5 ≈ 800
    probabilities = module_probabilities(scores, root, 2)
    # the range normalisation leaves it at most e / (e + N − 1): the others score ≈ 0 next to it
    assert probabilities[:, 0].argmax() == 1 and probabilities[1, 0] == pytest.approx(math.e / (math.e + 2), abs=0.01)
    one = search(torch.zeros(1, 3), torch.zeros(1, 3), 10, 0, None, torch.Generator().manual_seed(0))
    assert one.tolist() == [0, 0, 0]


class FakeLM(nn.Module):
    def loss(self, outputs, targets):
        return outputs


def test_the_regulariser_pulls_a_towards_the_stored_a_with_the_cross_entropy_as_its_size():
    torch.manual_seed(0)
    method = TreeLoRA({"rank": 2, "alpha": 4.0, "layers": ["q"], "towers": ["decoder"], "reg": 0.5, "iters": 4, "grad_accum": 1})
    method.adapters = [LoRALinear(nn.Linear(3, 3), 2, 4.0), LoRALinear(nn.Linear(3, 3), 2, 4.0)]
    stored = torch.randn(2, 6)
    method.stored = [stored]
    method.root = build_tree(task_differences(stored[None]))
    method.task = 1
    method._reset_epoch(torch.Generator().manual_seed(1))
    ce = torch.tensor(2.5)
    X = torch.stack([a.lora_A.detach().reshape(-1) for a in method.adapters])
    assert method.extra_loss(FakeLM(), (None, None), ce) is not None  # step 0: ρ = 0
    for a in method.adapters:
        a.lora_A.grad = None
    extra = method.extra_loss(FakeLM(), (None, None), ce)  # step 1: ρ = 0.5 · 1 / 4
    rho = 0.5 * 1 / 4
    R = -(X * stored).sum()
    assert float(extra.detach()) == pytest.approx(float(-R / (R + 1e-5) * 2.5 * rho), rel=1e-6)
    extra.backward()
    for m, adapter in enumerate(method.adapters):  # d/dX of −R/(R̄ + ε)·CE·ρ = CE·ρ·g / (R̄ + ε)
        assert torch.allclose(adapter.lora_A.grad.reshape(-1), 2.5 * rho * stored[m] / (R + 1e-5), rtol=1e-5)
    # the running sum is D · Σ X / T, and the one arm was tried twice, at its L1 distance to it
    assert torch.allclose(method.running, 2 * 2 * X / 4)
    assert method.counts.tolist() == [[2.0, 2.0]]
    first = (2 * X / 4 - stored).abs().sum(dim=1)
    assert torch.allclose(method.distance_sums[0], -(first + (2 * 2 * X / 4 - stored).abs().sum(dim=1)))


SMALL = {"iters": 4, "scenario.test_size": 8, "scenario.control_size": 8}


@pytest.mark.slow
def test_with_reg_zero_treelora_is_seq_lora_bit_for_bit(tmp_path):
    reference = run(lm_config(tmp_path / "seq", method="seq-lora", **SMALL))
    result = run(lm_config(tmp_path / "tree", method="treelora", **SMALL, **{"method.reg": 0.0}))
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix
    switched_on = run(lm_config(tmp_path / "on", method="treelora", **SMALL))
    assert switched_on.acc_matrix[0] == reference.acc_matrix[0]  # the first task has nothing to pull towards


@pytest.mark.slow
@pytest.mark.parametrize("method", ["treelora", "hide-lora"])
def test_both_run_on_the_trace_stream(tmp_path, method):
    from lm_toys import fake_trace

    fake_trace(tmp_path / "data")
    config = lm_config(tmp_path / "out", method=method, iters=2, scenario="trace", data_root=str(tmp_path / "data"))
    config.scenario_params = {"order": "C-STANCE,Py150"}
    result = run(config)
    assert len(result.acc_matrix) == 3 and all(len(row) == 2 for row in result.acc_matrix)
