"""L2P: prompt choice by key cosine, where prompts enter the tower, the pull loss, what trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toys import toy_model, toy_strategy

from cl_bench.methods.l2p.pool import L2P

HP = {"pool_size": 6, "length": 3, "top_n": 2, "pull_weight": 0.1, "init": "uniform", "diversify": False}


def make_l2p(**overrides):
    method = L2P({**HP, **overrides})
    strategy, model, stream = toy_strategy(method, iters=6, lr=5e-2)
    return strategy, model, method, stream


def frozen_query(images: torch.Tensor) -> torch.Tensor:
    """The query computed independently: the untouched toy model's normalised image feature."""
    plain = toy_model()
    with torch.no_grad():
        return F.normalize(plain.clip.visual(plain.preprocess(images)), dim=-1)


def test_prompts_with_the_highest_key_cosine_are_inserted_after_the_class_token():
    _, model, method, stream = make_l2p()
    method.before_experience(model, stream.experience(0))
    pool = method.pool
    images = torch.rand(7, 1, 28, 28)
    seen = {}
    model.clip.visual.ln_pre.register_forward_pre_hook(lambda module, args: seen.__setitem__("tokens", args[0]))  # the last call: the prompted pass
    with torch.no_grad():
        model(images)
    cosine = frozen_query(images) @ F.normalize(pool.keys, dim=-1).t()
    expected = cosine.topk(2, dim=1).indices
    assert torch.equal(pool.selection, expected)
    assert torch.allclose(pool.similarity, cosine.gather(1, expected), atol=1e-6)
    tokens = seen["tokens"]  # (batch, 1 + top_n · length + patches, width)
    patches = (28 // 7) ** 2
    assert tokens.shape[1] == 1 + 2 * 3 + patches
    for row in range(len(images)):
        chosen = torch.cat([pool.prompts[i] for i in expected[row].tolist()])
        assert torch.equal(tokens[row, 1:7], chosen)


def test_before_the_first_task_the_model_is_the_pre_trained_one():
    _, model, method, stream = make_l2p()
    plain = toy_model()
    plain.set_classes(stream.prompts())
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(images), plain(images))
        method.before_experience(model, stream.experience(0))
        assert not torch.allclose(model(images), plain(images))  # random prompts now change the scores


def test_pull_loss_matches_a_hand_count_and_pulls_the_chosen_keys_to_their_queries():
    _, model, method, stream = make_l2p()
    method.before_experience(model, stream.experience(0))
    pool = method.pool
    images = torch.rand(8, 1, 28, 28)
    model.train()
    outputs = model(images)
    query = frozen_query(images)
    keys = F.normalize(pool.keys.detach(), dim=-1)
    hand = 0.1 * sum(sum(1 - float(query[b] @ keys[k]) for k in pool.selection[b].tolist()) for b in range(8)) / 8
    loss = method.extra_loss(model, (images, None), outputs)
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-5)

    def distance() -> float:
        with torch.no_grad():
            model(images)
            return float((1 - pool.similarity).mean())

    before = distance()
    optimizer = torch.optim.SGD([pool.keys], lr=1.0)
    for _ in range(20):
        optimizer.zero_grad()
        model(images)
        method.extra_loss(model, (images, None), None).backward()
        optimizer.step()
    assert distance() < before - 0.05


def test_the_frozen_query_pass_gets_no_gradient():
    _, model, method, stream = make_l2p()
    method.before_experience(model, stream.experience(0))
    for param in model.clip.visual.parameters():
        param.requires_grad_(True)  # so that any graph through the query pass would show
    model.train()
    outputs = model(torch.rand(4, 1, 28, 28))
    method.extra_loss(model, (None, None), outputs).backward()  # the pull loss reads only the query
    assert method.pool.keys.grad is not None and method.pool.keys.grad.abs().sum() > 0
    backbone = [p for n, p in model.clip.visual.named_parameters() if not n.startswith("prompt_pool.")]
    assert all(p.grad is None for p in backbone)


def test_training_moves_only_prompts_and_keys():
    strategy, model, method, stream = make_l2p()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.train(stream.benchmark.streams["train"][0])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"clip.visual.prompt_pool.prompts", "clip.visual.prompt_pool.keys"}
    optimised = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(method.pool.prompts), id(method.pool.keys)}
    assert not model._text_trainable  # the pool is image-side: text features stay cached


def test_a_pool_smaller_than_top_n_is_a_one_line_error(tmp_path, capsys):
    from cl_bench.cli import main

    code = main(["run", "--method", "l2p", "--set", "method.pool_size=2", "--set", "method.top_n=3", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("clbench: error: method 'l2p': top_n must be between 1 and the pool size 2") and "\n" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_diversify_puts_prompts_unused_by_earlier_tasks_first_in_training_only():
    strategy, model, method, stream = make_l2p(diversify=True)
    strategy.train(stream.benchmark.streams["train"][0])
    assert method.pool.history.sum() == 6 * 4 * 2 and method.pool.used.sum() == 0  # 6 iterations, 4 images, 2 prompts each
    method.pool.history.copy_(torch.tensor([5.0, 0.0, 3.0, 1.0, 4.0, 2.0]))  # prompt 1 unused so far
    share = method.pool.history / 15
    query = torch.randn(5, 32)
    cosine = F.normalize(query, dim=-1) @ F.normalize(method.pool.keys.detach(), dim=-1).t()
    method.before_experience(model, stream.experience(1))
    chosen, _ = method.pool.select(query)
    for b in range(5):  # the unused prompt first, then the smallest (1 - cos) · share
        weighted = [(float((1 - cosine[b, i]) * share[i]), i) for i in (0, 2, 3, 4, 5)]
        assert chosen[b].tolist() == [1, min(weighted)[1]]
    method.after_experience(model, stream.experience(1))
    plain, _ = method.pool.select(query)
    assert torch.equal(plain, cosine.topk(2, dim=1).indices)  # evaluation: cosine alone
