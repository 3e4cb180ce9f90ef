"""What decides a language-model run's numbers decides its run id: every file of a model folder and
every data file a TRACE run reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from llm.test_llm_track import fake_trace, lm_config

from cl_bench import UserError, plan
from cl_bench.cli import main


def trace_plan(tmp_path, root: Path):
    config = lm_config(tmp_path / "out", method="zeroshot", scenario="trace", data_root=str(root))
    config.scenario_params = {"order": "C-STANCE,Py150"}
    return plan(config)


def test_two_trace_roots_with_other_test_answers_get_other_run_ids(tmp_path):
    fake_trace(tmp_path / "a")
    fake_trace(tmp_path / "b")
    assert trace_plan(tmp_path, tmp_path / "a").run_id == trace_plan(tmp_path, tmp_path / "b").run_id  # the same data
    test = tmp_path / "b" / "Py150" / "test.json"
    items = json.loads(test.read_text())
    items[0]["answer"] = "another answer"
    test.write_text(json.dumps(items))
    first, second = trace_plan(tmp_path, tmp_path / "a"), trace_plan(tmp_path, tmp_path / "b")
    assert first.run_id != second.run_id and first.identity()["scenario"]["data_sha256"] != second.identity()["scenario"]["data_sha256"]
    # A file the chosen order does not read changes nothing (eval.json is never read).
    (tmp_path / "a" / "Py150" / "eval.json").write_text("[]")
    assert trace_plan(tmp_path, tmp_path / "a").run_id == first.run_id


def test_a_missing_task_file_is_refused_when_the_run_is_planned(tmp_path):
    fake_trace(tmp_path / "data")
    (tmp_path / "data" / "Py150" / "test.json").unlink()
    with pytest.raises(UserError, match="Py150/test.json is missing; the stream reads it"):
        trace_plan(tmp_path, tmp_path / "data")


def test_ls_reports_an_empty_folder_as_no_trace_data(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fake_trace(tmp_path / "data")
    main(["ls", "--data-root", str(tmp_path / "empty")])
    empty = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trace "))
    main(["ls", "--data-root", str(tmp_path / "data")])
    present = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trace "))
    assert "data: MISSING" in empty and "data: present" in present


def model_plan(tmp_path, folder: Path):
    return plan(lm_config(tmp_path / "out", method="zeroshot", backbone="hf-causal-lm", pretrained=str(folder)))


def test_two_model_folders_differing_only_in_config_get_other_run_ids(tmp_path):
    import cl_bench.backbones.tiny_lm as tiny_lm

    for name in ("a", "b"):
        shutil.copytree(Path(tiny_lm.__file__).parent, tmp_path / name, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    assert model_plan(tmp_path, tmp_path / "a").run_id == model_plan(tmp_path, tmp_path / "b").run_id
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    before = model_plan(tmp_path, tmp_path / "a").run_id
    assert before != model_plan(tmp_path, tmp_path / "b").run_id
    (tmp_path / "a" / ".DS_Store").write_text("finder")  # hidden files decide nothing
    assert model_plan(tmp_path, tmp_path / "a").run_id == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a lone \ud800 surrogate", "its prompt holds a character UTF-8 cannot encode (U+D800 at 7, a lone surrogate)"),
        ("x" * 1_000_001, "its prompt is 1,000,001 characters long, over the 1,000,000"),
    ],
)
def test_text_a_tokenizer_cannot_take_is_one_line_before_any_work(tmp_path, capsys, text, message):
    fake_trace(tmp_path / "data")
    test = tmp_path / "data" / "Py150" / "test.json"
    items = json.loads(test.read_text())
    items[3]["prompt"] = text
    test.write_text(json.dumps(items))  # JSON escapes the surrogate as \ud800: valid JSON, invalid text
    code = main(["run", "--method", "zeroshot", "--backbone", "tiny-lm", "--scenario", "trace", "--data-root", str(tmp_path / "data"), "--set", "scenario.order=C-STANCE,Py150", "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and "task 'Py150', example" in err[0]
    assert not list(tmp_path.rglob(".*.lock"))  # nothing left behind

