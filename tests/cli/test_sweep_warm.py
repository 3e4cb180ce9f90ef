"""The local sweep's warm worker: runs forked from a process that imported the heavy libraries once,
each in a fresh child that is what `clbench run` would be (same numbers, its threads, its log,
its exit code), dying with the sweep, stopping on Ctrl-C; without it, separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cl_bench.cli import main
from cl_bench.sweep import local
from cl_bench.sweep.warm import WarmWorker

pytestmark = [pytest.mark.slow, pytest.mark.cli, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the warm worker forks; the tests read /proc")]

GRID = ["--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "2", "--quiet"]

CHILD = '''
import ctypes, os, sys
what = sys.argv[1]
print("python-level output of", what)
sys.stdout.flush()
libc = ctypes.CDLL(None)
libc.write(1, b"C-level output\\n", 15)
if what == "exit3":
    os._exit(3)
if what == "segfault":
    ctypes.string_at(0)
if what == "message":
    sys.exit("a message instead of a code")
if what == "environment":
    print(os.environ["ONLY_HERE"], os.getcwd())
if what == "sleep":
    import time
    time.sleep(60)
'''


def processes(name: str) -> list[int]:
    """Live (not zombie) processes whose name (/proc/PID/comm) is `name`, children of this test's processes or not."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name and "State:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_until(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_each_run_is_a_fresh_child_whose_crash_ends_it_alone(tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = WarmWorker.start([], env, tmp_path / "worker.txt", preload=())
    try:
        assert worker.ready["threads"] == 1 and not worker.ready["cuda_initialized"]
        cases = ["exit3", "segfault", "message", "environment", "fine"]
        for key, what in enumerate(cases):
            worker.run(key, [what], {**env, "ONLY_HERE": f"env of {what}"}, tmp_path / f"{what}.log", module="child")
        ended = dict(worker.wait(timeout=60) for _ in cases)
        assert ended == {0: 3, 1: -signal.SIGSEGV, 2: 1, 3: 0, 4: 0}  # as subprocess.Popen.returncode says
        logs = {what: (tmp_path / f"{what}.log").read_text() for what in cases}
        for what, text in logs.items():
            assert f"python-level output of {what}" in text and "C-level output" in text  # fd 1 is the log
        assert "Segmentation fault" in logs["segfault"]  # faulthandler: the crash's stack is in its log
        assert "a message instead of a code" in logs["message"]
        assert f"env of environment {os.getcwd()}" in logs["environment"]  # the run's own environment and folder
        worker.run(9, ["fine"], env, tmp_path / "after.log", module="child")  # the worker outlived its runs' crashes
        assert worker.wait(timeout=60) == (9, 0)
    finally:
        worker.close()
    text = (tmp_path / "worker.txt").read_text()
    assert "run 1: forked process" in text and "run 1: process" in text and f"ended, exit code {-signal.SIGSEGV}" in text


def test_closing_or_losing_the_sweep_ends_the_worker_and_its_runs(tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = WarmWorker.start([], env, tmp_path / "worker.txt", preload=())
    worker.run(0, ["sleep"], env, tmp_path / "sleep.log", module="child")
    wait_until(lambda: worker.wait(timeout=0.1) is None and worker.pids)
    run = worker.pids[0]
    worker.close()  # the sweep's end of the pipe closes: the worker kills what still runs
    assert worker.process.returncode == 0
    wait_until(lambda: not Path(f"/proc/{run}").exists() or "State:\tZ" in Path(f"/proc/{run}/status").read_text(), timeout=10)


def results(folder: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["method"]["name"]: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_a_sweep_run_equals_clbench_run_of_its_configuration_with_its_threads(tmp_path, capsys, monkeypatch):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    # The worker imports PyTorch on one thread (its pools stay at one so that it can fork); each run
    # must still train on its own --threads 2. One run at a time: two runs of two threads would
    # only measure how four threads share two cores.
    assert main(["sweep", *GRID, "--jobs", "1", "--threads", "2", "--out", str(warm)]) == 0
    err = capsys.readouterr().err
    assert "2 runs: 2 ran" in err and "own process" not in err
    worker_log = (warm / "logs" / local.WORKER_LOG).read_text()
    assert worker_log.count("forked process") == 2 and "failed: none" in worker_log
    swept = results(warm)
    assert swept["seq-lora"]["hardware"]["torch_threads"] == 2  # PyTorch was imported before the run, with other settings

    config = next((warm / "logs").glob("*seq-lora*.config.json"))
    alone = subprocess.run(
        [sys.executable, "-m", "cl_bench", "run", "--config", str(config), "--out", str(tmp_path / "alone"), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert alone.returncode == 0, alone.stderr
    (separate,) = results(tmp_path / "alone").values()
    for key in ("run_id", "acc_matrix", "control_matrix", "metrics", "hardware"):
        assert separate[key] == swept["seq-lora"][key], key

    monkeypatch.setenv(local.WARM_VARIABLE, "0")  # as without fork: every run its own `python -m cl_bench run`
    one_method = [*GRID[:1], "seq-lora", *GRID[2:]]  # the trained one: each run of its own pays the imports again
    assert main(["sweep", *one_method, "--jobs", "1", "--threads", "2", "--out", str(cold)]) == 0
    assert "1 runs: 1 ran" in capsys.readouterr().err and not (cold / "logs" / local.WORKER_LOG).exists()
    (document,) = results(cold).values()
    assert (document["acc_matrix"], document["control_matrix"]) == (swept["seq-lora"]["acc_matrix"], swept["seq-lora"]["control_matrix"])


def test_a_run_killed_mid_sweep_fails_alone_and_its_log_says_so(tmp_path, capsys):
    out = tmp_path / "sweep"

    def kill_seq_lora():
        def run_process():
            for pid in processes("clbench-run"):
                try:
                    if "seq-lora" in os.readlink(f"/proc/{pid}/fd/1") and str(out) in os.readlink(f"/proc/{pid}/fd/1"):
                        return pid
                except OSError:
                    continue
            return None

        os.kill(wait_until(run_process), signal.SIGKILL)

    killer = threading.Thread(target=kill_seq_lora)
    killer.start()
    assert main(["sweep", *GRID, "--jobs", "2", "--out", str(out)]) == 1
    killer.join()
    err = capsys.readouterr().err
    assert "1 ran, 0 already complete, 1 failed" in err and "failed: seq-lora on embedded-dil, seed 0 (log: " in err
    log = next((out / "logs").glob("*seq-lora*.log")).read_text()
    assert log.rstrip().endswith("clbench sweep: the run's process was killed by SIGKILL")
    assert set(results(out)) == {"zeroshot"}


def sweep_process(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "cl_bench", "sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0,1,2", "--iters", "50", "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_sweep_killed_with_sigkill_takes_its_worker_and_runs_with_it(tmp_path):
    sweep = sweep_process(tmp_path / "sweep")
    run = wait_until(lambda: [pid for pid in descendants(sweep.pid) if pid in processes("clbench-run")])
    family = descendants(sweep.pid)
    assert len([pid for pid in family if pid in processes("clbench-warm")]) == 1
    sweep.send_signal(signal.SIGKILL)
    sweep.wait(timeout=30)
    wait_until(lambda: not [pid for pid in family if Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()], timeout=30)
    assert run


def test_ctrl_c_sent_to_the_sweep_alone_stops_its_run_and_starts_no_other(tmp_path):
    out = tmp_path / "sweep"
    sweep = sweep_process(out)
    wait_until(lambda: [pid for pid in descendants(sweep.pid) if pid in processes("clbench-run")])
    family = descendants(sweep.pid)
    sweep.send_signal(signal.SIGINT)  # not the terminal's process group: the sweep passes it on
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130 and "clbench: interrupted" in err
    logs = sorted((out / "logs").glob("*.log"))
    assert len(logs) == 1  # the other two runs never started
    assert "clbench: interrupted" in logs[0].read_text() and "exited with code 130" in logs[0].read_text()
    assert not [pid for pid in family if Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()]
    assert not list(out.glob(".*"))  # no lock left
