"""The shared LoRA adapter (`cl_bench.LoRALinear`) against formulas restated here by hand: ΔW,
merging, the forward at init and the exact float expressions the methods' results depend on,
dropout, per-task blocks, the RNG it consumes, and the one rank check."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import cl_bench
from cl_bench import LoRALinear, check_lora_rank

ROOT = Path(__file__).resolve().parents[2]


def linear(d_in: int = 10, d_out: int = 7, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out)
    layer.requires_grad_(False)  # frozen, as the methods leave it
    return layer


def trained(adapter: LoRALinear, seed: int = 1) -> LoRALinear:
    """Give every block a nonzero, arbitrary B and A (as after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for A, B in adapter.blocks():
            A.copy_(torch.randn(A.shape, generator=g))
            B.copy_(torch.randn(B.shape, generator=g))
    return adapter


def test_the_adapter_is_public():
    # Its layer (blocks: above the model contract, below everything else) is held by test_layers.
    assert cl_bench.LoRALinear.__module__ == "cl_bench.blocks.lora" and "LoRALinear" in cl_bench.__all__
    assert issubclass(LoRALinear, cl_bench.LinearAdapter)


def test_delta_weight_is_alpha_over_r_times_B_A():
    adapter = trained(LoRALinear(linear(), rank=3, alpha=6.0))
    by_hand = (6.0 / 3) * (adapter.lora_B.detach().double() @ adapter.lora_A.detach().double())
    assert torch.allclose(adapter.delta_weight().double(), by_hand, atol=1e-5)
    scaled = trained(LoRALinear(linear(), rank=3, alpha=6.0, learnable_scale=0.25))
    by_hand = (6.0 / 3) * 0.25 * (scaled.lora_B.detach().double() @ scaled.lora_A.detach().double())
    assert torch.allclose(scaled.delta_weight().double(), by_hand, atol=1e-5)


def test_delta_weight_of_per_task_blocks_sums_every_block():
    adapter = LoRALinear(linear(), rank=2, alpha=4.0, per_task=True)
    assert torch.equal(adapter.delta_weight(), torch.zeros(7, 10))  # no task yet
    adapter.add_task()
    trained(adapter, seed=1)
    adapter.add_task()
    trained(adapter, seed=2)
    A = torch.cat([adapter.old_A, adapter.new_A]).detach().double()
    B = torch.cat([adapter.old_B, adapter.new_B], dim=1).detach().double()
    assert A.shape == (4, 10) and torch.allclose(adapter.delta_weight().double(), 2.0 * B @ A, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"learnable_scale": 0.3}, {"per_task": True}, {"init": "orthonormal", "learnable_scale": 0.5}])
def test_merge_returns_a_plain_linear_with_the_adapters_outputs_and_changes_nothing(options):
    adapter = LoRALinear(linear(), rank=3, alpha=6.0, **options)
    if adapter.per_task:
        adapter.add_task()
    trained(adapter)
    x = torch.randn(4, 5, 10)
    state = copy.deepcopy(adapter.state_dict())
    rng = torch.get_rng_state()
    merged = adapter.merge()
    assert torch.equal(torch.get_rng_state(), rng)  # no initialisation drawn
    assert type(merged) is nn.Linear and merged is not adapter.base and not merged.weight.requires_grad
    assert torch.allclose(merged(x), adapter(x), atol=1e-4)
    assert torch.equal(merged.bias, adapter.base.bias)
    assert all(torch.equal(value, adapter.state_dict()[key]) for key, value in state.items())


@pytest.mark.parametrize("options", [{}, {"learnable_scale": 0.3}, {"per_task": True}])
def test_merging_in_place_keeps_outputs_and_zeroes_the_update(options):
    adapter = LoRALinear(linear(), rank=3, alpha=6.0, **options)
    if adapter.per_task:
        adapter.add_task()
        trained(adapter)
        adapter.add_task()
    trained(adapter)
    x = torch.randn(6, 10)
    before, W0, delta = adapter(x), adapter.base.weight.clone(), adapter.delta_weight().detach().clone()
    assert adapter.merge(inplace=True) is adapter.base
    assert torch.allclose(adapter.base.weight - W0, delta, atol=1e-5)
    assert torch.allclose(adapter(x), before, atol=1e-4)
    assert torch.equal(adapter.delta_weight(), torch.zeros(7, 10))
    if "learnable_scale" in options:
        assert float(adapter.lora_scale.detach()) == 0.0 and adapter.lora_B.abs().sum() > 0  # B, A kept, s zeroed


@pytest.mark.parametrize("options", [{}, {"per_task": True}, {"init": "orthonormal", "learnable_scale": 0.0}, {"dropout": 0.5}])
def test_at_init_the_adapter_computes_the_base_exactly(options):
    adapter = LoRALinear(linear(), rank=4, alpha=8.0, **options)
    x = torch.randn(3, 10)
    assert torch.equal(adapter(x), adapter.base(x))
    if adapter.per_task:
        adapter.add_task()  # a new block: B = 0
        assert torch.equal(adapter(x), adapter.base(x))


def test_the_forward_is_exactly_the_methods_expressions():
    """Bit for bit: seq-lora's and o-lora's base(x) + (x Aᵀ Bᵀ) c per block, eblora's (x Aᵀ)(c s) Bᵀ."""
    x = torch.randn(4, 3, 10)
    plain = trained(LoRALinear(linear(), rank=3, alpha=16.0))
    A, B, c = plain.lora_A, plain.lora_B, 16.0 / 3
    assert torch.equal(plain(x), plain.base(x) + (x @ A.t() @ B.t()) * c)
    tasks = LoRALinear(linear(), rank=3, alpha=32.0, per_task=True)
    tasks.add_task()
    trained(tasks)
    tasks.add_task()
    trained(tasks, seed=2)
    c = 32.0 / 3
    by_hand = tasks.base(x) + (x @ tasks.old_A.t() @ tasks.old_B.t()) * c
    assert torch.equal(tasks(x), by_hand + (x @ tasks.new_A.t() @ tasks.new_B.t()) * c)
    scaled = LoRALinear(linear(), rank=3, alpha=6.0, init="orthonormal", learnable_scale=-0.005)
    low = x @ scaled.lora_A.t()
    low = low * (2.0 * scaled.lora_scale).to(low.dtype)
    assert torch.equal(scaled(x), scaled.base(x) + low @ scaled.lora_B.t().to(low.dtype))


def test_gradients_are_bit_identical_to_the_methods_expressions_when_layers_share_their_input():
    """Autograd sums the gradient contributions to a shared input (q, k, v read the same x) in the
    order their ops were created, so the adapter must also create them in the methods' order."""

    def grads(forward):
        torch.manual_seed(0)
        x = torch.randn(8, 10, requires_grad=True)
        h = x * 1.5  # a non-leaf input, as a LayerNorm's output
        sum(forward(i, h).square().sum() for i in range(3)).backward()
        return x.grad

    layers = [trained(LoRALinear(linear(seed=i), rank=3, alpha=6.0, init="orthonormal", learnable_scale=0.7), seed=i) for i in range(3)]

    def eblora(i, x):  # eblora's forward before the shared adapter
        layer = layers[i]
        low = x @ layer.lora_A.t()
        low = low * (layer.scaling * layer.lora_scale).to(low.dtype)
        return layer.base(x) + low @ layer.lora_B.t().to(low.dtype)

    assert torch.equal(grads(lambda i, x: layers[i](x)), grads(eblora))
    plain = [trained(LoRALinear(linear(seed=i), rank=3, alpha=6.0), seed=i) for i in range(3)]
    by_hand = grads(lambda i, x: plain[i].base(x) + (x @ plain[i].lora_A.t() @ plain[i].lora_B.t()) * plain[i].scaling)
    assert torch.equal(grads(lambda i, x: plain[i](x)), by_hand)


def test_no_dropout_means_no_module_and_no_randomness():
    adapter = trained(LoRALinear(linear(), rank=3, alpha=6.0))
    assert adapter.lora_dropout is None and "Dropout" not in repr(adapter)
    adapter.train()
    x = torch.randn(5, 10)
    rng = torch.get_rng_state()
    first = adapter(x)
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(adapter(x), first)


def test_dropout_reaches_only_the_adapters_input():
    adapter = trained(LoRALinear(linear(), rank=3, alpha=6.0, dropout=0.1))
    x = torch.randn(64, 10)
    adapter.train()
    torch.manual_seed(5)
    out = adapter(x)
    torch.manual_seed(5)
    dropped = nn.functional.dropout(x, 0.1, training=True)
    expected = adapter.base(x) + (dropped @ adapter.lora_A.t() @ adapter.lora_B.t()) * 2.0
    assert torch.equal(out, expected) and not torch.equal(dropped, x)
    adapter.eval()
    assert torch.equal(adapter(x), adapter.base(x) + (x @ adapter.lora_A.t() @ adapter.lora_B.t()) * 2.0)


def test_add_task_freezes_the_old_block_and_trains_only_the_new_one():
    adapter = LoRALinear(linear(), rank=2, alpha=4.0, per_task=True)
    assert adapter.trainable_parameters() == [adapter.new_A, adapter.new_B] and adapter.new_A.shape == (0, 10)
    adapter.add_task()
    trained(adapter)
    first_A, first_B = adapter.new_A.detach().clone(), adapter.new_B.detach().clone()
    adapter.add_task()
    assert torch.equal(adapter.old_A, first_A) and torch.equal(adapter.old_B, first_B)
    assert not adapter.old_A.requires_grad and not adapter.old_B.requires_grad
    assert adapter.new_A.requires_grad and torch.count_nonzero(adapter.new_B) == 0 and adapter.new_A.abs().sum() > 0
    with torch.no_grad():
        adapter.new_B.normal_()
    adapter(torch.randn(3, 10)).sum().backward()
    assert adapter.old_A.grad is None and adapter.old_B.grad is None and adapter.new_A.grad is not None
    # a fresh adapter loads the grown blocks (a checkpoint after two tasks)
    fresh = LoRALinear(linear(), rank=2, alpha=4.0, per_task=True)
    fresh.load_state_dict(adapter.state_dict())
    assert fresh.old_A.shape == (2, 10) and not fresh.old_A.requires_grad and fresh.new_A.requires_grad
    with pytest.raises(RuntimeError, match="per_task=True"):
        LoRALinear(linear(), rank=2, alpha=4.0).add_task()


def test_initialisation_consumes_the_rng_as_the_methods_did():
    torch.manual_seed(3)
    adapter = LoRALinear(linear(), rank=4, alpha=8.0)
    after = torch.get_rng_state()
    torch.manual_seed(3)
    linear()
    A = torch.empty(4, 10)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5))
    assert torch.equal(adapter.lora_A, A) and torch.equal(adapter.lora_B, torch.zeros(7, 4)) and torch.equal(torch.get_rng_state(), after)
    assert list(adapter.state_dict())[:2] == ["lora_A", "lora_B"]  # seq-lora's order
    assert list(LoRALinear(linear(), rank=4, alpha=8.0, per_task=True).state_dict())[:4] == ["old_A", "old_B", "new_A", "new_B"]  # o-lora's
    # orthonormal: B's Gaussian draw, then Aᵀ's; both with orthonormal columns
    torch.manual_seed(3)
    adapter = LoRALinear(linear(), rank=4, alpha=8.0, init="orthonormal")
    after = torch.get_rng_state()
    torch.manual_seed(3)
    linear()
    torch.randn(7, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), after)
    assert list(adapter.state_dict()) == ["lora_B", "lora_A", "base.weight", "base.bias"]  # eblora's order
    assert torch.allclose(adapter.lora_B.T @ adapter.lora_B, torch.eye(4), atol=1e-5)
    assert torch.allclose(adapter.lora_A @ adapter.lora_A.T, torch.eye(4), atol=1e-5)


def test_a_rank_below_one_is_refused_with_one_clear_error():
    for rank in (0, -2):
        with pytest.raises(ValueError, match=f"^LoRA rank must be at least 1, got {rank}$"):
            LoRALinear(linear(), rank=rank, alpha=1.0)
        with pytest.raises(ValueError, match=f"^LoRA rank must be at least 1, got {rank}$"):
            check_lora_rank(rank)
    with pytest.raises(ValueError, match=r"LoRA rank must be in \[1, 7\], got 8 for a 10->7 layer"):
        LoRALinear(linear(), rank=8, alpha=1.0, init="orthonormal")  # orthonormal columns need r <= min(d_in, d_out)
    LoRALinear(linear(), rank=8, alpha=1.0)  # a kaiming init has no upper bound


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        LoRALinear(linear(), rank=2, alpha=1.0, init="gaussian")
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(linear(), rank=2, alpha=1.0, dropout=1.0)
    with pytest.raises(ValueError, match="learnable scale"):
        LoRALinear(linear(), rank=2, alpha=1.0, per_task=True, learnable_scale=0.0)


def test_the_docs_example_method_trains_per_task_blocks_and_unloads_to_plain_linears():
    from toys import toy_strategy

    block = (ROOT / "docs" / "lora.md").read_text(encoding="utf-8").split("## Example")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(block, "docs/lora.md", "exec"), namespace)
    method = namespace["TaskLoRA"]({"rank": 2, "alpha": 4.0, "towers": ["image"], "layers": ["q", "v"]})
    strategy, model, stream = toy_strategy(method, iters=3)
    for experience in stream.benchmark.streams["train"]:
        strategy.train(experience)
    adapter = method.adapters[0]
    assert adapter.old_A.shape[0] == 2 and adapter.new_A.shape[0] == 2 and adapter.lora_dropout.p == 0.1
    assert adapter.old_B.abs().sum() > 0 and adapter.new_B.abs().sum() > 0  # both tasks trained
    images, _ = next(stream.experience(1).batches(16))
    model.eval()
    with torch.no_grad():
        before = model(images)
        method.unload()
        model.invalidate_text_cache()
        after = model(images)
    assert all(type(layer.module) is nn.Linear for layer in method.layers)
    finite = torch.isfinite(before)
    assert torch.equal(finite, torch.isfinite(after)) and torch.allclose(after[finite], before[finite], atol=1e-4)


def gated(seed: int = 1) -> LoRALinear:
    """A rank-gated adapter (CoDyRA's: alpha = r, scale 1) with a trained-looking B, A and gates,
    one gate exactly 0 (a pruned component)."""
    adapter = trained(LoRALinear(linear(), rank=4, alpha=4.0, rank_gates=True), seed=seed)
    with torch.no_grad():
        adapter.lora_gate.copy_(torch.tensor([0.7, 0.0, -1.3, 0.25]))
    return adapter


def test_rank_gates_weigh_each_component_in_delta_weight_forward_and_merge():
    adapter = gated()
    A, B, g = (t.detach().double() for t in (adapter.lora_A, adapter.lora_B, adapter.lora_gate))
    by_hand = sum(g[i] * torch.outer(B[:, i], A[i]) for i in range(4))  # Σ g_i b_i a_iᵀ = B diag(g) A
    assert torch.allclose(adapter.delta_weight().double(), by_hand, atol=1e-5)
    survivors = [0, 2, 3]  # g_1 = 0: the same update from the surviving components alone
    assert torch.allclose(by_hand, B[:, survivors] @ torch.diag(g[survivors]) @ A[survivors], atol=1e-12)
    x = torch.randn(5, 10)
    assert torch.equal(adapter(x), adapter.base(x) + (x @ adapter.lora_A.t() * adapter.lora_gate) @ adapter.lora_B.t() * 1.0)
    assert adapter.effective_rank() == 3 and "effective_rank=3" in repr(adapter)
    assert adapter.trainable_parameters() == [adapter.lora_A, adapter.lora_B, adapter.lora_gate]
    assert list(adapter.state_dict())[:3] == ["lora_A", "lora_B", "lora_gate"]
    assert torch.allclose(adapter.merge()(x), adapter(x), atol=1e-5)
    before, W0 = adapter(x), adapter.base.weight.clone()
    adapter.merge(inplace=True)  # W += B diag(g) A, then B = 0 (the gates are kept)
    assert torch.allclose(adapter.base.weight.double() - W0.double(), by_hand, atol=1e-5)
    assert torch.allclose(adapter(x), before, atol=1e-5) and torch.count_nonzero(adapter.lora_B) == 0
    assert adapter.effective_rank() == 3


def test_rank_gates_start_normal_and_restart_draws_a_fresh_full_rank_block_in_place():
    torch.manual_seed(3)
    adapter = LoRALinear(linear(), rank=4, alpha=4.0, rank_gates=True)
    after = torch.get_rng_state()
    torch.manual_seed(3)
    linear()
    A = torch.empty(4, 10)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5))
    g = torch.randn(4)  # after A: the order the RNG draws them
    assert torch.equal(adapter.lora_A, A) and torch.equal(adapter.lora_gate, g) and torch.equal(torch.get_rng_state(), after)
    x = torch.randn(3, 10)
    assert torch.equal(adapter(x), adapter.base(x))  # B = 0
    gated_adapter = gated()
    params = gated_adapter.trainable_parameters()
    gated_adapter.restart()
    assert gated_adapter.trainable_parameters() == params  # the same Parameter objects
    assert torch.count_nonzero(gated_adapter.lora_B) == 0 and gated_adapter.effective_rank() == 4
    with pytest.raises(ValueError, match="rank gates"):
        LoRALinear(linear(), rank=2, alpha=1.0, rank_gates=True, per_task=True)
    with pytest.raises(ValueError, match="rank gates"):
        LoRALinear(linear(), rank=2, alpha=1.0, rank_gates=True, learnable_scale=0.0)
    with pytest.raises(RuntimeError, match="single-block"):
        LoRALinear(linear(), rank=2, alpha=1.0, per_task=True).restart()
