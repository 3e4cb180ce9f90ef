"""kill -9 at chosen points of a publish and of a run, in a real child process (forked by a warm
worker that imported the libraries once; tests/crash_driver.py is what it runs).

A publish killed anywhere leaves the leaderboard byte for byte as before or exactly as a whole
publish makes it, and the next publish cleans what the killed one left. A run killed mid-training,
mid-checkpoint-write (before or after its tensors file is in place) or between its checkpoint and its partial result resumes to the same
accuracy matrix as an uninterrupted run, with no temporary file left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from toys import rehash, result_document, snapshot

from cl_bench.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.cli]  # every case kills a real child process


@pytest.fixture(scope="module")
def killable(tmp_path_factory):
    """A warm worker (cl_bench.sweep.warm) that imported PyTorch, open_clip and Avalanche once: each
    case's child is a fresh fork of it running tests/crash_driver.py, killed as a process started
    anew would be, without paying the imports again."""
    from cl_bench.sweep.warm import WarmWorker

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    worker = WarmWorker.start([], env, tmp_path_factory.mktemp("warm") / "worker.txt")
    yield worker
    worker.close()


def child(killable, tmp_path: Path, point: str, *argv: str) -> subprocess.CompletedProcess:
    """`clbench ARGV` killed at POINT in a child process; its output (stdout and stderr together) as stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "child.log"
    killable.run(0, [point, *argv], env, log, module="crash_driver")
    ended = killable.wait(timeout=300)
    assert ended is not None, "the child did not end in 300 s"
    return subprocess.CompletedProcess([point, *argv], ended[1], "", log.read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


# ---------------------------------------------------------------------------------- publish

ACC = [[50.0, 40.0], [90.0, 45.0], [80.0, 85.0]]
CONTROL = [[90.0], [88.0], [81.0]]


def results_of(folder: Path, method: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in (0, 1):
        path = folder / f"{method}{seed}.json"
        path.write_text(json.dumps(result_document(ACC, CONTROL, method=method, seed=seed)))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    """A leaderboard holding alpha's results, beta's files to add, and the folder a whole publish makes."""
    base = tmp_path_factory.mktemp("boards")
    board = base / "lb"
    board.mkdir()
    assert main(["publish", *results_of(base / "incoming", "alpha"), "--leaderboard", str(board)]) == 0
    new = results_of(base / "incoming", "beta")
    expected = base / "expected" / "lb"
    shutil.copytree(board, expected)
    assert main(["publish", *new, "--leaderboard", str(expected)]) == 0
    return board, new, snapshot(board), snapshot(expected)


@pytest.mark.parametrize(("point", "after_kill"), [("publish-staging", "old"), ("publish-pages", "old"), ("publish-swapped", "new"), ("publish-fallback", "missing")])
def test_a_publish_killed_anywhere_leaves_the_old_or_the_whole_new_leaderboard(tmp_path, boards, killable, point, after_kill):
    source, new, old_state, new_state = boards
    board = tmp_path / "lb"
    shutil.copytree(source, board)
    killed = child(killable, tmp_path, point, "publish", *new, "--leaderboard", str(board))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = snapshot(board)
    assert {"old": state == old_state, "new": state == new_state, "missing": not board.exists()}[after_kill]
    # The next publish (the same files) recovers, cleans the leftovers, and ends in the whole new state.
    expected_code = 2 if after_kill == "new" else 0  # after a completed swap the files are already published
    assert main(["publish", *new, "--leaderboard", str(board)]) == expected_code
    assert snapshot(board) == new_state and leftovers(board) == []


def test_concurrent_publishes_cannot_both_pass_the_stream_version_check(tmp_path):
    board = tmp_path / "lb"
    board.mkdir()
    files = []
    for version in ("1", "2"):
        document = result_document(ACC, CONTROL, method=f"m{version}", scenario="t")
        document["scenario"]["version"] = version
        rehash(document)
        path = tmp_path / f"v{version}.json"
        path.write_text(json.dumps(document))
        files.append(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    children = [subprocess.Popen([sys.executable, "-m", "cl_bench", "publish", str(f), "--leaderboard", str(board)], env=env, stderr=subprocess.PIPE, text=True) for f in files]
    outcomes = sorted((c.wait(timeout=120), c.stderr.read()) for c in children)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "cannot share a table" in outcomes[1][1]
    assert len(list((board / "results" / "t").rglob("*.json"))) == 1 and leftovers(board) == []


def test_a_lock_whose_holder_was_killed_blocks_nobody_and_a_release_removes_the_file(tmp_path):
    """The guarantees that kept cl_bench.locks over the filelock package (see its docstring)."""
    from cl_bench import locks

    lock = tmp_path / ".lb.lock"
    code = f"import time\nfrom pathlib import Path\nfrom cl_bench import locks\nwith locks.held(Path({str(lock)!r})):\n    print('held', flush=True)\n    time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(locks.Busy), locks.held(lock, wait=False):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert lock.exists()  # left by the killed holder, and locked by nobody
    with locks.held(lock, wait=False):
        pass
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- run

RUN = ["run", "--method", "seq-lora", "--iters", "2", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    # In this process: only the killed runs need a child of their own (each child imports PyTorch,
    # open_clip and Avalanche anew).
    folder = tmp_path_factory.mktemp("whole")
    assert main([*RUN, "--out", str(folder / "out")]) == 0
    (path,) = (folder / "out").glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("point", ["run-training", "run-tensors-write", "run-checkpoint-write", "run-before-partial"])
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_matrix(tmp_path, uninterrupted, killable, point):
    out = tmp_path / "out"
    killed = child(killable, tmp_path, point, *RUN, "--out", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(out.glob("*.ckpt"))
    if point in ("run-tensors-write", "run-checkpoint-write"):
        assert list(out.glob(".*.tmp"))  # the half-written checkpoint the kill left behind
    if point == "run-checkpoint-write":
        assert len(list(out.glob("*.safetensors"))) == 2  # the first checkpoint's tensors, still named by its manifest, and the second's
    assert main([*RUN, "--out", str(out), "--resume"]) == 0  # what the kill left, resumed (here: see `uninterrupted`)
    (path,) = out.glob("*.json")
    data = json.loads(path.read_text())
    assert data["status"] == "complete"
    assert data["acc_matrix"] == uninterrupted["acc_matrix"] and data["control_matrix"] == uninterrupted["control_matrix"]
    assert data["metrics"] == uninterrupted["metrics"]
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no checkpoint, no temporary file


# ---------------------------------------------------------------------------------- sweep


def processes_running(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `marker`, or whose output goes to a file
    under it (a run forked by the sweep's warm worker has the worker's command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (marker in (entry / "cmdline").read_bytes().decode(errors="replace") or marker in os.readlink(entry / "fd" / "1")):
                if "State:\tZ" not in (entry / "status").read_text():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children die with the sweep through Linux's PR_SET_PDEATHSIG")
def test_a_killed_sweep_takes_its_run_with_it_and_a_restart_finishes_cleanly(tmp_path):
    import time

    out, scratch = tmp_path / "sweep", tmp_path / "tmp"
    scratch.mkdir()
    args = [sys.executable, "-m", "cl_bench", "sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0", "--iters", "5", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch), "PYTHONWARNINGS": "ignore"}
    sweep = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = str(out / "logs")
    deadline = time.monotonic() + 120
    while not processes_running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    (run,) = processes_running(marker)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait(timeout=30)
    deadline = time.monotonic() + 30
    while processes_running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_running(marker) == [], f"run {run} outlived its sweep"
    restarted = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    assert "1 runs: 1 ran" in restarted.stderr
    (result,) = out.glob("*.json")
    assert json.loads(result.read_text())["status"] == "complete"
    assert not [p for p in scratch.iterdir() if p.name.startswith("clbench")]  # no temporary folder of ours
    assert not list(out.glob(".*"))  # no temporary file or lock left
