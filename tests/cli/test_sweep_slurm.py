"""`clbench sweep --engine slurm`: the resource table, the sbatch script submitit writes for the real
cluster (a stand-in sbatch records it), bad input as one line, and, on submitit's local executor,
`clbench run`'s numbers bit for bit and a job preempted mid-run requeued to the uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toys import expect_one_line_error, interrupt_at_second_task

from cl_bench import RunConfig
from cl_bench.cli import main
from cl_bench.sweep.local import plan_grid
from cl_bench.sweep.slurm_engine import (
    CLUSTER_VARIABLE,
    GB,
    Resources,
    RunJob,
    SlurmOptions,
    check_options,
    default_resources,
    parse_mem,
    parse_time,
    resources_of,
    sbatch_flags,
    weights_size,
)

pytest.importorskip("submitit", reason="submitit is an optional extra (pip install -e '.[slurm]'); the dev extra installs it")

EMBEDDED = Resources(cpus=2, gpus=0, mem_gb=4, time_min=60)


def matrices(folder: Path) -> dict:
    return {p.name: (d["run_id"], d["acc_matrix"], d["control_matrix"], d["metrics"], d["outcomes"]) for p in sorted(folder.glob("*.json")) for d in [json.loads(p.read_text())]}


# ---------------------------------------------------------------------------------- the table


def test_the_embedded_backbones_get_cpus_only_and_little_memory(registry):
    image = plan_grid(RunConfig(iters=1), ["zeroshot"], ["embedded-dil"], [0], registry)
    text = plan_grid(RunConfig(backbone="tiny-lm", iters=1), ["zeroshot"], ["embedded-instruct"], [0], registry)
    assert resources_of(image[0]) == EMBEDDED and resources_of(text[0]) == EMBEDDED
    assert 0 < weights_size(image[0].plan.weights.path) < 64 * 2**20


@pytest.mark.parametrize(
    ("kind", "size", "expected"),
    [
        ("clip", 0, EMBEDDED),  # no weights file at all
        ("clip", 600 * 2**20, Resources(cpus=8, gpus=1, mem_gb=32, time_min=480)),  # ViT-B/16
        ("clip", 3 * GB, Resources(cpus=8, gpus=1, mem_gb=64, time_min=720)),
        ("causal-lm", 3 * GB, Resources(cpus=8, gpus=1, mem_gb=32, time_min=720)),  # ~1.5B in bf16
        ("causal-lm", 15 * GB, Resources(cpus=8, gpus=1, mem_gb=96, time_min=1440)),  # 7-8B
        ("causal-lm", 40 * GB, Resources(cpus=16, gpus=1, mem_gb=192, time_min=2880)),
        ("a-plugins-kind", GB, Resources(cpus=8, gpus=1, mem_gb=64, time_min=1440)),
    ],
)
def test_the_table_sizes_a_run_by_backbone_kind_and_weights(kind, size, expected):
    assert default_resources(kind, size) == expected


def test_a_model_folders_size_is_its_weight_shards(tmp_path):
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "model-00002.safetensors").write_bytes(b"x" * 200)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 10_000)
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    assert weights_size(str(tmp_path)) == weights_size(str(tmp_path / "model.safetensors.index.json")) == 500


def test_given_values_replace_the_tables_field_by_field():
    checked = check_options(SlurmOptions(cpus=4, mem="1T", time="1-02:03:04"))
    assert checked.resources(EMBEDDED) == Resources(cpus=4, gpus=0, mem_gb=1024, time_min=24 * 60 + 2 * 60 + 3 + 1)
    assert check_options(SlurmOptions(gpus=2)).resources(EMBEDDED) == Resources(cpus=2, gpus=2, mem_gb=4, time_min=60)


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("01:30:00", 90), ("0:00:01", 1), ("2-00:00:00", 2880), ("1-12", 2160), ("1-0:30", 1470)])
def test_time_takes_slurms_forms(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize(("text", "gb"), [("16G", 16), ("16GB", 16), ("500M", 1), ("2048m", 2), ("1.5T", 1536)])
def test_memory_takes_a_unit(text, gb):
    assert parse_mem(text) == gb


def test_extra_sbatch_flags_pass_with_or_without_a_value():
    assert sbatch_flags(["constraint=a100", "--qos=high", "exclusive"]) == {"constraint": "a100", "qos": "high", "exclusive": True}


def test_a_slurm_config_file_fills_what_the_command_line_leaves_unset(tmp_path):
    config = tmp_path / "cluster.toml"
    config.write_text('[slurm]\npartition = "gpu"\ntime = 90\nmem = "8G"\ncpus = 4\n[slurm.sbatch]\nconstraint = "a100"\nexclusive = true\n')
    checked = check_options(SlurmOptions(time="30", sbatch=["constraint=h100"], config=str(config)))
    assert (checked.partition, checked.time_min, checked.mem_gb, checked.cpus) == ("gpu", 30, 8, 4)
    assert checked.sbatch == {"constraint": "h100", "exclusive": True}  # the command line's value wins
    yaml_config = tmp_path / "cluster.yaml"
    yaml_config.write_text("slurm:\n  account: proj1\n  array_parallelism: 3\n")
    checked = check_options(SlurmOptions(config=str(yaml_config)))
    assert (checked.account, checked.array_parallelism, checked.time_min) == ("proj1", 3, None)


# ---------------------------------------------------------------------------------- bad input

GRID = ["sweep", "--methods", "zeroshot", "--scenarios", "embedded-dil", "--seeds", "0", "--quiet"]
BAD = [
    ("time-text", ["--time", "soon"], "--time must be minutes, HH:MM:SS or D-HH:MM:SS"),
    ("time-ambiguous", ["--time", "1:30"], "is ambiguous"),
    ("time-zero", ["--time", "0"], "at least one minute"),
    ("mem-no-unit", ["--mem", "16"], "--mem must be a size with a unit"),
    ("mem-zero", ["--mem", "0G"], "--mem must be above zero"),
    ("cpus-fraction", ["--cpus-per-run", "1.5"], "--cpus-per-run must be a whole number of at least 1"),
    ("gpus-negative", ["--gpus-per-run", "-1"], "--gpus-per-run must be a whole number of at least 0"),
    ("parallelism-zero", ["--array-parallelism", "0"], "--array-parallelism must be at least 1"),
    ("partition-injection", ["--partition", "gpu\n#SBATCH --uid=0"], "--partition must be a Slurm name"),
    ("account-space", ["--account", "my project"], "--account must be a Slurm name"),
    ("sbatch-owned", ["--sbatch", "time=10"], "--sbatch time: use --time instead"),
    ("sbatch-array", ["--sbatch", "array=0-9"], "use --array-parallelism instead"),
    ("sbatch-submitit", ["--sbatch", "output=/tmp/x"], "the Slurm engine sets this one itself"),
    ("sbatch-key", ["--sbatch", "Bad Key=1"], "--sbatch takes KEY=VALUE or KEY"),
    ("sbatch-newline", ["--sbatch", "comment=a\nb"], "the value must be non-empty and on one line"),
    ("config-missing", ["--slurm-config", "{tmp}/none.toml"], "none.toml' not found"),
    ("config-unknown-key", ["--slurm-config", "{tmp}/c.toml"], "unknown key of {tmp}/c.toml's slurm section: 'partiton'; did you mean 'partition'?", '[slurm]\npartiton = "gpu"\n'),
    ("config-type", ["--slurm-config", "{tmp}/c.toml"], "slurm.cpus must be int, got '4'", '[slurm]\ncpus = "4"\n'),
    ("config-bool", ["--slurm-config", "{tmp}/c.toml"], "slurm.gpus must be int, got True", "[slurm]\ngpus = true\n"),
    ("config-other-section", ["--slurm-config", "{tmp}/c.toml"], "the file must hold one section, slurm", '[slurm]\npartition = "gpu"\n[run]\nseed = 1\n'),
    ("config-bad-value", ["--slurm-config", "{tmp}/c.toml"], "--mem must be a size with a unit", '[slurm]\nmem = "16"\n'),
    ("config-sbatch-owned", ["--slurm-config", "{tmp}/c.toml"], "--sbatch gres: use --gpus-per-run instead", '[slurm.sbatch]\ngres = "gpu:2"\n'),
]


@pytest.mark.parametrize(("extra", "message", "config"), [(*case[1:], None)[:3] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_slurm_settings_are_one_line_before_anything_is_submitted(tmp_path, monkeypatch, capsys, extra, message, config):
    monkeypatch.setenv(CLUSTER_VARIABLE, "local")
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
    extra = [part.replace("{tmp}", str(tmp_path)) for part in extra]
    expect_one_line_error(tmp_path, monkeypatch, capsys, [*GRID, "--out", str(tmp_path / "out"), "--engine", "slurm", *extra], message.replace("{tmp}", str(tmp_path)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--partition", "gpu"], "--partition is an option of --engine slurm, not of --engine local"),
        (["--no-wait"], "--no-wait is an option of --engine slurm"),
        (["--engine", "ray", "--mem", "4G"], "--mem is an option of --engine slurm, not of --engine ray"),
        (["--engine", "slurm", "--address", "h:1"], "--address is an option of --engine ray, not of --engine slurm"),
        (["--cpus-per-run", "2"], "options of --engine ray and slurm"),
    ],
)
def test_an_engines_option_given_to_another_engine_is_refused(tmp_path, monkeypatch, capsys, extra, message):
    expect_one_line_error(tmp_path, monkeypatch, capsys, [*GRID, "--out", str(tmp_path / "out"), *extra], message)


def test_without_slurm_on_path_the_engine_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(CLUSTER_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    expect_one_line_error(tmp_path, monkeypatch, capsys, [*GRID, "--out", str(tmp_path / "out"), "--engine", "slurm"], "needs Slurm's sbatch and srun on PATH: run the sweep on a login node")


def test_an_unknown_cluster_in_the_environment_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CLUSTER_VARIABLE, "pbs")
    expect_one_line_error(tmp_path, monkeypatch, capsys, [*GRID, "--out", str(tmp_path / "out"), "--engine", "slurm"], f"{CLUSTER_VARIABLE} must be slurm or local")


def test_without_submitit_the_engine_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CLUSTER_VARIABLE, "local")
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    expect_one_line_error(
        tmp_path, monkeypatch, capsys, [*GRID, "--out", str(tmp_path / "out"), "--engine", "slurm", "--force"], "--engine slurm needs submitit, an optional extra: pip install -e '.[slurm]'"
    )


def fake_slurm(folder: Path, sbatch: str) -> Path:
    """`sbatch` and `srun` stand-ins on PATH; sbatch runs the shell code `sbatch` ($1: the script)."""
    folder.mkdir()
    for name, body in (("sbatch", sbatch), ("srun", "exit 0")):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.parametrize("earlier_log", [False, True])
def test_sbatch_refusing_the_array_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, registry, earlier_log):
    from cl_bench.running.runner import check

    if earlier_log:  # an earlier sweep's log of this run is left as it was
        stem = check(RunConfig(method="zeroshot", scenario="embedded-dil", seed=0, out=str(tmp_path / "out")), registry).stem
        (tmp_path / "out" / "logs").mkdir(parents=True)
        (tmp_path / "out" / "logs" / f"{stem}.log").write_text("an earlier sweep's output\n")
    bin_folder = fake_slurm(tmp_path.parent / f"{tmp_path.name}-bin", 'echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1')
    monkeypatch.delenv(CLUSTER_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    expect_one_line_error(
        tmp_path,
        monkeypatch,
        capsys,
        [*GRID, "--out", str(tmp_path / "out"), "--engine", "slurm", "--partition", "gpu"],
        "sbatch refused the jobs (2 CPUs, 0 GPUs, 4 GB, 60 min): sbatch: error: invalid partition specified: gpu",
    )


def test_the_sbatch_script_asks_for_the_given_resources_as_one_array(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "script.sh"
    bin_folder = fake_slurm(tmp_path / "bin", f'cp "$1" {copy}; echo "Submitted batch job 4242"')
    monkeypatch.delenv(CLUSTER_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    argv = ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--seeds", "0,1", "--out", str(out), "--engine", "slurm", "--quiet", "--no-wait"]
    argv += ["--partition", "gpu,debug", "--account", "proj1", "--time", "2-00:00:00", "--mem", "10G", "--array-parallelism", "2", "--sbatch", "constraint=a100", "--sbatch", "exclusive"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "submitted 4 run(s) as job array 4242 (2 CPUs, 0 GPUs, 10 GB, 2880 min each)" in err and "4 runs: 0 already complete, 4 submitted" in err
    lines = set(copy.read_text().splitlines())
    expected = {
        "--partition=gpu,debug",
        "--account=proj1",
        "--time=2880",
        "--mem=10GB",
        "--cpus-per-task=2",
        "--array=0-3%2",
        "--constraint=a100",
        "--exclusive",
        "--signal=USR2@90",
        "--job-name=clbench-sweep",
    }
    assert {f"#SBATCH {flag}" for flag in expected} <= lines
    assert f"#SBATCH --output={out}/logs/slurm/%A_%a_0_log.out" in lines
    assert not any("gpus" in line for line in lines)  # a CPU-only run asks for no GPU line at all
    assert len(list((out / "logs").glob("*.log"))) == 4 and not list(out.glob("*.json"))


# ---------------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_checkpoint_resubmits_the_call_with_resume_on_and_ends_as_uninterrupted(tmp_path, monkeypatch):
    from cl_bench.running.runner import run

    whole = run(RunConfig(method="seq-lora", scenario="embedded-dil", seed=0, iters=2, threads=1, out=str(tmp_path / "whole"), progress=False))
    settings = {"method": "seq-lora", "scenario": "embedded-dil", "seed": 0, "iters": 2, "threads": 1, "out": str(tmp_path / "split")}
    log = tmp_path / "split.log"
    job = RunJob()
    interrupt_at_second_task(monkeypatch, lambda: job(settings, str(tmp_path), str(log), False))
    requeued = job.checkpoint(settings, str(tmp_path), str(log), False)
    assert requeued.args == (settings, str(tmp_path), str(log), True) and requeued.function is job
    assert requeued.result() == "complete"
    split = json.loads((tmp_path / "split" / whole.path.name).read_text())
    assert (split["acc_matrix"], split["control_matrix"], split["metrics"], split["outcomes"]) == (
        whole.data["acc_matrix"],
        whole.data["control_matrix"],
        whole.data["metrics"],
        whole.data["outcomes"],
    )
    assert "resuming" in log.read_text() and "requeued to resume" in log.read_text()


@pytest.mark.slow
@pytest.mark.cli
def test_a_local_job_gives_clbench_runs_numbers_when_preempted_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    # A sweep on submitit's local executor (a child process, as a user starts it): its job is
    # preempted (SIGUSR2, as Slurm signals) after its first checkpoint, requeued and resumed; it
    # ends with `clbench run`'s numbers, and a second sweep skips it. (One job: every job is a
    # process that imports PyTorch, open_clip and Avalanche; the array of several is the sbatch
    # script test's.)
    settings = ["--scenarios", "embedded-dil", "--seeds", "0", "--iters", "6", "--threads", "1", "--quiet"]
    assert main(["run", "--method", "seq-lora", "--scenario", "embedded-dil", "--seed", "0", "--iters", "6", "--threads", "1", "--quiet", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    env = {**os.environ, CLUSTER_VARIABLE: "local"}
    out = tmp_path / "slurm"
    command = [sys.executable, "-m", "cl_bench", "sweep", "--methods", "seq-lora", *settings, "--engine", "slurm", "--out", str(out)]
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled = None
    deadline = time.time() + 300
    while signalled is None and time.time() < deadline and sweep.poll() is None:
        if list(out.glob("*seq-lora*.ckpt")):  # task 1 is done and checkpointed: preempt the job
            header = re.search(r"process (\d+)", next((out / "logs").glob("*seq-lora*.log")).read_text())
            assert header
            signalled = int(header.group(1))
            os.kill(signalled, signal.SIGUSR2)
        time.sleep(0.2)
    stdout, stderr = sweep.communicate(timeout=300)
    assert signalled, f"the job never checkpointed: {stderr[-2000:]}"
    assert sweep.returncode == 0, stderr[-2000:]
    assert "submitted 1 run(s) as local job(s)" in stderr and "1 runs: 1 ran, 0 already complete, 0 failed" in stderr
    log = next((out / "logs").glob("*seq-lora*.log")).read_text()
    assert "requeued to resume" in log and re.search(r"resuming \S+ from \S+ at task [2-9]", log), log
    assert len(re.findall(r"slurm: job \S+ on ", log)) == 2  # the first attempt, and the requeued one
    reference = matrices(tmp_path / "run")
    assert len(reference) == 1 and matrices(out) == reference
    assert list((out / "logs" / "slurm").glob("*_log.out"))  # submitit's own logs, under the sweep's
    monkeypatch.setenv(CLUSTER_VARIABLE, "local")
    assert main(["sweep", "--methods", "seq-lora", *settings, "--engine", "slurm", "--out", str(out)]) == 0
    assert "1 runs: 0 ran, 1 already complete" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_job_is_named_with_its_log(tmp_path, monkeypatch, capsys, registry):
    from cl_bench.running.runner import check

    monkeypatch.setenv(CLUSTER_VARIABLE, "local")
    out = tmp_path / "slurm"
    out.mkdir()
    path = check(RunConfig(method="seq-lora", scenario="embedded-dil", seed=0, iters=1, out=str(out)), registry)
    path.with_suffix(".ckpt").write_bytes(b"not a checkpoint")  # the job's resume refuses it
    assert main(["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "1", "--engine", "slurm", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and f"failed: seq-lora on embedded-dil, seed 0 (log: {out / 'logs' / path.stem}.log)" in err
    log = (out / "logs" / f"{path.stem}.log").read_text()
    assert "clbench: error: " in log and "cannot be read" in log and not path.is_file()
