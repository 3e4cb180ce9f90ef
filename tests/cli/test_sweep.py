"""`clbench sweep`: a grid of child runs that skips complete results and reports failures."""

from __future__ import annotations

import json

import pytest

from cl_bench import RunConfig
from cl_bench.cli import main
from cl_bench.config.registry import Registry
from cl_bench.running.runner import check

pytestmark = [pytest.mark.slow, pytest.mark.cli]  # every sweep runs its grid as `clbench run` children


def test_sweep_runs_the_grid_skips_complete_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "2", "--out", str(out), "--jobs", "2", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "2 runs: 2 ran, 0 already complete, 0 failed" in captured.err
    assert "embedded-dil (v1, domain-il)" in captured.out and "seq-lora" in captured.out and "zeroshot" in captured.out
    results = sorted(out.glob("*.json"))
    assert len(results) == 2 and all(json.loads(p.read_text())["status"] == "complete" for p in results)
    assert json.loads(results[0].read_text())["method"]["hyperparameters"]["iters"] == 2

    assert sorted((out / "logs").glob("*.config.json"))  # the children's configurations, beside their logs
    # the README's next steps read the sweep's folder as it is: its logs/ are not results
    assert main(["report", str(out)]) == 0 and "seq-lora" in capsys.readouterr().out
    assert main(["publish", str(out), "--leaderboard", str(tmp_path / "board")]) == 0
    assert "published 2 result(s)" in capsys.readouterr().out

    stamps = {p: p.stat().st_mtime_ns for p in results}
    assert main(args) == 0  # nothing left to do
    assert "0 ran, 2 already complete" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in results} == stamps

    tampered = next(p for p in results if "seq-lora" in p.name)
    document = json.loads(tampered.read_text())
    document["metrics"]["last"] += 1.0
    tampered.write_text(json.dumps(document))
    assert main(args) == 0  # a result that no longer validates is run again
    assert "1 ran, 1 already complete" in capsys.readouterr().err


def test_a_failing_run_is_reported_with_its_log_and_unknown_names_stop_at_once(tmp_path, capsys):
    out = tmp_path / "sweep"
    failing = ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "1", "--out", str(out), "--quiet"]
    out.mkdir()
    result_path = check(RunConfig(method="seq-lora", scenario="embedded-dil", seed=0, iters=1, out=str(out)), Registry())
    result_path.with_suffix(".ckpt").write_bytes(b"not a checkpoint")  # the child's --resume refuses it
    assert main(failing) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "failed: seq-lora on embedded-dil, seed 0 (log: " in err
    log = next((out / "logs").glob("*.log"))
    assert "cannot be read" in log.read_text()
    assert main([*failing, "--set", "method.rank=0"]) == 2  # a bad setting stops the sweep before any run
    assert "seq-lora on embedded-dil, seed 0: method 'seq-lora': LoRA rank must be at least 1" in capsys.readouterr().err
    assert main(["sweep", "--methods", "seq-lora,mooram", "--scenarios", "embedded-dil", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'mooram'; did you mean 'moram'?" in err[0]


def test_a_setting_for_one_method_applies_to_its_runs_only(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "1", "--set", "seq-lora.rank=2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "sweep: seq-lora's settings rank=2 apply to its 1 run(s)" in capsys.readouterr().err
    documents = {d["method"]["name"]: d for d in (json.loads(p.read_text()) for p in out.glob("*.json"))}
    assert documents["seq-lora"]["method"]["hyperparameters"]["rank"] == 2 and "rank" not in documents["zeroshot"]["method"]["hyperparameters"]
    alone = check(RunConfig(method="seq-lora", scenario="embedded-dil", iters=1, method_params={"rank": "2"}, out=str(out)), Registry())
    assert alone.is_file()  # the same run id as `clbench run --set method.rank=2`: a later sweep or --resume finds it
