"""Time per training iteration of the shared strategy divided by a plain PyTorch loop.

    python benchmarks/strategy_overhead.py [--iters 200] [--repeats 5]

Both loops train the same model (LoRA on every adapted layer), on the same batches, with the same
optimizer and schedule; each repeat runs the variants back to back and the median is reported.
Avalanche's own `Naive` strategy (no metrics, its default data loader) runs beside them for
reference. Goal: ClStrategy / plain <= 1.05.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cl_bench.methods.seq_lora.lora import SeqLoRA  # noqa: E402
from cl_bench.runner import quiet_third_party_warnings  # noqa: E402
from cl_bench.spec import TRAIN_DEFAULTS  # noqa: E402
from cl_bench.strategy import ClStrategy, TensorBatches  # noqa: E402

quiet_third_party_warnings()

LORA = {"rank": 8, "alpha": 16.0, "layers": ["q", "k", "v", "out", "fc", "proj"], "towers": ["image", "text"]}
SMALL = {  # about 5 ms per iteration on two cores
    "embed_dim": 32,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


def build(size: str, stream, batch_size: int, iters: int):
    from cl_bench.backbones import tiny_clip

    torch.manual_seed(0)
    model = tiny_clip.load({}) if size == "tiny-clip" else tiny_clip.wrap(tiny_clip.build_clip(SMALL), SMALL, None)
    for p in model.parameters():
        p.requires_grad_(False)
    model.set_classes(stream.prompts())
    method = SeqLoRA(LORA)
    method.setup(model, stream)
    hparams = {**TRAIN_DEFAULTS, "iters": iters, "batch_size": batch_size, "lr": 1e-4}
    strategy = ClStrategy(model=model, method=method, stream=stream, hparams=hparams, progress=False)
    return model, method, strategy, hparams


def time_strategy(strategy, experience) -> float:
    start = time.perf_counter()
    strategy.train(experience)
    return time.perf_counter() - start


def time_plain(model, method, strategy, experience, hparams) -> float:
    """The same work written as a plain loop: same batches, optimizer, schedule, label space."""
    start = time.perf_counter()
    strategy.experience = experience
    strategy.adapted_dataset = experience.dataset.train()
    strategy.make_train_dataloader()
    batches: TensorBatches = strategy.dataloader
    params = list(method.trainable_parameters(model))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / hparams["iters"])))
    model.set_label_space(strategy.stream.task_classes[0])
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        schedule.step()
    return time.perf_counter() - start


def time_naive(model, method, stream, hparams) -> float:
    """Avalanche's Naive: its default data loader over the Avalanche dataset, no metrics."""
    import warnings

    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    experience = stream.benchmark.streams["train"][0]
    params = list(method.trainable_parameters(model))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.set_label_space(stream.task_classes[0])
    epochs = max(1, round(hparams["iters"] * hparams["batch_size"] / len(experience.dataset)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = Naive(
            model=model,
            optimizer=torch.optim.AdamW(params, lr=hparams["lr"]),
            train_mb_size=hparams["batch_size"],
            train_epochs=epochs,
            evaluator=EvaluationPlugin(loggers=[]),
            device="cpu",
        )
    naive.make_optimizer = lambda **kwargs: None  # keep the LoRA-only optimizer Avalanche would replace
    iterations = epochs * -(-len(experience.dataset) // hparams["batch_size"])
    start = time.perf_counter()
    naive.train(experience)
    return (time.perf_counter() - start) / iterations * hparams["iters"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    from toys import toy_stream  # a stream of in-memory toy images, as the embedded streams are

    stream = toy_stream("mtil", tasks=1, classes_per_task=4, per_class=256, control=False)
    experience = stream.benchmark.streams["train"][0]
    print(f"{args.iters} iterations, batch {args.batch_size}, LoRA on all adapted layers, {torch.get_num_threads()} threads")
    print(f"{'model':10} {'plain ms/it':>12} {'ClStrategy':>11} {'ratio':>6} {'Naive':>8} {'ratio':>6}")
    for size in ("small", "tiny-clip"):
        model, method, strategy, hparams = build(size, stream, args.batch_size, args.iters)
        time_plain(model, method, strategy, experience, hparams)  # warm up both paths
        time_strategy(strategy, experience)
        plain, ours, naive = [], [], []
        for _ in range(args.repeats):
            plain.append(time_plain(model, method, strategy, experience, hparams))
            ours.append(time_strategy(strategy, experience))
            naive.append(time_naive(model, method, stream, hparams))
        p, o, n = (statistics.median(v) / args.iters * 1000 for v in (plain, ours, naive))
        print(f"{size:10} {p:12.2f} {o:11.2f} {o / p:6.3f} {n:8.2f} {n / p:6.3f}")


if __name__ == "__main__":
    main()
