"""`clbench sweep --engine ray` on a real local Ray instance: the local engine's results, a
worker killed mid-run retried to the same matrix, failures named with their logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cl_bench.cli import main

pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e '.[ray]'); the dev extra installs it")

GRID = ["--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--seeds", "0,1", "--iters", "2", "--quiet"]


def matrices(folder):
    return {p.name: (d["run_id"], d["acc_matrix"], d["control_matrix"], d["metrics"]) for p in sorted(folder.glob("*.json")) for d in [json.loads(p.read_text())]}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.cli
def test_ray_gives_the_local_engines_results_and_follows_the_same_skip_rules(tmp_path, capsys):
    assert main(["sweep", *GRID, "--jobs", "2", "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert main(["sweep", *GRID, "--engine", "ray", "--out", str(tmp_path / "ray")]) == 0
    err = capsys.readouterr().err
    assert "sweep: Ray started locally in" in err and "4 runs: 4 ran, 0 already complete, 0 failed" in err
    local, ray = matrices(tmp_path / "local"), matrices(tmp_path / "ray")
    assert len(ray) == 4 and ray == local
    document = json.loads(next((tmp_path / "ray").glob("*seq-lora*seed1*.json")).read_text())
    assert document["execution"]["out"] == str(tmp_path / "ray")  # written by the driver, for the driver's folder
    assert main(["sweep", *GRID, "--engine", "ray", "--out", str(tmp_path / "ray")]) == 0
    err = capsys.readouterr().err
    assert "4 runs: 0 ran, 4 already complete" in err and "Ray started" not in err  # nothing to run: no cluster started


@pytest.mark.slow
@pytest.mark.ray
def test_a_failing_run_is_named_with_its_log(tmp_path, capsys):
    out = tmp_path / "ray"
    args = ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "1", "--engine", "ray", "--out", str(out), "--quiet"]
    worker = out / "logs" / "ray"
    worker.mkdir(parents=True)
    from cl_bench import RunConfig
    from cl_bench.config.registry import Registry
    from cl_bench.running.runner import check

    path = check(RunConfig(method="seq-lora", scenario="embedded-dil", seed=0, iters=1, out=str(worker)), Registry())
    path.with_suffix(".ckpt").write_bytes(b"not a checkpoint")  # the worker's --resume refuses it
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "failed: seq-lora on embedded-dil, seed 0 (log: " in err
    log = next((out / "logs").glob("*.log"))
    assert "cannot be read" in log.read_text() and not list(out.glob("*.json"))


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.cli
def test_a_worker_killed_mid_run_is_retried_and_resumes_to_the_uninterrupted_matrix(tmp_path, capsys):
    import psutil

    settings = ["--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "6", "--quiet"]
    # the uninterrupted run, in this process (a sweep's run equals it: test_sweep_warm.py)
    assert main(["run", "--method", "seq-lora", "--scenario", "embedded-dil", "--seed", "0", "--iters", "6", "--threads", "1", "--quiet", "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    out = tmp_path / "ray"
    sweep = subprocess.Popen([sys.executable, "-m", "cl_bench", "sweep", *settings, "--engine", "ray", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []
    deadline = time.time() + 240
    while not killed and time.time() < deadline and sweep.poll() is None:
        if list((out / "logs" / "ray").glob("*.ckpt")):  # task 1 is done and checkpointed
            for process in psutil.process_iter(["cmdline"]):
                if any("run_in_worker" in part for part in process.info["cmdline"] or []):
                    process.kill()
                    killed.append(process.pid)
        time.sleep(0.2)
    stdout, stderr = sweep.communicate(timeout=300)
    assert killed, f"no worker was found to kill: {stderr[-2000:]}"
    assert sweep.returncode == 0, stderr[-2000:]
    assert "1 ran, 0 already complete, 0 failed" in stderr
    assert matrices(out) == matrices(tmp_path / "local")


def test_without_ray_the_engine_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["sweep", *GRID, "--engine", "ray", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine ray needs Ray, an optional extra: pip install -e '.[ray]'" in err[-1]
