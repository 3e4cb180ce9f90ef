"""RAIL: the recursive primal ridge and the dual kernel ridge equal their closed forms on all data
seen so far; the fusion rule on a hand-made case; fusion weight 0 is zero-shot bit for bit; resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toys import ToyPlugin, interrupt_at_second_task

from cl_bench import RunConfig, run
from cl_bench.config.registry import Registry
from cl_bench.methods.rail.method import RAIL, FusionHead
from cl_bench.methods.rail.regression import KernelRidge, PrimalRidge, random_projection

PRIMAL = {"expansion": 40, "regularization": 0.1, "fusion_weight": 0.8, "batch_size": 5}
DUAL = {"kernel_gamma": 0.1, "regularization": 0.001, "fusion_weight": 0.8, "batch_size": 5}

# Three tasks of (rows, the global classes their targets use); the third reuses class 1 (as a
# domain-incremental task does) besides adding class 4: columns are added only for new classes.
TASKS = [(13, [0, 1]), (11, [2, 3]), (9, [1, 4])]


def task_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    data = []
    for rows, classes in TASKS:
        features = torch.nn.functional.normalize(torch.randn(rows, 6, generator=generator), dim=1)
        targets = torch.tensor(classes)[torch.randint(0, len(classes), (rows,), generator=generator)]
        data.append((features, targets))
    return data


def columns_so_far(data):
    """Each task's target columns (classes numbered in the order first seen) and the width after it."""
    order: list[int] = []
    out = []
    for (_, classes), (features, targets) in zip(TASKS, data):
        order += [c for c in classes if c not in order]
        out.append((features, torch.tensor([order.index(int(t)) for t in targets]), len(order)))
    return out


def padded_one_hot(columns: list[np.ndarray], width: int) -> np.ndarray:
    return np.concatenate([np.eye(width)[c] for c in columns])


def batches_of(features, columns, size):
    return [(features[i : i + size], columns[i : i + size]) for i in range(0, len(features), size)]


@pytest.mark.parametrize("expansion", [40, 0])
def test_recursive_primal_ridge_equals_the_joint_ridge_on_all_data_seen_so_far(expansion):
    projection = random_projection(7, expansion, 6) if expansion else None
    solver = PrimalRidge(0.1, projection)
    seen_x, seen_cols = [], []
    for features, columns, width in columns_so_far(task_data()):
        solver.fit(batches_of(features, columns, 4), width)
        seen_x.append(features.numpy().astype(np.float64))
        seen_cols.append(columns.numpy())
        x = np.concatenate(seen_x)
        phi = np.maximum(x @ projection.numpy().astype(np.float64).T, 0.0) if projection is not None else x
        y = padded_one_hot(seen_cols, width)
        dim = phi.shape[1]
        joint = np.linalg.solve(phi.T @ phi + 0.1 * np.eye(dim), phi.T @ y)
        # numpy's least squares on the augmented system [Φ; √λ I] W = [Y; 0], the same ridge
        stacked = np.linalg.lstsq(np.vstack([phi, np.sqrt(0.1) * np.eye(dim)]), np.vstack([y, np.zeros((dim, width))]), rcond=None)[0]
        assert solver.W is not None and solver.R is not None and solver.W.shape == (dim, width)
        np.testing.assert_allclose(solver.W.numpy(), joint, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(solver.W.numpy(), stacked, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(solver.R.numpy(), np.linalg.inv(phi.T @ phi + 0.1 * np.eye(dim)), rtol=1e-9, atol=1e-10)


def test_the_projection_is_pytorchs_default_linear_init_seeded():
    projection = random_projection(3, 500, 64)
    assert projection.shape == (500, 64) and projection.dtype == torch.float32
    assert torch.equal(projection, random_projection(3, 500, 64)) and not torch.equal(projection, random_projection(4, 500, 64))
    bound = 1 / 8  # kaiming-uniform with a = √5: U(−1/√fan_in, 1/√fan_in)
    assert float(projection.abs().max()) <= bound and float(projection.abs().max()) > 0.99 * bound
    linear = torch.nn.Linear(64, 500, bias=False)
    assert float(linear.weight.detach().abs().max()) <= bound


def test_dual_kernel_ridge_equals_its_closed_form_on_all_data_seen_so_far():
    solver = KernelRidge(0.001, 0.1)
    seen_x, seen_cols = [], []
    test = torch.nn.functional.normalize(torch.randn(7, 6, generator=torch.Generator().manual_seed(9)), dim=1)
    for features, columns, width in columns_so_far(task_data()):
        solver.fit(batches_of(features, columns, 4), width)
        seen_x.append(features.numpy().astype(np.float64))
        seen_cols.append(columns.numpy())
        memory = np.concatenate(seen_x)

        def kernel(a, b):
            return np.exp(-0.1 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

        alpha = np.linalg.solve(kernel(memory, memory) + 0.001 * np.eye(len(memory)), padded_one_hot(seen_cols, width))
        expected = kernel(test.numpy().astype(np.float64), memory) @ alpha
        np.testing.assert_allclose(solver.scores(test).numpy(), expected, rtol=1e-8, atol=1e-9)


class _Model:
    def __init__(self, label_space):
        self.label_space = torch.tensor(label_space)


class _Regression:
    """Stands in for a fitted solver: fixed scores over the learned classes' columns."""

    def __init__(self, table):
        self.table = table

    def scores(self, features):
        return self.table[features[:, 0].long()]


def test_fusion_mixes_regression_and_zero_shot_only_where_zero_shot_picks_a_learned_class():
    method = RAIL(PRIMAL, "primal")
    method.classes = [4, 1, 2]  # columns 0, 1, 2 (learned in that order)
    # Regression scores per image (row = the image's feature[0]) over the columns [class 4, class 1, class 2].
    method.primal = _Regression(torch.tensor([[0.1, 0.9, -0.2], [0.3, 0.2, 0.6]], dtype=torch.float64))  # type: ignore[assignment]
    head = FusionHead(method)
    model = _Model([1, 3, 4])  # label space: class 1 (learned), class 3 (not), class 4 (learned)
    features = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    text = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0], [1.0, 0.0, 1.5]])  # top: class 1, class 3, class 4
    out = head.scores(model, features, text)
    p0 = torch.softmax(text[0].double(), 0)
    s0 = torch.tensor([0.9, 0.0, 0.1], dtype=torch.float64)  # image 0: class 1 → column 1, class 3 → 0, class 4 → column 0
    p2 = torch.softmax(text[2].double(), 0)
    s2 = torch.tensor([0.2, 0.0, 0.3], dtype=torch.float64)
    assert out.dtype == torch.float32
    assert torch.equal(out[0], (0.8 * s0 + (1 - 0.8) * p0).float())
    assert torch.equal(out[1], text[1])  # zero-shot picks class 3, never learned: its logits untouched
    assert torch.equal(out[2], (0.8 * s2 + (1 - 0.8) * p2).float())
    assert out[0].argmax() == 0 and out[2].argmax() == 2
    # Nothing learned in this label space, or nothing learned at all: the text head's logits as they are.
    assert torch.equal(head.scores(_Model([0, 3]), features, text[:, :2]), text[:, :2])
    method.classes = []
    assert head.scores(model, features, text) is text


def toy_run(tmp_path, method, protocol="x-tail", **settings):
    """A run on the toy stream (3 tasks) with tiny-clip, whose features tell the toy classes apart
    (the random toy CLIP's barely do)."""
    config = RunConfig(method=method, scenario="toy", backbone="tiny-clip", out=str(tmp_path), progress=False, eval_batch_size=256)
    for key, value in {"scenario.protocol": protocol, "scenario.tasks": 3, **settings}.items():
        config.set(key, value)
    return run(config, registry=Registry([ToyPlugin()]))


@pytest.mark.parametrize("method", ["rail-primal", "rail-dual"])
@pytest.mark.parametrize("protocol", ["x-tail", "mtil"])
def test_fusion_weight_zero_is_zeroshot_bit_for_bit(tmp_path, method, protocol):
    zeroshot = toy_run(tmp_path / "zs", "zeroshot", protocol)
    off = toy_run(tmp_path / "off", method, protocol, **{"method.fusion_weight": 0.0, "method.expansion": 50} if method == "rail-primal" else {"method.fusion_weight": 0.0})
    assert off.acc_matrix == zeroshot.acc_matrix and off.control_matrix == zeroshot.control_matrix
    fused = toy_run(tmp_path / "on", method, protocol, **{"method.expansion": 50} if method == "rail-primal" else {})
    assert fused.acc_matrix[0] == zeroshot.acc_matrix[0] and fused.acc_matrix != zeroshot.acc_matrix
    assert fused.control_matrix == zeroshot.control_matrix  # control images are never in a learned class
    timings = fused.data["timings"]["experiences"]
    assert [t["iters"] for t in timings] == [0, 0, 0] and all(t["train"] > 0 for t in timings)
    assert fused.data["params"]["trainable"] == [0, 0, 0]


@pytest.mark.parametrize("method", ["rail-primal", "rail-dual"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, method):
    settings = {"method.expansion": 50} if method == "rail-primal" else {}
    whole = toy_run(tmp_path / "whole", method, **settings)
    interrupt_at_second_task(monkeypatch, lambda: toy_run(tmp_path / "split", method, **settings))
    (partial,) = (tmp_path / "split").glob("*.json")
    assert json.loads(partial.read_text())["status"] == "partial" and list((tmp_path / "split").glob("*.ckpt"))
    resumed = toy_run(tmp_path / "split", method, resume=True, **settings)
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed.acc_matrix[2] != resumed.acc_matrix[0]


def test_state_round_trip_keeps_the_projection_seed_and_solution():
    method = RAIL(PRIMAL, "primal")
    torch.manual_seed(5)
    method.before_experience(None, None)
    seed = method.projection_seed
    assert isinstance(seed, int)
    method._feature_dim = 6
    solver = method._solver()
    assert isinstance(solver, PrimalRidge)
    features, columns, width = columns_so_far(task_data())[0]
    method.classes = [0, 1]
    solver.fit(batches_of(features, columns, 5), width)
    copy = RAIL(PRIMAL, "primal")
    copy.load_state_dict(method.state_dict())
    assert copy.projection_seed == seed and copy.classes == [0, 1]
    assert torch.equal(copy.regression_scores(features), method.regression_scores(features))


@pytest.mark.parametrize(
    ("form", "setting", "message"),
    [
        ("primal", {"fusion_weight": 1.5}, "fusion_weight must be in [0, 1]"),
        ("primal", {"regularization": 0.0}, "regularization must be positive"),
        ("primal", {"expansion": -1}, "expansion must be 0"),
        ("dual", {"kernel_gamma": 0.0}, "kernel_gamma must be positive"),
    ],
)
def test_bad_settings_are_refused_in_the_factory(form, setting, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RAIL({**(PRIMAL if form == "primal" else DUAL), **setting}, form)
