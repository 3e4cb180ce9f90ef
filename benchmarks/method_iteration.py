"""Time per training iteration of each parameter-efficient method, relative to seq-lora.

    python benchmarks/method_iteration.py [--iters 100] [--methods seq-lora,eblora,...] [--threads N]

Threads: `clbench run`'s default (half the usable cores: one on two cores) unless --threads says
otherwise; run it at 1 and 2 for the table in docs/benchmarks.md.

Every method trains tiny-clip on embedded-mtil with its tiny-clip profile, through the shared
strategy. The methods take turns task by task (all methods train task 1, then all train task 2,
...), so that they see the same machine conditions; a plugin times each iteration (forward,
loss, backward, optimiser step). Reported: the median iteration time, its ratio to seq-lora's,
the rest of each task's training call (per-task work outside the iterations: EBLoRA's two
gradient passes, MoE-LoRA's selector, optimiser set-up), averaged over the tasks, and the time of
one accuracy-matrix row (every test set and control set) after each task, averaged.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cl_bench import RunConfig, build, plan
from cl_bench.config.run_config import default_threads
from cl_bench.running.runner import quiet_third_party_warnings

quiet_third_party_warnings()  # before Avalanche is imported: it warns about optional solvers

from avalanche.core import SupervisedPlugin  # noqa: E402

from cl_bench.config.registry import Registry  # noqa: E402
from cl_bench.running.evaluation import evaluate_row  # noqa: E402

METHODS = "seq-lora,eblora,moram,moe-lora,l2p"


class IterationClock(SupervisedPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._start = 0.0

    def before_training_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def build_run(registry: Registry, name: str, iters: int, threads: int):
    """The method's run on embedded-mtil as `clbench run` builds it, with a clock in the strategy."""
    clock = IterationClock()
    config = RunConfig(method=name, scenario="embedded-mtil", iters=iters, threads=threads, progress=False, device="cpu")
    parts = build(plan(config, registry), plugins=[clock])
    clock.matrix = parts.matrix
    return parts.strategy, parts.stream, clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100, help="iterations per task")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--threads", type=int, default=default_threads(), help="CPU threads (default: clbench run's, half the usable cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry()
    names = args.methods.split(",")
    runs = {name: build_run(registry, name, args.iters, torch.get_num_threads()) for name in names}
    outside: dict[str, list[float]] = {name: [] for name in names}
    evaluation: dict[str, list[float]] = {name: [] for name in names}
    tasks = next(iter(runs.values()))[1].num_tasks
    for task in range(tasks):
        for name, (strategy, stream, clock) in runs.items():
            before = sum(clock.times)
            start = time.perf_counter()
            strategy.train(stream.benchmark.streams["train"][task])
            outside[name].append(time.perf_counter() - start - (sum(clock.times) - before))
            start = time.perf_counter()
            evaluate_row(strategy, clock.matrix, task + 1)
            evaluation[name].append(time.perf_counter() - start)
    reference = statistics.median(runs["seq-lora"][2].times) if "seq-lora" in runs else None
    print(f"tiny-clip, embedded-mtil, {tasks} tasks x {args.iters} iterations, {torch.get_num_threads()} threads")
    print(f"{'method':10} {'ms/iter':>8} {'vs seq-lora':>12} {'per-task work outside iterations':>34} {'eval ms/row':>12}")
    for name, (_, _, clock) in runs.items():
        median = statistics.median(clock.times)
        ratio = f"{median / reference:12.2f}" if reference else f"{'-':>12}"
        print(f"{name:10} {median * 1000:8.1f} {ratio} {statistics.mean(outside[name]) * 1000:31.0f} ms {statistics.mean(evaluation[name]) * 1000:12.0f}")


if __name__ == "__main__":
    main()
