"""`--log wandb,mlflow`: the run events reach each tracker's local store, read back with the
library's own reader (MLflow's client; W&B's record protobufs, since wandb has no offline reader)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from cl_bench import LoggerSpec, RunConfig, UserError, hookimpl, run
from cl_bench.cli import main


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One short run with both trackers, offline, into a fresh folder."""
    out = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = run(RunConfig(method="seq-lora", scenario="embedded-dil", iters=1, out=str(out), progress=False, log=["wandb", "mlflow"]))
    return out, result


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB log framing: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # full, or the last piece of a split record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def name(item) -> str:
    """A W&B record item's key (newer clients put it in nested_key)."""
    return item.key or "/".join(item.nested_key)


@pytest.mark.slow
def test_mlflow_holds_the_plan_every_row_the_final_metrics_and_the_result_file(logged):
    from mlflow.tracking import MlflowClient

    out, result = logged
    client = MlflowClient((out / "logs" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("cl_bench")
    (logged_run,) = client.search_runs([experiment.experiment_id])
    assert logged_run.data.tags["cl_bench.run_id"] == result.data["run_id"] and logged_run.data.tags["cl_bench.execution_id"] == result.data["execution_id"]
    assert logged_run.info.run_name == result.data["run_id"] and logged_run.info.status == "FINISHED"
    params = logged_run.data.params
    assert params["method"] == "seq-lora" and params["method.rank"] == str(result.data["method"]["hyperparameters"]["rank"]) and params["method.iters"] == "1"
    for column in range(3):
        history = sorted(client.get_metric_history(logged_run.info.run_id, f"acc/task{column}"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2, 3] and [m.value for m in history] == [row[column] for row in result.acc_matrix]
    assert logged_run.data.metrics["final/last"] == pytest.approx(result.metrics["last"])
    losses = sorted(client.get_metric_history(logged_run.info.run_id, "train/loss"), key=lambda m: m.step)
    iterations = sum(e["iters"] for e in result.data["timings"]["experiences"])
    assert [m.step for m in losses] == list(range(iterations)) and all(m.value > 0 for m in losses)
    (artifact,) = client.list_artifacts(logged_run.info.run_id)
    stored = Path(client.download_artifacts(logged_run.info.run_id, artifact.path, str(out.parent / "downloaded")))
    assert json.loads(stored.read_text()) == result.data


@pytest.mark.slow
def test_wandb_offline_holds_the_plan_every_row_the_final_metrics_and_the_result_file(logged):
    out, result = logged
    (file,) = (out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(file)
    kinds = [r.WhichOneof("record_type") for r in records]
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.run_id == result.data["execution_id"] and run_record.run_group == result.data["run_id"] and run_record.display_name == result.data["run_id"]
    config = {name(item): json.loads(item.value_json) for item in run_record.config.update}
    assert config["plan"]["method"]["hyperparameters"] == result.data["method"]["hyperparameters"]
    rows = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            values = {name(item): json.loads(item.value_json) for item in r.history.item}
            rows[int(values["row"])] = [values[f"acc/task{j}"] for j in range(3)]
    assert [rows[i] for i in range(4)] == result.acc_matrix
    last_losses = [json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item if name(item) == "train/last_loss"]
    assert len(last_losses) == 3 and all(v > 0 for v in last_losses)  # one a trained task
    summary = {name(item): json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert summary["final/last"] == pytest.approx(result.metrics["last"])
    # The result file, beside the tables of each task's loss curve (W&B keeps a logged table as an artifact).
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.name.startswith("result-")]
    assert artifact.name == f"result-{result.data['run_id']}" and [entry.path for entry in artifact.manifest.contents] == [result.path.name]
    assert "exit" in kinds  # the run was finished, not left open


@pytest.mark.slow
def test_tracker_stores_are_not_read_as_results(logged, capsys):
    out, result = logged
    assert main(["report", str(out)]) == 0 and "seq-lora" in capsys.readouterr().out
    assert main(["publish", str(out), "--leaderboard", str(out.parent / "board")]) == 0
    assert "published 1 result(s)" in capsys.readouterr().out


def test_unknown_or_uninstalled_loggers_stop_before_any_work(tmp_path, capsys):
    assert main(["run", "--log", "wandbb", "--quiet", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown logger 'wandbb'; did you mean 'wandb'?" in err[0]

    class Needy:
        @hookimpl
        def cl_bench_loggers(self):
            return [LoggerSpec(name="needy", factory=dict, summary="", requires=("no_such_module_here",), install="needy-tracker")]

    with pytest.raises(UserError, match=r"logger 'needy' needs the no_such_module_here package; install it with: pip install needy-tracker"):
        run(RunConfig(method="zeroshot", scenario="embedded-dil", out=str(tmp_path / "runs"), progress=False, log=["needy"]), plugins=[Needy()])
    assert not (tmp_path / "runs").exists()


class Unreachable:
    """A tracker whose server does not answer: its first event fails, later ones count calls."""

    def __init__(self, folder: str) -> None:
        self.later = 0

    @hookimpl
    def cl_bench_run_start(self, run_id: str) -> None:
        raise ConnectionError("127.0.0.1:9 refused the connection")

    @hookimpl
    def cl_bench_experience_end(self, row: int) -> None:
        self.later += 1


def test_a_tracker_that_fails_costs_one_warning_never_the_run(tmp_path, capsys):
    made: list[Unreachable] = []

    class Trackers:
        @hookimpl
        def cl_bench_loggers(self):
            return [LoggerSpec(name="far", factory=lambda folder: made.append(Unreachable(folder)) or made[-1], summary="")]

    result = run(RunConfig(method="zeroshot", scenario="embedded-dil", out=str(tmp_path / "runs"), progress=False, log=["far"]), plugins=[Trackers()])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert result.status == "complete" and made[0].later == 0  # detached after its failure: no more calls
    assert len(warnings) == 1 and "cl_bench_run_start failed (ConnectionError: 127.0.0.1:9 refused the connection); it is off for the rest of this run" in warnings[0]
