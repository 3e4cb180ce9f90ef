"""`cl_bench.PromptPool` against a restatement written from the papers: top-N key choice by
cosine, forced choice, batch-wise choice, the pull constraint, TRACE's fixed prompt-mean keys."""

from __future__ import annotations

import math

import pytest
import torch

from cl_bench import PromptPool, check_prompt_pool


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def reference_choice(queries: torch.Tensor, keys: torch.Tensor, top_n: int) -> tuple[list[list[int]], list[list[float]]]:
    chosen, cosines = [], []
    for q in queries.tolist():
        scores = [(cos(q, k), i) for i, k in enumerate(keys.tolist())]
        best = sorted(scores, key=lambda s: -s[0])[:top_n]
        chosen.append([i for _, i in best])
        cosines.append([c for c, _ in best])
    return chosen, cosines


def test_the_top_n_keys_by_cosine_choose_and_the_pull_is_the_mean_sum_of_one_minus_cosine():
    torch.manual_seed(0)
    pool = PromptPool(6, 2, 4, key_dim=5, top_n=3)
    query = torch.randn(7, 5)
    selection, similarity = pool.select(query)
    chosen, cosines = reference_choice(query, pool.keys.detach(), 3)
    assert selection.tolist() == chosen
    assert similarity.detach().flatten().tolist() == pytest.approx([c for row in cosines for c in row], abs=1e-6)
    hand = sum(sum(1 - c for c in row) for row in cosines) / 7
    assert float(PromptPool.pull(similarity).detach()) == pytest.approx(hand, rel=1e-6)
    tokens = pool.tokens(selection)  # (batch, top_n · length, width), prompts in the order chosen
    assert tokens.shape == (7, 6, 4)
    for b in range(7):
        assert torch.equal(tokens[b], torch.cat([pool.prompts[i] for i in chosen[b]]))


def test_a_forced_choice_is_kept_and_its_cosines_returned():
    torch.manual_seed(1)
    pool = PromptPool(4, 1, 3, key_dim=3, top_n=1)
    query = torch.randn(5, 3)
    selection, similarity = pool.select(query, force=torch.tensor([2]))
    assert selection.tolist() == [[2]] * 5
    keys = pool.keys.detach()
    assert similarity.detach().flatten().tolist() == pytest.approx([cos(q, keys[2].tolist()) for q in query.tolist()], abs=1e-6)
    PromptPool.pull(similarity).backward()  # the pull reaches the forced key only
    assert pool.keys.grad[2].abs().sum() > 0 and pool.keys.grad[[0, 1, 3]].abs().sum() == 0


def test_batchwise_choice_gives_every_input_the_most_frequent_choices():
    pool = PromptPool(4, 1, 2, key_dim=2, top_n=1, batchwise=True)
    with torch.no_grad():
        pool.keys.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    query = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.2, 1.0], [-1.0, 0.0]])  # choices 0, 1, 1, 2
    selection, _ = pool.select(query)
    assert selection.tolist() == [[1]] * 4


def test_prompt_mean_keys_keep_their_first_value_while_the_pull_moves_the_prompts():
    init = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2))
    pool = PromptPool(3, 4, 5, key_dim=None, top_n=2, init=init)
    assert pool.keys is None and torch.equal(pool.key_matrix().detach(), init.mean(dim=1))
    query = torch.randn(6, 5)
    optimizer = torch.optim.SGD([pool.prompts], lr=0.5)
    _, similarity = pool.select(query)
    PromptPool.pull(similarity).backward()
    assert pool.prompts.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(pool.prompts.detach(), init)
    assert torch.equal(pool.key_matrix().detach(), init.mean(dim=1))  # TRACE: the key stays the initial mean
    chosen, _ = reference_choice(query, init.mean(dim=1), 2)
    assert pool.select(query)[0].tolist() == chosen


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 5, 1), "pool size must be a positive integer"), ((3, 0, 1), "prompt length must be at least 1"), ((3, 5, 4), "top_n must be between 1 and the pool size 3")],
)
def test_bad_pools_are_one_line_errors(args, message):
    with pytest.raises(ValueError, match=message):
        check_prompt_pool(*args)
