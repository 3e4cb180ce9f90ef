"""The classic TRACE rows on language models (ewc, replay, gem, ogd): each core against a
restated reference, and each with its rule off repeating its base method bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lm_toys import lm_config, tiny_lm
from torch import nn
from torch.utils.data import TensorDataset

from cl_bench import EpisodicMemory, pad_left, run
from cl_bench.contracts.stream import Experience
from cl_bench.methods.classic.base import LM_PAD
from cl_bench.methods.classic.ewc import EWC
from cl_bench.methods.classic.gem import GEM, project_dual
from cl_bench.methods.classic.ogd import OGD, orthonormal_extend, project_out
from cl_bench.methods.classic.replay import Replay

FULL = {"base": "finetune", "betas": [0.9, 0.95], "rank": 8, "alpha": 32.0, "dropout": 0.0, "layers": ["q", "v"], "batch_size": 4, "grad_accum": 1}


class Toy(nn.Module):
    """w·x with a squared error: gradients worked out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0]))

    def forward(self, x):
        return x @ self.w

    def loss(self, outputs, targets):
        return ((outputs - targets) ** 2).mean()

    def tower_parameters(self, tower):
        yield self.w


def experience(x, y, index=0):
    return Experience(index=index, name=f"t{index}", classes=[], dataset=TensorDataset(x, y), stream=None)


def test_ewc_fisher_and_penalty_by_hand():
    model = Toy()
    x1, y1 = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]]), torch.tensor([1.0, 0.0, 2.0])
    method = EWC({**FULL, "strength": 400.0, "fisher_samples": 10})
    method.after_experience(model, experience(x1, y1))
    w = model.w.detach()
    # d/dw (w·x − y)² = 2 (w·x − y) x, squared and averaged over the three examples
    by_hand = sum((2 * (float(w @ x) - float(y)) * x) ** 2 for x, y in zip(x1, y1)) / 3
    assert torch.allclose(method.fisher[0], by_hand)
    assert float(method.extra_loss(model, None, None).detach()) == 0.0  # at θ*
    with torch.no_grad():
        model.w.add_(torch.tensor([0.3, -0.2]))
    x2, y2 = torch.tensor([[2.0, 0.0]]), torch.tensor([5.0])
    second = (2 * (float(model.w.detach() @ x2[0]) - 5.0) * x2[0]) ** 2
    penalty = 0.5 * 400.0 * float((by_hand * torch.tensor([0.3, -0.2]) ** 2).sum())
    assert float(method.extra_loss(model, None, None).detach()) == pytest.approx(penalty, rel=1e-6)
    anchor2 = model.w.detach().clone()
    method.after_experience(model, experience(x2, y2, 1))
    assert torch.allclose(method.fisher[0], by_hand + second)  # summed over tasks, never reset (TRACE)
    assert torch.equal(method.anchor[0], anchor2)  # θ*: the parameters after the last task
    zero = EWC({**FULL, "strength": 0.0, "fisher_samples": 10})
    zero.after_experience(model, experience(x1, y1))
    assert zero.extra_loss(model, None, None) is None


def test_gem_projection_equals_the_restated_dual_and_the_primal():
    from qpsolvers import solve_qp

    rng = np.random.default_rng(0)
    memories, g = rng.normal(size=(3, 12)), rng.normal(size=12)
    g -= 2.0 * memories[0]  # a conflict with the first memory
    assert (memories @ g < 0).any()
    # the dual restated for qpsolvers: min ½ vᵀ(GGᵀ + eps I)v + (Gg)ᵀv, v >= margin
    for margin in (0.0, 0.5):
        v = solve_qp(memories @ memories.T + 1e-3 * np.eye(3), memories @ g, lb=np.full(3, margin), solver="quadprog")
        assert np.allclose(project_dual(g, memories, margin), memories.T @ v + g, atol=1e-8)
    # margin 0, eps 0: the primal, min ½‖x − g‖² subject to Gx >= 0
    x = solve_qp(np.eye(12), -g, G=-memories, h=np.zeros(3), solver="quadprog")
    projected = project_dual(g, memories, 0.0, eps=0.0)
    assert np.allclose(projected, x, atol=1e-8) and (memories @ projected >= -1e-9).all()
    # one memory, by hand: the conflicting component removed
    m = memories[:1]
    gm = g - 3.0 * m[0] * np.sign(m[0] @ g)  # make sure it conflicts
    gm = gm if m[0] @ gm < 0 else -gm
    assert np.allclose(project_dual(gm, m, 0.0, eps=0.0), gm - (m[0] @ gm) / (m[0] @ m[0]) * m[0], atol=1e-10)


def test_gem_projects_the_step_so_no_memory_loss_rises():
    model = Toy()
    method = GEM({**FULL, "memory": 2, "margin": 0.0})
    method.after_experience(model, experience(torch.tensor([[1.0, 0.0], [1.0, 0.1]]), torch.tensor([3.0, 3.0])))
    assert len(method.memory) == 2
    model.w.grad = torch.tensor([5.0, 0.0])  # raises the memory's loss (its gradient points to -x)
    memory_grad = method.gradient(model, [model.w], *method.memory.tensors()[:2])[0]
    assert float(memory_grad @ model.w.grad) < 0
    method.before_update(model, [model.w])
    assert method.projections == 1
    # one memory, by hand: g − (m·g) / (‖m‖² + eps) m, so m·g̃ = (m·g) eps / (‖m‖² + eps) (eps = 1e-3: ~0)
    g, m = torch.tensor([5.0, 0.0]).double(), memory_grad.double()
    assert torch.allclose(model.w.grad.double(), g - (m @ g) / (m @ m + 1e-3) * m, atol=1e-5)
    assert abs(float(memory_grad @ model.w.grad)) < 1e-3 * abs(float(m @ g))


def test_ogd_projects_orthogonal_to_the_stored_directions_as_numpy_does():
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(4, 10)).astype(np.float32)
    directions[3] = directions[0] + directions[1]  # dependent: dropped
    basis = orthonormal_extend(None, torch.from_numpy(directions[:2]))
    basis = orthonormal_extend(basis, torch.from_numpy(directions[2:]))
    assert basis.shape == (3, 10)
    assert torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-5)
    q, _ = np.linalg.qr(directions[:3].T.astype(np.float64))
    g = rng.normal(size=10)
    reference = g - q @ (q.T @ g)
    projected = project_out(torch.from_numpy(g).float(), basis).numpy()
    assert np.allclose(projected, reference, atol=1e-5)
    assert np.abs(directions.astype(np.float64) @ projected).max() < 1e-4  # orthogonal to every stored direction
    model = Toy()
    method = OGD({**FULL, "strength": 1.0, "directions": 5})
    method.after_experience(model, experience(torch.tensor([[1.0, 2.0]]), torch.tensor([0.0])))
    direction = method.gradient(model, [model.w], torch.tensor([[1.0, 2.0]]), torch.tensor([0.0]))[0]
    model.w.grad = torch.tensor([1.0, 1.0])
    method.before_update(model, [model.w])
    assert float(model.w.grad @ direction) == pytest.approx(0.0, abs=1e-6)


def test_replay_joins_each_batch_with_memory_examples_as_one_batch():
    model = tiny_lm()
    model.train()
    examples = [
        {"prompt": "Repeat: red blue\nAnswer:", "answer": " red blue"},
        {"prompt": "Q:", "answer": " 7"},
        {"prompt": "Reverse: one two three\nAnswer:", "answer": " three two one"},
        {"prompt": "Count to three:", "answer": " 1 2 3"},
    ]
    old_ids, old_labels = model.encode_examples(examples[2:], "train")
    method = Replay({**FULL, "memory": 2, "replay_ratio": 1.0})
    torch.manual_seed(0)
    method.after_experience(model, experience(old_ids, old_labels))
    assert len(method.memory) == 2 and method.memory.groups == [0]
    method.before_experience(model, None)
    ids, labels = model.encode_examples(examples[:2], "train")
    state = method.generator.get_state()
    outputs = model(ids)
    joined_loss = model.loss(outputs, labels) + method.extra_loss(model, (ids, labels), outputs)
    # the same draw, joined into one batch (left-padded to one width)
    method.generator.set_state(state)
    drawn_ids, drawn_labels = method.memory.sample(method.replay_count(2), method.generator)
    one_ids, one_labels = pad_left([ids, drawn_ids], LM_PAD[0]), pad_left([labels, drawn_labels], LM_PAD[1])
    assert len(one_ids) == 4
    assert float(joined_loss) == pytest.approx(float(model.loss(model(one_ids), one_labels)), rel=1e-5)
    assert Replay({**FULL, "memory": 2, "replay_ratio": 0.25}).replay_count(16) == 4


def test_the_memory_pads_tasks_of_other_widths_on_the_left():
    memory = EpisodicMemory(4, rule="random", group_by="task", pad=(-1, -100))
    generator = torch.Generator().manual_seed(0)
    memory.add(torch.ones(3, 2, dtype=torch.long), torch.full((3, 2), 5), 0, generator=generator)
    memory.budget = 4
    memory.add(torch.full((3, 4), 2), torch.full((3, 4), 6), 1, generator=generator)
    inputs, targets, tasks = memory.tensors()
    assert inputs.shape == (4, 4) and tasks.tolist() == [0, 0, 1, 1]
    assert inputs[0].tolist() == [-1, -1, 1, 1] and targets[0].tolist() == [-100, -100, 5, 5]


@pytest.mark.parametrize("bad, message", [({"base": "lora"}, "method.base"), ({"memory": -1}, "method.memory")])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        Replay({**FULL, "memory": 2, "replay_ratio": 1.0, **bad})


SMALL = {"iters": 4, "scenario.test_size": 8, "scenario.control_size": 8}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, off, base",
    [("ewc", {"method.strength": 0.0}, "finetune"), ("replay", {"method.memory": 0}, "finetune"), ("gem", {"method.memory": 0}, "finetune"), ("ogd", {"method.strength": 0.0}, "seq-lora")],
)
def test_with_its_rule_off_a_method_repeats_its_base_bit_for_bit(tmp_path, method, off, base):
    reference = run(lm_config(tmp_path / "base", method=base, **SMALL))
    result = run(lm_config(tmp_path / method, method=method, **SMALL, **off))
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix
    switched_on = run(lm_config(tmp_path / "on", method=method, **SMALL))
    assert switched_on.acc_matrix[0] == reference.acc_matrix[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ewc", "replay", "gem", "ogd"])
def test_a_resumed_classic_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, method):
    from toys import interrupt_at_second_task

    whole = run(lm_config(tmp_path / "whole", method=method, iters=3))
    interrupt_at_second_task(monkeypatch, lambda: run(lm_config(tmp_path / "split", method=method, iters=3)))
    resumed = run(lm_config(tmp_path / "split", method=method, iters=3, resume=True))
    assert resumed.acc_matrix == whole.acc_matrix and resumed.metrics == whole.metrics


def test_icl_prompts_k_demonstrations_from_the_training_set_only():
    from cl_bench import TaskContext, TextTask, assemble_text_stream
    from cl_bench.methods.classic.icl import HEADER, ICL, SEPARATOR

    model = tiny_lm()
    train = [{"prompt": f"Stance {i}:", "answer": " " + "ABC"[i % 3]} for i in range(12)]
    test = [{"prompt": f"Query {j}:", "answer": " A"} for j in range(3)]
    words = [{"prompt": f"Say {w}:", "answer": f" {w}"} for w in ("red", "blue", "green", "red", "gold")]
    stream = assemble_text_stream(
        "s", "1", [TextTask("stance", "accuracy", 4, train, test), TextTask("words", "accuracy", 4, words, test), TextTask("MeetingBank", "accuracy", 4, words, test)], encode_examples=model.encode_examples
    )
    torch.manual_seed(0)
    method = ICL({"k": 6, "max_prompt_tokens": 200, "demo_max_tokens": 40, "skip_tasks": ["MeetingBank"], "balanced_tasks": ["stance"]})
    method.setup(model, stream)
    tokens = lambda text: model.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    chosen = [train[i] for i in method.chosen[0]]
    assert len(chosen) == 6 and sorted(e["answer"] for e in chosen) == [" A", " A", " B", " B", " C", " C"]  # balanced, as TRACE
    expected = tokens(HEADER) + [t for e in chosen for t in tokens(e["prompt"] + e["answer"]) + tokens(SEPARATOR)]
    assert model.prompt_prefixes[0] == expected
    assert len({words[i]["answer"] for i in method.chosen[1]}) == len(method.chosen[1]) == 4  # distinct answers: one "red"
    assert 2 not in model.prompt_prefixes  # MeetingBank: none, as TRACE
    # at generation, a test prompt of task 0 becomes BOS + header + demonstrations + the prompt
    seen = {}
    model.generate = lambda ids, n: seen.setdefault("ids", ids)  # type: ignore[method-assign]
    model.eval()
    model.set_task_context(TaskContext("test", 0, "stance", ()))
    prompts, _ = model.encode_examples(test[:1], "test")
    model(prompts)
    assert seen["ids"][0].tolist() == [model.bos_id] + expected + tokens("Query 0:")
    assert not any("Query" in model.tokenizer.decode(model.prompt_prefixes[t]) for t in model.prompt_prefixes)  # never a test example
    cut = model.with_prefix(prompts, expected, 10)
    assert cut[0].tolist() == (expected + tokens("Query 0:"))[-10:]  # cut from the left, no BOS at the limit
    model.set_task_context(TaskContext("control", 0, "copy", ()))
    seen.clear()
    model(prompts)
    assert torch.equal(seen["ids"], prompts)  # control sets: no demonstrations


@pytest.mark.slow
def test_icl_without_demonstrations_is_zeroshot(tmp_path):
    reference = run(lm_config(tmp_path / "zs", method="zeroshot", **{"scenario.test_size": 8, "scenario.control_size": 8}))
    result = run(lm_config(tmp_path / "icl", method="icl", **{"scenario.test_size": 8, "scenario.control_size": 8, "method.k": 0}))
    assert result.acc_matrix == reference.acc_matrix and result.control_matrix == reference.control_matrix
