"""MoE-LoRA: routing, balance loss, batched experts, freezing, the task selector and per-input states."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from toys import toy_model, toy_strategy

from cl_bench.methods.moe_lora import experts as experts_module
from cl_bench.methods.moe_lora.experts import ExpertPool
from cl_bench.methods.moe_lora.method import MoELoRA
from cl_bench.methods.moe_lora.selector import TaskSelector

HP = {
    "expert": "lora",
    "experts": 5,
    "top_k": 2,
    "rank": 3,
    "scale": 0.1,
    "dropout": 0.0,
    "noise_epsilon": 1e-2,
    "balance_weight": 1e-2,
    "freeze_per_task": 2,
    "towers": ["image", "text"],
    "selector_code": 4,
    "selector_iters": 100,
    "selector_lr": 1e-2,
    "selector_batch_size": 64,
    "selector_quantile": 0.99,
}


def random_pool(kind: str = "lora", experts: int = 5, top_k: int = 2, seed: int = 0) -> ExpertPool:
    torch.manual_seed(seed)
    pool = ExpertPool(8, experts=experts, rank=3, tasks=2, top_k=top_k, kind=kind, scale=0.1)
    with torch.no_grad():
        for param in pool.parameters():
            param.normal_()  # trained-looking experts and routers
    pool.task = 1
    return pool


@pytest.mark.parametrize("kind", ["lora", "adapter"])
def test_router_picks_the_top_two_and_experts_match_a_per_sample_reference(kind):
    pool = random_pool(kind).eval()
    residual = torch.randn(6, 4, 8)
    index, weights = pool.gate(residual[:, 0])
    logits = residual[:, 0] @ pool.routers[1]
    assert torch.equal(index, logits.topk(2, dim=1).indices)
    assert torch.allclose(weights, torch.softmax(logits.topk(2, dim=1).values, dim=1))
    assert torch.allclose(weights.sum(1), torch.ones(6))
    expected = torch.zeros_like(residual)
    for n in range(6):  # the slow, obvious way: one sample and one expert at a time
        for slot in range(2):
            e = int(index[n, slot])
            hidden = residual[n] @ pool.down[e].T
            if kind == "adapter":
                out = torch.relu(hidden + pool.down_bias[e]) @ pool.up[e].T + pool.up_bias[e]
            else:
                out = hidden @ pool.up[e].T
            expected[n] += weights[n, slot] * 0.1 * out
    assert torch.allclose(pool(residual), expected, atol=1e-5)


def test_training_noise_and_balance_loss_match_a_hand_count(monkeypatch):
    pool = random_pool(experts=3, top_k=1).train()
    first = torch.randn(4, 8)
    draws = torch.randn(4, 3)
    monkeypatch.setattr(experts_module.torch, "randn_like", lambda x: draws.clone())
    index, weights = pool.gate(first)
    clean = (first @ pool.routers[1]).tolist()
    std = (torch.nn.functional.softplus(first @ pool.noise[1]) + 1e-2).tolist()
    noisy = [[clean[n][e] + float(draws[n, e]) * std[n][e] for e in range(3)] for n in range(4)]
    top = [max(range(3), key=lambda e: noisy[n][e]) for n in range(4)]
    assert index[:, 0].tolist() == top and torch.allclose(weights, torch.ones(4, 1))  # top-1: weight 1

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    importance = [sum(1.0 for n in range(4) if top[n] == e) for e in range(3)]
    load = [0.0] * 3
    for n in range(4):
        ranked = sorted(noisy[n], reverse=True)  # k = 1: in if above the 2nd value, else must beat the 1st
        for e in range(3):
            bar = ranked[1] if noisy[n][e] > ranked[1] else ranked[0]
            load[e] += phi((clean[n][e] - bar) / std[n][e])

    def cv2(values):
        return statistics.variance(values) / (statistics.mean(values) ** 2 + 1e-10)

    assert float(pool.balance.detach()) == pytest.approx(cv2(importance) + cv2(load), rel=1e-5)
    assert pool.selected.tolist() == importance  # selection counts for freezing
    pool.eval()
    pool.balance = None
    pool.gate(first)  # evaluation: no noise, no balance term, no counting
    assert pool.balance is None and pool.selected.tolist() == importance


def make_moe(tasks: int = 2, iters: int = 6, hparams=None):
    method = MoELoRA({**HP, **(hparams or {})})
    strategy, model, stream = toy_strategy(method, tasks=tasks, iters=iters, batch_size=8, lr=5e-2)
    return strategy, model, method, stream


def test_fresh_experts_leave_outputs_unchanged_and_state_minus_one_is_the_frozen_model():
    strategy, model, method, stream = make_moe()
    plain = toy_model()
    plain.set_classes(stream.prompts())
    images = torch.rand(5, 1, 28, 28)
    method.routing.training_task = 0
    for mode in (True, False):
        model.train(mode)
        plain.train(mode)
        with torch.no_grad():
            assert torch.allclose(model(images), plain(images), atol=1e-6)
    strategy.train(stream.benchmark.streams["train"][0])
    method.routing.activate(-1)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), plain.encode_image(images))


def test_the_two_most_selected_experts_freeze_and_stay_bit_identical():
    strategy, model, method, stream = make_moe()
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    snapshot = {}
    for pool in method.pools:
        most = torch.argsort(pool.selected, descending=True, stable=True)[:2].tolist()
        assert pool.selected.sum() > 0 and pool.frozen.nonzero().squeeze(1).tolist() == sorted(most)
        snapshot[id(pool)] = (most, [p.detach().clone() for e in most for p in pool.expert_parameters(e)], pool.routers[0].detach().clone())
    assert any(pool.routers[0].abs().sum() > 0 for pool in method.pools)  # the router learned
    expected_trainable = {id(p) for pool in method.pools for p in pool.trainable_parameters(1)}
    strategy.train(train[1])
    for pool in method.pools:
        most, params, router = snapshot[id(pool)]
        now = [p for e in most for p in pool.expert_parameters(e)]
        assert all(torch.equal(a, b) for a, b in zip(params, now, strict=True))
        assert torch.equal(pool.routers[0], router)  # task 1's router is not retrained
        assert 2 <= int(pool.frozen.sum()) <= 4 and pool.frozen[most].all()
    assert any(pool.routers[1].abs().sum() > 0 for pool in method.pools)
    optimised = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert optimised == expected_trainable  # task 2's router and the experts left unfrozen by task 1


def test_task_selector_routes_known_tasks_to_their_router_and_far_data_to_zero_shot():
    torch.manual_seed(0)
    dim = 16
    basis = torch.linalg.qr(torch.randn(dim, dim))[0]

    def cluster(columns, n):  # features living in a task's own 2-d subspace, plus a little noise
        return torch.randn(n, 2) @ basis[:, columns].T * 3 + basis[:, columns[0]] * 4 + 0.05 * torch.randn(n, dim)

    tasks = [cluster([0, 1], 400), cluster([2, 3], 400)]
    selector = TaskSelector(tasks=3, dim=dim, code=4)
    assert selector.assign(tasks[0][:5]).tolist() == [-1] * 5  # nothing trained yet: zero-shot
    for t, features in enumerate(tasks):
        selector.fit(t, features, iters=400, lr=1e-2, batch_size=128, quantile=0.99)
    assert int(selector.trained) == 2 and torch.isfinite(selector.thresholds[:2]).all()
    assert (selector.assign(cluster([0, 1], 200)) == 0).float().mean() > 0.95
    assert (selector.assign(cluster([2, 3], 200)) == 1).float().mean() > 0.95
    assert (selector.assign(cluster([6, 7], 200)) == -1).float().mean() > 0.95
    with pytest.raises(RuntimeError, match="task order"):
        selector.fit(0, tasks[0], iters=1, lr=1e-2, batch_size=8, quantile=0.5)


def test_each_image_is_scored_in_the_state_the_selector_picks():
    strategy, model, method, stream = make_moe()
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    strategy.train(train[1])
    model.eval()
    model.set_label_space(range(4))
    images = torch.rand(6, 1, 28, 28)
    states = torch.tensor([0, 1, -1, 1, 0, -1])
    with torch.no_grad():
        method.routing.assign = lambda m, x: states[: len(x)]
        mixed = model(images)
        per_state = {}
        for state in (-1, 0, 1):
            method.routing.assign = lambda m, x, s=state: s
            per_state[state] = model(images)
    for row, state in enumerate(states.tolist()):
        assert torch.allclose(mixed[row], per_state[state][row], atol=1e-5)
    assert not torch.allclose(per_state[0], per_state[1])  # the routers really differ


def test_balance_loss_reaches_the_training_loss():
    strategy, model, method, stream = make_moe()
    model.train()
    method.routing.training_task = 0
    model.set_label_space([0, 1])
    outputs = model(torch.rand(4, 1, 28, 28))
    per_pool = [pool.balance for pool in method.pools]
    assert all(b is not None for b in per_pool)
    extra = method.extra_loss(model, (None, None), outputs)
    assert float(extra.detach()) == pytest.approx(1e-2 * float(torch.stack(per_pool).sum().detach()))
    assert all(pool.balance is None for pool in method.pools)  # read once per step
