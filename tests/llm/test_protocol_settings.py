"""TRACE's protocol as MoRAM's code and the original TRACE code run it (docs/language-models.md,
"TRACE protocol settings"): the two settings of the instruct streams, TRACE's truncation, the
per-example loss, sampled decoding, and the baselines' language-model settings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from lm_toys import fake_trace, lm_config, tiny_lm

from cl_bench import RunConfig, UserError, plan
from cl_bench.backbones.causal_lm import IGNORE, PAD, CausalLM
from cl_bench.contracts.model import TaskContext
from cl_bench.contracts.specs import ScenarioContext
from cl_bench.results.schema import run_settings


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def small(model, prompt_tokens=8, answer_tokens=4):
    """The shipped tiny-lm with limits small enough to truncate short texts."""
    return CausalLM(model.lm, model.tokenizer, name="tiny-lm", max_prompt_tokens=prompt_tokens, max_answer_tokens=answer_tokens)


PROMPT = "the council voted to open the park and the bus depot\n"  # 13 tokens in tiny-lm's BPE
ANSWER = "open park"  # 4 tokens


# ------------------------------------------------------------------------------------ truncation


def test_training_rows_are_one_tokenisation_cut_from_the_left_as_trace_s_collator(lm):
    model = small(lm)  # a training sequence holds at most 8 + 4 = 12 tokens
    p, a = model._ids(PROMPT), model._ids(ANSWER)
    assert model._ids(PROMPT + ANSWER) == p + a and len(p) == 13 and len(a) == 4  # the case's premise
    bos, eos = model.bos_id, model.eos
    cases = {
        # long: the last 12 of the 17 tokens of prompt + answer, no EOS, no BOS (nothing is added at
        # the limit); the labels are the last len(answer) + 1 = 5 positions: one prompt token and the answer
        PROMPT: ((p + a)[-12:], [p[-1]] + a),
        # short: EOS, then BOS, while under the limit; labels: the answer and EOS
        "go\n": ([bos] + model._ids("go\n" + ANSWER) + [eos], a + [eos]),
    }
    for prompt, (row, labelled) in cases.items():
        ids, labels = model.encode_examples([{"prompt": prompt, "answer": ANSWER}], "train")
        assert ids[0][ids[0] != PAD].tolist() == row
        assert labels[0][labels[0] != IGNORE].tolist() == labelled
    # seven prompt tokens + answer = 11: EOS makes 12, so no room for BOS
    seven = model.tokenizer.decode(p[:7])
    assert model._ids(seven) == p[:7] and model._ids(seven + ANSWER) == p[:7] + a
    ids, _ = model.encode_examples([{"prompt": seven, "answer": ANSWER}], "train")
    assert ids[0].tolist() == p[:7] + a + [eos]


def test_prompts_keep_their_end_and_get_bos_only_under_the_limit(lm):
    model = small(lm)
    p = model._ids(PROMPT)
    ids, _ = model.encode_examples([{"prompt": PROMPT, "answer": ANSWER}, {"prompt": "go\n", "answer": ANSWER}], "test")
    assert ids[0].tolist() == p[-8:]  # cut to 8: no BOS
    assert ids[1][ids[1] != PAD].tolist() == [model.bos_id] + model._ids("go\n")


def test_moram_s_meetingbank_prompts_keep_their_start(lm):
    model = small(lm)
    p, a = model._ids(PROMPT), model._ids(ANSWER)
    bos, eos = model.bos_id, model.eos
    # inference: the first 8 tokens (no BOS at the limit); with the task's own limit of 30, all 13 and BOS
    ids, _ = model.encode_examples([{"prompt": PROMPT, "answer": ANSWER}], "test", keep_prompt_start=True)
    assert ids[0].tolist() == p[:8]
    ids, _ = model.encode_examples([{"prompt": PROMPT, "answer": ANSWER}], "test", max_prompt_tokens=30, keep_prompt_start=True)
    assert ids[0].tolist() == [bos] + p
    # training (data_collator.py:96-137): limit 8 + 4 = 12; the answer with EOS (5 tokens) at the
    # end, BOS first, and the prompt's first 12 - 1 - 5 = 6 tokens between
    ids, labels = model.encode_examples([{"prompt": PROMPT, "answer": ANSWER}], "train", keep_prompt_start=True)
    assert ids[0].tolist() == [bos] + p[:6] + a + [eos]
    assert labels[0][labels[0] != IGNORE].tolist() == a + [eos]


# ------------------------------------------------------------------------------------ the loss


def test_the_loss_weighs_every_example_the_same_worked_out_by_hand(lm):
    # Two examples over a vocabulary of 2, every logit row (ln 3, 0): p(0) = 3/4, p(1) = 1/4, so a
    # token costs ln(4/3) if it is 0 and ln 4 if it is 1. Example A labels 0, 0, 1 (three tokens),
    # example B labels 1 (one token).
    logits = torch.tensor([math.log(3.0), 0.0]).expand(2, 5, 2).clone().requires_grad_(True)
    targets = torch.tensor([[IGNORE, IGNORE, 0, 0, 1], [IGNORE, IGNORE, IGNORE, IGNORE, 1]])
    a = (2 * math.log(4 / 3) + math.log(4)) / 3
    b = math.log(4)
    model = small(lm)
    assert float(model.loss(logits, targets).detach()) == pytest.approx((a + b) / 2, rel=1e-6)  # the mean of example means
    model.loss_weighting = "token"
    assert float(model.loss(logits, targets).detach()) == pytest.approx((2 * math.log(4 / 3) + 2 * math.log(4)) / 4, rel=1e-6)  # pooled tokens
    # so micro-batches of one example each give the whole batch's loss, whatever the answer lengths
    model.loss_weighting = "example"
    halves = (model.loss(logits[:1], targets[:1]) + model.loss(logits[1:], targets[1:])) / 2
    assert float(halves.detach()) == pytest.approx(float(model.loss(logits, targets).detach()), rel=1e-6)


def test_the_language_models_default_to_the_per_example_loss(registry):
    for name in ("tiny-lm", "hf-causal-lm"):
        assert registry.backbones()[name].defaults["loss_weighting"] == "example"
    with pytest.raises(UserError, match="backbone.loss_weighting must be example or token"):
        CausalLM(tiny_lm().lm, tiny_lm().tokenizer, name="x", loss_weighting="tokens")


# ------------------------------------------------------------------------------------ settings


def embedded(lm, setting):
    from cl_bench.scenarios.instruct import EMBEDDED_DEFAULTS, build_embedded, check_embedded

    params = {**EMBEDDED_DEFAULTS, "train_size": 4, "test_size": 2, "control_size": 2, "setting": setting}
    check_embedded(params)
    return build_embedded(params, ScenarioContext(None, None, lm.encode_examples))


def test_the_two_settings_of_embedded_instruct(lm):
    moram = embedded(lm, "moram").describe()
    assert moram["scorers"] == ["choice", "rouge-l", "fuzzy", "sari"] and moram["control_scorers"] == ["accuracy"]
    assert moram["decoding"] == {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}
    assert moram["data"]["long_prompts"] == {"meeting": {"max_prompt_tokens": 4096, "keep_prompt_start": True}}
    trace = embedded(lm, "trace").describe()
    assert trace["scorers"] == ["exact", "rouge-l-trace", "fuzzy-difflib", "sari"] and trace["control_scorers"] == ["accuracy"]
    assert trace["decoding"] == {"do_sample": True, "temperature": 0.1, "top_k": 50, "top_p": 1.0}
    assert "long_prompts" not in trace["data"] and trace["params"]["setting"] == "trace"


def test_the_trace_stream_under_the_original_trace_setting(tmp_path):
    fake_trace(tmp_path / "data", tasks=("C-STANCE", "MeetingBank", "NumGLUE-cm"))
    config = lm_config(tmp_path / "out", method="zeroshot", scenario="trace", data_root=str(tmp_path / "data"))
    config.scenario_params = {"order": "C-STANCE,MeetingBank,NumGLUE-cm", "setting": "trace", "test_size": 2}
    from cl_bench import run

    scenario = run(config).data["scenario"]
    assert scenario["scorers"] == ["exact", "rouge-l-trace", "exact"] and scenario["decoding"]["do_sample"] is True
    assert scenario["version"] == "2" and scenario["params"]["setting"] == "trace"


@pytest.mark.parametrize(
    ("scenario", "settings", "message"),
    [
        ("embedded-instruct", {"setting": "moran"}, "unknown protocol setting 'moran'; did you mean 'moram'?"),
        ("trace", {"setting": "TRACE"}, "unknown protocol setting 'TRACE'"),
        ("trace", {"setting": "trace", "repetition_penalty": 1.0}, "scenario.repetition_penalty is the moram setting's greedy decoding"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(registry, tmp_path, scenario, settings, message):
    config = lm_config(tmp_path, scenario=scenario, data_root=str(tmp_path))
    config.scenario_params = {k: v for k, v in config.scenario_params.items() if scenario == "embedded-instruct"} | settings
    with pytest.raises(UserError, match=re.escape(message)):
        plan(config, registry)


# ------------------------------------------------------------------------------------ decoding


def test_sampled_decoding_is_seeded_by_the_cell_and_leaves_the_global_generator_alone(lm):
    model = small(lm, 64, 8)
    model.eval()
    model.decoding = {"do_sample": True, "temperature": 5.0, "top_k": 50, "top_p": 1.0}  # hot: samples differ by seed
    prompts, _ = model.encode_examples([{"prompt": "copy: red cat\n", "answer": ""}] * 4, "test")

    def sample(seed):
        model.set_task_context(TaskContext("test", 0, "t", (), seed))
        return model.generate(prompts, 6)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample(7)
    assert torch.equal(torch.get_rng_state(), state)  # training's random draws are not moved
    assert torch.equal(sample(7), first) and not torch.equal(sample(8), first)
    model.set_task_context(TaskContext("test", 0, "t", (), 7))
    model.generate(prompts, 6)
    assert not torch.equal(model.generate(prompts, 6), first)  # the next batch of a cell draws anew


def test_every_cell_gets_its_own_seed_from_the_run_seed_the_row_and_the_cell(registry, tmp_path):
    from cl_bench import build
    from cl_bench.running.evaluation import evaluate_row

    parts = build(plan(lm_config(tmp_path, method="zeroshot", **{"scenario.test_size": 2, "scenario.control_size": 2}), registry))
    seen = []
    original = type(parts.model).set_task_context
    type(parts.model).set_task_context = lambda self, context: seen.append(context.seed) or original(self, context)
    try:
        evaluate_row(parts.strategy, parts.matrix, 1)
    finally:
        type(parts.model).set_task_context = original
    assert len(seen) == 3 and len(set(seen)) == 3 and all(isinstance(s, int) for s in seen)


# ------------------------------------------------------------------------------------ method settings


def hparams(registry, method, backbone="tiny-lm", scenario="embedded-instruct"):
    return plan(RunConfig(method=method, scenario=scenario, backbone=backbone, out="unused"), registry).hparams


def resolve_on_any_lm(registry, method):
    """A method's hyper-parameters on a language model without a profile (hf-causal-lm's)."""
    backbone = registry.backbones()["hf-causal-lm"]
    return registry.methods()[method].resolve("hf-causal-lm", {}, "causal-lm", backbone.method_defaults)


def test_baselines_take_moram_s_trace_settings_on_language_models(registry):
    seq = resolve_on_any_lm(registry, "seq-lora")
    assert (seq["rank"], seq["alpha"], seq["dropout"], seq["betas"], seq["lr"], seq["schedule"]) == (8, 32.0, 0.1, [0.9, 0.95], 1e-4, "constant")
    olora = resolve_on_any_lm(registry, "o-lora")
    assert (olora["alpha"], olora["dropout"], olora["lr"]) == (32.0, 0.1, 1e-4)
    moram = resolve_on_any_lm(registry, "moram")
    assert (moram["dropout"], moram["lr"], moram["alpha"]) == (0.1, 5e-4, 16.0)
    fine = resolve_on_any_lm(registry, "finetune")
    assert (fine["lr"], fine["betas"], fine["towers"]) == (1e-5, [0.9, 0.95], "decoder")
    assert hparams(registry, "seq-lora")["lr"] == 3e-3  # tiny-lm keeps its profile


def test_the_adapters_get_dropout_on_language_models_only(registry):
    from cl_bench.running.plan import build_method

    model = tiny_lm(registry)
    for method in ("seq-lora", "o-lora", "moram"):
        model = tiny_lm(registry)
        algorithm = build_method(plan(RunConfig(method=method, scenario="embedded-instruct", backbone="tiny-lm", out="unused"), registry).method)
        algorithm.setup(model, None)
        rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates == {0.1}, method
    optimizer = build_method(plan(RunConfig(method="seq-lora", scenario="embedded-instruct", backbone="tiny-lm", out="unused"), registry).method).make_optimizer(
        [torch.nn.Parameter(torch.zeros(1))], {"lr": 1e-4, "weight_decay": 0.0}
    )
    assert optimizer.defaults["betas"] == (0.9, 0.95)


@pytest.mark.parametrize(("stream", "method"), [("embedded-mtil", "seq-lora"), ("embedded-cil", "seq-lora"), ("embedded-mtil", "finetune"), ("embedded-cil", "moram")])
def test_clip_runs_keep_their_hyper_parameters_and_run_ids(registry, stream, method):
    published = json.loads(next((Path(__file__).parents[2] / "leaderboard" / "results" / stream / method).glob("*seed0*.json")).read_text())
    again = plan(RunConfig(**{k: v for k, v in run_settings(published).items() if k != "out"}, out="unused"), registry)
    assert again.run_id == published["run_id"] and again.hparams == published["method"]["hyperparameters"]
    assert "dropout" not in again.hparams and "betas" not in again.hparams


def test_o_lora_on_clip_is_unchanged(registry):
    clip = hparams(registry, "o-lora", backbone="tiny-clip", scenario="embedded-mtil")
    assert "dropout" not in clip and clip["lr"] == 2e-3 and clip["alpha"] == 32.0


def test_moram_s_memory_dropout_equals_the_reference_formulation_with_the_same_mask():
    from cl_bench.methods.moram import RankOneMemoryLinear

    torch.manual_seed(0)
    layer = RankOneMemoryLinear(torch.nn.Linear(16, 8), rank=4, topk=3, temperature=0.1, threshold=0.0, dropout=0.5)
    layer.add_task()
    with torch.no_grad():
        layer.new_B.normal_()
    layer.add_task()  # frozen atoms and new ones
    with torch.no_grad():
        layer.new_B.normal_()
    layer.train()
    x = torch.randn(6, 16, requires_grad=True)
    torch.manual_seed(5)
    fused = layer(x)
    fused.square().sum().backward()
    fused_grads = [t.grad.clone() for t in (x, layer.new_A, layer.new_B)]
    for t in (x, layer.new_A, layer.new_B):
        t.grad = None
    torch.manual_seed(5)  # the same dropout mask
    dropped = layer.memory_dropout(x)
    reference = layer.base(x) + torch.nn.functional.linear(layer.weighted_projection(torch.nn.functional.linear(dropped, layer.atoms_A())), layer.atoms_B())
    reference.square().sum().backward()
    assert torch.allclose(fused, reference, atol=1e-5)
    for got, want in zip(fused_grads, (x.grad, layer.new_A.grad, layer.new_B.grad)):
        assert torch.allclose(got, want, atol=1e-4)
    layer.eval()  # no dropout at evaluation: the same output every time
    assert torch.equal(layer(x), layer(x))
