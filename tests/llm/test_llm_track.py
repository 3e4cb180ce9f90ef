"""The language-model track on the shipped tiny-lm: the backbone's contract, methods, streams, runs."""

from __future__ import annotations

import json
import re

import pytest
import torch
from lm_toys import fake_trace, lm_config, tiny_lm
from toys import interrupt_at_second_task

from cl_bench import RunConfig, TextTask, UserError, assemble_text_stream, plan, run
from cl_bench.backbones.causal_lm import IGNORE, PAD
from cl_bench.config.registry import Registry
from cl_bench.results.schema import run_settings
from cl_bench.results.validation import validate

EXAMPLES = [
    {"prompt": "Repeat: red blue green\nAnswer:", "answer": " red blue green"},
    {"prompt": "Q:", "answer": " 7"},
    {"prompt": "Reverse the words: one two three four five\nAnswer:", "answer": " five four three two one"},
]


@pytest.fixture(scope="module")
def registry():
    return Registry()


# ------------------------------------------------------------------------------------ the backbone


def test_training_rows_label_the_answer_and_eos_only():
    model = tiny_lm()
    ids, labels = model.encode_examples(EXAMPLES, "train")
    for row, example in enumerate(EXAMPLES):
        answer = model.tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [model.eos]
        prompt = model.tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        kept = labels[row][labels[row] != IGNORE].tolist()
        assert kept == answer  # the answer and EOS, nothing of BOS or the prompt
        real = ids[row][ids[row] != PAD].tolist()
        assert real == [model.bos_id] + prompt + answer  # (prompt + answer tokenise here as the two apart)
        assert (ids[row][: ids.shape[1] - len(real)] == PAD).all()  # left padding
    prompts, _ = model.encode_examples(EXAMPLES, "test")
    assert prompts[1][prompts[1] != PAD].tolist() == [model.bos_id] + model.tokenizer("Q:", add_special_tokens=False)["input_ids"]


def test_the_loss_is_the_cross_entropy_of_the_answer_tokens_alone():
    model = tiny_lm()
    model.train()
    ids, labels = model.encode_examples(EXAMPLES, "train")
    logits = model(ids)
    means = []
    for row in range(len(EXAMPLES)):
        total, count = 0.0, 0
        for position in range(ids.shape[1] - 1):
            target = int(labels[row, position + 1])
            if target != IGNORE:
                total -= float(torch.log_softmax(logits[row, position].double(), -1)[target])
                count += 1
        means.append(total / count)
    assert float(model.loss(logits, labels)) == pytest.approx(sum(means) / len(means), rel=1e-5)  # each example's mean, averaged
    # a different prompt changes the logits, but a prompt token's own prediction never enters the loss
    leaf = logits.detach().requires_grad_(True)
    model.loss(leaf, labels).backward()
    grad_rows = leaf.grad.abs().sum(-1)
    predicts_answer = torch.zeros_like(labels, dtype=torch.bool)
    predicts_answer[:, :-1] = labels[:, 1:] != IGNORE
    assert (grad_rows[~predicts_answer] == 0).all() and (grad_rows[predicts_answer] > 0).all()


def test_padding_changes_nothing_in_training_or_decoding():
    model = tiny_lm()
    model.train()
    ids, labels = model.encode_examples(EXAMPLES, "train")
    batched = model(ids)
    for row, example in enumerate(EXAMPLES):
        alone, _ = model.encode_examples([example], "train")
        # float32 logits of size ~20 from differently shaped matmuls differ by a few ulps (~1e-5)
        assert torch.allclose(model(alone)[0], batched[row, -alone.shape[1] :], rtol=0, atol=1e-4)
    model.eval()
    model.decoding = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}  # TRACE's decoding
    prompts, _ = model.encode_examples(EXAMPLES, "test")
    together = model.generate(prompts, 12)
    one_by_one = torch.cat([model.generate(model.encode_examples([e], "test")[0], 12) for e in EXAMPLES])
    assert torch.equal(together, one_by_one)
    assert torch.equal(model.generate(prompts, 12), together)  # greedy: the same every time
    assert together.shape == (3, 12) and (together != PAD).any()


def test_layers_are_chosen_by_kind_or_by_attribute_name():
    model = tiny_lm()
    blocks = len(model.decoder_blocks())
    layers = model.adaptable_layers(("decoder",), ("q", "out", "down_proj"))
    assert len(layers) == 3 * blocks and {layer.kind for layer in layers} == {"q", "out", "down_proj"}
    assert all(isinstance(layer.module, torch.nn.Linear) for layer in layers)
    with pytest.raises(UserError, match="not a Linear of tiny-lm's decoder blocks; choose from q, k, v, out, gate, up, down"):
        model.adaptable_layers(("decoder",), ("fc",))
    with pytest.raises(UserError, match="its one tower is 'decoder'"):
        model.adaptable_layers(("image",), ("q",))


@pytest.mark.parametrize("method", ["seq-lora", "moram", "mora", "o-lora"])
def test_adapted_models_equal_the_base_model_before_training(registry, method):
    from cl_bench.running.plan import build_method

    model = tiny_lm(registry)
    model.train()
    ids, _ = model.encode_examples(EXAMPLES, "train")
    before = model(ids).detach()
    planned = plan(RunConfig(method=method, scenario="embedded-instruct", backbone="tiny-lm", out="unused"), registry)
    algorithm = build_method(planned.method)
    stream = _tiny_stream(model)
    algorithm.setup(model, stream)
    algorithm.before_experience(model, stream.experience(0))
    assert torch.allclose(model(ids), before, atol=1e-6)
    assert all(p.requires_grad for p in algorithm.trainable_parameters(model))


def _tiny_stream(model, tasks: int = 2):
    records = [TextTask(f"t{i}", "accuracy", 4, EXAMPLES, EXAMPLES) for i in range(tasks)]
    return assemble_text_stream("tiny", "1", records, controls=[TextTask("c", "accuracy", 4, (), EXAMPLES[:2])], encode_examples=model.encode_examples)


def test_a_text_stream_refuses_bad_records():
    model = tiny_lm()
    with pytest.raises(ValueError, match="needs training and test examples"):
        assemble_text_stream("s", "1", [TextTask("t", "accuracy", 4, (), EXAMPLES)], encode_examples=model.encode_examples)
    with pytest.raises(ValueError, match="string 'prompt' and 'answer'"):
        assemble_text_stream("s", "1", [TextTask("t", "accuracy", 4, [{"prompt": "x", "answer": 3}], EXAMPLES)], encode_examples=model.encode_examples)
    with pytest.raises(ValueError, match="needs a backbone with a tokenizer"):
        assemble_text_stream("s", "1", [TextTask("t", "accuracy", 4, EXAMPLES, EXAMPLES)], encode_examples=None)
    stream = _tiny_stream(model)
    assert stream.protocol == "instruct" and stream.kind == "generation" and stream.label_space(1, 0) == []
    assert stream.test_sizes() == [3, 3] and stream.describe()["scorers"] == ["accuracy", "accuracy"]


# ------------------------------------------------------------------------------------ plans


def test_hyper_parameters_follow_the_backbone_kind_and_leave_clip_runs_alone(registry):
    lm = plan(RunConfig(method="moram", scenario="embedded-instruct", backbone="tiny-lm", out="unused"), registry).hparams
    assert (lm["temperature"], lm["alpha"], lm["towers"], lm["layers"], lm["schedule"]) == (0.03, 16.0, ["decoder"], ["q", "k", "v", "out"], "constant")
    clip = plan(RunConfig(method="moram", scenario="embedded-mtil", backbone="tiny-clip", out="unused"), registry).hparams
    assert "alpha" not in clip and "schedule" not in clip and clip["temperature"] == 0.01
    # a published CLIP run keeps its run id: the LLM track added nothing to its plan
    from pathlib import Path

    published = json.loads(next((Path(__file__).parents[2] / "leaderboard" / "results" / "embedded-mtil" / "moram").glob("*seed0*.json")).read_text())
    again = plan(RunConfig(**{k: v for k, v in run_settings(published).items() if k not in ("out",)}, out="unused"), registry)
    assert again.run_id == published["run_id"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbone": "tiny-clip"}, "backbone 'tiny-clip' cannot be scored under the instruct protocol of 'embedded-instruct'; use --backbone hf-causal-lm or tiny-lm"),
        ({"method": "moe-lora"}, "method 'moe-lora' does not run on causal-lm backbones like 'tiny-lm'"),
        ({"scenario": "embedded-mtil"}, "backbone 'tiny-lm' cannot be scored under the mtil protocol"),
        ({"method.schedule": "linear"}, "method.schedule must be one of cosine, constant"),
        ({"backbone": "hf-causal-lm"}, "--pretrained must name a local Hugging Face model folder"),
    ],
)
def test_pairs_that_cannot_run_are_refused_in_one_line(registry, tmp_path, settings, message):
    config = RunConfig(method="moram", scenario="embedded-instruct", backbone="tiny-lm", out=str(tmp_path))
    for key, value in settings.items():
        config.set(key, value)
    with pytest.raises(UserError, match=re.escape(message)):
        plan(config, registry)


# ------------------------------------------------------------------------------------ runs


@pytest.mark.slow
def test_a_two_task_run_writes_a_valid_result_with_trace_metrics(tmp_path):
    result = run(lm_config(tmp_path, method="seq-lora", iters=30))
    data = json.loads(result.path.read_text())
    validate(data)
    assert data["scenario"]["protocol"] == "instruct" and len(data["acc_matrix"]) == 3 and len(data["control_matrix"][0]) == 1
    assert data["scenario"]["test_sizes"] == [16, 16] and len(data["scenario"]["scorers"]) == 2
    acc = data["acc_matrix"]
    assert data["metrics"]["op"] == pytest.approx(sum(acc[2]) / 2)
    assert data["metrics"]["trace_bwt"] == pytest.approx(min(acc[2][0] - acc[1][0], 0.0) / 2)
    assert acc[1][0] > acc[0][0] + 20  # thirty steps of LoRA on the first task teach it
    assert all(0.0 <= v <= 100.0 for row in acc for v in row)
    from cl_bench.publish.report import format_run, render_report

    printed = format_run(data)
    assert f"({data['scenario']['scorers'][0]})" in printed and "score %" in printed and "trace_bwt" in printed
    report = render_report([data], "md")
    header = next(line for line in report.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:4] == ["method", "seeds", "op", "trace_bwt"]
    assert [c for c in columns if "(" in c] == [f"{t} ({s})" for t, s in zip(data["scenario"]["task_order"], data["scenario"]["scorers"])]
    # publish: the text stream gets its own table, and an edited op is refused
    from cl_bench.cli import main

    board = tmp_path / "board"
    board.mkdir()
    assert main(["publish", str(result.path), "--leaderboard", str(board)]) == 0
    page = (board / "README.md").read_text(encoding="utf-8")
    assert "## embedded-instruct (v2, instruct" in page and "| seq-lora" in page and "trace_bwt" in page
    data["metrics"]["op"] += 1.0
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="metric 'op' is"):
        validate(json.loads(tampered.read_text()))


def test_zeroshot_on_tiny_lm_repeats_row_zero(tmp_path):
    result = run(lm_config(tmp_path, method="zeroshot"))
    assert result.acc_matrix[1] == result.acc_matrix[0] == result.acc_matrix[2]
    assert result.metrics["trace_bwt"] == 0.0 and result.metrics["zs_retention"] == 1.0
    # every text cell keeps each example's score, and the cell is their mean (validate recomputes it)
    sizes, outcomes = result.data["scenario"]["test_sizes"], result.data["outcomes"]
    assert all(isinstance(cell, list) and len(cell) == n for row in outcomes["acc"] for cell, n in zip(row, sizes))
    assert all(isinstance(cell, list) for row in outcomes["control"] for cell in row)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moram", "o-lora", "eblora", "finetune", "l2p", "dualprompt", "icl", "hide-lora", "treelora"])
def test_a_resumed_lm_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, method):
    whole = run(lm_config(tmp_path / "whole", method=method, iters=4))
    interrupt_at_second_task(monkeypatch, lambda: run(lm_config(tmp_path / "split", method=method, iters=4)))
    resumed = run(lm_config(tmp_path / "split", method=method, iters=4, resume=True))
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed.metrics == whole.metrics


# ------------------------------------------------------------------------------------ TRACE layout


def test_trace_reads_the_trace_layout_with_its_scorers_and_decoding(tmp_path):
    fake_trace(tmp_path / "data")
    config = lm_config(tmp_path / "out", method="seq-lora", iters=2, scenario="trace", data_root=str(tmp_path / "data"))
    config.scenario_params = {"order": "C-STANCE,Py150"}
    data = run(config).data
    scenario = data["scenario"]
    assert scenario["task_order"] == ["C-STANCE", "Py150"] and scenario["scorers"] == ["choice", "fuzzy"]  # MoRAM's (the default setting)
    assert scenario["decoding"] == {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3} and scenario["params"]["setting"] == "moram"
    assert scenario["test_sizes"] == [6, 6] and len(scenario["data"]["files"]["C-STANCE/train.json"]["sha256"]) == 64
    assert "C-STANCE/labels.json" in scenario["data"]["files"] and "Py150/labels.json" not in scenario["data"]["files"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "Py150" / "train.json").unlink(), "Py150/train.json is missing"),
        (lambda root: (root / "Py150" / "test.json").write_text("{not json", encoding="utf-8"), "Py150/test.json is not a JSON file"),
        (lambda root: (root / "Py150" / "test.json").write_text('[{"prompt": 1}]', encoding="utf-8"), "item 0 is not an object with string 'prompt' and 'answer'"),
        (lambda root: (root / "C-STANCE" / "labels.json").write_bytes(b"\xff\xfe"), "C-STANCE/labels.json is not a JSON file"),
    ],
)
def test_a_damaged_trace_root_is_a_one_line_error(tmp_path, damage, message):
    fake_trace(tmp_path / "data")
    damage(tmp_path / "data")
    config = lm_config(tmp_path / "out", method="seq-lora", iters=1, scenario="trace", data_root=str(tmp_path / "data"))
    config.scenario_params = {"order": "C-STANCE,Py150"}
    with pytest.raises(UserError, match=message):
        run(config)
    assert not (tmp_path / "out").exists()


def test_trace_names_unknown_tasks_with_a_suggestion(registry, tmp_path):
    config = lm_config(tmp_path, scenario="trace", data_root=str(tmp_path))
    config.scenario_params = {"order": "C-STANCE,Py15"}
    with pytest.raises(UserError, match="did you mean 'Py150'"):
        plan(config, registry)


# ------------------------------------------------------------------------------------ layers


def test_moram_freezes_a_tasks_b_scaled_by_alpha_over_r_unless_told_to_copy_it_unscaled():
    from cl_bench.methods.moram import RankOneMemoryLinear

    x = torch.randn(5, 16)
    for freeze_scaled, kept in ((True, 2.0), (False, 1.0)):
        torch.manual_seed(1)
        layer = RankOneMemoryLinear(torch.nn.Linear(16, 8), rank=4, topk=8, temperature=0.03, threshold=0.0, new_scale=2.0, freeze_scaled=freeze_scaled)
        layer.add_task()
        with torch.no_grad():
            layer.new_B.normal_()
        trained_B = layer.new_B.detach().clone()
        # in training the block acts with 2 B (alpha / r = 2): the same output as a layer holding 2 B unscaled
        twin = RankOneMemoryLinear(layer.base, rank=4, topk=8, temperature=0.03, threshold=0.0)
        twin.add_task()
        with torch.no_grad():
            twin.new_A.copy_(layer.new_A)
            twin.new_B.copy_(2.0 * trained_B)
        assert torch.allclose(layer(x), twin(x), atol=1e-6)
        layer.add_task()
        assert torch.equal(layer.frozen_B, kept * trained_B)  # the official TRACE code keeps B unscaled


def test_o_lora_penalises_overlap_with_earlier_tasks_and_freezes_them():
    from cl_bench.methods.o_lora.layer import OLoRA

    model = tiny_lm()
    stream = _tiny_stream(model)
    method = OLoRA({"rank": 2, "alpha": 4.0, "orth_weight": 0.5, "l2_weight": 0.0, "layers": ["q"], "towers": ["decoder"], "lr": 1e-3, "weight_decay": 0.0})
    method.setup(model, stream)
    method.before_experience(model, stream.experience(0))
    assert method.extra_loss(model, None, None) is None  # no earlier task: nothing to be orthogonal to
    with torch.no_grad():
        for layer in method.layers:
            layer.new_B.normal_()
    method.before_experience(model, stream.experience(1))
    first = method.layers[0]
    assert first.old_A.shape == (2, first.base.in_features) and not first.old_A.requires_grad
    by_hand = sum(float((layer.old_A @ layer.new_A.t()).abs().sum().detach()) for layer in method.layers)
    assert float(method.extra_loss(model, None, None).detach()) == pytest.approx(0.5 * by_hand, rel=1e-5)
    assert {id(p) for p in method.trainable_parameters(model)} == {id(p) for layer in method.layers for p in (layer.new_A, layer.new_B)}


# ------------------------------------------------------------------------------------ accumulation


def _first_step(tmp_path, registry, method, **settings):
    """The gradients of the first training step (left in .grad: the next step would clear them) and the parameters after it."""
    from cl_bench import build

    config = lm_config(tmp_path, method=method, iters=1, **{"method.batch_size": 8, **settings})
    parts = build(plan(config, registry))
    parts.strategy.train(parts.stream.benchmark.train_stream[0])
    return [p.grad.clone() for p in parts.strategy.trainable], [p.detach().clone() for p in parts.strategy.trainable]


@pytest.mark.parametrize("method", ["seq-lora", "moram"])
def test_gradient_accumulation_takes_the_step_of_the_whole_batch(registry, tmp_path, method, monkeypatch):
    # each example's mean loss counts the same, so the mean of the micro-batches' means is the whole
    # batch's; dropout is off, as each micro-batch would draw its own masks
    whole, after_whole = _first_step(tmp_path / "a", registry, method, **{"method.dropout": 0.0})
    calls = []
    forward = type(tiny_lm()).forward
    monkeypatch.setattr(type(tiny_lm()), "forward", lambda self, ids: calls.append(ids.shape[0]) or forward(self, ids))
    accumulated, after_accumulated = _first_step(tmp_path / "b", registry, method, **{"method.grad_accum": 4, "method.dropout": 0.0})
    assert calls == [2] * 4  # four micro-batches of two rows, one at a time in memory
    assert any(float(g.abs().sum()) > 0 for g in whole)
    for a, b in zip(whole, accumulated):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(after_whole, after_accumulated):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_grad_accum_must_divide_the_batch(registry, tmp_path):
    with pytest.raises(UserError, match="method.batch_size 8 must be a multiple of method.grad_accum 3"):
        plan(lm_config(tmp_path, method="seq-lora", **{"method.batch_size": 8, "method.grad_accum": 3}), registry)
