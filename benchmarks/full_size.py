"""Every method at full size (ViT-B/16 with random weights) on CPU: ms per iteration, evaluation
seconds per accuracy-matrix row and peak memory, each relative to seq-lora.

    python benchmarks/full_size.py [--methods seq-lora,moram,...] [--threads 2] [--iters 2]
                                   [--scenario folders] [--data-root PATH] [--device cpu]

The weights are written once by tools/random_vit_b16.py (open_clip's safetensors format, about
600 MB, in a temporary folder) and go through `--pretrained` like real ones. Each method runs in a
fresh process (so that its peak resident memory is its own), training `--iters` iterations per
task at batch 4. The default stream is the docs' image-folder example (plugins.md) on generated PNG files
(2 tasks of 2 classes); `--scenario mtil --data-root ROOT` runs a real MTIL root instead (on CPU
an MTIL row means encoding ~2,000 prompts with the full text tower: CIFAR-100 alone has 100
classes x 18 templates). Reported: the median iteration (forward, loss, backward, step) and its
ratio to seq-lora's, the mean evaluation time of a row, and the peak resident set size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = "seq-lora,zeroshot,finetune,moram,mora,moe-lora,l2p,eblora"


def child(args: argparse.Namespace) -> None:
    """One method's run, in this process; prints one JSON line of measurements."""
    import torch

    from cl_bench import RunConfig, run
    from cl_bench.running import strategy as strategy_module
    from cl_bench.running.runner import quiet_third_party_warnings

    quiet_third_party_warnings()
    from avalanche.core import SupervisedPlugin

    times: list[float] = []

    class IterationClock(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            self.start = time.perf_counter()

        def after_training_iteration(self, strategy, **kwargs):
            if strategy.device.type == "cuda":
                torch.cuda.synchronize(strategy.device)
            times.append(time.perf_counter() - self.start)

    class ClockedStrategy(strategy_module.ClStrategy):  # the benchmark's own probe, not an API
        def __init__(self, *, plugins=(), **kwargs):
            super().__init__(plugins=[*plugins, IterationClock()], **kwargs)

    strategy_module.ClStrategy = ClockedStrategy
    plugins = []
    if args.scenario == "folders":
        spec = importlib.util.spec_from_file_location("my_streams", ROOT / "tests" / "stream_example" / "my_streams" / "__init__.py")
        plugins = [importlib.util.module_from_spec(spec)]
        spec.loader.exec_module(plugins[0])
    config = RunConfig(
        method=args.child, scenario=args.scenario, backbone="clip-vit-b16", pretrained=args.weights, data_root=args.data_root,
        iters=args.iters, batch_size=4, threads=args.threads, device=args.device, out=args.out, progress=False, seed=0,
    )
    result = run(config, plugins=plugins)
    rows = [result.data["timings"]["eval_before"]] + [e["eval"] for e in result.data["timings"]["experiences"]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available() and args.device != "cpu":
        peak = torch.cuda.max_memory_allocated()
    print(json.dumps({"ms_per_iter": statistics.median(times) * 1000 if times else None, "eval_row_s": statistics.mean(rows), "peak_bytes": peak}))


def folders_root(root: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_stream_example import image_folders

    return image_folders(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=2, help="iterations per task")
    parser.add_argument("--scenario", default="folders")
    parser.add_argument("--data-root", help="the stream's data root (default: generated image folders)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "tools"))
    from random_vit_b16 import write_random_vit_b16

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        weights = write_random_vit_b16(scratch / "vit-b16.safetensors")
        data_root = args.data_root or str(folders_root(scratch / "data"))
        measured = {}
        for name in args.methods.split(","):
            command = [sys.executable, __file__, "--child", name, "--weights", str(weights), "--out", str(scratch / "runs"), "--data-root", data_root,
                       "--scenario", args.scenario, "--threads", str(args.threads), "--iters", str(args.iters), "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            measured[name] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = measured.get("seq-lora")
    print(f"ViT-B/16 (random weights), {args.scenario}, batch 4, {args.iters} iterations per task, {args.threads} threads, {args.device}")
    print(f"{'method':10} {'ms/iter':>9} {'vs seq-lora':>12} {'eval s/row':>11} {'peak MB':>9} {'vs seq-lora':>12}")
    for name, m in measured.items():
        ms = f"{m['ms_per_iter']:9.0f}" if m["ms_per_iter"] else f"{'-':>9}"
        ratio = f"{m['ms_per_iter'] / reference['ms_per_iter']:12.2f}" if reference and m["ms_per_iter"] else f"{'-':>12}"
        memory = f"{m['peak_bytes'] / reference['peak_bytes']:12.2f}" if reference else f"{'-':>12}"
        print(f"{name:10} {ms} {ratio} {m['eval_row_s']:11.1f} {m['peak_bytes'] / 2**20:9.0f} {memory}")


if __name__ == "__main__":
    main()
