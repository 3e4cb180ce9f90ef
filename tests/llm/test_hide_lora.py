"""hide-lora: the task-identity inference and the row-contrastive loss against hand-computed
cases, the pooled adapter's routing against each task's own LoRA, its degenerate runs equal to
seq-lora bit for bit (its resume test is the shared one in test_llm_track.py)."""

from __future__ import annotations

import math

import pytest
import torch
from lm_toys import lm_config
from torch import nn

from cl_bench import LoRALinear, run
from cl_bench.methods.hide_lora.layer import PooledLoRALinear
from cl_bench.methods.hide_lora.method import HiDeLoRA, infer_tasks, prompt_features, row_contrast


def test_task_inference_picks_the_centroid_of_highest_cosine_by_hand():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    features = torch.tensor([[2.0, 0.1], [0.2, 3.0], [1.0, 0.9], [-1.0, 0.0], [3.0, 2.0]])
    # cosines by hand (row: task 0, 1, 2): [2, .1]: .999 .050 .741 → 0;  [.2, 3]: .067 .998 .752 → 1;
    # [1, .9]: .743 .669 .999 → 2;  [−1, 0]: −1, 0, −.707 → 1;  [3, 2]: .832 .555 .981 → 2
    assert infer_tasks(features, centroids).tolist() == [0, 1, 2, 1, 2]
    assert infer_tasks(features, centroids[:2]).tolist() == [0, 1, 0, 1, 0]  # only the tasks trained so far


def test_prompt_features_average_the_masked_in_positions_only():
    embeddings = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0], [0.0, 2.0]]])
    mask = torch.tensor([[False, True, True], [True, False, True]])
    assert prompt_features(embeddings, mask).tolist() == [[2.0, 3.0], [2.5, 4.0]]


def test_the_row_contrast_is_the_cross_entropy_of_scaled_gram_rows_by_hand():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # S = M Mᵀ / 0.8 = [[1.25, 0], [0, 5]]; each row's target is itself
    by_hand = (-math.log(math.exp(1.25) / (math.exp(1.25) + 1)) - math.log(math.exp(5) / (1 + math.exp(5)))) / 2
    assert float(row_contrast(rows)) == pytest.approx(by_hand, rel=1e-6)


def test_the_method_contrasts_the_current_rows_with_the_earlier_tasks_rows():
    torch.manual_seed(0)
    hp = {"rank": 2, "alpha": 4.0, "layers": ["q"], "task_inference": "nearest-mean", "contrast": "earlier", "contrast_weight": 0.5, "l2_weight": 0.1}
    method = HiDeLoRA(hp)
    method.adapters = [PooledLoRALinear(nn.Linear(3, 4), 2, 4.0)]
    adapter = method.adapters[0]
    adapter.store_task()  # task 0's rows, then the current block moves on
    with torch.no_grad():
        adapter.lora_A.add_(1.0)
    earlier, current = adapter.pool_A[0], adapter.lora_A.detach()
    l2 = 0.1 * (adapter.lora_A.detach().norm() + adapter.lora_B.detach().norm())
    assert float(method.extra_loss(None, None, None).detach()) == pytest.approx(float(0.5 * row_contrast(torch.cat([earlier, current])) + l2), rel=1e-6)
    alone = HiDeLoRA({**hp, "contrast": "current"})
    alone.adapters = method.adapters
    assert float(alone.extra_loss(None, None, None).detach()) == pytest.approx(float(0.5 * row_contrast(current) + l2), rel=1e-6)


def test_the_pooled_adapter_routes_each_row_to_its_tasks_lora():
    torch.manual_seed(0)
    adapter = PooledLoRALinear(nn.Linear(3, 4), 2, 4.0)
    plain = LoRALinear(nn.Linear(3, 4), 2, 4.0)
    plain.load_state_dict({k: v for k, v in adapter.state_dict().items() if not k.startswith("pool")})
    x = torch.randn(3, 5, 3)
    with torch.no_grad():
        adapter.lora_B.normal_()
    plain.lora_B.data.copy_(adapter.lora_B)
    assert torch.equal(adapter(x), plain(x))  # no route: the single-block LoRALinear
    blocks = []
    for _ in range(2):
        adapter.store_task()
        blocks.append((adapter.lora_A.detach().clone(), adapter.lora_B.detach().clone()))
        with torch.no_grad():
            adapter.lora_A.normal_()
            adapter.lora_B.normal_()
    adapter.route = torch.tensor([1, 0, 1])
    out = adapter(x)
    for row, task in enumerate([1, 0, 1]):
        A, B = blocks[task]
        assert torch.allclose(out[row], adapter.base(x[row]) + 2.0 * x[row] @ A.T @ B.T, atol=1e-6)
    adapter.route = torch.tensor([0, 0, 0])  # one task for the batch: the plain expression with that block
    A, B = blocks[0]
    assert torch.equal(adapter(x), adapter.base(x) + (x @ A.t() @ B.t()) * 2.0)


SMALL = {"iters": 4, "scenario.test_size": 8, "scenario.control_size": 8}


@pytest.mark.slow
def test_without_inference_and_contrast_hide_lora_is_seq_lora_bit_for_bit(tmp_path):
    # every task's LoRA starts as the previous one's, and "latest" answers with the last: one LoRA through all tasks
    reference = run(lm_config(tmp_path / "seq", method="seq-lora", **SMALL))
    off = {"method.task_inference": "latest", "method.contrast_weight": 0.0}
    result = run(lm_config(tmp_path / "hide", method="hide-lora", **SMALL, **off))
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix


@pytest.mark.slow
def test_on_one_task_with_no_contrast_hide_lora_is_seq_lora_bit_for_bit(tmp_path):
    # one task: the inference can only pick it, so the routed layer computes seq-lora's expression
    one = {**SMALL, "scenario.tasks": 1}
    reference = run(lm_config(tmp_path / "seq", method="seq-lora", **one))
    result = run(lm_config(tmp_path / "hide", method="hide-lora", **one, **{"method.contrast_weight": 0.0}))
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix


def test_a_tasks_centroid_is_the_mean_prompt_embedding_of_its_training_examples():
    from types import SimpleNamespace

    from torch.utils.data import TensorDataset

    from cl_bench.contracts.stream import Experience

    embedding = nn.Embedding(5, 2)
    with torch.no_grad():
        embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]]))
    model = SimpleNamespace(lm=SimpleNamespace(get_input_embeddings=lambda: embedding))
    # row 0: PAD, prompt 1 2, answer 4 (labelled); row 1: prompt 3 1 1, answer 4
    ids = torch.tensor([[-1, 1, 2, 4], [3, 1, 1, 4]])
    labels = torch.tensor([[-100, -100, -100, 4], [-100, -100, -100, 4]])
    method = HiDeLoRA({"rank": 2, "alpha": 4.0, "layers": ["q"], "task_inference": "nearest-mean", "contrast": "earlier", "contrast_weight": 0.5, "l2_weight": 0.0})
    method.after_experience(model, Experience(index=0, name="t0", classes=[], dataset=TensorDataset(ids, labels), stream=None))
    # row means (0.5, 0.5) and (4/3, 2/3); their mean
    assert torch.allclose(method.centroids[0], torch.tensor([(0.5 + 4 / 3) / 2, (0.5 + 2 / 3) / 2]))
