"""The command line as a new user meets it: folders for validate, a closed pipe, the results it names."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from toys import result_document

from cl_bench.cli import main


def test_validate_takes_folders_as_report_and_publish_do(tmp_path, capsys):
    for seed in (0, 1):
        (tmp_path / "runs" / "nested").mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / ("nested" if seed else "") / f"r{seed}.json").write_text(json.dumps(result_document([[50.0], [80.0]], [[], []], seed=seed, examples=10)))
    assert main(["validate", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(": valid (cl_bench.result/5, complete, 1 tasks, metrics recomputed, 2 of 2 cells recomputed from their per-example outcomes)" in line for line in lines)


@pytest.mark.parametrize("command", [[], ["ls"], ["run"], ["report"], ["sweep"], ["publish"], ["verify"], ["validate"]])
def test_every_help_page_prints(command, capsys):
    # argparse formats help text with %: a bare "95%" in a help string broke `clbench --help`
    with pytest.raises(SystemExit) as ended:
        main([*command, "--help"])
    assert ended.value.code == 0 and "usage: clbench" in capsys.readouterr().out


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["ls"]) == 141  # as a process killed by SIGPIPE: a pipeline with pipefail sees it
    assert capsys.readouterr().err == ""


@pytest.mark.slow
@pytest.mark.cli
def test_ls_into_head_prints_no_error():
    done = subprocess.run(["bash", "-c", f"{sys.executable} -m cl_bench ls | head -1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.count("\n") == 1 and "error" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.cli
def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    # 100 iterations of 16 per task: the first task ends in seconds, the two after it take a few
    # seconds more (the signal lands within 0.2 s of the first checkpoint)
    args = [sys.executable, "-m", "cl_bench", "run", "--method", "seq-lora", "--scenario", "embedded-dil", "--iters", "100", "--batch-size", "16", "--out", str(out), "--quiet"]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.ckpt")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)  # the first task has finished: the run is training the second
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and "clbench: terminated (SIGTERM" in err and "Traceback" not in err
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert left == [] and list(out.glob("*.ckpt"))  # no lock or temporary file; the checkpoint stays


@pytest.mark.slow  # two whole runs (5 s on two idle cores)
def test_a_result_repeats_its_run_names_its_plugins_and_says_when_a_repeat_is_another_run(tmp_path, capsys):
    assert main(["run", "--method", "zeroshot", "--scenario", "embedded-dil", "--quiet", "--out", str(tmp_path / "a")]) == 0
    first = next((tmp_path / "a").glob("*.json"))
    data = json.loads(first.read_text())
    # Each part names the installed distribution that provided it, not only its entry point.
    assert data["method"]["distribution"].startswith("cl-bench ") and data["scenario"]["distribution"] == data["backbone"]["distribution"]
    capsys.readouterr()
    assert main(["run", "--config", str(first), "--quiet", "--out", str(tmp_path / "b")]) == 0
    repeat = capsys.readouterr()
    assert (tmp_path / "b" / first.name).is_file() and "note:" not in repeat.err  # the same run id
    assert main(["run", "--config", str(first), "--seed", "3", "--quiet", "--out", str(tmp_path / "c")]) == 0
    assert f"clbench: note: {first} was run {data['run_id']}; its settings now resolve to" in capsys.readouterr().err


def test_a_broken_ray_is_one_line_and_ray_never_reports_usage(tmp_path, monkeypatch):
    from cl_bench import UserError
    from cl_bench.sweep import ray_engine

    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('half-installed: _raylet missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    with pytest.raises(UserError, match=r"Ray is installed but cannot be imported \(RuntimeError: half-installed: _raylet missing\)"):
        ray_engine._import_ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # set before Ray is imported, for every Ray process it starts


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize("warm", ["1", "0"])
def test_a_sweep_from_a_folder_holding_a_clone_imports_the_installed_package(tmp_path, monkeypatch, warm):
    clone = tmp_path / "cl_bench"  # what `git clone ... cl_bench` leaves in the working folder
    clone.mkdir()
    (clone / "README.md").write_text("a clone, not the package")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CL_BENCH_SWEEP_WARM", warm)
    args = ["sweep", "--methods", "zeroshot", "--scenarios", "embedded-dil", "--seeds", "0", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert len(list((tmp_path / "out").glob("*.json"))) == 1


def test_a_ray_worker_logs_where_the_sweep_says_and_returns_a_result_for_the_sweeps_folder(tmp_path):
    pytest.importorskip("mlflow")
    from cl_bench.sweep.ray_engine import run_in_worker

    settings = {"method": "zeroshot", "scenario": "embedded-dil", "seed": 0, "threads": 1, "log": ["mlflow"]}
    outcome = run_in_worker(settings, str(tmp_path / "out"), False, "sweep-1")  # called as Ray calls it, in-process
    assert outcome["ok"], outcome["output"]
    assert (tmp_path / "out" / "logs" / "mlruns").is_dir() and not (tmp_path / "out" / "logs" / "ray" / "logs").exists()
    assert outcome["result"]["execution"]["out"] == str(tmp_path / "out")  # the driver writes it there
