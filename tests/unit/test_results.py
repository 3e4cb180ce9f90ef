"""Result files: validation catches tampering and malformed files; writes are atomic."""

import copy
import json
import os

import pytest
from toys import result_document

from cl_bench.cli import main
from cl_bench.errors import UserError
from cl_bench.files import write_json
from cl_bench.results.validation import load, load_valid, validate

pytestmark = pytest.mark.unit

ACC = [[20.0, 30.0], [80.0, 35.0], [70.0, 90.0]]
CONTROL = [[60.0], [58.0], [50.0]]


def test_a_consistent_document_is_valid():
    validate(result_document(ACC, CONTROL))
    validate(result_document(ACC[:2], CONTROL[:2], status="partial"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["metrics"].__setitem__("last", d["metrics"]["last"] + 0.5), "metric 'last' is"),
        (lambda d: d["acc_matrix"][2].__setitem__(0, 71.0), "metric 'last' is"),
        (lambda d: d["metrics"].__setitem__("bwt", None), "metric 'bwt' is None"),
        (lambda d: d["metrics"].pop("fwt"), "metrics must be exactly"),
        (lambda d: d.__setitem__("schema", "cl_bench.result/0"), "schema is"),
        (lambda d: d.__setitem__("status", "done"), "status must be"),
        (lambda d: d.pop("timings"), "'timings' is missing"),
        (lambda d: d.__setitem__("seed", "0"), "'seed' must be an integer"),
        (lambda d: d["acc_matrix"].pop(), "a complete run has 3 rows"),
        (lambda d: d["acc_matrix"][1].__setitem__(1, 101.0), "percentages in [0, 100]"),
        (lambda d: d["control_matrix"].pop(), "control_matrix has 2 rows"),
        (lambda d: d["method"].__setitem__("name", "other"), "the run's settings hash to"),
        (lambda d: d["method"].__setitem__("hyperparameters", []), "'method.hyperparameters' must be an object"),
        (lambda d: d["backbone"].__setitem__("weights_sha256", 5), "'backbone.weights_sha256' must be a string or null"),
        (lambda d: d["execution"].pop("out"), "'execution.out' must be a string"),
        (lambda d: d.pop("execution"), "'execution' is missing"),
        (lambda d: d["timings"].__setitem__("experiences", [{"train": "slow"}]), "timings.experiences must be a list of objects"),
        (lambda d: d["timings"].__setitem__("experiences", {"task": 1}), "timings.experiences must be a list of objects"),
        (lambda d: d["params"].__setitem__("trainable", [-1]), "params.trainable must be a list of parameter counts"),
        (lambda d: d["params"].__setitem__("trainable", "all"), "params.trainable must be a list of parameter counts"),
        (lambda d: d["scenario"].__setitem__("control_sets", ["c"]), "scenario.control_sets must hold objects"),
        (lambda d: d["scenario"].__setitem__("task_order", [1, 2]), "scenario.task_order must hold task names"),
        (lambda d: d["timings"].__setitem__("total", "1 s"), "timings.total must be a number"),
        (lambda d: d.__setitem__("status", "partial"), "a partial result carries no metrics"),
    ],
)
def test_tampered_or_malformed_documents_are_rejected(edit, message):
    document = copy.deepcopy(result_document(ACC, CONTROL))
    edit(document)
    with pytest.raises(UserError) as info:
        validate(document, "r.json")
    assert message in str(info.value) and str(info.value).startswith("r.json: ")


def test_files_that_are_not_json_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": NaN}')
    with pytest.raises(UserError, match="not a valid JSON result file"):
        load(bad)
    bad.write_text("{ truncated")
    with pytest.raises(UserError, match="not a valid JSON result file"):
        load(bad)
    with pytest.raises(UserError, match="not found"):
        load(tmp_path / "missing.json")


def test_validate_command_accepts_and_rejects(tmp_path, capsys):
    good = tmp_path / "good.json"
    write_json(good, result_document(ACC, CONTROL))
    assert main(["validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    tampered = json.loads(good.read_text())
    tampered["metrics"]["avg"] = 99.0
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    assert main(["validate", str(tmp_path / "tampered.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metric 'avg' is 99.0" in err and "Traceback" not in err
    assert load_valid(good).metrics["last"] == pytest.approx(80.0)


def test_writes_are_atomic_and_readable_by_others(tmp_path):
    target = tmp_path / "r.json"
    old = os.umask(0o022)
    try:
        write_json(target, {"a": 1})
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError):
        write_json(target, {"a": float("nan")})  # refused before anything replaces the old file
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
