"""`rail-primal` and `rail-dual`: RAIL (Xu et al., "Advancing Cross-domain Discriminability in
Continual Learning of Vision-Language Models", NeurIPS 2024, arXiv 2406.18868; official code
linghan1997/Regression-based-Analytic-Incremental-Learning).

Nothing trains by gradient: CLIP stays frozen, and after each task a ridge regression from its
normalised image features to one-hot targets over every class learned so far is solved in closed
form (the `fit` hook). `rail-primal` regresses on a fixed random ReLU expansion of the features and
updates the solution recursively (recursive least squares); `rail-dual` is kernel ridge regression
with a Gaussian kernel over every training feature seen so far. At test time an image whose
zero-shot top class belongs to a learned task gets `fusion_weight` · regression + (1 −
`fusion_weight`) · zero-shot probabilities; any other image keeps the zero-shot prediction. The
maths, the fusion rule under each protocol and the departures from the official code are in
regression.py and method.py (imported when a run starts) and docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from cl_bench import IMAGE_PROTOCOLS, MethodSpec, Supports, hookimpl

PAPER = "https://arxiv.org/abs/2406.18868"

# The official configs/analytic_clip.yaml (ViT-B/16): a 15000-wide expansion, ridge λ 0.1, batches
# of 128, fusion weight 0.8 (0.9 before commit c76eb37); the dual form's RBF γ 0.1 and its λ 0.001
# (hard-coded in dual_RAIL.py; a parameter here).
PRIMAL_DEFAULTS: dict[str, Any] = {"expansion": 15000, "regularization": 0.1, "fusion_weight": 0.8, "batch_size": 128}
DUAL_DEFAULTS: dict[str, Any] = {"kernel_gamma": 0.1, "regularization": 0.001, "fusion_weight": 0.8, "batch_size": 128}

# tiny-clip (64-d features, embedded streams of up to 3,000 training images a task): a 2000-wide
# expansion (about 30x the feature width, as 15000 is for 512). λ: the official 0.1 for the primal
# form and 0.001 for the dual one were kept after a sweep on embedded-xtail and embedded-cil
# (seed 0; docs/methods.md, RAIL, has the numbers).
PRIMAL_TINY_CLIP: dict[str, Any] = {"expansion": 2000}
DUAL_TINY_CLIP: dict[str, Any] = {}


@hookimpl
def cl_bench_methods() -> list[MethodSpec]:
    supports = Supports(protocols=IMAGE_PROTOCOLS, backbone_kinds=("clip",))
    return [
        MethodSpec(
            name="rail-primal",
            factory="cl_bench.methods.rail.method:RAILPrimal",
            summary="RAIL-Primal: recursive ridge regression on a random ReLU expansion of frozen CLIP features, fused with zero-shot for images zero-shot puts in a learned task",
            paper=PAPER,
            defaults=PRIMAL_DEFAULTS,
            profiles={"tiny-clip": PRIMAL_TINY_CLIP},
            supports=supports,
            version="1",
        ),
        MethodSpec(
            name="rail-dual",
            factory="cl_bench.methods.rail.method:RAILDual",
            summary="RAIL-Dual: Gaussian-kernel ridge regression over every training feature seen so far, fused with zero-shot for images zero-shot puts in a learned task",
            paper=PAPER,
            defaults=DUAL_DEFAULTS,
            profiles={"tiny-clip": DUAL_TINY_CLIP},
            supports=supports,
            version="1",
        ),
    ]
