"""`zeroshot`: no training at all. Every row of its accuracy matrix equals row 0, the pre-trained
model's zero-shot accuracy: the reference for transfer and retention."""

from __future__ import annotations

from typing import Any

from cl_bench import Method, MethodSpec, Supports, hookimpl


class ZeroShot(Method):
    """Trains nothing: `trainable_parameters` is empty, so the strategy skips training."""

    def __init__(self, hparams: dict[str, Any]) -> None:
        self.hparams = hparams


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="zeroshot",
            factory=ZeroShot,
            summary="baseline: the pre-trained model, never trained (every row equals row 0)",
            paper="https://arxiv.org/abs/2103.00020",
            supports=Supports(backbone_kinds=("clip", "causal-lm"), sharded=True),  # trains nothing: shard_weights shards nothing
            version="1",
        )
    ]
