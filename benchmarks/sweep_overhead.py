"""A sweep of short runs against the same runs as separate `clbench run` processes.

    python benchmarks/sweep_overhead.py [--jobs 1] [--iters 2] [--threads 1] [--ray]

The grid: zeroshot and seq-lora on embedded-dil and embedded-cil, seeds 0 and 1 (8 runs of a few
seconds each). Side by side, in one invocation: `clbench sweep` on that grid (its warm worker
imports PyTorch and the plugins once and forks every run), and the same 8 runs as separate
`python -m cl_bench run` processes, `--jobs` at a time, each paying the imports itself. With
--ray, also `clbench sweep --engine ray` on the grid (a local Ray instance, 1 CPU per run), and
how many Ray worker processes ran the 8 runs (their logs name the worker process). All sides get
the same `--threads`, so they compute the same numbers: the script checks that every run's
accuracy and control matrices are equal across the sides. The sides run in turn, `--repeats`
times; the ratios compare the medians. Goal: sweep / separate <= 0.4.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("zeroshot", "seq-lora")
SCENARIOS = ("embedded-dil", "embedded-cil")
SEEDS = (0, 1)


def timed(commands: list[list[str]], jobs: int, env: dict[str, str]) -> float:
    """Wall seconds to run `commands`, `jobs` at a time; any failure stops the benchmark."""
    began, waiting, running = time.perf_counter(), list(commands), []
    while waiting or running:
        while waiting and len(running) < jobs:
            command = waiting.pop(0)
            err = tempfile.TemporaryFile()
            running.append((command, subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err), err))
        for command, process, err in list(running):
            if process.poll() is None:
                continue
            running.remove((command, process, err))
            if process.returncode:
                err.seek(0)
                sys.exit(f"failed ({process.returncode}): {' '.join(command)}\n{err.read().decode(errors='replace')[-2000:]}")
            err.close()
        time.sleep(0.05)
    return time.perf_counter() - began


def matrices(folder: Path) -> dict[str, tuple]:
    return {p.name: (d["acc_matrix"], d["control_matrix"]) for p in sorted(folder.glob("*.json")) for d in [json.loads(p.read_text())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, on every side (default 1)")
    parser.add_argument("--iters", type=int, default=2, help="training iterations per task (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the sides, in turn (default 1)")
    parser.add_argument("--ray", action="store_true", help="also time the Ray engine (needs pip install -e '.[ray]')")
    args = parser.parse_args()

    python = [sys.executable, "-m", "cl_bench"]
    common = ["--iters", str(args.iters), "--threads", str(args.threads), "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    times: dict[str, list[float]] = {"separate": [], "sweep": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as scratch:
        for round_ in range(args.repeats):
            folders = {side: Path(scratch) / f"{side}{round_}" for side in times}
            separate = [
                [*python, "run", "--method", m, "--scenario", s, "--seed", str(seed), "--out", str(folders["separate"]), *common]
                for s in SCENARIOS
                for m in METHODS
                for seed in SEEDS
            ]
            grid = ["--methods", ",".join(METHODS), "--scenarios", ",".join(SCENARIOS), "--seeds", ",".join(map(str, SEEDS)), *common]
            sides = {
                "separate": (separate, args.jobs),
                "sweep": ([[*python, "sweep", *grid, "--jobs", str(args.jobs), "--out", str(folders["sweep"])]], 1),
            }
            if args.ray:
                sides["ray"] = ([[*python, "sweep", *grid, "--engine", "ray", "--out", str(folders["ray"])]], 1)
            for side, (commands, jobs) in sides.items():
                times[side].append(timed(commands, jobs, env))
                print(f"round {round_ + 1}: {side:8s} {times[side][-1]:6.1f} s", file=sys.stderr)
            reference = matrices(folders["separate"])
            for side in sides:
                if matrices(folders[side]) != reference:
                    sys.exit(f"the {side} side's matrices differ from the separate runs'")
            if args.ray:
                workers = set()
                for log in (folders["ray"] / "logs").glob("*.log"):
                    found = re.search(r"ray: worker process (\d+)", log.read_text())
                    workers.update([found.group(1)] if found else [])
    runs = len(METHODS) * len(SCENARIOS) * len(SEEDS)
    base = statistics.median(times["separate"])
    print(f"{runs} runs, {args.iters} iterations per task, {args.threads} thread(s) per run, {args.jobs} at a time, median of {args.repeats}:")
    print(f"  separate clbench run processes: {base:6.1f} s")
    for side, label in (("sweep", "clbench sweep (warm worker)"), ("ray", "clbench sweep --engine ray")):
        if times[side]:
            wall = statistics.median(times[side])
            print(f"  {label + ':':31s} {wall:6.1f} s   {wall / base:.2f}x")
    if args.ray:
        print(f"  Ray ran the {runs} runs in {len(workers)} worker process(es) (last round)")
    print("  every side's accuracy and control matrices equal")


if __name__ == "__main__":
    main()
