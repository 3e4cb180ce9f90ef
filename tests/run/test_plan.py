"""The run plan: every spelling of one run has one id, the id hashes the weights (not their path),
the plan holds typed values after profiles, results record it, and `build` makes the same run twice."""

from __future__ import annotations

import shutil

import pytest
import torch
from toys import ToyPlugin, as_schema_3, result_document, toy_model, toy_plan

from cl_bench import RunConfig, UserError, build, plan
from cl_bench.cli import build_config, build_parser
from cl_bench.results.identity import canonical_json, identity_of_result, run_id_of
from cl_bench.results.validation import validate


def cli_plan(*argv: str, registry):
    return plan(build_config(build_parser().parse_args(["run", *argv])), registry)


def test_every_spelling_of_one_run_has_one_id(tmp_path, registry):
    (tmp_path / "shortcut.toml").write_text('method = "seq-lora"\niters = 50\n[method_params]\nrank = 4\n')
    (tmp_path / "table.yaml").write_text("method: seq-lora\nmethod_params:\n  iters: 50.0\n  rank: 4\n")
    spellings = [
        cli_plan("--method", "seq-lora", "--iters", "50", "--set", "method.rank=4", registry=registry),
        cli_plan("--method", "seq-lora", "--set", "method.iters=50", "--set", "method.rank=4", registry=registry),
        cli_plan("--config", str(tmp_path / "shortcut.toml"), registry=registry),
        cli_plan("--config", str(tmp_path / "table.yaml"), registry=registry),
        # where and how it executes is no part of what it computes
        cli_plan("--method", "seq-lora", "--iters", "50", "--set", "method.rank=4", "--out", str(tmp_path / "elsewhere"), "--threads", "1", "--device", "cpu", "--precision", "fp32", registry=registry),
    ]
    assert len({p.run_id for p in spellings}) == 1
    assert spellings[0].hparams["rank"] == 4 and spellings[0].hparams["iters"] == 50  # typed, not "4"
    assert cli_plan("--method", "seq-lora", "--iters", "51", "--set", "method.rank=4", registry=registry).run_id != spellings[0].run_id
    assert cli_plan("--method", "seq-lora", "--iters", "50", "--set", "method.rank=4", "--precision", "bf16", registry=registry).run_id != spellings[0].run_id


def test_the_id_hashes_the_weights_not_their_path(tmp_path, registry):
    from cl_bench.backbones import tiny_clip

    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(tiny_clip.WEIGHTS_FILE, copy)
    shipped = plan(RunConfig(method="zeroshot"), registry)
    copied = plan(RunConfig(method="zeroshot", pretrained=str(copy)), registry)
    assert shipped.run_id == copied.run_id and copied.weights.path == str(copy)
    assert shipped.weights.sha256 == tiny_clip.read_config()["weights_sha256"]
    edited = bytearray(copy.read_bytes())
    edited[-1] ^= 0xFF
    copy.write_bytes(bytes(edited))
    assert plan(RunConfig(method="zeroshot", pretrained=str(copy)), registry).run_id != shipped.run_id


def test_the_plan_resolves_profiles_and_defaults_once(registry):
    planned = plan(RunConfig(method="moram", scenario="embedded-cil", scenario_params={"tasks": "2"}), registry)
    assert planned.hparams == registry.methods()["moram"].resolve("tiny-clip", {})  # the tiny-clip profile
    assert planned.scenario.params == {"tasks": 2} and planned.num_tasks == 2 and planned.protocol == "class-il"
    assert (planned.device, planned.precision) == ("cpu", "fp32") and planned.threads >= 1
    identity = planned.identity()
    assert "pretrained" not in identity["backbone"]["params"] and identity["backbone"]["weights_sha256"] == planned.weights.sha256
    assert planned.run_id == run_id_of(identity) and planned.run_id.startswith("embedded-cil_moram_tiny-clip_seed0_")
    assert planned.identity_json() == canonical_json(identity)


def test_bad_settings_are_refused_by_the_plan_before_any_work(tmp_path, registry):
    with pytest.raises(UserError, match="method.iters must be at least 1"):
        plan(RunConfig(method="seq-lora", iters=0), registry)
    with pytest.raises(UserError, match="tiny-clip weights .* are missing"):
        plan(RunConfig(pretrained=str(tmp_path / "none.safetensors")), registry)
    with pytest.raises(UserError, match="precision fp16 needs a CUDA device"):
        plan(RunConfig(precision="fp16", device="cpu"), registry)
    assert not any(tmp_path.iterdir())


def test_build_makes_the_same_run_twice_and_results_record_the_plan(tmp_path):
    planned = toy_plan("seq-lora", out=str(tmp_path), iters=2, method__rank=2)
    first, second = build(planned), build(planned)
    assert first.model.state_dict().keys() == second.model.state_dict().keys()
    assert all(torch.equal(v, second.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    assert first.stream.task_classes == second.stream.task_classes
    assert first.backbone_size == sum(p.numel() for p in toy_model().parameters())  # counted before LoRA was added

    from cl_bench import run

    result = run(planned.config, plugins=[ToyPlugin()])
    assert result.path == planned.result_path and result.data["run_id"] == planned.run_id
    # Schema 4 stores no identity: the one derived from the resolved sections is the plan's.
    assert identity_of_result(result.data) == planned.identity() and len(result.data["scenario"]["task_order"]) == 2
    assert "plan" not in result.data and "config" not in result.data and result.data["execution"]["out"] == str(tmp_path)


def test_a_result_whose_plan_or_id_was_edited_is_refused():
    document = result_document([[50.0, 50.0], [80.0, 50.0], [70.0, 90.0]], [[], [], []], hyperparameters={"rank": 4})
    validate(document)
    renamed = {**document, "run_id": document["run_id"][:-1] + ("0" if document["run_id"][-1] != "0" else "1")}
    with pytest.raises(UserError, match="the run's settings hash to"):
        validate(renamed)
    edited = {**document, "method": {**document["method"], "hyperparameters": {"rank": 8}}}
    with pytest.raises(UserError, match="the run's settings hash to"):
        validate(edited)
    older = as_schema_3(document)  # schema 3 stored the identity in its plan: still read and checked
    validate(older)
    with pytest.raises(UserError, match="plan.identity.method.params differ"):
        validate({**older, "method": {**older["method"], "hyperparameters": {"rank": 8}}})
    without = {k: v for k, v in older.items() if k != "plan"}
    with pytest.raises(UserError, match="required field 'plan' is missing"):
        validate(without)
    older = {**without, "schema": "cl_bench.result/2"}  # schema 2 had no plan: still read and re-scored
    validate(older)


def test_the_docs_example_plans_builds_and_trains(capsys):
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    block = page.split("To drive a run yourself", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/plugins.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    run_id, rank, sha = printed[0].split()
    assert printed[1].startswith("last training loss ") and float(printed[1].split()[-1]) > 0  # the last step's, not Avalanche's emptied one
    assert run_id.startswith("embedded-cil_seq-lora_tiny-clip_seed0_") and int(rank) > 0 and len(sha) == 64
