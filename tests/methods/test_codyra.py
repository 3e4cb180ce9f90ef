"""CoDyRA: the proximal step on the rank gates against hand-computed cases, the κ schedule against a
literal restatement of the official loop, the text-to-image term against the official formula,
merging, frozen base weights, the sparsity = 0 degenerate case bit for bit, and resuming."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toys import ToyPlugin, interrupt_at_second_task, toy_images, toy_strategy

from cl_bench import RunConfig, UserError, run
from cl_bench.config.registry import Registry
from cl_bench.methods.codyra import CLIP_DEFAULTS
from cl_bench.methods.codyra.method import CoDyRA, ProximalAdamW, soft_threshold, threshold_at

# toy runs: 20 iterations a task, the second half thresholded over a κ ramp of 5 values
HP = {**CLIP_DEFAULTS, "rank": 4, "sparsity_steps": 5, "sparsity": 0.15}


def toy_run(out, **settings):
    config = RunConfig(method="codyra", scenario="toy", backbone="toy-clip", out=str(out), progress=False, resume=settings.pop("resume", False))
    for key, value in {"iters": 20, "batch_size": 4, "eval_batch_size": 256, "method.lr": 5e-2, "method.rank": 4, "method.sparsity_steps": 5, **settings}.items():
        config.set(key.replace("__", "."), value)
    return run(config, registry=Registry([ToyPlugin()]))


# ---------------------------------------------------------------------- the proximal step


def test_soft_threshold_keeps_and_shrinks_exactly_the_hand_computed_entries():
    g = torch.tensor([0.9, -0.3, 0.004, -0.006, 0.0, 0.012, -0.008, 2.5], dtype=torch.float64)
    kappa = 0.005
    # paper: T_κ(g) = 1(|g| > κ)(g − κ sign g): only |g| ≤ κ dies
    paper = torch.tensor([0.895, -0.295, 0.0, -0.001, 0.0, 0.007, -0.003, 2.495], dtype=torch.float64)
    assert torch.allclose(soft_threshold(g, kappa, "paper"), paper, rtol=0, atol=1e-15)
    # the official code: shifted by κ, then |g| < κ zeroed, so everything below 2κ dies
    code = torch.tensor([0.895, -0.295, 0.0, 0.0, 0.0, 0.007, 0.0, 2.495], dtype=torch.float64)
    assert torch.allclose(soft_threshold(g, kappa, "code"), code, rtol=0, atol=1e-15)
    # |g| = κ exactly: the paper's T_κ gives 0, the code's masks leave it (neither > κ nor < κ)
    edge = torch.tensor([kappa, -kappa], dtype=torch.float64)
    assert torch.equal(soft_threshold(edge, kappa, "paper"), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(soft_threshold(edge, kappa, "code"), edge)
    assert torch.equal(g, torch.tensor([0.9, -0.3, 0.004, -0.006, 0.0, 0.012, -0.008, 2.5], dtype=torch.float64))  # a new tensor
    with pytest.raises(ValueError, match="threshold must be one of"):
        soft_threshold(g, kappa, "hard")


@pytest.mark.parametrize("rule", ["paper", "code"])
def test_at_kappa_zero_the_soft_threshold_never_changes_a_gate(rule):
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    g[::7] = 0.0
    assert torch.equal(soft_threshold(g, 0.0, rule), g)


def official_kappas(iters: int, sparsity: float, steps: int = 50, dense_fraction: float = 0.5) -> list[float | None]:
    """The official training loop's κ bookkeeping, restated line by line (models/codyra.py,
    train_model): None where it does not threshold."""
    lambdas = np.linspace(0, sparsity, steps)
    threshold_id, threshold = 0, lambdas[0]
    dense_iters = dense_fraction * iters
    lambda_step_iters = int((iters - dense_iters) // steps)
    out: list[float | None] = []
    for iteration in range(iters):
        if lambda_step_iters > 0 and iteration >= dense_iters and iteration % lambda_step_iters == 0:
            threshold_id += 1
            threshold = lambdas[min(len(lambdas) - 1, threshold_id)]
        out.append(float(threshold) if iteration > dense_iters else None)
    return out


def test_the_kappa_schedule_is_the_official_one():
    kappa = 0.005
    schedule = [threshold_at(k, 500, kappa) for k in range(500)]
    assert schedule == official_kappas(500, kappa)
    # the official X-TAIL run: dense up to iteration 250, κ = i·κ_max/49 stepping every 5 iterations, κ_max from 490
    assert schedule[250] is None and schedule[251] == schedule[254] == pytest.approx(kappa / 49)
    assert schedule[255] == pytest.approx(2 * kappa / 49) and schedule[489] == pytest.approx(48 * kappa / 49)
    assert schedule[490] == schedule[499] == kappa
    assert sum(k is not None for k in schedule) == 249
    assert sum(k for k in schedule if k is not None) == pytest.approx(kappa * 6369 / 49)  # 0.650 in all
    for iters, fraction, steps in [(200, 0.5, 50), (210, 0.5, 50), (333, 0.3, 50), (1000, 0.5, 50), (20, 0.5, 5), (500, 1.0, 50)]:
        assert [threshold_at(k, iters, 0.02, steps, fraction) for k in range(iters)] == official_kappas(iters, 0.02, steps, fraction)
    # the one departure: with fewer than `steps` iterations after the dense phase the official stride
    # is 0 and κ stays 0; here the stride is 1, so short tasks still prune
    assert set(official_kappas(60, kappa)) == {None, 0.0}
    ours = [threshold_at(k, 60, kappa) for k in range(60)]
    assert ours[30] is None and ours[31] == pytest.approx(2 * kappa / 49) and ours[59] == pytest.approx(30 * kappa / 49)  # one step per iteration from 30 on


def test_the_optimizer_thresholds_every_gate_after_each_step_with_the_scheduled_kappa(monkeypatch):
    method = CoDyRA(HP)
    strategy, model, stream = toy_strategy(method, iters=20, batch_size=4, lr=1e-2)
    seen: list[float] = []
    original = ProximalAdamW.proximal_step

    def recording(self, kappa):
        seen.append(kappa)
        original(self, kappa)

    monkeypatch.setattr(ProximalAdamW, "proximal_step", recording)
    strategy.train(stream.benchmark.streams["train"][0])
    assert isinstance(strategy.optimizer, ProximalAdamW) and strategy.optimizer.defaults["betas"] == (0.9, 0.9999)
    assert strategy.optimizer.defaults["weight_decay"] == 0.0 and strategy.optimizer.iteration == 20
    assert seen == [k for k in (threshold_at(i, 20, 0.15, 5) for i in range(20)) if k is not None]
    assert len(seen) == 9 and seen[-1] == 0.15
    # what survived is what was recorded, and the merge put it into W (B = 0 after)
    ranks = method.effective_ranks[0]
    assert ranks == [int(torch.count_nonzero(layer.lora_gate)) for layer in method.layers]
    assert 0 < sum(ranks) < 4 * len(ranks)  # some components pruned, not all
    assert all(torch.count_nonzero(layer.lora_B) == 0 for layer in method.layers)


# ---------------------------------------------------------------------- the loss


def test_the_text_to_image_term_is_the_official_soft_target_cross_entropy_over_every_seen_class():
    method = CoDyRA(HP)
    strategy, model, stream = toy_strategy(method, iters=1)
    experience = stream.experience(1)  # the second task: two classes seen before, two current
    method.before_experience(model, experience)
    model.set_text_trainable(True)
    model.set_label_space(experience.classes)
    with torch.no_grad():
        for layer in method.layers:  # a trained-looking adapter
            layer.lora_B.normal_(std=0.1)
    images, targets = next(experience.batches(8, shuffle=True, seed=0))
    outputs = model(images)
    loss = method.extra_loss(model, (images, targets), outputs)
    # official: E = [E_seen; E_cur] (the seen rows have no positives), labels offset by the seen count
    seen = F.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    current = model.class_text_features(torch.tensor(experience.classes))
    out = model.features(images)
    embeddings = torch.cat([seen, current])
    labels = targets - experience.classes[0] + 2
    mask = torch.eq(labels.view(-1, 1), torch.arange(4).view(-1, 1).T).float().t()
    t_logits = model.logit_scale * embeddings @ out.t()
    official = F.cross_entropy(t_logits, mask)
    assert float(loss.detach()) == pytest.approx(float(official.detach()), rel=1e-5)
    loss.backward()
    assert method.layers[0].lora_gate.grad is not None
    # the weight falls with the classes seen: 1/2 of the sum on the first task, 1/4 on the second
    method.task = 0
    assert float(method.extra_loss(model, (images, targets), outputs.detach())) == pytest.approx(2 * float(official.detach()), rel=1e-5)
    assert CoDyRA({**HP, "text_to_image_weight": 0.0}).extra_loss(model, (images, targets), outputs) is None


# ---------------------------------------------------------------------- merging and frozen weights


class Probe(CoDyRA):
    """Checks, around each task, that training moves only A, B and g, and that merging keeps the outputs."""

    def __init__(self, hparams, images):
        super().__init__(hparams)
        self.images, self.merge_errors, self.frozen_ok, self.trained_moved = images, [], [], []

    def before_experience(self, model, experience):
        super().before_experience(model, experience)
        trainable = {id(p) for p in self.trainable_parameters(model)}
        self.frozen = {name: p.detach().clone() for name, p in model.named_parameters() if id(p) not in trainable}
        self.start = [p.detach().clone() for p in self.trainable_parameters(model)]

    def outputs(self, model):
        model.eval()
        model.invalidate_text_cache()
        with torch.no_grad():
            out = model(self.images)
        model.train()
        return out

    def after_experience(self, model, experience):
        params = dict(model.named_parameters())
        self.frozen_ok.append(all(torch.equal(params[name], value) for name, value in self.frozen.items()))
        self.trained_moved.append(all(not torch.equal(p, p0) for p, p0 in zip(self.trainable_parameters(model), self.start) if p.shape != (4,)))
        before = self.outputs(model)
        super().after_experience(model, experience)
        after = self.outputs(model)
        finite = torch.isfinite(before)
        assert torch.equal(finite, torch.isfinite(after))
        self.merge_errors.append(float((after[finite] - before[finite]).abs().max()))


def test_base_weights_stay_frozen_during_a_task_and_merging_keeps_the_model_outputs():
    method = Probe(HP, toy_images(4, 4)[0])
    strategy, model, stream = toy_strategy(method, iters=20, batch_size=4, lr=1e-2)
    merged_W = None
    for index, experience in enumerate(stream.benchmark.streams["train"]):
        strategy.train(experience)
        if index == 0:
            merged_W = [layer.base.weight.detach().clone() for layer in method.layers]
    assert method.frozen_ok == [True, True]  # W, biases, LayerNorms, embeddings, logit scale: untouched while training
    assert method.trained_moved == [True, True]  # A and B did train
    assert max(method.merge_errors) < 1e-4  # the merged model scores as the unmerged one
    assert any(not torch.equal(layer.base.weight, W) for layer, W in zip(method.layers, merged_W))  # task 2 merged on top
    assert len(method.effective_ranks) == 2 and all(len(r) == len(method.layers) for r in method.effective_ranks)


def test_each_task_restarts_a_full_rank_adapter():
    method = CoDyRA(HP)
    strategy, model, stream = toy_strategy(method, iters=20, batch_size=4, lr=1e-2)
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    assert sum(method.effective_ranks[0]) < 4 * len(method.layers)
    method.before_experience(model, stream.experience(1))
    assert all(layer.effective_rank() == 4 and torch.count_nonzero(layer.lora_B) == 0 for layer in method.layers)


# ---------------------------------------------------------------------- degenerate case and resuming


@pytest.mark.parametrize("rule", ["paper", "code"])
def test_sparsity_zero_is_the_same_gated_lora_as_with_the_proximal_step_removed_bit_for_bit(tmp_path, monkeypatch, rule):
    calls: list[float] = []
    original = ProximalAdamW.proximal_step

    def counting(self, kappa):
        calls.append(kappa)
        original(self, kappa)

    monkeypatch.setattr(ProximalAdamW, "proximal_step", counting)
    dense = toy_run(tmp_path / "dense", method__sparsity=0.0, method__threshold=rule)
    assert calls and set(calls) == {0.0}  # the proximal step did run, with κ = 0
    monkeypatch.setattr(ProximalAdamW, "proximal_step", lambda self, kappa: None)  # the threshold code path gone
    without = toy_run(tmp_path / "without", method__sparsity=0.0, method__threshold=rule)
    assert dense.acc_matrix == without.acc_matrix and dense.control_matrix == without.control_matrix
    monkeypatch.undo()
    pruned = toy_run(tmp_path / "pruned", method__sparsity=0.15, method__threshold=rule)  # not vacuous: pruning changes this run
    assert pruned.acc_matrix != dense.acc_matrix


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = toy_run(tmp_path / "whole", method__sparsity=0.08)
    interrupt_at_second_task(monkeypatch, lambda: toy_run(tmp_path / "split", method__sparsity=0.08))
    (partial,) = (tmp_path / "split").glob("*.json")
    assert json.loads(partial.read_text())["status"] == "partial" and list((tmp_path / "split").glob("*.ckpt"))
    resumed = toy_run(tmp_path / "split", method__sparsity=0.08, resume=True)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix


def test_a_model_restored_at_a_task_boundary_trains_the_next_task_to_the_same_logits():
    """Finer than the toy's accuracy matrix: the logits after task 2, from a checkpoint after task 1
    (the merged W; the restarted adapter is drawn from the strategy's per-task seed)."""

    def fresh():
        method = CoDyRA(HP)
        strategy, model, stream = toy_strategy(method, iters=20, batch_size=4, lr=5e-2)
        return method, strategy, model, stream

    method, strategy, model, stream = fresh()
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "method": method.state_dict()}, buffer)
    strategy.train(train[1])
    images = toy_images(4, 4)[0]
    model.eval()
    with torch.no_grad():
        whole = model(images)
    method2, strategy2, model2, _ = fresh()
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    method2.load_state_dict(state["method"])
    model2.load_state_dict(state["model"], strict=True)
    strategy2.train(train[1])
    model2.eval()
    with torch.no_grad():
        assert torch.equal(model2(images), whole)
    assert method2.effective_ranks == method.effective_ranks and 0 < sum(method.effective_ranks[1]) < 4 * len(method.layers)


def test_the_method_state_round_trips_and_refuses_other_layers():
    method = CoDyRA(HP)
    strategy, model, stream = toy_strategy(method, iters=20, batch_size=4, lr=1e-2)
    strategy.train(stream.benchmark.streams["train"][0])
    again = CoDyRA(HP)
    toy_strategy(again, iters=1)
    again.load_state_dict(method.state_dict())
    assert again.effective_ranks == method.effective_ranks
    other = CoDyRA({**HP, "layers": ["q"]})
    toy_strategy(other, iters=1)
    with pytest.raises(ValueError, match="other adapted layers"):
        other.load_state_dict(method.state_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sparsity": -0.1}, "sparsity must be at least 0"),
        ({"sparsity_steps": 1}, "sparsity_steps must be at least 2"),
        ({"dense_fraction": 1.5}, r"dense_fraction must be in \[0, 1\]"),
        ({"threshold": "hard"}, "threshold must be one of paper, code"),
        ({"text_to_image_weight": -1.0}, "text_to_image_weight must be at least 0"),
    ],
)
def test_bad_settings_are_one_line_errors(change, message):
    with pytest.raises(UserError, match=message):
        CoDyRA({**HP, **change})
    with pytest.raises(ValueError, match="rank must be at least 1"):
        CoDyRA({**HP, "rank": 0})
