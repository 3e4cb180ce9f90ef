"""RankOneMemoryLinear and the moram/mora methods against an independent restatement of the maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toys import toy_model, toy_strategy

from cl_bench.methods.moram import RankOneMemoryLinear
from cl_bench.methods.moram import layer as layer_module
from cl_bench.methods.moram.method import RankOneMemories

HP = {
    "rank": 2,
    "topk": 3,
    "temperature": 0.5,
    "threshold": 0.2,
    "mask_in_training": False,
    "balance_weight": 0.0,
    "layers": ["q", "k", "v", "out", "fc", "proj"],
    "towers": ["image", "text"],
}


def reference_forward(layer: RankOneMemoryLinear, x: torch.Tensor, training: bool, mask_in_training: bool) -> torch.Tensor:
    """The official formulation, written out: concatenate every atom, -inf outside the top k, full softmax."""
    a = torch.cat([layer.frozen_A, layer.new_A])
    b = torch.cat([layer.frozen_B, layer.new_B], dim=1)
    projection = x @ a.T
    normed = projection / projection.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = min(max(layer.topk, 2), a.shape[0])
    values, index = torch.topk(normed, k=k, dim=-1)
    masked = torch.full_like(normed, float("-inf")).scatter(-1, index, values)
    weights = torch.softmax(masked / layer.temperature, dim=-1)
    if layer.threshold > 0 and (mask_in_training or not training):
        weights = weights * (normed >= layer.threshold).float()
    return x @ layer.base.weight.T + layer.base.bias + (projection * weights) @ b.T


def grown_layer(tasks: int, mask_in_training: bool = False, threshold: float = 0.2) -> RankOneMemoryLinear:
    torch.manual_seed(tasks)
    layer = RankOneMemoryLinear(nn.Linear(12, 10), rank=2, topk=3, temperature=0.5, threshold=threshold, mask_in_training=mask_in_training)
    for _ in range(tasks):
        layer.add_task()
        with torch.no_grad():
            layer.new_B.normal_()  # trained atoms have non-zero B
    return layer


@pytest.fixture(params=["fused", "composite"])
def matmul_path(request, monkeypatch):
    """Run a test through both computations of the layer: MemoryLinear, and autograd's own ops."""
    if request.param == "composite":
        monkeypatch.setattr(RankOneMemoryLinear, "composite", lambda self: True)
    return request.param


@pytest.fixture(params=["atoms-first", "rows-first"])
def layout(request, monkeypatch):
    """Run MemoryLinear with p laid out atoms first (few atoms, a top-k mask) and rows first (torch.topk)."""
    monkeypatch.setattr(layer_module, "PAIRWISE_MAX_ATOMS", 10**6 if request.param == "atoms-first" else 0)
    return request.param


@pytest.mark.parametrize("tasks", [1, 3])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("mask_in_training", [False, True])
def test_forward_matches_the_official_formulation(tasks, training, mask_in_training, matmul_path, layout):
    layer = grown_layer(tasks, mask_in_training).train(training)
    x = torch.randn(4, 5, 12)
    expected = reference_forward(layer, x, training, mask_in_training)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # the mask really matters in the cases where it applies
    unmasked = grown_layer(tasks, mask_in_training, threshold=0.0).train(training)
    if mask_in_training or not training:
        assert not torch.allclose(unmasked(x), expected, atol=1e-5)


def test_gradients_match_the_official_formulation_and_skip_frozen_atoms(matmul_path, layout):
    layer = grown_layer(3).train()
    x = torch.randn(6, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer(x).square().sum().backward()
    reference_forward(layer, x2, True, False).square().sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert layer.frozen_A.grad is None and layer.frozen_B.grad is None
    assert layer.new_A.grad is not None and layer.new_B.grad is not None


def test_topk_keeps_at_least_two_atoms_and_at_most_all():
    layer = RankOneMemoryLinear(nn.Linear(8, 8), rank=4, topk=1, temperature=1.0, threshold=0.0).train()
    layer.add_task()
    layer.add_task()  # 8 atoms, k = max(1, 2) = 2
    weights = layer.mixture_weights(torch.randn(5, 8))
    assert ((weights > 0).sum(-1) == 2).all() and torch.allclose(weights.sum(-1), torch.ones(5))
    wide = RankOneMemoryLinear(nn.Linear(8, 8), rank=3, topk=16, temperature=1.0, threshold=0.0)
    wide.add_task()  # 3 atoms < topk: all three active
    assert ((wide.mixture_weights(torch.randn(5, 3)) > 0).sum(-1) == 3).all()


def test_eval_mask_is_not_renormalised():
    layer = RankOneMemoryLinear(nn.Linear(4, 4), rank=4, topk=4, temperature=1.0, threshold=0.5).eval()
    layer.add_task()
    projection = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    normed = projection / projection.norm()
    full = torch.softmax(normed, dim=-1)
    assert torch.allclose(layer.mixture_weights(projection), full * (normed >= 0.5))
    assert layer.mixture_weights(projection).sum() < 1


def test_add_task_appends_rank_atoms_and_freezes_the_old():
    layer = RankOneMemoryLinear(nn.Linear(6, 5), rank=3, topk=3, temperature=0.1, threshold=0.2)
    assert layer.num_atoms == 0 and layer(torch.ones(2, 6)).shape == (2, 5)
    layer.add_task()
    first_A = layer.new_A.detach().clone()
    assert torch.count_nonzero(layer.new_B) == 0 and layer.new_A.abs().sum() > 0
    layer.add_task()
    assert layer.atoms_A().shape == (6, 6) and layer.atoms_B().shape == (5, 6)
    assert torch.equal(layer.frozen_A, first_A) and not layer.frozen_A.requires_grad
    assert layer.base.weight.data_ptr() == layer.weight.data_ptr()  # the base weight is the original, not a copy


def test_state_dict_round_trips_grown_atoms_into_a_fresh_layer():
    grown = grown_layer(3).eval()
    fresh = RankOneMemoryLinear(nn.Linear(12, 10), rank=2, topk=3, temperature=0.5, threshold=0.2).eval()
    fresh.load_state_dict(grown.state_dict())
    x = torch.randn(3, 12)
    assert fresh.num_atoms == 6 and torch.equal(fresh(x), grown(x))
    assert not fresh.frozen_A.requires_grad and fresh.new_A.requires_grad


def test_balance_term_is_n_times_the_sum_of_squared_mean_weights():
    layer = RankOneMemoryLinear(nn.Linear(4, 4), rank=4, topk=4, temperature=1.0, threshold=0.0).train()
    layer.add_task()
    layer.track_balance = True
    projection = torch.randn(3, 2, 4)
    weights = layer.mixture_weights(projection)
    usage = weights.reshape(-1, 4).mean(0)
    assert layer.balance == pytest.approx(4 * float((usage**2).sum()))


def make_moram(hparams=None, tasks=2, precision="fp32", iters=4):
    method = RankOneMemories({**HP, **(hparams or {})})
    strategy, model, stream = toy_strategy(method, tasks=tasks, iters=iters, precision=precision)
    return strategy, model, method, stream


def test_fresh_atoms_leave_the_backbone_outputs_unchanged():
    strategy, model, method, stream = make_moram()
    plain = toy_model()
    plain.set_classes(stream.prompts())
    for memory in method.layers:
        memory.add_task()  # new atoms, B = 0
    images = torch.rand(5, 1, 28, 28)
    for mode in (True, False):
        model.train(mode)
        plain.train(mode)
        with torch.no_grad():
            assert torch.allclose(model(images)[:, :2], plain(images)[:, :2], atol=1e-6)


def test_old_atoms_are_bit_identical_after_the_next_task_and_only_new_atoms_train(matmul_path):
    strategy, model, method, stream = make_moram()
    train = stream.benchmark.streams["train"]
    strategy.train(train[0])
    after_first = {id(m): (m.new_A.detach().clone(), m.new_B.detach().clone()) for m in method.layers}
    assert any(b.abs().sum() > 0 for _, b in after_first.values())  # task 1 learned something
    strategy.train(train[1])
    for memory in method.layers:
        a, b = after_first[id(memory)]
        assert torch.equal(memory.frozen_A, a) and torch.equal(memory.frozen_B, b)
    per_layer = sum(HP["rank"] * (m.base.in_features + m.base.out_features) for m in method.layers)
    assert sum(p.numel() for p in strategy.trainable) == per_layer
    optimised = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for m in method.layers for p in (m.new_A, m.new_B)}
    assert strategy.optimizer.defaults["betas"] == (0.9, 0.9999)


def test_text_to_image_term_matches_the_official_soft_target_cross_entropy():
    strategy, model, method, stream = make_moram(tasks=2)
    method.before_experience(model, stream.experience(1))  # task 2: seen prompts = 2 + 2
    model.set_label_space([2, 3])
    torch.manual_seed(0)
    outputs = torch.full((6, model.num_classes), float("-inf"))
    outputs[:, 2:4] = torch.randn(6, 2) * 3
    targets = torch.tensor([2, 3, 3, 2, 2, 3])
    # official: rows = every seen class prompt (task 1 rows have no positives), soft targets mask[c, b]
    t_logits = torch.cat([torch.randn(2, 6), outputs[:, 2:4].T])
    mask = torch.zeros(4, 6)
    mask[2 + (targets - 2), torch.arange(6)] = 1.0
    expected = F.cross_entropy(t_logits, mask)
    assert method.extra_loss(model, (torch.zeros(6), targets), outputs) == pytest.approx(float(expected), abs=1e-5)


def test_bf16_autocast_runs_on_cpu():
    strategy, model, method, stream = make_moram(precision="bf16", iters=3)
    strategy.train(stream.benchmark.streams["train"][0])
    assert all(torch.isfinite(m.new_B).all() for m in method.layers)
    assert any(m.new_B.abs().sum() > 0 for m in method.layers)


def test_mora_variant_prunes_in_training(registry):
    specs = registry.methods()
    assert specs["mora"].defaults["mask_in_training"] is True and specs["moram"].defaults["mask_in_training"] is False
    assert "2405.12130" in specs["mora"].summary
    assert specs["moram"].factory == specs["mora"].factory  # one implementation, two specs


@pytest.mark.parametrize("k, threshold, frozen", [(3, None, 2), (3, 0.2, 2), (5, None, 3), (5, 0.1, 0), (4, None, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_hand_derived_backward_passes_gradcheck(k, threshold, frozen, bias, layout):
    """MemoryLinear's backward against finite differences, for every input (frozen ones included)."""
    torch.manual_seed(k + frozen)
    atoms, d_in, d_out = 5, 6, 4

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.double, requires_grad=True)

    inputs = [leaf(7, d_in), leaf(d_out, d_in), leaf(d_out) if bias else None, leaf(frozen, d_in), leaf(atoms - frozen, d_in), leaf(d_out, frozen), leaf(d_out, atoms - frozen)]
    with_grad = [t for t in inputs if t is not None]

    def apply(*tensors):
        it = iter(tensors)
        args = [next(it) if t is not None else None for t in inputs]
        return layer_module.MemoryLinear.apply(*args, k, 0.5, threshold)

    assert torch.autograd.gradcheck(apply, with_grad)


@pytest.mark.parametrize("frozen", [0, 2])
def test_hand_derived_backward_passes_gradcheck_with_a_separate_memory_input(frozen, layout):
    """With `memory_input` (the memory's own input: x after dropout on a language model) the base
    reads x and the memory reads the other tensor; both gradients against finite differences."""
    torch.manual_seed(frozen)
    atoms, d_in, d_out = 5, 6, 4

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.double, requires_grad=True)

    inputs = [leaf(7, d_in), leaf(d_out, d_in), leaf(d_out), leaf(frozen, d_in), leaf(atoms - frozen, d_in), leaf(d_out, frozen), leaf(d_out, atoms - frozen), leaf(7, d_in)]

    def apply(x, weight, bias, frozen_A, new_A, frozen_B, new_B, memory):
        return layer_module.MemoryLinear.apply(x, weight, bias, frozen_A, new_A, frozen_B, new_B, 3, 0.5, None, memory)

    assert torch.autograd.gradcheck(apply, inputs)


def test_weights_below_the_floor_are_exactly_zero_in_both_layouts():
    logits = torch.tensor([[0.0, -59.0, -61.0, -200.0]])
    weights = layer_module.softmax_(logits.clone(), dim=-1)
    assert weights[0, 1] > 0 and weights[0, 2] == 0 and weights[0, 3] == 0
    assert torch.allclose(weights, torch.softmax(logits, dim=-1), atol=1e-25, rtol=0)
    atoms_first = layer_module.softmax_(logits.t().clone(), 0, torch.tensor([[1.0], [1.0], [1.0], [1.0]]))
    assert torch.equal(atoms_first.t() > 0, weights > 0) and torch.allclose(atoms_first.t(), weights, atol=1e-25, rtol=0)
    chosen = layer_module.softmax_(torch.tensor([[0.0], [-1.0], [-2.0]]), 0, torch.tensor([[1.0], [0.0], [1.0]]))
    assert chosen[1, 0] == 0 and torch.allclose(chosen[[0, 2], 0], torch.softmax(torch.tensor([0.0, -2.0]), dim=0))


@pytest.mark.parametrize("tasks", [1, 3])
def test_zero_input_rows_get_finite_gradients_equal_to_autograds(tasks, layout):
    """A language model's attention output is zero at padded positions: the norm is clamped there and
    its cube must not overflow into inf * 0 = nan. With more atoms than k every atom ties at a zero
    row; atoms first keeps them all, torch.topk (rows first, and autograd's path) an arbitrary k."""
    torch.manual_seed(0)
    layer = RankOneMemoryLinear(torch.nn.Linear(16, 12), rank=4, topk=4, temperature=0.03, threshold=0.2)
    for _ in range(tasks):
        layer.add_task()
        with torch.no_grad():
            layer.new_B.normal_()
    x = torch.randn(6, 16)
    x[2] = 0.0
    grads = []
    for composite in (False, True):
        layer.track_balance = composite  # the balance path runs through autograd's own ops
        layer.new_A.grad = layer.new_B.grad = None
        inputs = x.clone().requires_grad_(True)
        layer(inputs).square().sum().backward()
        grads.append((inputs.grad, layer.new_A.grad.clone(), layer.new_B.grad.clone()))
    for fast in grads[0]:
        assert torch.isfinite(fast).all()
    (fast_x, *fast_weights), (reference_x, *reference_weights) = grads
    other_rows = torch.arange(6) != 2
    assert torch.allclose(fast_x[other_rows], reference_x[other_rows], atol=1e-5)
    if tasks == 1 or layout == "rows-first":  # no tie, or the same selection
        assert torch.allclose(fast_x, reference_x, atol=1e-5)
    for fast, reference in zip(fast_weights, reference_weights):  # a zero row adds nothing to ∂L/∂A, ∂L/∂B
        assert torch.allclose(fast, reference, atol=1e-5)


@pytest.mark.parametrize("atoms, k", [(5, 2), (16, 8), (24, 8), (40, 16)])
def test_top_k_mask_keeps_the_atoms_torch_topk_keeps(atoms, k):
    torch.manual_seed(atoms)
    scores = torch.randn(atoms, 300)  # atoms x rows; no ties
    expected = torch.zeros_like(scores).scatter_(0, scores.topk(k, dim=0).indices, 1.0)
    assert torch.equal(layer_module.top_k_mask(scores, k), expected)
    assert layer_module.top_k_mask(scores, atoms) is None and layer_module.top_k_mask(scores, atoms + 3) is None


def test_top_k_mask_keeps_every_atom_tied_at_the_kth_place():
    torch.manual_seed(1)
    scores = torch.randint(0, 4, (6, 50)).float()  # many ties
    scores[:, 0] = 0.0  # a zero input row: every atom tied
    above = (scores.unsqueeze(0) > scores.unsqueeze(1)).sum(dim=1)  # [i, r]: atoms scoring more than atom i
    mask = layer_module.top_k_mask(scores, 3)
    assert torch.equal(mask, (above < 3).float())
    assert (mask.sum(dim=0) >= 3).all() and mask[:, 0].sum() == 6
