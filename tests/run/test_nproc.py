"""Multi-process runs (`--nproc`): two processes against one, a killed rank and its resume, bad input.

The two-process runs spawn worker processes (gloo on CPU): they are slow and run one at a time
(xdist group "nproc"), never beside each other. Those compared with one process are
tests/two_process_runs.py's, trained through one launch for the session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from two_process_runs import IMAGE_METHODS, KILLED_RANK_KEY, KILLED_RANK_SETTINGS, LANGUAGE_MODEL_METHODS, config, image_settings, language_model_settings, largest_cell_difference, registry

from cl_bench import RunConfig, run
from cl_bench.errors import UserError

pytestmark = pytest.mark.xdist_group("nproc")

# The largest cell difference (accuracy points) two processes may show against one, per method:
# measured (docs/multi-process.md), plus 0.01 for the float subtraction of two cells; methods not
# named match bit for bit.
TOLERANCE: dict[str, float] = {
    "moe-lora": 1.01,  # measured 0.2 and 0.4 on embedded-mtil v1 and v2, 0 on the short stream (1.0, one image of 100, with only its test sets short): its noisy gating and dropout draw one number per example (each process for its share)
    "o-lora": 1.01,  # measured 0.1 on embedded-mtil v2 (one test image of 1,000 changes sides), 0 on the short stream: averaged gradients round differently
    "ewc tiny-lm": 0.26,  # measured 0.05 (one text score of 100), 0.17 (of 30), 0.25 (of 20, the test's cells): every weight fine-tuned; not shown to be only rounding
    "treelora tiny-lm": 0.04,  # measured 0.03 (one text score): its regulariser scales with each process's loss (linear, so equal in exact arithmetic); not shown to be only rounding
}


# codyra: exact with method.text_to_image_weight=0, but with its gathered text-to-image term two
# processes' weights after one step differ from one process's by about the learning rate; the
# cause is not confirmed (docs/multi-process.md).
KNOWN_DIFFERENT = {"codyra"}


@pytest.mark.slow
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason="see KNOWN_DIFFERENT")) if m in KNOWN_DIFFERENT else m for m in IMAGE_METHODS])
def test_two_processes_train_what_one_trains(tmp_path, method, two_process_runs):
    one = run(config(tmp_path / "one", **image_settings(method)), registry=registry())
    two = two_process_runs.results[method]
    assert two.run_id == one.run_id and two.data["execution"]["nproc"] == 2 and one.data["execution"]["nproc"] == 1
    difference = largest_cell_difference(one, two)
    print(f"nproc 2 against 1: {method}: largest cell difference {difference}")
    assert difference <= TOLERANCE.get(method, 0.0)
    if difference == 0.0:
        assert two.data["outcomes"] == one.data["outcomes"] and two.metrics == one.metrics
    assert not list(Path(two.path).parent.glob("*.ckpt"))  # only the result is left, written once by rank 0


@pytest.mark.slow
@pytest.mark.parametrize("method", LANGUAGE_MODEL_METHODS)
def test_two_processes_train_a_language_model_as_one(tmp_path, method, two_process_runs):
    one = run(config(tmp_path / "one", **language_model_settings(method)))
    two = two_process_runs.results[f"{method} tiny-lm"]
    assert two.run_id == one.run_id and two.data["execution"]["nproc"] == 2
    difference = largest_cell_difference(one, two)
    print(f"nproc 2 against 1: {method} on tiny-lm: largest cell difference {difference}")
    assert difference <= TOLERANCE.get(f"{method} tiny-lm", 0.0)
    if difference == 0.0:
        assert two.data["outcomes"] == one.data["outcomes"] and two.metrics == one.metrics


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes of `pid` (its children running multiprocessing's spawn_main)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and "spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_rank_stops_the_run_and_resume_completes_it(tmp_path, two_process_runs):
    whole = two_process_runs.results[KILLED_RANK_KEY]  # the same run, uninterrupted
    out = tmp_path / "split"
    settings = KILLED_RANK_SETTINGS  # the launch's uninterrupted run, as command-line flags
    flags = ["--method", settings["method"], "--scenario", settings["scenario"], "--iters", str(settings["iters"]), "--batch-size", str(settings["batch_size"])]
    argv = [sys.executable, "-m", "cl_bench", "run", *flags, "--device", "cpu", "--nproc", "2", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        while not list(out.glob("*.ckpt")):  # the first task is done: kill rank 1 in the second
            assert child.poll() is None and time.monotonic() - started < 300, "the run ended before its first checkpoint"
            time.sleep(0.05)
        workers = _workers_of(child.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        _, err = child.communicate(timeout=120)  # no hang: the launcher stops the other rank
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clbench: error: process ") and "SIGKILL" in lines[0], err
    assert not _workers_of(child.pid)
    (partial,) = out.glob("*.json")
    assert json.loads(partial.read_text())["status"] == "partial"
    resumed = run(config(out, **KILLED_RANK_SETTINGS, nproc=2, resume=True))
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed.data["outcomes"] == whole.data["outcomes"] and not list(out.glob("*.ckpt"))


def test_nproc_below_one_is_refused(tmp_path):
    with pytest.raises(UserError, match="nproc must be between 1 and"):
        run(config(tmp_path, method="zeroshot", nproc=0))
    with pytest.raises(UserError, match="nproc expects an integer"):
        RunConfig().set("nproc", "two")


def test_nproc_beyond_this_machine_is_refused(tmp_path):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(UserError, match=f"--nproc {cores + 1} on CPU: this process may use {cores} core"):
        run(config(tmp_path, method="zeroshot", batch_size=8 * (cores + 1), nproc=cores + 1))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available here"):
            run(RunConfig(out=str(tmp_path), method="zeroshot", device="cuda", nproc=2))
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing written


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    with pytest.raises(UserError, match="the batch size 9 does not split into 2 processes of equal size"):
        run(config(tmp_path, method="seq-lora", batch_size=9, nproc=2))


def test_nproc_is_an_execution_setting_not_part_of_the_run_id(registry, tmp_path):
    from cl_bench.running.plan import plan

    assert plan(config(tmp_path, method="seq-lora", nproc=2), registry).run_id == plan(config(tmp_path, method="seq-lora"), registry).run_id
    assert "nproc" in RunConfig.EXECUTION_FIELDS


@pytest.mark.slow
def test_gathered_terms_and_averaged_gradients_equal_one_process(tmp_path):
    import torch
    import torch.multiprocessing as mp
    from nproc_toys import coupled_loss, coupled_problem, coupled_step

    mp.start_processes(coupled_step, args=(str(tmp_path / "rendezvous"), str(tmp_path / "grad.pt")), nprocs=2, start_method="spawn")
    weight, inputs = coupled_problem()
    coupled_loss(weight, inputs, lambda x: x).backward()
    two = torch.load(tmp_path / "grad.pt", weights_only=True)["grad"]
    assert torch.allclose(two, weight.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_a_rank_that_differs_takes_rank_0s_state(tmp_path):
    import torch
    import torch.multiprocessing as mp
    from nproc_toys import sync_step

    mp.start_processes(sync_step, args=(str(tmp_path / "rendezvous"), str(tmp_path / "state")), nprocs=2, start_method="spawn")
    zero, one = (torch.load(tmp_path / f"state.{rank}", weights_only=True) for rank in (0, 1))
    assert zero["first"] and one["first"] and not zero["second"] and not one["second"]  # once equal, nothing travels
    assert torch.equal(one["weight"], zero["weight"]) and torch.equal(one["values"], torch.zeros(4))


def test_the_batch_helpers_change_nothing_in_one_process():
    import torch

    from cl_bench import batch_share, gather_batch, process_count

    x = torch.arange(6.0)
    assert gather_batch(x) is x and process_count() == 1 and batch_share(7) == slice(0, 7)


def test_run_and_sweep_take_nproc_and_a_sweep_child_gets_it():
    from cl_bench.cli import build_config, build_parser

    for argv in (["run", "--nproc", "2"], ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-mtil", "--nproc", "2"], ["run", "--set", "nproc=2"]):
        args = build_parser().parse_args(argv)
        if argv[0] == "sweep":  # as cmd_sweep leaves them: the grid's own settings come from the grid
            args.method = args.scenario = args.seed = args.config = None
        assert build_config(args).nproc == 2
    # a sweep's child runs from its configuration as a file (sweep/local.py): nproc travels in it
    assert RunConfig.from_dict(json.loads(json.dumps(RunConfig(nproc=2).to_dict()))).nproc == 2
