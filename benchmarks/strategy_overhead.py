"""Time per training iteration of the shared strategy divided by a plain PyTorch loop.

    python benchmarks/strategy_overhead.py [--iters 200] [--repeats 3]

The two loops run interleaved, iteration by iteration: after each iteration of ClStrategy, a
timing plugin runs one iteration of the plain loop on an identical copy of the model (same
batches, optimizer, schedule and label space) and times both. Paired this way, both sides see the
same machine conditions; separate runs on a shared machine drift by tens of percent. The ratio
compares the medians of all paired iterations; the plugin's own work counts against our side.
The per-experience set-up (loader, optimizer, hooks) is reported apart. Avalanche's own `Naive`
(no metrics, its default data loader) runs the same pairing for reference.
Goal: ClStrategy / plain <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cl_bench import BackboneSpec, RunConfig, ScenarioSpec, build, hookimpl, plan  # noqa: E402
from cl_bench.config.registry import Registry  # noqa: E402
from cl_bench.running.runner import quiet_third_party_warnings  # noqa: E402

quiet_third_party_warnings()

LORA = {"rank": 8, "alpha": 16.0, "layers": ["q", "k", "v", "out", "fc", "proj"], "towers": ["image", "text"]}
LORA_LIGHT = {"rank": 8, "alpha": 16.0, "layers": ["q", "v"], "towers": ["image"]}  # text frozen: features cached
SMALL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}
# (label, backbone, LoRA placement, batch size)
CONFIGS = [
    ("small, LoRA image q,v", "small", LORA_LIGHT, 64),
    ("small, LoRA all layers", "small", LORA, 64),
    ("tiny-clip, LoRA all", "tiny-clip", LORA, 64),
]


class PlainLoop:
    """One plain PyTorch training iteration at a time, on its own copy of the model."""

    def __init__(self, model, method, strategy, experience, hparams) -> None:
        self.model = copy.deepcopy(model)
        strategy.experience = experience
        strategy.adapted_dataset = experience.dataset.train()
        strategy.make_train_dataloader()  # the very batches the strategy will draw
        self.batches = iter(strategy.dataloader)
        original = {id(p): name for name, p in model.named_parameters()}
        named = dict(self.model.named_parameters())
        params = [named[original[id(p)]] for p in method.trainable_parameters(model)]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        text = {id(p) for p in self.model.tower_parameters("text")}
        self.model.set_text_trainable(any(id(p) in text for p in params))
        self.optimizer = torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"])
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / hparams["iters"])))
        self.model.set_label_space(strategy.stream.task_classes[0])
        self.model.train()

    def step(self) -> bool:
        """One iteration; False once the batches are used up (Naive runs whole epochs)."""
        batch = next(self.batches, None)
        if batch is None:
            return False
        x, y = batch
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x).float(), y)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return True


class PairedClock(SupervisedPlugin):
    """Times each strategy iteration, then runs and times one plain iteration."""

    def __init__(self) -> None:
        super().__init__()
        self.plain: PlainLoop | None = None
        self.ours: list[float] = []
        self.reference: list[float] = []
        self._resumed = 0.0

    def before_training_epoch(self, strategy, **kwargs):
        self._resumed = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        ended = time.perf_counter()
        if self.plain is not None and self.plain.step():  # only paired iterations count
            self.ours.append(ended - self._resumed)
            self.reference.append(time.perf_counter() - ended)
        self._resumed = time.perf_counter()


class OverheadPlugin:
    """The benchmark's stream (toy images in memory, as the embedded streams are) and its small CLIP."""

    @hookimpl
    def cl_bench_scenarios(self):
        from toys import toy_stream

        factory = lambda params, context: toy_stream("mtil", tasks=1, classes_per_task=4, per_class=256, control=False)  # noqa: E731
        return [ScenarioSpec(name="overhead-toy", factory=factory, summary="4 toy classes, 1024 images", protocol="mtil", num_tasks=1)]

    @hookimpl
    def cl_bench_backbones(self):
        from cl_bench.backbones import tiny_clip

        return [BackboneSpec(name="small", factory=lambda params, weights: tiny_clip.wrap(tiny_clip.build_clip(SMALL), SMALL, None), summary="a random 1-layer CLIP")]


def build_run(size: str, lora: dict, batch_size: int, iters: int, clock: SupervisedPlugin):
    """SeqLoRA with `lora` on the toy stream, planned and built as `clbench run` does."""
    config = RunConfig(method="seq-lora", scenario="overhead-toy", backbone=size, iters=iters, batch_size=batch_size, method_params={**lora, "lr": 1e-4}, device="cpu", progress=False)
    parts = build(plan(config, Registry([OverheadPlugin()])), plugins=[clock])
    return parts.model, parts.method, parts.strategy, parts.stream, parts.strategy.hparams


def run_naive(model, method, stream, hparams, clock: PairedClock) -> None:
    """Avalanche's Naive (default data loader over the Avalanche dataset, no metrics), paired the same way."""
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
            plugins=[clock],
            device="cpu",
        )
    naive.make_optimizer = lambda **kwargs: None  # keep the LoRA-only optimizer Avalanche would replace
    naive.train(experience)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.iters} iterations x {args.repeats} repeats, {torch.get_num_threads()} threads; median ms per iteration, paired")
    print(f"{'model':24} {'plain':>8} {'ClStrategy':>11} {'ratio':>6} {'plain':>8} {'Naive':>8} {'ratio':>6} {'ours setup/exp':>15}")
    for label, size, lora, batch in CONFIGS:
        clock = PairedClock()
        model, method, strategy, stream, hparams = build_run(size, lora, batch, args.iters, clock)
        experience = stream.benchmark.streams["train"][0]
        strategy.train(experience)  # warm up
        clock.ours, clock.reference, setup = [], [], []
        for _ in range(args.repeats):
            clock.plain = PlainLoop(model, method, strategy, experience, hparams)
            before = sum(clock.ours) + sum(clock.reference)
            start = time.perf_counter()
            strategy.train(experience)
            setup.append(time.perf_counter() - start - (sum(clock.ours) + sum(clock.reference) - before))
        ours, plain = statistics.median(clock.ours), statistics.median(clock.reference)
        naive_clock = PairedClock()
        for _ in range(args.repeats):
            naive_clock.plain = PlainLoop(model, method, strategy, experience, hparams)
            run_naive(model, method, stream, hparams, naive_clock)
        naive, naive_plain = statistics.median(naive_clock.ours), statistics.median(naive_clock.reference)
        print(
            f"{label:24} {plain * 1000:8.2f} {ours * 1000:11.2f} {ours / plain:6.3f} "
            f"{naive_plain * 1000:8.2f} {naive * 1000:8.2f} {naive / naive_plain:6.3f} {statistics.median(setup) * 1000:12.1f} ms"
        )


if __name__ == "__main__":
    main()
