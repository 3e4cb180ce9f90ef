"""`clbench verify` and `clbench publish --remove` on a tiny leaderboard of toy runs."""

from __future__ import annotations

import json

import pytest
from toys import ToyPlugin, snapshot

from cl_bench import RunConfig, run
from cl_bench.cli import main
from cl_bench.config.registry import Registry


@pytest.fixture(scope="module")
def registry():
    return Registry([ToyPlugin()])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, registry) -> list[str]:
    """seq-lora and finetune on the toy stream, two seeds each (two iterations a task)."""
    folder = tmp_path_factory.mktemp("runs")
    files = []
    for method in ("seq-lora", "finetune"):
        for seed in (0, 1):
            config = RunConfig(method=method, scenario="toy", backbone="toy-clip", seed=seed, out=str(folder), progress=False, iters=2, threads=1)
            files.append(str(run(config, registry=registry).path))
    return files


@pytest.fixture
def board(tmp_path, runs, registry, monkeypatch):
    """A fresh leaderboard of those runs; `clbench` finds the toy plugin."""
    import cl_bench.cli

    monkeypatch.setattr(cl_bench.cli, "_registry", lambda: registry)
    folder = tmp_path / "lb"
    assert main(["publish", *runs, "--leaderboard", str(folder)]) == 0
    return folder


def published_ids(folder) -> list[str]:
    return sorted(p.stem for p in (folder / "results").rglob("*.json"))


def test_verify_reruns_a_row_exactly_and_the_page_says_so(board, tmp_path, capsys):
    capsys.readouterr()
    assert main(["verify", str(board), "--sample", "1", "--seed", "3", "--scratch", str(tmp_path / "scratch")]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "exact" in out and "same" in out
    # progress on stderr: which row re-runs, then its verdict (a re-run can take minutes)
    said = captured.err.splitlines()
    assert len(said) == 2 and said[0].startswith("verify: 1/1: re-running ") and ", seed " in said[0] and said[1].startswith("verify: 1/1: exact (largest cell difference 0")
    (row,) = json.loads((board / "verified.json").read_text())["rows"]
    assert row["verdict"] == "exact" and row["largest_cell_difference"] == 0.0 and row["same_machine_kind"] and row["run_id"] in published_ids(board)
    assert row["rerun_run_id"] == row["run_id"] and list((tmp_path / "scratch").rglob("*.json"))  # the repeat is the same run
    readme, page = (board / "README.md").read_text(), (board / "index.html").read_text()
    assert f"Rows last verified on {row['verified'][:10]} with clbench verify (1 re-run" in readme and "Rows last verified on" in page
    assert f"seed {row['seed']}: exact (largest cell difference 0;" in readme


def test_on_another_machine_kind_verify_compares_within_the_interval(board, capsys):
    # the published results say they ran elsewhere (hardware is no part of a run's identity)
    for path in (board / "results").rglob("*.json"):
        data = json.loads(path.read_text())
        data["hardware"]["cpu"] = "Another CPU"
        path.write_text(json.dumps(data))
    assert main(["verify", str(board), "--sample", "5"]) == 0  # more than there are: every row, one seed each
    rows = json.loads((board / "verified.json").read_text())["rows"]
    assert sorted(r["label"] for r in rows) == ["finetune", "seq-lora"] and {r["verdict"] for r in rows} == {"within the interval"} and not any(r["same_machine_kind"] for r in rows)


def test_publish_remove_retracts_a_result_and_its_verification_atomically(board, capsys):
    assert main(["verify", str(board), "--sample", "1"]) == 0
    (row,) = json.loads((board / "verified.json").read_text())["rows"]
    before = published_ids(board)
    assert main(["publish", "--remove", row["run_id"], "--leaderboard", str(board)]) == 0
    assert published_ids(board) == sorted(set(before) - {row["run_id"]})
    assert json.loads((board / "verified.json").read_text())["rows"] == []
    readme = (board / "README.md").read_text()
    assert "No row has been re-run with clbench verify yet." in readme and row["run_id"] not in (board / "index.html").read_text()
    # an unknown run id: one line, exit 2, nothing changed
    state = snapshot(board)
    capsys.readouterr()
    assert main(["publish", "--remove", row["run_id"], "--leaderboard", str(board)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--remove '{row['run_id']}': no result with this run id is published in" in err[0]
    assert snapshot(board) == state
